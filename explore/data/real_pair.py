"""The one-click real mismatch: PneumoniaMNIST (children, Guangzhou) → ChestMNIST (adults, NIH).

Both are MedMNIST npz files. `pair_status` says which files are where (and exactly what to put
where when offline); `fetch_pair` downloads the missing ones with the `medmnist` package and
checks each against the MD5 the package publishes; `pair_spec` is the DataSpec that trains
on the first and tests on the second. The Data page's "Real data" card shows all of it.
"""
from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass

from . import DataSpec
from .bundle import DataError

DEFAULT_ROOT = "~/.medmnist"
MEDMNIST_SIZES = (28, 64, 128, 224)


@dataclass(frozen=True)
class PublicSet:
    flag: str          # MedMNIST's name, and its class name in the package
    class_name: str
    role: str
    origin: str
    licence: str
    cite: str

    def file_name(self, size: int) -> str:
        return f"{self.flag}.npz" if size == 28 else f"{self.flag}_{size}.npz"


PAIR = (
    PublicSet("pneumoniamnist", "PneumoniaMNIST", "train / val",
              "Guangzhou Women and Children's Medical Center: 5,856 pediatric chest X-rays (ages 1–5), "
              "NORMAL vs PNEUMONIA; the Kaggle 'chest_xray' set, centre-cropped and shrunk",
              "CC BY 4.0 (MedMNIST); the source images CC BY 4.0 (Kermany et al.)",
              "Yang et al., MedMNIST v2, Scientific Data 2023; Kermany et al., Cell 2018"),
    PublicSet("chestmnist", "ChestMNIST", "test",
              "NIH Clinical Center: 112,120 adult chest X-rays with 14 finding labels (ChestX-ray14), shrunk; "
              "used as PNEUMONIA (label 6) vs no finding",
              "CC BY 4.0 (MedMNIST); NIH ChestX-ray14 is public domain (cite it)",
              "Yang et al., MedMNIST v2, Scientific Data 2023; Wang et al., ChestX-ray8, CVPR 2017"),
)


def medmnist_size(image_size: int) -> int:
    """The smallest MedMNIST size at least image_size (no upscaling of detail that is not there)."""
    return next((s for s in MEDMNIST_SIZES if s >= image_size), MEDMNIST_SIZES[-1])


def pair_paths(size: int, root: str = DEFAULT_ROOT) -> dict[str, str]:
    folder = os.path.abspath(os.path.expanduser(root))
    return {dataset.flag: os.path.join(folder, dataset.file_name(size)) for dataset in PAIR}


def pair_status(size: int, root: str = DEFAULT_ROOT) -> list[dict]:
    """Per dataset: role, file, whether it is there, origin, licence and citation."""
    paths = pair_paths(size, root)
    return [{"dataset": d.class_name, "role": d.role, "file": paths[d.flag], "present": os.path.isfile(paths[d.flag]),
             "origin": d.origin, "licence": d.licence, "cite": d.cite} for d in PAIR]


def pair_spec(image_size: int, root: str = DEFAULT_ROOT) -> DataSpec:
    paths = pair_paths(medmnist_size(image_size), root)
    return DataSpec(source=f"medmnist:{paths['pneumoniamnist']}", test_source=f"medmnist:{paths['chestmnist']}",
                    image_size=image_size)


def can_fetch() -> bool:
    """True when the medmnist package is installed (the network may still be unreachable)."""
    import importlib.util

    return importlib.util.find_spec("medmnist") is not None


def fetch_pair(size: int, root: str = DEFAULT_ROOT, progress: Callable[[int, int, str], None] | None = None) -> list[str]:
    """Download the missing files with medmnist and check their MD5; returns the paths.

    progress(done, total, message) after each step. Any failure is a DataError that says
    where to put the files by hand.
    """
    if size not in MEDMNIST_SIZES:
        raise DataError(f"MedMNIST size must be one of {MEDMNIST_SIZES}, got {size}")
    paths = pair_paths(size, root)
    if not can_fetch():
        raise DataError("offline or `medmnist` not installed: `pip install medmnist` with network access, or put "
                        + " and ".join(paths.values()) + " there by hand")
    import medmnist

    os.makedirs(os.path.dirname(paths["chestmnist"]), exist_ok=True)
    for done, dataset in enumerate(PAIR):
        target = paths[dataset.flag]
        if progress:
            progress(done, len(PAIR), f"{dataset.class_name}: {os.path.basename(target)}")
        if not os.path.isfile(target):
            try:
                getattr(medmnist, dataset.class_name)(split="test", download=True, root=os.path.dirname(target),
                                                      size=size)
            except Exception as error:  # no network, server down, checksum mismatch inside medmnist
                raise DataError(f"download of {os.path.basename(target)} failed ({error}); put the file at "
                                f"{target}") from None
        check_md5(target, expected_md5(dataset.flag, size))
    if progress:
        progress(len(PAIR), len(PAIR), "done")
    return list(paths.values())


def expected_md5(flag: str, size: int) -> str | None:
    """The MD5 medmnist publishes for this file (its INFO table), or None if it has none."""
    try:
        from medmnist.info import INFO
    except ImportError:
        return None
    info = INFO.get(flag, {})
    return info.get("MD5" if size == 28 else f"MD5_{size}")


def check_md5(path: str, expected: str | None) -> None:
    if not expected:
        return
    digest = hashlib.md5()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    if digest.hexdigest() != expected:
        raise DataError(f"{path} does not match medmnist's checksum (MD5 {digest.hexdigest()} ≠ {expected}): "
                        "the download is incomplete or the file is another version; delete it and fetch again")
