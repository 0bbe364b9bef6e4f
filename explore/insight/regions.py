"""Where attribution falls: the share of each map inside the lungs, the lesion, the burned-in markers
(synthetic data and real sets with lesion boxes) and in geometric regions any X-ray has (centre, border,
corners); `where_attribution_falls` measures every method on a run's val and test images."""
from __future__ import annotations

import torch

from explore.data import Split
from explore.insight.attribution import METHODS, REGION_MASKS, Explainer, attribute


REGIONS = {
    "lung": "inside the lungs",
    "lesion": "on the lesion (pneumonia images only)",
    "marker": "on burned-in markers and tags",
    "centre": "central 60% × 60% of the image (the chest)",
    "border": "outer band (everything outside the centre)",
    "corners": "the four corner squares (20% × 20%), where tags and text live",
}


def geometric_regions(image_size: int) -> dict[str, torch.Tensor]:
    """Masks H×W that need no annotation: the chest centre, the border band, the corners."""
    n, edge = image_size, round(0.2 * image_size)
    centre = torch.zeros(n, n, dtype=torch.bool)
    centre[edge:n - edge, edge:n - edge] = True
    corners = torch.zeros(n, n, dtype=torch.bool)
    for rows in (slice(0, edge), slice(n - edge, n)):
        for cols in (slice(0, edge), slice(n - edge, n)):
            corners[rows, cols] = True
    return {"centre": centre, "border": ~centre, "corners": corners}


def region_masks(split: Split, index: torch.Tensor | list[int]) -> dict[str, torch.Tensor]:
    """Per image N×H×W bool masks: the split's own (lung, lesion, marker) where known, plus the geometric ones."""
    index = torch.as_tensor(index, dtype=torch.long)
    size = split.images.shape[-1]
    masks = {name: split.masks[name][index, 0] for name in REGION_MASKS if name in split.masks}
    for name, mask in geometric_regions(size).items():
        masks[name] = mask.expand(len(index), size, size)
    return masks


def attribution_shares(maps: torch.Tensor, masks: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Share of each image's positive attribution inside each mask: N values per region, NaN where undefined.

    Undefined: the mask is empty for that image (a NORMAL image has no lesion), or the map has
    no positive part. Compare a share with the region's area share: attribution spread
    evenly would give share = area.
    """
    positive = maps.clamp_min(0).double()
    total = positive.flatten(1).sum(1)
    shares = {}
    for name, mask in masks.items():
        inside = (positive * mask.double()).flatten(1).sum(1)
        share = inside / total.clamp_min(1e-30)
        undefined = (mask.flatten(1).sum(1) == 0) | (total <= 0)
        shares[name] = torch.where(undefined, torch.full_like(share, float("nan")), share).float()
    return shares


def area_shares(masks: dict[str, torch.Tensor]) -> dict[str, float]:
    """Mean area fraction of each mask over the images where it is non-empty."""
    out = {}
    for name, mask in masks.items():
        area = mask.flatten(1).float().mean(1)
        present = area > 0
        out[name] = float(area[present].mean()) if bool(present.any()) else float("nan")
    return out


def nanmean(values: torch.Tensor) -> float | None:
    values = values[~torch.isnan(values)]
    return float(values.mean()) if len(values) else None


def where_attribution_falls(explainer: Explainer, splits: dict[str, Split], methods=tuple(METHODS),
                            n_images: int = 32, target="positive", seed: int = 0) -> list[dict]:
    """Per method × split × region: mean share of positive attribution, and the region's area.

    The same `n_images` (balanced by class where possible) from each split, e.g.
    {"val": bundle.val, "test": bundle.test}.
    """
    rows = []
    for split_name, split in splits.items():
        index = balanced_sample(split.labels, n_images, seed)
        if len(index) == 0:
            continue
        masks = region_masks(split, index)
        areas = area_shares(masks)
        for method in methods:
            if method == "gradcam" and explainer.gradcam_layer is None:
                continue
            maps = attribute(explainer, split.images[index], method, target).maps
            for region, share in attribution_shares(maps, masks).items():
                mean = nanmean(share)
                rows.append({"method": method, "split": split_name, "region": region,
                             "share": mean, "area": areas[region], "n": int((~torch.isnan(share)).sum()),
                             "enrichment": (mean / areas[region]) if mean is not None and areas[region] > 0 else None})
    return rows


def balanced_sample(labels: torch.Tensor, n: int, seed: int = 0) -> torch.Tensor:
    """Up to n indices, alternating between classes, in a seeded random order."""
    g = torch.Generator().manual_seed(seed)
    per_class = [torch.nonzero(labels == c).flatten() for c in torch.unique(labels).tolist()]
    per_class = [idx[torch.randperm(len(idx), generator=g)] for idx in per_class]
    picked = []
    for i in range(max((len(idx) for idx in per_class), default=0)):
        for idx in per_class:
            if i < len(idx) and len(picked) < n:
                picked.append(int(idx[i]))
    return torch.tensor(sorted(picked), dtype=torch.long)
