"""Tables of one run (or a few) for the pages: curves, progress, final metrics, ROC points.

Plain functions of what the run store holds (epoch records, status.json, summary.json,
predictions.pt), so tests and every page share them. `explore.charts` draws the long
DataFrames built here; no Streamlit.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from explore.insight.browse import outcomes, select
from explore.training.metrics import auc, per_class, positive_score, roc_curve
from explore.training.store import StoreError

SPLIT_ORDER = ("train", "train_dev", "val", "test")
SPLIT_LABELS = {"train": "train", "train_dev": "train-dev", "val": "val (site A)", "test": "test (site B)"}
# The same colour for a split on every chart: train blue, val orange, test red (site B), train-dev teal.
SPLIT_COLOURS = {"train": "#4c78a8", "train_dev": "#72b7b2", "val": "#f58518", "test": "#e45756"}
METRICS = {"loss": "loss", "acc": "accuracy"}  # suffix in the epoch record -> metric name in frames
CURVE_COLUMNS = ["epoch", "split", "metric", "value", "run"]
LR_METRIC = "learning rate"


def curves_frame(records: list[dict], run_label: str | None = None) -> pd.DataFrame:
    """Epoch records → long DataFrame(epoch, split, metric, value, run), one row per number.

    `split` is train / train_dev / val / test, `metric` is "loss", "accuracy" or "learning rate"
    (the rate the optimiser used during that epoch, split "train"). Records that are not epoch
    records, and non-finite values, are left out (a chart cannot draw NaN).
    """
    rows = []
    for record in records:
        if record.get("kind", "epoch") != "epoch" or "epoch" not in record:
            continue
        lr = record.get("lr")
        if isinstance(lr, (int, float)) and math.isfinite(lr):
            rows.append({"epoch": int(record["epoch"]), "split": "train", "metric": LR_METRIC, "value": float(lr),
                         "run": run_label or ""})
        for split in SPLIT_ORDER:
            for suffix, metric in METRICS.items():
                value = record.get(f"{split}_{suffix}")
                if isinstance(value, (int, float)) and math.isfinite(value):
                    rows.append({"epoch": int(record["epoch"]), "split": split, "metric": metric,
                                 "value": float(value), "run": run_label or ""})
    return pd.DataFrame(rows, columns=CURVE_COLUMNS)


def progress(status: dict) -> tuple[float, str]:
    """status.json → (fraction of the whole run done 0..1, 'epoch 3 of 8 · batch 20 of 50')."""
    epochs = int(status.get("epochs") or 0)
    done_epochs = int(status.get("epoch") or 0)
    batch, batches = int(status.get("batch") or 0), int(status.get("batches") or 0)
    if epochs <= 0:
        return 0.0, status.get("message") or status.get("status", "")
    within = batch / batches if batches else 0.0
    fraction = min(1.0, (done_epochs + within) / epochs)
    text = f"epoch {min(done_epochs + 1, epochs)} of {epochs}"
    if batches and batch:
        text += f" · batch {batch} of {batches}"
    return fraction, text + where_text(status)


def where_text(status: dict) -> str:
    """' · on gpu-box-2, GPU 1' for a run on a Ray cluster node ('' for runs on this server)."""
    if status.get("executor") != "ray" or not status.get("node"):
        return ""
    return f" · on {status['node']}" + (f", GPU {status['gpu']}" if status.get("gpu") is not None else "")


def queue_text(position: int | None, wait_seconds: float | None = None) -> str:
    """0 → 'running', 1 → 'next in the queue', n → 'waiting: n−1 runs ahead', plus the estimated
    wait when known (None before any run has finished here to time): 'next in the queue · starts in about 2 min'."""
    if position is None:
        return "not in this server's queue"
    if position == 0:
        return "running"
    ahead = position - 1
    text = "next in the queue" if position == 1 else f"waiting: {ahead} run{'s' if ahead > 1 else ''} ahead"
    return text if wait_seconds is None else f"{text} · {wait_text(wait_seconds)}"


def wait_text(seconds: float) -> str:
    """An honest, rounded wait: 'starts in about 3 min' (from recent runs' speed)."""
    if seconds < 60:
        return "starts in less than a minute"
    minutes = round(seconds / 60)
    return f"starts in about {minutes} min" if minutes < 90 else f"starts in about {seconds / 3600:.1f} h"


def metrics_table(summary: dict | None) -> pd.DataFrame:
    """summary["splits"] → one row per split: accuracy, AUC, sensitivity, specificity, n."""
    splits = (summary or {}).get("splits") or {}
    rows = []
    for split in SPLIT_ORDER:
        report = splits.get(split)
        if not report:
            continue
        rows.append({"split": SPLIT_LABELS.get(split, split), "accuracy": report.get("acc"),
                     "AUC": report.get("auc"), "sensitivity": report.get("sensitivity"),
                     "specificity": report.get("specificity"), "images": report.get("n")})
    return pd.DataFrame(rows, columns=["split", "accuracy", "AUC", "sensitivity", "specificity", "images"])


def per_class_table(summary: dict | None, classes: list[str] | None = None) -> pd.DataFrame:
    """Per split and class: precision, recall, F1 and images (from each split's confusion matrix, so runs
    stored before per-class numbers were saved get them too). With three classes this is the report's table."""
    summary = summary or {}
    classes = list(classes or summary.get("classes") or [])
    rows = []
    for split in SPLIT_ORDER:
        confusion = ((summary.get("splits") or {}).get(split) or {}).get("confusion")
        if not confusion:
            continue
        names = classes if len(classes) == len(confusion) else [str(k) for k in range(len(confusion))]
        for name, numbers in zip(names, per_class(confusion)):
            rows.append({"split": SPLIT_LABELS.get(split, split), "class": name, **numbers})
    table = pd.DataFrame(rows, columns=["split", "class", "precision", "recall", "f1", "support"])
    for column in ("precision", "recall", "f1"):  # None (never predicted / absent) → NaN: an empty cell
        table[column] = pd.to_numeric(table[column], errors="coerce").astype(float)
    return table


HEADLINE = (("val accuracy", "val", "acc"), ("test accuracy", "test", "acc"), ("test AUC", "test", "auc"),
            ("test sensitivity", "test", "sensitivity"))  # (label, split, key in summary["splits"][split])


def headline(summary: dict | None) -> list[tuple[str, str]]:
    """The four numbers above a finished run's tables, as (label, text): '92.5%', AUC '0.951', '—' when missing."""
    splits = (summary or {}).get("splits") or {}
    rows = []
    for label, split, key in HEADLINE:
        value = (splits.get(split) or {}).get(key)
        rows.append((label, "—" if value is None else f"{value:.3f}" if key == "auc" else f"{value:.1%}"))
    return rows


def has_learning_rate(records: list) -> bool:
    """True when any run recorded its learning rate (runs from before it was recorded have none)."""
    return any("lr" in m for r in records for m in (r.metrics or []))


def cell_thumbnails(predictions: dict[str, torch.Tensor], split, cell: tuple[int, int],
                    limit: int = 8) -> list[tuple[np.ndarray, str]]:
    """The X-rays of one confusion-matrix cell as (grey image, 'image id · P(disease) 0.93'), mistakes most
    confident first. `split`: the run's data split (images and ids) the predictions were made on; a
    ValueError when they no longer match (the dataset changed since the run trained)."""
    if len(split.images) != len(predictions["labels"]):
        raise ValueError("The dataset changed since this run trained: its images no longer match the predictions.")
    score = positive_score(predictions["probs"].float())
    return [(grey(split.images[i]), f"{split.ids[i].rsplit('/', 1)[-1]} · P(disease) {float(score[i]):.2f}")
            for i in cell_examples(predictions, cell, limit)]


def cell_examples(predictions: dict[str, torch.Tensor], cell: tuple[int, int], limit: int = 8) -> list[int]:
    """Indices of the images in one confusion-matrix cell (true, predicted), most confident mistakes first
    (the Saliency page's selection, for the Train page's matrix)."""
    outcome = outcomes(predictions["probs"], predictions["labels"])
    how = "top_losses" if cell[0] != cell[1] else "cell"
    if how == "top_losses":  # wrong cells: keep only this cell's mistakes, ordered by loss
        index = select(outcome, "top_losses", None, len(outcome["labels"]))
        return [i for i in index if (int(outcome["labels"][i]), int(outcome["predicted"][i])) == tuple(cell)][:limit]
    return select(outcome, "cell", cell, limit)


def confusion_frame(confusion: list[list[int]], classes: list[str]) -> pd.DataFrame:
    """K×K counts (rows true, columns predicted) → long DataFrame(true, predicted, count, share)."""
    rows = []
    for i, row in enumerate(confusion):
        total = sum(row) or 1
        for j, count in enumerate(row):
            rows.append({"true": classes[i], "predicted": classes[j], "count": int(count),
                         "share of true class": count / total})
    return pd.DataFrame(rows, columns=["true", "predicted", "count", "share of true class"])


def roc_frame(predictions: dict[str, dict[str, torch.Tensor]], splits: tuple[str, ...] = ("val", "test"),
              titles: dict[str, str] = SPLIT_LABELS) -> tuple[pd.DataFrame, dict[str, float | None]]:
    """Stored predictions → (DataFrame(split, fpr, tpr, threshold), {split: AUC}): the one ROC of the app
    (the Train page's and the Mismatch page's; `charts.roc` draws it).

    The score is the probability of disease (not NORMAL); a split with one class only (or no
    images) has no ROC curve and AUC None. The frame names a split by `titles` ("val (site A)").
    """
    frames, aucs = [], {}
    for split in splits:
        if split not in predictions:
            continue
        if len(predictions[split]["labels"]) == 0:
            continue
        labels = predictions[split]["labels"].long()
        score = positive_score(predictions[split]["probs"].float())
        is_positive = labels != 0
        aucs[split] = auc(is_positive, score)
        if aucs[split] is None:
            continue
        fpr, tpr, thresholds = roc_curve(is_positive, score)
        frames.append(pd.DataFrame({"split": titles.get(split, split), "fpr": fpr.numpy(),
                                    "tpr": tpr.numpy(), "threshold": thresholds.numpy()}))
    columns = ["split", "fpr", "tpr", "threshold"]
    frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)
    return frame, aucs


