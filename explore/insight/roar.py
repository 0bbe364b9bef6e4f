"""Remove and retrain (ROAR, Hooker et al. 2019), small: does removing what a map points at hurt?

A deletion curve asks a trained model about images it never saw with holes in them, so part of
the drop may come from the holes themselves (images unlike any training image). ROAR avoids that:
remove the top-t% most-attributed pixels of EVERY image (train, val and test), train a fresh model
on what is left, and look at its test accuracy. If the map found the informative pixels, removing
them hurts more than removing the same number of random pixels.

A ROAR run is a normal run whose RunConfig names a finished source run, a method and a fraction
(`roar_from_run`, `roar_method`, `roar_fraction`); the training loop calls `removed_images` when it
places the data, so the group is queued through the job manager like any other runs.

What removed pixels become: the image's own mean grey value (a flat grey), the same neutral value as
the report card's deletion curves with `replacement="mean"` (for the linear input normalisations
the mean of the stored pixels and the mean of the model's inputs are the same point). Not a blurred
copy: a blur keeps the low frequencies of what was removed, and a retrained model could learn from them.

Attributions come from the source run's model, explaining the class it predicts (as the card does),
computed once per (source run, method, images) and kept in memory for the other fractions.
"""
from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import torch

from explore.insight import attribution as attr
from explore.training.config import RunConfig
from explore.data import DataBundle
from explore.insight.explain_report import CARD_METHODS, pixel_order
from explore.training.store import RunStore

ROAR_FRACTIONS = (0.1, 0.3, 0.5)
RANDOM = "random"
# The fast methods by default (a full sweep of the five is 15 runs more); "random" is the reference.
ROAR_DEFAULT_METHODS = ("saliency", "gradcam")
ROAR_TARGET = "predicted"
ROAR_MARGIN = 0.01  # accuracy: a method must hurt at least this much more than random, on average over t
FILL = "the image's mean grey value (a flat grey; the deletion curves' replacement='mean')"


def roar_methods() -> tuple[str, ...]:
    """Every method a ROAR run may remove by: the report card's rows, and random."""
    return (*CARD_METHODS, RANDOM)


def validate_roar(config: RunConfig) -> None:
    """The method a ROAR run removes by must exist: checked when the run is made (explore.training.runs) and when its
    group is built (RunConfig.validate checks the rest without importing this module)."""
    if not config.roar_from_run:
        if config.roar_method or config.roar_fraction:
            raise ValueError("roar_method and roar_fraction need roar_from_run (the run whose maps decide)")
        return
    if config.roar_method not in roar_methods():
        raise ValueError(f"roar_method must be one of {', '.join(roar_methods())}; got {config.roar_method!r}")
    if not (0 < config.roar_fraction < 1):
        raise ValueError(f"roar_fraction must be between 0 and 1 (the share of pixels removed); got {config.roar_fraction}")


# ----------------------------------------------------------------------------- the removal itself
def random_orders(n_images: int, n_pixels: int, seed: int) -> torch.Tensor:
    """A seeded random pixel order per image (N×P): the reference removal."""
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(n_images, n_pixels, generator=generator).argsort(dim=1)


def attribution_orders(maps: torch.Tensor, seed: int) -> torch.Tensor:
    """Pixel indices per map (N×H×W → N×P), most-attributed first; ties in a seeded random order."""
    generator = torch.Generator().manual_seed(seed)
    return torch.stack([pixel_order(m, generator) for m in maps]) if len(maps) else torch.zeros(0, 0, dtype=torch.long)


def remove_pixels(images: torch.Tensor, orders: torch.Tensor, fraction: float) -> torch.Tensor:
    """uint8 N×1×H×W with the first round(fraction × H×W) pixels of each order set to the image's mean grey."""
    n, channels, height, width = images.shape
    pixels = height * width
    count = int(round(fraction * pixels))
    ranks = torch.empty(n, pixels, dtype=torch.long)
    ranks.scatter_(1, orders, torch.arange(pixels).expand(n, pixels).contiguous())
    removed = (ranks < count).view(n, 1, height, width)
    fill = images.float().mean(dim=(1, 2, 3), keepdim=True).round().to(images.dtype)
    return torch.where(removed, fill.expand_as(images), images)


# ----------------------------------------------------------------------------- the hook for TrainingRun
_ORDER_CACHE: dict[tuple, torch.Tensor] = {}
_ORDER_CACHE_SIZE = 12  # a group's three splits × a few methods, in one worker process


