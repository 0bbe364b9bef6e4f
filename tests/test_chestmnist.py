"""ChestMNIST npz files written here in MedMNIST's layout: the 14-label → 2-class rule, streaming,
and the one-click pediatric → adult pair with PneumoniaMNIST."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from explore.data import DataError, DataSpec, load_bundle
from explore.data import chestmnist as C
from test_medmnist import write_pneumoniamnist


def chest_labels(pneumonia: int, normal: int, other: int, with_other_too: int = 0) -> np.ndarray:
    """Rows: pneumonia alone, pneumonia + effusion, no finding, other findings only."""
    rows = []
    rows += [np.eye(14, dtype=np.uint8)[C.PNEUMONIA_LABEL]] * pneumonia
    both = np.eye(14, dtype=np.uint8)[C.PNEUMONIA_LABEL] + np.eye(14, dtype=np.uint8)[2]
    rows += [both] * with_other_too
    rows += [np.zeros(14, dtype=np.uint8)] * normal
    rows += [np.eye(14, dtype=np.uint8)[3]] * other
    return np.stack(rows)


def write_chestmnist(path, size=28, compressed=True, counts=None) -> str:
    """Each image's pixels hold its row number (mod 250), so the kept rows can be checked."""
    counts = counts or {"train": (3, 5, 7, 1), "val": (1, 2, 2, 1), "test": (2, 3, 4, 0)}
    arrays = {}
    for split, (pneumonia, normal, other, both) in counts.items():
        labels = chest_labels(pneumonia, normal, other, both)
        n = len(labels)
        arrays[f"{split}_images"] = (np.arange(n, dtype=np.uint8)[:, None, None] * 10 % 250
                                     * np.ones((1, size, size), dtype=np.uint8))
        arrays[f"{split}_labels"] = labels
    (np.savez_compressed if compressed else np.savez)(path, **arrays)
    return str(path)


@pytest.mark.parametrize("compressed", [True, False])
def test_rule_and_rows_kept(tmp_path, compressed, monkeypatch):
    monkeypatch.setattr(C, "CHUNK_ROWS", 4)  # several chunks even for these tiny arrays
    path = write_chestmnist(tmp_path / "chestmnist.npz", compressed=compressed)
    bundle = C.load_chestmnist(path, image_size=28)
    assert bundle.counts() == {"train": {"NORMAL": 5, "PNEUMONIA": 4}, "val": {"NORMAL": 2, "PNEUMONIA": 2},
                               "test": {"NORMAL": 3, "PNEUMONIA": 2}}
    assert next(iter(bundle.selection.values()))["left_out_other_findings"] == {"train": 7, "val": 2, "test": 4}
    train = bundle.train
    # Rows 0-2 pneumonia, 3 pneumonia + effusion, 4-8 no finding, 9-15 other: kept rows 0..8 in order.
    assert [int(i.rsplit("/", 1)[1]) for i in train.ids] == list(range(9))
    assert train.images[:, 0, 0, 0].tolist() == [r * 10 for r in range(9)]
    assert train.labels.tolist() == [1, 1, 1, 1, 0, 0, 0, 0, 0]


def test_as_test_source_reads_only_the_test_split_and_pairs_with_pneumoniamnist(tmp_path):
    pneumonia = write_pneumoniamnist(tmp_path / "pneumoniamnist.npz")
    chest = write_chestmnist(tmp_path / "chestmnist_64.npz", size=64)
    bundle = load_bundle(DataSpec(source=f"medmnist:{pneumonia}", test_source=f"medmnist:{chest}", image_size=64))
    assert bundle.counts()["test"] == {"NORMAL": 3, "PNEUMONIA": 2}
    assert bundle.counts()["train"] == {"NORMAL": 6, "PNEUMONIA": 4}  # PneumoniaMNIST's own
    assert set(bundle.test.sites) == {"medmnist:chestmnist_64.npz"}
    alone = C.load_chestmnist(chest, image_size=64, all_as_test=True)
    assert len(alone.train) == len(alone.val) == 0 and len(alone.test) == 5


def test_memory_stays_bounded(tmp_path, monkeypatch):
    """Only the kept rows, resized, are held: never the whole image array."""
    counts = {"train": (2, 2, 60, 0), "val": (1, 1, 0, 0), "test": (1, 1, 0, 0)}
    path = write_chestmnist(tmp_path / "chestmnist_224.npz", size=224, counts=counts)
    monkeypatch.setattr(C, "CHUNK_ROWS", 8)
    seen = []
    real = C.resize_batch_to_square
    monkeypatch.setattr(C, "resize_batch_to_square", lambda x, s: seen.append(len(x)) or real(x, s))
    bundle = C.load_chestmnist(path, image_size=64)
    assert sum(seen) == 8 and max(seen) <= 8 and bundle.train.images.shape == (4, 1, 64, 64)


