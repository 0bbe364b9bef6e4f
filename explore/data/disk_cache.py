"""A disk cache of whole decoded bundles, so a fresh training worker process does not redo the decoding.

Runs train in worker processes (explore.training.jobs), and a process cannot see another's memory: without
this cache every new worker would regenerate the built-in synthetic set (about 18 s for the default
128 px set on a 2-core CPU) before its first epoch. Reading the cached tensors back takes a fraction
of a second.

Only bundles that are a pure function of their `DataSpec` (and the generator's code, whose hash is
part of the key) are cached here, i.e. the synthetic sources:
a folder's images can change on disk, and the folder loader keeps its own per-file decode cache
keyed by file size and modification time. Files live beside that cache ($EXPLORE_CACHE_DIR or
./.explore_cache), are read with `torch.load(weights_only=True)` (no code is ever unpickled), and
a missing, stale or damaged file is simply rebuilt. EXPLORE_BUNDLE_CACHE=0 turns the cache off.
"""
from __future__ import annotations

import functools
import hashlib
import io
from pathlib import Path
from typing import Callable

import torch

from explore.files import write_atomic

from .bundle import DataBundle, SkippedFile, Split
from explore.settings import bundle_cache

CACHE_VERSION = 1
KEEP_FILES = 8  # the newest bundles kept; a class uses a handful of specs, each up to a few hundred MB


def cacheable(spec) -> bool:
    """True when the bundle depends on nothing but the spec (so the cache can never go stale)."""
    sources = [spec.source] + ([spec.test_source] if spec.test_source else [])
    return bundle_cache() and all(s == "synthetic" for s in sources)


@functools.lru_cache(maxsize=1)
def generator_fingerprint() -> str:
    """A hash of the code that makes the synthetic images: edit the generator and old files no longer match."""
    here = Path(__file__).parent  # read the sources; importing them here would tie this module to the package
    code = b"".join((here / name).read_bytes() for name in ("synthetic.py", "bundle.py"))
    return hashlib.sha256(code).hexdigest()[:16]


def cache_file(spec, cache_dir: str | None = None) -> Path:
    from .folder import default_cache_dir  # the folder loader (and PIL) load only when a cache is used

    key = f"{spec.key()}|{CACHE_VERSION}|{generator_fingerprint()}"
    name = hashlib.sha256(key.encode()).hexdigest()[:24]
    return Path(cache_dir or default_cache_dir()) / f"bundle-{name}.pt"


def bundle_to_payload(bundle: DataBundle) -> dict:
    """Tensors, strings and lists only: what `torch.load(weights_only=True)` accepts."""
    return {
        "version": CACHE_VERSION, "source": bundle.source, "image_size": bundle.image_size,
        "classes": list(bundle.classes), "description": bundle.description,
        "skipped": [[s.path, s.reason] for s in bundle.skipped],
        "splits": {name: {"images": s.images, "labels": s.labels, "sites": list(s.sites), "ids": list(s.ids),
                          "original_sizes": s.original_sizes, "masks": dict(s.masks)}
                   | ({"findings": s.findings} if s.findings is not None else {})
                   for name, s in bundle.splits.items()},
        "finding_names": list(bundle.finding_names),
    }


def bundle_from_payload(payload: dict) -> DataBundle:
    splits = {name: Split(images=s["images"], labels=s["labels"], sites=tuple(s["sites"]), ids=tuple(s["ids"]),
                          original_sizes=s["original_sizes"], masks=dict(s["masks"]), findings=s.get("findings"))
              for name, s in payload["splits"].items()}
    return DataBundle(source=payload["source"], image_size=int(payload["image_size"]),
                      classes=tuple(payload["classes"]), splits=splits,
                      skipped=tuple(SkippedFile(p, r) for p, r in payload["skipped"]),
                      description=payload["description"],
                      finding_names=tuple(payload.get("finding_names", ())))


def read_bundle(path: Path) -> DataBundle | None:
    """The cached bundle, or None when the file is missing, damaged or from another version."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        if payload.get("version") != CACHE_VERSION:
            return None
        return bundle_from_payload(payload)
    except Exception:  # missing, truncated, refused by weights_only, wrong shape: rebuild it
        return None


def write_bundle(path: Path, bundle: DataBundle) -> None:
    """Atomically (temp file + rename), so a worker reading at the same moment never sees half a file."""
    buffer = io.BytesIO()
    torch.save(bundle_to_payload(bundle), buffer)
    try:
        write_atomic(path, buffer.getvalue())
        _prune(path.parent)
    except OSError:  # a read-only or full disk only costs the next process the decoding
        pass


def _prune(folder: Path) -> None:
    files = sorted(folder.glob("bundle-*.pt"), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in files[KEEP_FILES:]:
        old.unlink(missing_ok=True)


def load_through_disk(spec, decode: Callable[[], DataBundle]) -> DataBundle:
    """The bundle from the disk cache when there, else `decode()` (and store it for the next process)."""
    if not cacheable(spec):
        return decode()
    path = cache_file(spec)
    bundle = read_bundle(path)
    if bundle is None:
        bundle = decode()
        write_bundle(path, bundle)
    return bundle
