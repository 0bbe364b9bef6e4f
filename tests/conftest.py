"""Shared fixtures: tiny datasets built in memory, so most tests need no generator or files."""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
# One thread per process in tests: the tiny test models run faster on one thread than on two, and
# the browser tests run a Streamlit server beside pytest on the same two cores.
os.environ.setdefault("EXPLORE_THREADS", "1")
torch.set_num_threads(int(os.environ["EXPLORE_THREADS"]))

from explore.data import DataBundle, Split  # noqa: E402


def make_split(n: int, size: int, site: str, seed: int, num_classes: int = 2, brightness_shift: int = 0) -> Split:
    """Class k images carry a bright blob whose size grows with k: learnable in one epoch."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % num_classes
    images = (torch.rand(n, 1, size, size, generator=g) * 60 + 40 + brightness_shift)
    half, r = size // 2, size // 8
    for k in range(1, num_classes):
        images[labels == k, :, half - r * k:half + r * k, half - r:half + r] += 120
    images = images.clamp(0, 255).to(torch.uint8)
    lesion = torch.zeros(n, 1, size, size, dtype=torch.bool)
    lesion[labels > 0, :, half - r:half + r, half - r:half + r] = True
    return Split(
        images=images, labels=labels,
        sites=(site,) * n, ids=tuple(f"tiny/{site}/{i}" for i in range(n)),
        original_sizes=torch.full((n, 2), size, dtype=torch.long),
        masks={"lesion": lesion, "lung": torch.ones_like(lesion), "marker": torch.zeros_like(lesion)},
    )


def make_bundle(size: int = 32, n_train: int = 64, n_val: int = 32, n_test: int = 32, num_classes: int = 2) -> DataBundle:
    classes = ("NORMAL", "PNEUMONIA") if num_classes == 2 else ("NORMAL", "BACTERIAL", "VIRAL")
    return DataBundle(
        source="tiny", image_size=size, classes=classes,
        splits={
            "train": make_split(n_train, size, "A", 1, num_classes),
            "val": make_split(n_val, size, "A", 2, num_classes),
            "test": make_split(n_test, size, "B", 3, num_classes, brightness_shift=30),
        },
    )


@pytest.fixture
def tiny_bundle() -> DataBundle:
    return make_bundle()


@pytest.fixture
def runs_dir(tmp_path) -> Path:
    path = tmp_path / "runs"
    path.mkdir()
    return path


@pytest.fixture
def make_npz_dataset(tmp_path) -> Path:
    """A small MedMNIST-format npz (28 px) with a learnable difference between classes."""
    import numpy as np

    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 64), ("val", 32), ("test", 32)):
        labels = (np.arange(n) % 2).reshape(n, 1)
        images = rng.integers(30, 90, size=(n, 28, 28)).astype(np.uint8)
        images[labels[:, 0] == 1, 10:18, 10:18] = 220
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = images, labels
    path = tmp_path / "pneumoniamnist.npz"
    np.savez(path, **arrays)
    return path


def wait_for(predicate, timeout: float = 120.0):
    """Poll `predicate` until it returns something truthy (and return that), or fail after `timeout` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.05)
    raise AssertionError("timed out")


@pytest.fixture
def register_data(request):
    """`register_data(bundle)` → the DataSpec of that bundle (source "memory:NAME", its own image size and
    classes), for configs that should train on it through the real load_bundle; unregistered after the test."""
    from explore.data import register_bundle, unregister_bundle

    names = []

    def register(bundle, name: str | None = None):
        name = name or f"{request.node.name}-{len(names)}".replace(":", "_")
        names.append(name)
        return register_bundle(name, bundle)

    yield register
    for name in names:
        unregister_bundle(name)


@pytest.fixture
def one_thread_fresh_features(monkeypatch):
    """One thread (on a busy shared CPU two spinning OpenMP threads make small transfer models many times
    slower) and an empty in-memory feature cache before and after the test."""
    from explore.training import transfer

    monkeypatch.setenv("EXPLORE_THREADS", "1")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    transfer.FEATURE_CACHE.clear()
    yield
    transfer.FEATURE_CACHE.clear()
    torch.set_num_threads(threads)