def test_bad_files_are_clear_errors(tmp_path):
    with pytest.raises(DataError, match="ChestMNIST file not found"):
        C.load_chestmnist(str(tmp_path / "chestmnist.npz"))
    wrong = write_pneumoniamnist(tmp_path / "chestmnist_wrong.npz")  # 1 label column, not 14
    with pytest.raises(DataError, match="14 columns"):
        C.load_chestmnist(wrong)
    (tmp_path / "chestmnist_broken.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="cannot read"):
        C.load_chestmnist(str(tmp_path / "chestmnist_broken.npz"))


def test_binary_groups():
    groups = C.binary_groups(chest_labels(1, 1, 1, 1))
    assert groups.tolist() == [1, 1, 0, -1]
    assert torch.tensor(groups).dtype == torch.int64


def test_real_mismatch_preset_trains_pediatric_and_tests_adult(tmp_path, monkeypatch):
    from explore.training.presets import PRESETS

    preset = PRESETS["real_mismatch"]
    assert preset.own_data
    config = preset.configs(quick=True)[0]
    assert "pneumoniamnist" in config.data.source and "chestmnist" in config.data.test_source
    assert config.model == "hw3_cnn" and config.data.image_size == 64
    # With the files where the preset looks (here: a temporary home), the data loads as the pair.
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / ".medmnist").mkdir()
    write_pneumoniamnist(tmp_path / ".medmnist" / "pneumoniamnist_128.npz", size=128)
    write_chestmnist(tmp_path / ".medmnist" / "chestmnist_128.npz", size=128)
    bundle = load_bundle(config.data)
    assert bundle.counts()["test"] == {"NORMAL": 3, "PNEUMONIA": 2} and bundle.image_size == 64


def test_real_pair_status_fetch_offline_and_checksum(tmp_path, monkeypatch):
    from explore.data import real_pair as R

    assert R.medmnist_size(64) == 64 and R.medmnist_size(100) == 128 and R.medmnist_size(256) == 224
    status = R.pair_status(128, root=str(tmp_path))
    assert [row["file"] for row in status] == [str(tmp_path / "pneumoniamnist_128.npz"),
                                               str(tmp_path / "chestmnist_128.npz")]
    assert not any(row["present"] for row in status) and all(row["licence"] and row["cite"] for row in status)
    monkeypatch.setattr(R, "can_fetch", lambda: False)
    with pytest.raises(DataError, match="chestmnist_128.npz there by hand"):
        R.fetch_pair(128, root=str(tmp_path))
    path = tmp_path / "x.npz"
    path.write_bytes(b"abc")
    R.check_md5(str(path), "900150983cd24fb0d6963f7d28e17f72")  # md5("abc")
    with pytest.raises(DataError, match="checksum"):
        R.check_md5(str(path), "0" * 32)
    spec = R.pair_spec(100, root=str(tmp_path))
    assert spec.source.endswith("pneumoniamnist_128.npz") and spec.test_source.endswith("chestmnist_128.npz")


def test_data_page_real_data_card(tmp_path, monkeypatch):
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("EXPLORE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("EXPLORE_RUNS_DIR", str(tmp_path / "runs"))
    page = str(Path(__file__).resolve().parents[1] / "pages/data.py")
    small = DataSpec(image_size=64, synthetic=(("n_train", 24), ("n_val", 12), ("n_test", 12)))
    at = AppTest.from_file(page, default_timeout=120)
    at.session_state["data_spec"] = small
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.button(key="real_use").disabled
    assert any("pneumoniamnist_64.npz" in i.value and "chestmnist_64.npz" in i.value for i in at.info)

    (tmp_path / ".medmnist").mkdir()
    write_pneumoniamnist(tmp_path / ".medmnist" / "pneumoniamnist_64.npz", size=64)
    write_chestmnist(tmp_path / ".medmnist" / "chestmnist_64.npz", size=64)
    at.run()
    at.button(key="real_use").click()
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    spec = at.session_state["data_spec"]
    assert spec.source.endswith("pneumoniamnist_64.npz") and spec.test_source.endswith("chestmnist_64.npz")
