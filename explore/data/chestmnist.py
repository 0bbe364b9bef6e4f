"""ChestMNIST (MedMNIST's shrunk NIH ChestX-ray14) as NORMAL vs PNEUMONIA, with bounded memory.

ChestMNIST holds all 112,120 NIH films with 14 finding labels each (N×14, 0/1). The course's
binary task uses the same rule as the full-size public sets (explore/data/xrv.py):
PNEUMONIA = label 6 (Pneumonia) present; NORMAL = all 14 labels zero ("no finding"); films
with other findings only are left out and counted.

Paired with PneumoniaMNIST (pediatric, Guangzhou) for train/val, ChestMNIST's test split is
the one-click *real* mismatch: children's X-rays from one hospital → adults' from another.

Memory: at 224 px ChestMNIST's train images alone are 3.9 GB. The labels are read first (a
few MB), the wanted rows chosen, and the image array is then streamed from the npz in chunks;
each chunk keeps only its wanted rows, resized at once to the bundle's size. As a test source
only the test split is read.

Multi-task learning (`findings=True`, DataSpec.findings): every film is kept, with its 14 labels
as Split.findings (columns FINDINGS); the class label is then pneumonia vs no pneumonia (NORMAL
means "no pneumonia", other findings allowed).
"""
from __future__ import annotations

import os
import zipfile
from dataclasses import replace

import numpy as np
import torch

from .bundle import SPLITS, DataBundle, DataError, Split
from .decode import resize_batch_to_square
from .folder import empty_split

FLAG = "chestmnist"
PNEUMONIA_LABEL = 6  # ChestMNIST's label order follows NIH's: 6 is Pneumonia
CLASSES = ("NORMAL", "PNEUMONIA")
# The 14 labels' names in ChestMNIST's column order (NIH ChestX-ray14's), lower case as task names.
FINDINGS = ("atelectasis", "cardiomegaly", "effusion", "infiltration", "mass", "nodule", "pneumonia",
            "pneumothorax", "consolidation", "edema", "emphysema", "fibrosis", "pleural_thickening", "hernia")
CHUNK_ROWS = 1024  # images streamed per step: at 224 px about 50 MB


def is_chestmnist(path: str) -> bool:
    return os.path.basename(path).lower().startswith(FLAG)


def chestmnist_file_name(size: int = 28) -> str:
    return f"{FLAG}.npz" if size == 28 else f"{FLAG}_{size}.npz"


def binary_groups(labels: np.ndarray) -> np.ndarray:
    """N×14 0/1 labels → per row 1 (PNEUMONIA), 0 (NORMAL: no finding) or -1 (other findings: left out)."""
    labels = labels.reshape(len(labels), -1)
    if labels.shape[1] != 14:
        raise DataError(f"ChestMNIST labels must have 14 columns, got {labels.shape[1]} (is this ChestMNIST?)")
    pneumonia = labels[:, PNEUMONIA_LABEL] == 1
    no_finding = ~labels.any(axis=1)
    return np.where(pneumonia, 1, np.where(no_finding, 0, -1)).astype(np.int64)


