"""The in-memory dataset every page, the CLI and the training loop share.

Every source (synthetic, an image folder, a MedMNIST npz, an upload) ends up as one
`DataBundle`: per split a uint8 tensor N×1×H×W decoded once, integer labels and
per-image metadata. Nothing after loading touches the disk again.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .metadata import metadata_summary

SPLITS = ("train", "val", "test")
IMAGE_SIZES = (64, 128, 224, 256)


@dataclass(frozen=True)
class SkippedFile:
    """A file that could not be used, and why (shown to the user, never silently dropped)."""

    path: str
    reason: str


@dataclass(frozen=True, eq=False)
class Split:
    """One split of a dataset: images and labels plus what is known about each image.

    images:         uint8 tensor N×1×H×W (grey, 0..255), on the CPU.
    labels:         int64 tensor N (index into DataBundle.classes).
    sites:          per image, the source/site it came from ("A", "B", "folder:/x", ...).
    ids:            per image, the file path or synthetic id.
    original_sizes: int64 tensor N×2, (width, height) before resizing.
    masks:          optional bool tensors N×1×H×W keyed by name ("lung", "lesion", "marker");
                    the synthetic source knows them, real sets with lesion boxes give "lesion".
    metadata:       optional per-image columns keyed by name ("patient", "view", "age", "sex",
                    "dataset"), each a tuple with one entry per image (None where unknown);
                    the public X-ray sets (explore/data/xrv.py) fill it.
    findings:       optional float tensor N×K, one column per DataBundle.finding_names: 1 present,
                    0 absent, NaN unknown (not read). Several can be 1 on one image (multi-task
                    learning, explore/training/multilabel.py); `labels` stays the pneumonia class label.
    """

    images: torch.Tensor
    labels: torch.Tensor
    sites: tuple[str, ...]
    ids: tuple[str, ...]
    original_sizes: torch.Tensor
    masks: dict[str, torch.Tensor] = field(default_factory=dict)
    metadata: dict[str, tuple] = field(default_factory=dict)
    findings: torch.Tensor | None = None

    def __post_init__(self):
        n = self.images.shape[0]
        if self.images.dtype != torch.uint8 or self.images.ndim != 4 or self.images.shape[1] != 1:
            raise ValueError(f"images must be uint8 N×1×H×W, got {self.images.dtype} {tuple(self.images.shape)}")
        if not (len(self.labels) == len(self.sites) == len(self.ids) == len(self.original_sizes) == n):
            raise ValueError("images, labels, sites, ids and original_sizes must have the same length")
        for name, mask in self.masks.items():
            if mask.shape != self.images.shape:
                raise ValueError(f"mask {name!r} has shape {tuple(mask.shape)}, images {tuple(self.images.shape)}")
        for name, column in self.metadata.items():
            if len(column) != n:
                raise ValueError(f"metadata {name!r} has {len(column)} entries for {n} images")
        if self.findings is not None and (self.findings.ndim != 2 or self.findings.shape[0] != n
                                          or not self.findings.is_floating_point()):
            raise ValueError(f"findings must be a float N×K tensor for {n} images, "
                             f"got {self.findings.dtype} {tuple(self.findings.shape)}")

    def __len__(self) -> int:
        return self.images.shape[0]

    def subset(self, index: torch.Tensor | list[int]) -> "Split":
        """The images at `index`, with their metadata (used for train-dev hold-outs and previews)."""
        index = torch.as_tensor(index, dtype=torch.long)
        pick = index.tolist()
        return Split(
            images=self.images[index],
            labels=self.labels[index],
            sites=tuple(self.sites[i] for i in pick),
            ids=tuple(self.ids[i] for i in pick),
            original_sizes=self.original_sizes[index],
            masks={k: v[index] for k, v in self.masks.items()},
            metadata={k: tuple(v[i] for i in pick) for k, v in self.metadata.items()},
            findings=None if self.findings is None else self.findings[index],
        )


@dataclass(frozen=True, eq=False)
class DataBundle:
    """A whole dataset: train/val/test splits, class names and the files skipped while loading."""

    source: str
    image_size: int
    classes: tuple[str, ...]
    splits: dict[str, Split]
    skipped: tuple[SkippedFile, ...] = ()
    description: str = ""
    # How a labelled public set was turned into this bundle, keyed by source: rows in the labels
    # CSV, rows whose file is missing, images left out (other findings, uncertain, lateral).
    selection: dict[str, dict] = field(default_factory=dict)
    # Names of the columns of every split's `findings` (empty: the set has no multi-label findings).
    finding_names: tuple[str, ...] = ()

    def __post_init__(self):
        for name, split in self.splits.items():
            width = 0 if split.findings is None else split.findings.shape[1]
            if width != len(self.finding_names):
                raise ValueError(f"split {name!r} has {width} finding columns for finding_names "
                                 f"{list(self.finding_names)}")

    @property
    def train(self) -> Split:
        return self.splits["train"]

    @property
    def val(self) -> Split:
        return self.splits["val"]

    @property
    def test(self) -> Split:
        return self.splits["test"]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def counts(self) -> dict[str, dict[str, int]]:
        """{"train": {CLASS: count}, "val": {...}, "test": {...}}"""
        out = {}
        for name, split in self.splits.items():
            per_class = torch.bincount(split.labels, minlength=self.num_classes).tolist()
            out[name] = {cls: int(c) for cls, c in zip(self.classes, per_class)}
        return out

    def original_size_summary(self) -> dict[str, dict[str, float]]:
        """Per class: min/median/max original width and height over all splits."""
        summary = {}
        for index, cls in enumerate(self.classes):
            sizes = [s.original_sizes[s.labels == index] for s in self.splits.values()]
            sizes = torch.cat(sizes).float() if sizes else torch.zeros(0, 2)
            if len(sizes) == 0:
                continue
            w, h = sizes[:, 0], sizes[:, 1]
            summary[cls] = {
                "count": int(len(sizes)),
                "width_min": float(w.min()), "width_median": float(w.median()), "width_max": float(w.max()),
                "height_min": float(h.min()), "height_median": float(h.median()), "height_max": float(h.max()),
            }
        return summary

    def to_json(self) -> dict:
        """The summary the CLI prints (`python -m explore data --json`)."""
        return {
            "source": self.source,
            "image_size": self.image_size,
            "classes": list(self.classes),
            "splits": self.counts(),
            "skipped": [{"path": s.path, "reason": s.reason} for s in self.skipped],
            "original_sizes": self.original_size_summary(),
        } | self._real_data_json() | self._findings_json()

    def _findings_json(self) -> dict:
        """Multi-label findings: per split, the images with each finding (unknown labels not counted)."""
        if not self.finding_names:
            return {}
        return {"finding_names": list(self.finding_names),
                "findings": {name: {f: int(torch.nan_to_num(split.findings[:, j]).sum())
                                    for j, f in enumerate(self.finding_names)}
                             for name, split in self.splits.items()}}

    def _real_data_json(self) -> dict:
        """For the public X-ray sets: how images were selected and label vs view / age / sex."""
        out = {"selection": self.selection} if self.selection else {}
        summary = metadata_summary(self)
        return out | ({"metadata": summary} if summary else {})


class DataError(Exception):
    """A source that cannot be used at all (no images, one class, missing file): the message names the path."""
