"""Data sources, all ending in one cached `DataBundle`.

Source strings (the same in the UI, the CLI and RunConfig):
  "synthetic"            the built-in two-site chest X-ray set (site A: train/val, site B: test)
  "folder:PATH"          PATH/{train,val,test}/CLASS/* or PATH/CLASS/* (split by seed)
  "medmnist:FILE.npz"    a MedMNIST PneumoniaMNIST npz, or ChestMNIST (chestmnist*.npz: NIH
                         adults, label 6 = PNEUMONIA, no finding = NORMAL; see data/chestmnist.py)
  "xrv:NAME:IMAGE_DIR"   a public set as downloaded (nih, rsna, padchest, chexpert), labels
                         from torchxrayvision's CSVs; split by patient (see data/xrv.py)
  "memory:NAME"          a bundle already decoded in this process and named by `register_bundle`
                         (notebooks and tests: a run, the job manager's threads and the analysis
                         code load it like any other source; worker processes do not see it)

`load_bundle(spec)` is the one entry point; with `spec.test_source` set, train/val come
from `spec.source` and test from the other source (the dataset-mismatch setting).
"""
from __future__ import annotations

import functools
import json
from dataclasses import asdict, dataclass, replace

from .bundle import IMAGE_SIZES, SPLITS, DataBundle, DataError, SkippedFile, Split
from .disk_cache import load_through_disk
from .synthetic import generate_synthetic

__all__ = [
    "DataBundle", "DataError", "DataSpec", "IMAGE_SIZES", "SPLITS", "SkippedFile", "Split",
    "load_bundle", "parse_source", "register_bundle", "unregister_bundle",
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
    if kind not in ("synthetic", "folder", "medmnist", "xrv", "memory"):
        raise DataError(f"unknown data source {source!r}: use synthetic, folder:PATH, medmnist:FILE.npz, "
                        f"xrv:NAME:IMAGE_DIR or memory:NAME")
    if kind != "synthetic" and not arg:
        raise DataError(f"data source {source!r} needs a path after the colon")
    return kind, arg


def _load_one(source: str, spec: DataSpec, for_test: bool = False) -> DataBundle:
    """Load one source. As a test source, a flat PATH/CLASS/* folder gives all its images to test."""
    kind, arg = parse_source(source)
    # The file loaders import only when their source is used: they bring PIL, pydicom or pandas, which a
    # process training on the built-in synthetic set (every worker, by default) never needs to load.
    if kind == "synthetic":
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


# Bundles named by register_bundle: immutable once registered (runs copy them to the device), so sharing
# them between the threads of one process is safe, like the decoded bundles' cache.
_REGISTERED: dict[str, DataBundle] = {}


def register_bundle(name: str, bundle: DataBundle) -> DataSpec:
    """Make a decoded bundle loadable as source "memory:NAME" and return the DataSpec that names it, with
    the bundle's own image size and number of classes: a config built on it says what it trains on."""
    if not name or ":" in name:
        raise DataError(f"a registered bundle needs a name without ':'; got {name!r}")
    _REGISTERED[name] = bundle
    return DataSpec(source=f"memory:{name}", image_size=bundle.image_size, num_classes=len(bundle.classes))


def unregister_bundle(name: str) -> None:
    _REGISTERED.pop(name, None)


def load_bundle(spec: DataSpec) -> DataBundle:
    """Decode a dataset once per process; every session and run shares the (read-only) result.

    Callers must never modify the returned tensors in place (training copies them to the device).
    """
    kind, name = parse_source(spec.source)
    if kind == "memory":
        return _registered(name, spec)
    return decoded_bundle(spec)


def _registered(name: str, spec: DataSpec) -> DataBundle:
    if name not in _REGISTERED:
        raise DataError(f"no bundle is registered as {name!r} in this process (explore.data.register_bundle)")
    bundle = _REGISTERED[name]
    if bundle.image_size != spec.image_size:
        raise DataError(f"the bundle registered as {name!r} holds {bundle.image_size} px images, "
                        f"not the {spec.image_size} px the config asks for")
    return bundle


@functools.lru_cache(maxsize=4)
def decoded_bundle(spec: DataSpec) -> DataBundle:
    """A file or synthetic source decoded once per process (and once per machine, through the disk cache)."""
    if spec.image_size not in IMAGE_SIZES:
        raise DataError(f"image size {spec.image_size} is not one of {IMAGE_SIZES}")
    # Training workers are separate processes: a bundle decoded by one is read back from disk by the next.
    return load_through_disk(spec, lambda: _decode(spec))


def _decode(spec: DataSpec) -> DataBundle:
    bundle = _load_one(spec.source, spec)
    if spec.test_source and spec.test_source != spec.source:
        bundle = _mix(bundle, _load_one(spec.test_source, spec, for_test=True))
    return bundle