def _fingerprint(images: torch.Tensor) -> str:
    return hashlib.sha1(images.contiguous().numpy().tobytes()).hexdigest()[:16]


def source_explainer(source_run: str | Path, image_size: int):
    """The source run's model and input pipeline (statistics from its summary), without loading its data."""
    path = Path(source_run)
    store = RunStore(path.parent)
    model, config = store.load_model(path.name)
    summary = store.load(path.name, with_metrics=False).summary
    pipeline = attr.pipeline_for_run(config, summary)
    return attr.make_explainer(model, pipeline, image_size)


def source_orders(source_run: str | Path, method: str, images: torch.Tensor, seed: int) -> torch.Tensor:
    """Pixel orders for these images by the source run's `method` (or random), cached in memory."""
    key = (str(source_run), method, _fingerprint(images), seed)
    if key in _ORDER_CACHE:
        return _ORDER_CACHE[key]
    n, _, height, width = images.shape
    if method == RANDOM:
        orders = random_orders(n, height * width, seed)
    else:
        algorithm, smooth = CARD_METHODS[method]
        maps = attr.attribute(source_explainer(source_run, height), images, algorithm, ROAR_TARGET, smooth,
                              batch_size=256, with_probs=False).maps
        orders = attribution_orders(maps, seed)
    if len(_ORDER_CACHE) >= _ORDER_CACHE_SIZE:
        _ORDER_CACHE.pop(next(iter(_ORDER_CACHE)))
    _ORDER_CACHE[key] = orders
    return orders


def removed_bundle(config: RunConfig, bundle: DataBundle) -> DataBundle:
    """The bundle a ROAR run trains and evaluates on: every split's images with their top pixels removed."""
    validate_roar(config)
    splits = {name: dataclasses.replace(split, images=removed_images(config, split.images))
              for name, split in bundle.splits.items()}
    return dataclasses.replace(bundle, splits=splits)


def report_lines(results: dict | None) -> list[str]:
    """The remove-and-retrain results as the text `explain-report` prints."""
    if results is None:
        return []
    return (["remove and retrain (test accuracy vs share of pixels removed):"]
            + ["  " + "  ".join(f"{key}: {value}" for key, value in row.items()) for row in roar_rows(results)]
            + [f"- {roar_sentence(results)}"])


def removed_images(config: RunConfig, images: torch.Tensor) -> torch.Tensor:
    """What a ROAR run trains and evaluates on: `images` (uint8, one split) with the top pixels removed."""
    if not Path(config.roar_from_run, "weights.pt").exists():
        raise ValueError(f"remove-and-retrain needs the finished run {config.roar_from_run} (its weights are gone)")
    if len(images) == 0:
        return images
    orders = source_orders(config.roar_from_run, config.roar_method, images, config.seed)
    return remove_pixels(images, orders, config.roar_fraction)


# ----------------------------------------------------------------------------- the group of runs
def roar_configs(source: RunConfig, source_dir: str | Path, methods=ROAR_DEFAULT_METHODS,
                 fractions=ROAR_FRACTIONS) -> list[RunConfig]:
    """The group of runs for one finished run: each method × each fraction, plus random × each fraction.

    Every run keeps the source's settings (data, model, epochs, seed), so the only difference
    between them is which pixels are gone; the source run itself is the point t = 0.
    """
    if source.roar_from_run:
        raise ValueError("this run was itself trained on images with pixels removed")
    if source.permute_labels:
        raise ValueError("this run was trained on shuffled labels: its maps explain nothing to remove")
    source_dir = str(Path(source_dir).resolve())
    label = source.name or source.model
    configs = []
    for method in (*dict.fromkeys(m for m in methods if m != RANDOM), RANDOM):
        for fraction in fractions:
            configs.append(source.replace(roar_from_run=source_dir, roar_method=method, roar_fraction=float(fraction),
                                          name=f"{label} · ROAR {method} {fraction:.0%}",
                                          group=f"ROAR · {label}"))
    return configs


def roar_runs(store, source_dir: str | Path) -> list:
    """Run records of the store that remove pixels by the maps of `source_dir`, newest first."""
    source_dir = str(Path(source_dir).resolve())
    return [r for r in store.list() if not r.damaged and r.config is not None and r.config.roar_from_run == source_dir]


