"""Numbers behind the Data page: plain functions of a DataBundle returning DataFrames/tensors.

No plotting here: the page draws these tables, and tests and the CLI can check them.
Large bundles are processed in chunks so a 6000-image set at 224 px never needs a float copy
of the whole dataset.
"""
from __future__ import annotations

import os

import pandas as pd
import torch

from .bundle import DataBundle, DataError

_CHUNK = 1024  # images per step when summing pixels


def class_counts(bundle: DataBundle) -> pd.DataFrame:
    """One row per (split, class) with the number of images, zeros included."""
    rows = [
        {"split": split, "class": cls, "count": count}
        for split, per_class in bundle.counts().items()
        for cls, count in per_class.items()
    ]
    return pd.DataFrame(rows, columns=["split", "class", "count"])


def intensity_histograms(bundle: DataBundle, bins: int = 64) -> pd.DataFrame:
    """Grey-level histogram per (split, site).

    intensity_bin: the bin's lower edge in grey levels 0..255.
    density: the share of that group's pixels falling in the bin (sums to 1 per group), so
    groups of different sizes can be drawn on the same axes. A shift between sites (another
    scanner, another exposure) shows up here before any model is trained.
    """
    if not 1 <= bins <= 256:
        raise ValueError(f"bins must be between 1 and 256, got {bins}")
    rows = []
    for split_name, split in bundle.splits.items():
        for site in sorted(set(split.sites)):
            index = [i for i, s in enumerate(split.sites) if s == site]
            images = split.images if len(index) == len(split) else split.images[index]  # no copy if one site
            counts = _pixel_histogram(images, bins)
            density = counts / counts.sum()
            rows += [
                {"split": split_name, "site": site, "intensity_bin": b * 256 // bins, "density": float(d)}
                for b, d in enumerate(density)
            ]
    return pd.DataFrame(rows, columns=["split", "site", "intensity_bin", "density"])


def _pixel_histogram(images: torch.Tensor, bins: int) -> torch.Tensor:
    counts = torch.zeros(bins, dtype=torch.float64)
    for start in range(0, len(images), _CHUNK):
        bin_index = images[start:start + _CHUNK].flatten().long() * bins // 256
        counts += torch.bincount(bin_index, minlength=bins).double()
    return counts


def original_size_table(bundle: DataBundle) -> pd.DataFrame:
    """One row per image: its split, class and (width, height, aspect = width / height)
    before resizing. Resizing to a square stretches every image whose aspect is not 1."""
    rows = []
    for split_name, split in bundle.splits.items():
        for label, (width, height) in zip(split.labels.tolist(), split.original_sizes.tolist()):
            rows.append({"split": split_name, "class": bundle.classes[label], "width": width,
                         "height": height, "aspect": width / height if height else float("nan")})
    return pd.DataFrame(rows, columns=["split", "class", "width", "height", "aspect"])


def mean_images(bundle: DataBundle) -> dict[str, torch.Tensor]:
    """{split: float H×W mean image in 0..1}; empty splits are left out.

    The mean image shows what every image of a split has in common: text markers, borders,
    the typical position of the lungs.
    """
    means = {}
    for split_name, split in bundle.splits.items():
        if len(split):
            total = torch.zeros(split.images.shape[-2:], dtype=torch.float64)
            for start in range(0, len(split), _CHUNK):
                total += split.images[start:start + _CHUNK, 0].double().sum(dim=0)
            means[split_name] = (total / len(split) / 255).float()
    return means


def mean_image_difference(bundle: DataBundle, a: str = "val", b: str = "test") -> torch.Tensor:
    """mean image of split a minus that of split b (float H×W, -1..1): where two sources differ."""
    means = mean_images(bundle)
    missing = [name for name in (a, b) if name not in means]
    if missing:
        raise DataError(f"split(s) {missing} have no images, so there is no mean image to compare")
    return means[a] - means[b]


def sample_grid(bundle: DataBundle, split: str, per_class: int = 8, seed: int = 0) -> list[tuple[int, str, str, str]]:
    """Up to per_class random images of each class from one split, class by class, as
    (index in the split, class, site, id); the same seed always picks the same images."""
    data = bundle.splits[split]
    generator = torch.Generator().manual_seed(seed)
    picks = []
    for label, cls in enumerate(bundle.classes):
        members = torch.nonzero(data.labels == label).flatten()
        chosen = members[torch.randperm(len(members), generator=generator)[:per_class]].sort().values
        picks += [(i, cls, data.sites[i], data.ids[i]) for i in chosen.tolist()]
    return picks


def sample_rows(bundle: DataBundle, split: str, per_class: int = 8, seed: int = 0) -> dict[str, list[tuple]]:
    """`sample_grid` grouped by class (every class a key, possibly with no images), for one row per class."""
    picks = sample_grid(bundle, split, per_class, seed)
    return {cls: [p for p in picks if p[1] == cls] for cls in bundle.classes}


def image_facts(bundle: DataBundle, split: str, index: int) -> dict:
    """What the enlarged view says about one image: class, site, id, original and shown size."""
    data = bundle.splits[split]
    width, height = data.original_sizes[index].tolist()
    return {"class": bundle.classes[int(data.labels[index])], "split": split, "site": data.sites[index],
            "id": data.ids[index], "original": f"{width} × {height} px",
            "shown": f"{bundle.image_size} × {bundle.image_size} px"}


def skipped_table(bundle: DataBundle) -> pd.DataFrame:
    """The files that were not used, and why; paths inside the dataset's folder are shown from it
    (NORMAL/notes.png rather than a long server path)."""
    paths = [s.path for s in bundle.skipped]
    if len(paths) > 0:
        try:
            common = os.path.commonpath([os.path.dirname(p) for p in paths] + [_folder_of(bundle.source)])
        except ValueError:  # mixed absolute/relative paths, or another drive
            common = ""
        if common and common != os.sep:
            paths = [os.path.relpath(p, common) for p in paths]
    return pd.DataFrame({"file": paths, "reason": [s.reason for s in bundle.skipped]}, columns=["file", "reason"])


def _folder_of(source: str) -> str:
    """The folder of a 'folder:PATH' source (else the filesystem root: no common prefix)."""
    return os.path.abspath(source.split(":", 1)[1]) if source.startswith("folder:") else os.sep