def _number(value) -> float:
    """None → NaN, so a table column stays numeric (and shows an empty cell)."""
    return float("nan") if value is None else float(value)


def runs_table(records: list) -> pd.DataFrame:
    """RunRecords → one row each for the 'recent runs' list; a damaged folder shows its reason."""
    rows = []
    for record in records:
        config, summary = record.config, record.summary or {}
        rows.append({
            "run": record.run_id,
            "status": record.state,
            "name": record.label,
            "model": config.model if config else "",
            "group": config.group if config else "",
            "epochs": summary.get("epochs_completed", record.status.get("epoch")),
            "val acc": _number(summary.get("val_acc")),
            "test acc": _number(summary.get("test_acc")),
            "note": record.damaged or summary.get("message") or record.status.get("message", ""),
        })
    return pd.DataFrame(rows, columns=["run", "status", "name", "model", "group", "epochs", "val acc",
                                       "test acc", "note"])


def curves_for(records: list) -> pd.DataFrame:
    """Curves of several RunRecords in one frame, labelled by run name (for one chart)."""
    frames = [curves_frame(r.metrics, r.label) for r in records if r.metrics]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=CURVE_COLUMNS)


def describe_data(spec) -> str:
    """A DataSpec in one line: 'synthetic · 128 px · 2 classes · knobs: noise=0.8'."""
    parts = [spec.source, f"{spec.image_size} px", f"{spec.num_classes} classes" if spec.source == "synthetic" else ""]
    if spec.test_source and spec.test_source != spec.source:
        parts.append(f"test from {spec.test_source}")
    if spec.synthetic:
        parts.append("knobs: " + ", ".join(f"{k}={v:g}" for k, v in spec.synthetic))
    if getattr(spec, "findings", False):  # multi-task learning: the findings besides pneumonia are in the data
        parts.append("with findings" + (" (cardiomegaly, effusion)" if spec.source == "synthetic" else ""))
    return " · ".join(p for p in parts if p)


