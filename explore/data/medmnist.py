"""PneumoniaMNIST (MedMNIST v2/v3) from its published .npz file.

The npz holds train/val/test images (N×H×W uint8, H = 28, 64, 128 or 224) and labels (N×1,
0 = normal, 1 = pneumonia). They are the Kaggle pediatric chest X-rays, centre-cropped and
shrunk, with MedMNIST's own split. The file is read with `allow_pickle=False`: an npz can
otherwise carry pickled Python objects, and unpickling runs code.

MedMNIST names its files `pneumoniamnist.npz` (28 px) and `pneumoniamnist_SIZE.npz`
(64/128/224 px) and keeps them in ~/.medmnist/. `download_medmnist()` fetches one with the
`medmnist` package when it is installed and the network is reachable.
"""
from __future__ import annotations

import os
import re
import zipfile

import numpy as np
import torch

from .bundle import SPLITS, DataBundle, DataError, Split
from .decode import resize_batch_to_square

CLASSES = ("NORMAL", "PNEUMONIA")
MEDMNIST_SIZES = (28, 64, 128, 224)
DEFAULT_ROOT = "~/.medmnist"
FLAG = "pneumoniamnist"

# Resize this many images at a time: bounded memory even for 224 px originals.
_RESIZE_CHUNK = 512


def medmnist_file_name(size: int = 28) -> str:
    """MedMNIST's own file name: pneumoniamnist.npz for 28 px, pneumoniamnist_128.npz etc."""
    return f"{FLAG}.npz" if size == 28 else f"{FLAG}_{size}.npz"


def load_medmnist(npz_path: str, image_size: int = 128) -> DataBundle:
    """Load a PneumoniaMNIST npz (or the best one in a folder) and resize to image_size."""
    path = resolve_npz(npz_path, image_size)
    arrays = _read_npz(path)
    site = f"medmnist:{os.path.basename(path)}"
    splits = {name: _make_split(name, arrays, image_size, site, path) for name in SPLITS}
    native = splits["train"].original_sizes[0].tolist() if len(splits["train"]) else ["?", "?"]
    return DataBundle(
        source=f"medmnist:{npz_path}",
        image_size=image_size,
        classes=CLASSES,
        splits=splits,
        description=f"PneumoniaMNIST {path} ({native[0]}×{native[1]} px, MedMNIST's own split)",
    )


def resolve_npz(npz_path: str, image_size: int = 128) -> str:
    """The npz file to read. A folder (e.g. ~/.medmnist) picks the smallest PneumoniaMNIST
    file at least image_size wide (upscaling a 28 px image adds no detail), else the largest."""
    path = os.path.abspath(os.path.expanduser(npz_path))
    if os.path.isdir(path):
        return _best_file_in(path, image_size)
    if not os.path.exists(path):
        raise DataError(_missing_message(path))
    return path


def _best_file_in(folder: str, image_size: int) -> str:
    available = {}
    for name in os.listdir(folder):
        match = re.fullmatch(rf"{FLAG}(?:_(\d+))?\.npz", name)
        if match:
            available[int(match.group(1) or 28)] = os.path.join(folder, name)
    if not available:
        raise DataError(_missing_message(os.path.join(folder, medmnist_file_name(28))))
    big_enough = [size for size in available if size >= image_size]
    return available[min(big_enough) if big_enough else max(available)]


def _missing_message(path: str) -> str:
    return (
        f"MedMNIST file not found: {path}. Put PneumoniaMNIST's npz there "
        f"({medmnist_file_name(28)} for 28 px, {medmnist_file_name(128)} for 128 px; MedMNIST keeps "
        f"them in {DEFAULT_ROOT}/), or with network access run `pip install medmnist` and "
        f"download it (explore.data.medmnist.download_medmnist)"
    )


def _read_npz(path: str) -> dict[str, np.ndarray]:
    """All six arrays, checked; any problem is a DataError naming the file."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [f"{s}_{kind}" for s in SPLITS for kind in ("images", "labels") if f"{s}_{kind}" not in npz]
            if missing:
                raise DataError(f"{path} is not a MedMNIST npz: missing arrays {missing}")
            arrays = {f"{s}_{kind}": npz[f"{s}_{kind}"] for s in SPLITS for kind in ("images", "labels")}
    except (OSError, ValueError, zipfile.BadZipFile) as error:
        raise DataError(f"cannot read {path} as an npz file: {error}") from None
    for split in SPLITS:
        _check_arrays(path, split, arrays[f"{split}_images"], arrays[f"{split}_labels"])
    return arrays


def _check_arrays(path: str, split: str, images: np.ndarray, labels: np.ndarray) -> None:
    grey = images.ndim == 3 or (images.ndim == 4 and images.shape[-1] == 1)
    if not grey or images.dtype != np.uint8:
        raise DataError(f"{path}: {split}_images must be uint8 N×H×W grey images, got "
                        f"{images.dtype} {images.shape} (is this PneumoniaMNIST?)")
    labels = labels.reshape(len(labels), -1) if labels.size else labels.reshape(0, 1)
    if labels.shape != (len(images), 1) or not np.isin(labels, (0, 1)).all():
        raise DataError(f"{path}: {split}_labels must be N×1 with values 0/1 and match the "
                        f"{len(images)} images, got {labels.shape} (is this PneumoniaMNIST?)")


def _make_split(split: str, arrays: dict[str, np.ndarray], image_size: int, site: str, path: str) -> Split:
    images = arrays[f"{split}_images"]
    images = images.reshape(images.shape[:3])  # N×H×W×1 -> N×H×W
    count, height, width = images.shape
    resized = [
        resize_batch_to_square(torch.from_numpy(images[start:start + _RESIZE_CHUNK])[:, None].float() / 255, image_size)
        for start in range(0, count, _RESIZE_CHUNK)
    ]
    return Split(
        images=torch.cat(resized) if resized else torch.zeros(0, 1, image_size, image_size, dtype=torch.uint8),
        labels=torch.from_numpy(arrays[f"{split}_labels"].reshape(-1).astype(np.int64)),
        sites=(site,) * count,
        ids=tuple(f"{os.path.basename(path)}/{split}/{i}" for i in range(count)),
        original_sizes=torch.tensor([[width, height]], dtype=torch.long).repeat(count, 1),
    )


def download_medmnist(size: int = 28, root: str = DEFAULT_ROOT) -> str:
    """Fetch PneumoniaMNIST at `size` px into `root` with the medmnist package; returns the path.

    Needs `pip install medmnist` and network access; otherwise raises DataError saying where
    to put a copy of the file by hand.
    """
    if size not in MEDMNIST_SIZES:
        raise DataError(f"MedMNIST size must be one of {MEDMNIST_SIZES}, got {size}")
    root = os.path.abspath(os.path.expanduser(root))
    target = os.path.join(root, medmnist_file_name(size))
    if os.path.exists(target):
        return target
    try:
        from medmnist import PneumoniaMNIST
    except ImportError:
        raise DataError(f"offline / medmnist not installed: run `pip install medmnist` with network "
                        f"access, or put the file at {target}") from None
    try:
        os.makedirs(root, exist_ok=True)
        PneumoniaMNIST(split="train", download=True, root=root, size=size)
    except Exception as error:  # no network, server down, checksum mismatch, ...
        raise DataError(f"download of {medmnist_file_name(size)} failed ({error}); put the file at {target}") from None
    if not os.path.exists(target):
        raise DataError(f"medmnist did not create {target}; put the file there by hand")
    return target