def load_chestmnist(npz_path: str, image_size: int = 128, all_as_test: bool = False,
                    findings: bool = False) -> DataBundle:
    """ChestMNIST's own splits (or only its test split as the external test set), mapped to 2 classes;
    with `findings`, every film with its 14 labels as Split.findings."""
    path = os.path.abspath(os.path.expanduser(npz_path))
    if not os.path.isfile(path):
        raise DataError(f"ChestMNIST file not found: {path}. Put MedMNIST's {chestmnist_file_name(128)} "
                        f"(or {chestmnist_file_name(28)}, _64, _224) there; MedMNIST keeps them in ~/.medmnist/")
    wanted_splits = ("test",) if all_as_test else SPLITS
    splits, left_out = {}, {}
    try:
        with zipfile.ZipFile(path) as archive:
            for name in SPLITS:
                if name not in wanted_splits:
                    splits[name] = _with_findings(empty_split(image_size), np.zeros((0, 14)), findings)
                    continue
                labels = _read_member(archive, f"{name}_labels", path)
                groups = binary_groups(labels)
                if findings:  # keep every film: pneumonia (1) or not (0)
                    groups = np.where(groups == 1, 1, 0)
                left_out[name] = int((groups < 0).sum())
                split = _read_selected(archive, name, groups, image_size, path)
                splits[name] = _with_findings(split, labels.reshape(len(labels), -1)[groups >= 0], findings)
    except (zipfile.BadZipFile, OSError, ValueError) as error:
        raise DataError(f"cannot read {path} as a MedMNIST npz: {error}") from None
    rule = ("PNEUMONIA = label 6; NORMAL = no pneumonia; all 14 labels kept as findings" if findings
            else "PNEUMONIA = label 6; NORMAL = all 14 labels 0")
    selection = {"dataset": "chestmnist", "file": path, "rule": rule, "left_out_other_findings": left_out}
    return DataBundle(
        source=f"medmnist:{npz_path}", image_size=image_size, classes=CLASSES, splits=splits,
        selection={f"medmnist:{npz_path}": selection},
        description=f"ChestMNIST {path} (NIH adults; other findings left out: {sum(left_out.values())})"
                    + ("; test split only" if all_as_test else "") + ("; 14 findings kept" if findings else ""),
        finding_names=FINDINGS if findings else (),
    )


def _with_findings(split: Split, labels: np.ndarray, findings: bool) -> Split:
    """The split with its rows' 14 labels as the findings matrix (multi-task mode), else unchanged."""
    if not findings:
        return split
    return replace(split, findings=torch.from_numpy(np.ascontiguousarray(labels, dtype=np.float32)).reshape(-1, 14))


def _member(archive: zipfile.ZipFile, key: str, path: str):
    try:
        return archive.open(f"{key}.npy")
    except KeyError:
        raise DataError(f"{path} is not a MedMNIST npz: no array {key!r}") from None


def _read_header(stream) -> tuple[tuple[int, ...], np.dtype]:
    version = np.lib.format.read_magic(stream)
    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, fortran, dtype = read(stream)
    if fortran or dtype.hasobject:  # object arrays would need unpickling: refused
        raise DataError("unexpected array layout (Fortran order or Python objects) in the npz")
    return shape, dtype


def _read_member(archive: zipfile.ZipFile, key: str, path: str) -> np.ndarray:
    with _member(archive, key, path) as stream:
        shape, dtype = _read_header(stream)
        return np.frombuffer(stream.read(), dtype=dtype).reshape(shape)


def _read_selected(archive: zipfile.ZipFile, split: str, groups: np.ndarray, image_size: int, path: str) -> Split:
    """Stream `split`_images chunk by chunk, keeping (and resizing) only rows with a class."""
    keep = np.nonzero(groups >= 0)[0]
    with _member(archive, f"{split}_images", path) as stream:
        shape, dtype = _read_header(stream)
        if dtype != np.uint8 or len(shape) not in (3, 4) or shape[0] != len(groups):
            raise DataError(f"{path}: {split}_images must be uint8 N×H×W matching the labels, got {dtype} {shape}")
        height, width = shape[1], shape[2]
        row_bytes = int(np.prod(shape[1:]))
        pieces = []
        for start in range(0, shape[0], CHUNK_ROWS):
            rows = min(CHUNK_ROWS, shape[0] - start)
            chunk = np.frombuffer(stream.read(rows * row_bytes), dtype=np.uint8).reshape(rows, height, width, -1)
            local = keep[(keep >= start) & (keep < start + rows)] - start
            if len(local):
                grey = torch.from_numpy(chunk[local, :, :, 0].copy())[:, None].float() / 255
                pieces.append(resize_batch_to_square(grey, image_size))
    if not pieces:
        return empty_split(image_size)
    count = len(keep)
    return Split(
        images=torch.cat(pieces), labels=torch.from_numpy(groups[keep].copy()),
        sites=(f"medmnist:{os.path.basename(path)}",) * count,
        ids=tuple(f"{os.path.basename(path)}/{split}/{i}" for i in keep.tolist()),
        original_sizes=torch.tensor([[width, height]], dtype=torch.long).repeat(count, 1),
    )