def configs_table(configs: list) -> pd.DataFrame:
    """What a preset will queue: one row per run with the settings that matter most."""
    return pd.DataFrame([{
        "run": c.name, "model": c.model,
        "options": ", ".join(f"{k}={'on' if v is True else 'off' if v is False else v}" for k, v in c.model_options),
        "loss": c.loss, "optimizer": c.optimizer, "lr": f"{c.lr:g}",
        "schedule": c.scheduler if c.scheduler != "step" else f"step({c.step_size}, {c.gamma:g})",
        "weight decay": f"{c.weight_decay:g}", "batch": c.batch_size, "epochs": c.epochs,
        "early stop": c.early_stopping_patience or "off", "image px": c.data.image_size,
    } for c in configs])


def run_exists(store, run_id: str) -> bool:
    """A run id from a URL: True only for a folder in this store (never a path outside it)."""
    try:
        return store.path(run_id).is_dir()
    except StoreError:
        return False


# ----- images for display ------------------------------------------------------------------

MASK_COLOURS = {"lung": (60, 200, 90), "lesion": (230, 50, 40), "marker": (250, 200, 0)}  # RGB


def grey(image: torch.Tensor) -> np.ndarray:
    """A stored image (uint8 1×H×W or H×W) as an H×W uint8 array for st.image."""
    return image.reshape(image.shape[-2:]).cpu().numpy()