def missing_configs(store, source_dir: str | Path, configs: list[RunConfig]) -> list[RunConfig]:
    """The configs of a group whose point (method, fraction) has no finished, queued or running run yet."""
    have = {(r.config.roar_method, r.config.roar_fraction) for r in roar_runs(store, source_dir)
            if r.state in ("finished", "queued", "running")}
    return [c for c in configs if (c.roar_method, c.roar_fraction) not in have]


def roar_results(store, source_dir: str | Path) -> dict | None:
    """Test accuracy against the fraction removed, per method, from the finished ROAR runs of a run.

    {"fractions": [0, .1, .3, .5], "methods": {METHOD: {"accuracy": [...], "drop_vs_random": float|None,
    "faithful": bool|None}}, "pending": n runs queued or running, "fill": ...}; None when there are no ROAR runs.
    The point t = 0 is the source run's own test accuracy.
    """
    runs = roar_runs(store, source_dir)
    if not runs:
        return None
    source_summary = store.load(Path(source_dir).name, with_metrics=False).summary or {}
    accuracy: dict[str, dict[float, float]] = {}
    pending = 0
    for record in reversed(runs):  # oldest first: a rerun of the same point replaces it
        if record.state in ("queued", "running"):
            pending += 1
        test_acc = (record.summary or {}).get("test_acc")
        if record.state == "finished" and isinstance(test_acc, (int, float)):
            accuracy.setdefault(record.config.roar_method, {})[record.config.roar_fraction] = float(test_acc)
    fractions = sorted({f for points in accuracy.values() for f in points})
    start = source_summary.get("test_acc")
    methods = {}
    for method in sorted(accuracy, key=roar_methods().index):  # the card's order, random last
        points = accuracy[method]
        row = [start] + [points.get(f) for f in fractions]
        methods[method] = {"accuracy": row}
    random_points = accuracy.get(RANDOM, {})
    for method, entry in methods.items():
        if method == RANDOM:
            entry.update(drop_vs_random=None, faithful=None)
            continue
        shared = [f for f in fractions if f in accuracy[method] and f in random_points]
        drop = (sum(random_points[f] - accuracy[method][f] for f in shared) / len(shared)) if shared else None
        entry.update(drop_vs_random=None if drop is None else round(drop, 4),
                     faithful=None if drop is None else drop >= ROAR_MARGIN)
    return {"fractions": [0.0, *fractions], "methods": methods, "pending": pending, "fill": FILL,
            "source_test_acc": start}


def roar_points(results: dict) -> list[dict]:
    """Test accuracy per method and fraction removed, as rows for `charts.roar` (runs not finished left out)."""
    return [{"method": method, "fraction removed": fraction, "test accuracy": acc}
            for method, entry in results["methods"].items()
            for fraction, acc in zip(results["fractions"], entry["accuracy"]) if acc is not None]


def roar_rows(results: dict) -> list[dict]:
    """One row per method for a table: test accuracy at each t, and the verdict against random."""
    rows = []
    for method, entry in results["methods"].items():
        row = {"method": method}
        for fraction, acc in zip(results["fractions"], entry["accuracy"]):
            row[f"t = {fraction:.0%}"] = None if acc is None else round(acc, 3)
        if method == RANDOM:
            row["verdict"] = "reference"
        elif entry["faithful"] is None:
            row["verdict"] = "n/a (needs random's runs)"
        else:
            row["verdict"] = (f"{'pass' if entry['faithful'] else 'FAIL'}: accuracy {-entry['drop_vs_random']:+.1%} "
                              f"against random's, on average over t")
        rows.append(row)
    return rows


def roar_sentence(results: dict) -> str:
    faithful = [m for m, e in results["methods"].items() if e.get("faithful")]
    unfaithful = [m for m, e in results["methods"].items() if e.get("faithful") is False]
    parts = []
    if faithful:
        parts.append(f"removing the pixels {', '.join(faithful)} points at hurts a retrained model more than removing "
                     f"random pixels: faithful by ROAR")
    if unfaithful:
        parts.append(f"removing the top pixels of {', '.join(unfaithful)} hurts no more than removing random pixels: "
                     f"not faithful by ROAR (with one seed per point, check that every run learned)")
    if results["pending"]:
        parts.append(f"{results['pending']} ROAR run(s) still queued or running")
    return "; ".join(parts) or "no finished ROAR runs yet"


# ----------------------------------------------------------------------------- CLI
