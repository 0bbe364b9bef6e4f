"""Data sources, all ending in one cached `DataBundle`.

Source strings (the same in the UI, the CLI and RunConfig):
  "synthetic"            the built-in two-site chest X-ray set (site A: train/val, site B: test)
  "folder:PATH"          PATH/{train,val,test}/CLASS/* or PATH/CLASS/* (split by seed)
  "medmnist:FILE.npz"    a MedMNIST PneumoniaMNIST npz, or ChestMNIST (chestmnist*.npz: NIH
                         adults, label 6 = PNEUMONIA, no finding = NORMAL; see data/chestmnist.py)
  "xrv:NAME:IMAGE_DIR"   a public set as downloaded (nih, rsna, padchest, chexpert), labels
                         from torchxrayvision's CSVs; split by patient (see data/xrv.py)

`load_bundle(spec)` is the one entry point; with `spec.test_source` set, train/val come
from `spec.source` and test from the other source (the dataset-mismatch setting).
"""
from __future__ import annotations

import functools
import json
from dataclasses import asdict, dataclass, replace

from .bundle import IMAGE_SIZES, SPLITS, DataBundle, DataError, SkippedFile, Split
from .disk_cache import load_through_disk

__all__ = [
    "DataBundle", "DataError", "DataSpec", "IMAGE_SIZES", "SPLITS", "SkippedFile", "Split",
    "load_bundle", "parse_source",
]


@dataclass(frozen=True)
class DataSpec:
    """Everything that decides which images a run sees. Hashable, so it keys the cache."""

    source: str = "synthetic"
    image_size: int = 128
    seed: int = 0
    test_source: str | None = None
    num_classes: int = 2  # synthetic only: 2 (NORMAL/PNEUMONIA) or 3 (NORMAL/BACTERIAL/VIRAL)
    # Synthetic knob overrides as sorted (name, value) pairs, e.g. (("shortcut_fraction", 0.0),).
    synthetic: tuple[tuple[str, float], ...] = ()
    # Multi-task learning: the findings besides pneumonia as Split.findings. Synthetic: draw
    # cardiomegaly and pleural effusion; ChestMNIST / NIH: keep every image with its 14 findings.
    findings: bool = False

    def __post_init__(self):
        object.__setattr__(self, "synthetic", tuple(sorted((str(k), float(v)) for k, v in self.synthetic)))

    def with_knobs(self, **knobs: float) -> "DataSpec":
        merged = dict(self.synthetic) | knobs
        return replace(self, synthetic=tuple(merged.items()))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["synthetic"] = dict(self.synthetic)
        if not self.findings:  # off: the same dict (and cache key, stored config) as before findings existed
            del d["findings"]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "DataSpec":
        d = dict(d)
        d["synthetic"] = tuple((d.get("synthetic") or {}).items())
        return cls(**d)

    def key(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)


def parse_source(source: str) -> tuple[str, str]:
    """'folder:/data/xray' -> ('folder', '/data/xray'); 'synthetic' -> ('synthetic', '')."""
    kind, _, arg = source.partition(":")
    if kind not in ("synthetic", "folder", "medmnist", "xrv"):
        raise DataError(f"unknown data source {source!r}: use synthetic, folder:PATH, medmnist:FILE.npz "
                        f"or xrv:NAME:IMAGE_DIR")
    if kind != "synthetic" and not arg:
        raise DataError(f"data source {source!r} needs a path after the colon")
    return kind, arg


def _load_one(source: str, spec: DataSpec, for_test: bool = False) -> DataBundle:
    """Load one source. As a test source, a flat PATH/CLASS/* folder gives all its images to test."""
    kind, arg = parse_source(source)
    if kind == "synthetic":
        from .synthetic import generate_synthetic

        return generate_synthetic(image_size=spec.image_size, seed=spec.seed, num_classes=spec.num_classes,
                                  findings=spec.findings, **dict(spec.synthetic))
    if kind == "folder":
        from .folder import load_folder

        return load_folder(arg, image_size=spec.image_size, seed=spec.seed, all_as_test=for_test)
    if kind == "xrv":
        from .xrv import load_xrv

        return load_xrv(arg, image_size=spec.image_size, seed=spec.seed, all_as_test=for_test,
                        findings=spec.findings)
    from .chestmnist import is_chestmnist, load_chestmnist
    from .medmnist import load_medmnist

    if is_chestmnist(arg):  # NIH adults, 14 labels mapped to NORMAL / PNEUMONIA
        return load_chestmnist(arg, image_size=spec.image_size, all_as_test=for_test, findings=spec.findings)
    return load_medmnist(arg, image_size=spec.image_size)


def _mix(train_bundle: DataBundle, test_bundle: DataBundle) -> DataBundle:
    """Train/val from one source, test from another; classes are matched by name."""
    if train_bundle.classes != test_bundle.classes:
        raise DataError(
            f"the test source's classes {list(test_bundle.classes)} differ from the training "
            f"source's {list(train_bundle.classes)}"
        )
    splits = {"train": train_bundle.train, "val": train_bundle.val, "test": test_bundle.test}
    finding_names = train_bundle.finding_names
    if finding_names != test_bundle.finding_names:  # findings only where both sources name the same ones
        finding_names = ()
        splits = {name: replace(split, findings=None) for name, split in splits.items()}
    return DataBundle(
        source=f"{train_bundle.source} → test: {test_bundle.source}",
        image_size=train_bundle.image_size,
        classes=train_bundle.classes,
        splits=splits,
        skipped=train_bundle.skipped + test_bundle.skipped,
        selection=train_bundle.selection | test_bundle.selection,
        description=f"train/val from {train_bundle.source}; test from {test_bundle.source}",
        finding_names=finding_names,
    )


@functools.lru_cache(maxsize=4)
def load_bundle(spec: DataSpec) -> DataBundle:
    """Decode a dataset once per process; every session and run shares the (read-only) result.

    Callers must never modify the returned tensors in place (training copies them to the device).
    """
    if spec.image_size not in IMAGE_SIZES:
        raise DataError(f"image size {spec.image_size} is not one of {IMAGE_SIZES}")
    # Training workers are separate processes: a bundle decoded by one is read back from disk by the next.
    return load_through_disk(spec, lambda: _decode(spec))


def _decode(spec: DataSpec) -> DataBundle:
    bundle = _load_one(spec.source, spec)
    if spec.test_source and spec.test_source != spec.source:
        bundle = _mix(bundle, _load_one(spec.test_source, spec, for_test=True))
    return bundle
