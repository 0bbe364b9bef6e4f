"""Data page numbers: shapes, columns and a few hand-computed values on tiny bundles."""
from __future__ import annotations

import dataclasses
import os

import pytest
import torch
from conftest import make_bundle

from explore.data import DataBundle, DataError, SkippedFile, Split
from explore.data import stats


def constant_split(values: list[int], labels: list[int], site: str, size: int = 8) -> Split:
    n = len(values)
    return Split(
        images=torch.tensor(values, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 1, size, size).contiguous(),
        labels=torch.tensor(labels), sites=(site,) * n, ids=tuple(f"{site}/{i}" for i in range(n)),
        original_sizes=torch.tensor([[100 + 10 * i, 50] for i in range(n)]),
    )


@pytest.fixture
def known_bundle() -> DataBundle:
    """Every image is one constant grey value, so every statistic can be computed by hand."""
    return DataBundle(
        source="known", image_size=8, classes=("NORMAL", "PNEUMONIA"),
        splits={
            "train": constant_split([0, 0, 255, 255], [0, 0, 1, 1], "A"),
            "val": constant_split([0, 255], [0, 1], "A"),
            "test": constant_split([128, 128, 128], [0, 1, 1], "B"),
        },
        skipped=(SkippedFile("/x/bad.png", "empty file (0 bytes)"),),
    )


def test_class_counts(known_bundle):
    table = stats.class_counts(known_bundle)
    assert list(table.columns) == ["split", "class", "count"] and len(table) == 6
    counts = {(r.split, r["class"]): r["count"] for _, r in table.iterrows()}
    assert counts[("train", "PNEUMONIA")] == 2 and counts[("test", "NORMAL")] == 1


def test_intensity_histograms(known_bundle):
    table = stats.intensity_histograms(known_bundle, bins=64)
    assert list(table.columns) == ["split", "site", "intensity_bin", "density"]
    assert len(table) == 3 * 64  # (train, A), (val, A), (test, B)
    assert table.groupby(["split", "site"])["density"].sum().round(6).eq(1).all()
    train = table[table.split == "train"].set_index("intensity_bin")["density"]
    assert train[0] == 0.5 and train[252] == 0.5  # half the pixels 0, half 255 (last bin starts at 252)
    test = table[table.split == "test"].set_index("intensity_bin")["density"]
    assert test[128] == 1.0
    assert set(stats.intensity_histograms(known_bundle, bins=4).intensity_bin) == {0, 64, 128, 192}


def test_original_size_table(known_bundle):
    table = stats.original_size_table(known_bundle)
    assert list(table.columns) == ["split", "class", "width", "height", "aspect"]
    assert len(table) == 9
    first = table.iloc[0]
    assert (first.width, first.height, first.aspect) == (100, 50, 2.0)


def test_mean_images_and_difference(known_bundle):
    means = stats.mean_images(known_bundle)
    assert set(means) == {"train", "val", "test"}
    assert means["train"].shape == (8, 8) and means["train"].dtype == torch.float32
    assert torch.allclose(means["train"], torch.full((8, 8), 0.5))
    assert torch.allclose(means["test"], torch.full((8, 8), 128 / 255))
    difference = stats.mean_image_difference(known_bundle)  # val - test
    assert difference.shape == (8, 8)
    assert torch.allclose(difference, torch.full((8, 8), 0.5 - 128 / 255))


def test_mean_image_difference_with_an_empty_split(known_bundle):
    empty = known_bundle.train.subset([])
    bundle = dataclasses.replace(known_bundle, splits=known_bundle.splits | {"val": empty})
    assert "val" not in stats.mean_images(bundle)
    with pytest.raises(DataError, match="val"):
        stats.mean_image_difference(bundle)


def test_sample_grid():
    bundle = make_bundle(size=16, n_train=20, n_val=6, n_test=6)
    grid = stats.sample_grid(bundle, "train", per_class=3, seed=1)
    assert len(grid) == 6
    assert [cls for _, cls, _, _ in grid] == ["NORMAL"] * 3 + ["PNEUMONIA"] * 3
    for index, cls, site, image_id in grid:
        assert bundle.classes[int(bundle.train.labels[index])] == cls
        assert bundle.train.sites[index] == site and bundle.train.ids[index] == image_id
    assert stats.sample_grid(bundle, "train", per_class=3, seed=1) == grid
    assert stats.sample_grid(bundle, "train", per_class=3, seed=2) != grid
    assert len(stats.sample_grid(bundle, "val", per_class=100)) == 6  # as many as there are


def test_skipped_table(known_bundle):
    table = stats.skipped_table(known_bundle)
    assert list(table.columns) == ["file", "reason"] and table.iloc[0].file == "/x/bad.png"  # not a folder source
    assert list(stats.skipped_table(make_bundle()).columns) == ["file", "reason"]


def test_stats_on_a_real_folder_bundle(tmp_path):
    from PIL import Image

    from explore.data.folder import load_folder

    for k, cls in enumerate(("NORMAL", "PNEUMONIA")):
        (tmp_path / "d" / cls).mkdir(parents=True)
        for i in range(5):
            Image.new("L", (30 + i, 40), 50 + 100 * k).save(tmp_path / "d" / cls / f"{i}.png")
    bundle = load_folder(str(tmp_path / "d"), image_size=64, cache_dir=str(tmp_path / "cache"))
    assert stats.class_counts(bundle)["count"].sum() == 10
    assert len(stats.intensity_histograms(bundle, bins=16)) == 3 * 16
    assert sorted(stats.original_size_table(bundle).width.unique()) == [30, 31, 32, 33, 34]
    assert all(m.shape == (64, 64) for m in stats.mean_images(bundle).values())
    assert stats.skipped_table(bundle).empty
    (tmp_path / "d" / "NORMAL" / "notes.png").write_text("not an image")
    bundle = load_folder(str(tmp_path / "d"), image_size=64, cache_dir=str(tmp_path / "cache"))
    table = stats.skipped_table(bundle)  # shown from the dataset's folder, not as a long server path
    assert table.file.tolist() == [os.path.join("NORMAL", "notes.png")] and "image" in table.reason[0]