def _outline(mask: torch.Tensor) -> torch.Tensor:
    """The boundary pixels of a bool H×W mask (inside, with a neighbour outside)."""
    outside = (~mask).float()[None, None]
    near_outside = F.max_pool2d(outside, 3, stride=1, padding=1)[0, 0] > 0
    return mask & near_outside


def overlay_masks(image: torch.Tensor, masks: dict[str, torch.Tensor]) -> np.ndarray:
    """RGB H×W×3: the grey image with the lung outlined in green, lesions tinted red and
    burned-in markers in yellow (the synthetic set knows where each of these is)."""
    rgb = torch.from_numpy(grey(image)).float()[..., None].repeat(1, 1, 3)
    for name, alpha in (("lesion", 0.45), ("marker", 0.8)):
        if name in masks:
            where = masks[name].reshape(rgb.shape[:2]).bool()
            rgb[where] = (1 - alpha) * rgb[where] + alpha * torch.tensor(MASK_COLOURS[name], dtype=torch.float)
    if "lung" in masks:
        outline = _outline(masks["lung"].reshape(rgb.shape[:2]).bool())
        rgb[outline] = torch.tensor(MASK_COLOURS["lung"], dtype=torch.float)
    return rgb.round().clamp(0, 255).to(torch.uint8).numpy()


def outline_mask(rgb: np.ndarray, mask: torch.Tensor, colour: tuple[int, int, int] = MASK_COLOURS["lesion"]) -> np.ndarray:
    """A copy of an RGB picture with the boundary of `mask` (H×W, possibly smaller: the picture
    may be zoomed) drawn in `colour`: e.g. a radiologist's lesion box on an X-ray."""
    mask = torch.as_tensor(mask).bool().reshape(mask.shape[-2:])
    zoom = rgb.shape[0] // mask.shape[0]
    if zoom > 1:
        mask = mask.repeat_interleave(zoom, 0).repeat_interleave(zoom, 1)
    out = rgb.copy()
    out[_outline(mask).numpy()] = colour
    return out


def diverging_rgb(difference: torch.Tensor) -> tuple[np.ndarray, float]:
    """A signed H×W image → (RGB: red where positive, blue where negative, white at 0; the
    value that maps to full colour). Scaled to its own largest |value| so faint shifts show."""
    scale = float(difference.abs().max()) or 1.0
    t = (difference / scale).clamp(-1, 1)
    positive, negative = t.clamp(min=0), (-t).clamp(min=0)
    red = 1 - negative
    green = 1 - positive - negative
    blue = 1 - positive
    rgb = torch.stack([red, green, blue], dim=-1)
    return (rgb * 255).round().to(torch.uint8).numpy(), scale


def size_summary(sizes: pd.DataFrame) -> pd.DataFrame:
    """stats.original_size_table → per split and class: images, median size, aspect ratio range.

    Aspect = width / height; every image is resized to a square, so anything far from 1 was stretched.
    """
    columns = ["split", "class", "images", "median size (w × h)", "aspect min · median · max"]
    if sizes.empty:
        return pd.DataFrame(columns=columns)
    rows = []
    for (split, cls), group in sizes.groupby(["split", "class"], sort=False):
        aspect = group["aspect"]
        rows.append([split, cls, len(group), f"{group['width'].median():g} × {group['height'].median():g}",
                     f"{aspect.min():.2f} · {aspect.median():.2f} · {aspect.max():.2f}"])
    return pd.DataFrame(rows, columns=columns)


def outcome_text(record) -> str:
    """How an ended run did, in one line: 'val 92.5% · test 78.0% (site B)', else why it ended."""
    if record.damaged:
        return f"damaged: {record.damaged}"
    summary = record.summary or {}
    splits = summary.get("splits") or {}
    parts = [f"{name} {splits[split]['acc']:.1%}" for split, name in (("val", "val"), ("test", "test (site B)"))
             if splits.get(split, {}).get("acc") is not None]
    return " · ".join(parts) if parts else summary.get("message") or record.status.get("message", "")
