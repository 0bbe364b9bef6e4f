"""PneumoniaMNIST npz files, written here in the published layout (no download)."""
from __future__ import annotations

import os
import sys

import numpy as np
import pytest
import torch

from explore.data import DataError
from explore.data.medmnist import download_medmnist, load_medmnist, medmnist_file_name

COUNTS = {"train": (6, 4), "val": (2, 2), "test": (3, 5)}  # (normal, pneumonia)


def write_pneumoniamnist(path, size: int = 28, counts=COUNTS, **overrides) -> str:
    """Like MedMNIST's file: uint8 N×size×size images, uint8 N×1 labels. Normal images are
    dark (60), pneumonia bright (180), so labels can be checked from pixels."""
    arrays = {}
    for split, (normal, pneumonia) in counts.items():
        labels = np.array([0] * normal + [1] * pneumonia, dtype=np.uint8)[:, None]
        arrays[f"{split}_images"] = np.where(labels[:, :, None] == 1, 180, 60).astype(np.uint8) \
            * np.ones((1, size, size), dtype=np.uint8)
        arrays[f"{split}_labels"] = labels
    arrays.update(overrides)
    np.savez_compressed(path, **arrays)
    return str(path)


def test_loads_28px_at_64_with_the_published_split(tmp_path):
    path = write_pneumoniamnist(tmp_path / "pneumoniamnist.npz")
    bundle = load_medmnist(path, image_size=64)
    assert bundle.classes == ("NORMAL", "PNEUMONIA")
    assert bundle.counts() == {split: {"NORMAL": n, "PNEUMONIA": p} for split, (n, p) in COUNTS.items()}
    for name, split in bundle.splits.items():
        assert split.images.dtype == torch.uint8 and split.images.shape == (sum(COUNTS[name]), 1, 64, 64)
        assert split.original_sizes.tolist() == [[28, 28]] * len(split)
        assert set(split.sites) == {"medmnist:pneumoniamnist.npz"}
        assert len(set(split.ids)) == len(split)
        means = split.images.float().mean(dim=(1, 2, 3))
        assert torch.allclose(means, torch.where(split.labels == 1, 180.0, 60.0), atol=1)
    assert bundle.source == f"medmnist:{path}"


def test_folder_argument_picks_the_best_file(tmp_path):
    write_pneumoniamnist(tmp_path / medmnist_file_name(28), size=28)
    write_pneumoniamnist(tmp_path / medmnist_file_name(64), size=64)
    assert load_medmnist(str(tmp_path), image_size=64).train.original_sizes[0].tolist() == [64, 64]
    assert load_medmnist(str(tmp_path), image_size=128).train.original_sizes[0].tolist() == [64, 64]


def test_missing_file_says_where_to_put_it(tmp_path):
    with pytest.raises(DataError) as info:
        load_medmnist(str(tmp_path / "nope.npz"), image_size=64)
    message = str(info.value)
    assert "nope.npz" in message and "pneumoniamnist.npz" in message
    assert ".medmnist" in message and "pip install medmnist" in message
    with pytest.raises(DataError, match="pneumoniamnist.npz"):
        load_medmnist(str(tmp_path), image_size=64)  # a folder without any npz


def test_wrong_npz_contents_are_clear_errors(tmp_path):
    missing = tmp_path / "missing.npz"
    np.savez(missing, train_images=np.zeros((2, 28, 28), np.uint8))
    with pytest.raises(DataError, match="missing arrays"):
        load_medmnist(str(missing))

    chest = write_pneumoniamnist(tmp_path / "chest.npz", train_labels=np.zeros((10, 14), np.uint8))
    with pytest.raises(DataError, match="labels must be N×1"):
        load_medmnist(chest)

    colour = write_pneumoniamnist(tmp_path / "colour.npz", train_images=np.zeros((10, 28, 28, 3), np.uint8))
    with pytest.raises(DataError, match="grey"):
        load_medmnist(colour)

    pickled = write_pneumoniamnist(tmp_path / "pickled.npz", train_images=np.array([{"evil": 1}], dtype=object))
    with pytest.raises(DataError, match="cannot read .*pickle"):  # never unpickled
        load_medmnist(pickled)

    garbage = tmp_path / "garbage.npz"
    garbage.write_text("not a zip")
    with pytest.raises(DataError, match="cannot read"):
        load_medmnist(str(garbage))


def test_download_without_medmnist_package_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "medmnist", None)  # import fails as if not installed
    with pytest.raises(DataError, match="offline / medmnist not installed") as info:
        download_medmnist(size=128, root=str(tmp_path))
    assert os.path.join(str(tmp_path), "pneumoniamnist_128.npz") in str(info.value)

    present = write_pneumoniamnist(tmp_path / "pneumoniamnist.npz")
    assert download_medmnist(size=28, root=str(tmp_path)) == present  # already there: no download
    with pytest.raises(DataError, match="size"):
        download_medmnist(size=100, root=str(tmp_path))
