"""Tables of multi-label runs (explore/training/multilabel.py) for the Train and Compare pages.

Per label: AUC per epoch (one line per finding), the AUC, sensitivity, specificity and confusion
counts at threshold 0.5, the 2×2 confusion matrix and the ROC curve (their charts: explore/charts.py). Plain functions of stored
summaries, metrics and predictions, so tests and the CLI can call them too.
"""
from __future__ import annotations

import math

import pandas as pd
import torch

from explore.training.metrics import auc, roc_curve
from explore.training.multilabel import known
from explore.data.synthetic import FINDINGS, generate_synthetic
from explore.insight.report import SPLIT_LABELS, confusion_frame, grey, outline_mask

TABLE_COLUMNS = ["split", "task", "AUC", "sensitivity", "specificity", "TP", "FN", "FP", "TN", "positives", "images"]


def is_multilabel(record) -> bool:
    """A stored run trained with tasks (RunRecord, or anything with .config and .summary)."""
    config = getattr(record, "config", None)
    return bool(config is not None and config.tasks) or bool((getattr(record, "summary", None) or {}).get("tasks"))


def tasks_of(record) -> list[str]:
    config = getattr(record, "config", None)
    return list(config.tasks) if config is not None and config.tasks else list((record.summary or {}).get("tasks", []))


def per_label_frame(summary: dict, splits: tuple[str, ...] = ("val", "test")) -> pd.DataFrame:
    """One row per split and task: AUC, sensitivity, specificity and the confusion counts at 0.5."""
    rows = []
    for split in splits:
        labels = (((summary or {}).get("splits") or {}).get(split) or {}).get("labels") or {}
        for task in [t for t in summary.get("tasks") or labels if t in labels]:  # the run's order (JSON sorts keys)
            r = labels[task]
            rows.append({"split": SPLIT_LABELS.get(split, split), "task": task, "AUC": r["auc"],
                         "sensitivity": r["sensitivity"], "specificity": r["specificity"], "TP": r["tp"],
                         "FN": r["fn"], "FP": r["fp"], "TN": r["tn"], "positives": r["positives"], "images": r["n"]})
    return pd.DataFrame(rows, columns=TABLE_COLUMNS)


def label_confusion(summary: dict, split: str, task: str) -> pd.DataFrame:
    """The 2×2 matrix of one label (rows true, columns predicted), in report.confusion_frame's form."""
    r = summary["splits"][split]["labels"][task]
    return confusion_frame([[r["tn"], r["fp"]], [r["fn"], r["tp"]]], ["absent", "present"])  # the title names it


def confusion_title(split: str, task: str) -> str:
    """The title of one label's 2×2 confusion chart: the finding and the split."""
    return f"{task} · {SPLIT_LABELS.get(split, split)}"


def auc_frame(records: list, labels: dict[str, str] | None = None,
              splits: tuple[str, ...] = ("val", "test")) -> pd.DataFrame:
    """Per-epoch AUC of every label of every multi-label run: DataFrame(run, epoch, split, task, AUC)."""
    rows = []
    for record in records:
        name = (labels or {}).get(record.run_id, record.label)
        for metrics in record.metrics:
            for split in splits:
                for task in tasks_of(record):
                    value = metrics.get(f"{split}_auc_{task}")
                    if isinstance(value, (int, float)) and math.isfinite(value):
                        rows.append({"run": name, "epoch": metrics["epoch"], "split": SPLIT_LABELS.get(split, split),
                                     "task": task, "AUC": float(value)})
    return pd.DataFrame(rows, columns=["run", "epoch", "split", "task", "AUC"])


def roc_frame(predictions: dict, split: str, tasks: list[str]) -> pd.DataFrame:
    """ROC curve of every label on one split (known labels only): DataFrame(task, fpr, tpr)."""
    frames = []
    if split not in predictions:
        return pd.DataFrame(columns=["task", "fpr", "tpr"])
    targets = predictions[split]["labels"].float()
    probs = predictions[split]["probs"].float().reshape(len(targets), -1)
    for j, task in enumerate(tasks):
        mask = known(targets[:, j])
        y, p = targets[mask, j].bool(), probs[mask, j]
        value = auc(y, p)
        if value is None:
            continue
        fpr, tpr, _ = roc_curve(y, p)
        frames.append(pd.DataFrame({"task": f"{task} · AUC {value:.3f}", "fpr": fpr.numpy(), "tpr": tpr.numpy()}))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["task", "fpr", "tpr"])


def auc_columns(record) -> dict[str, float | None]:
    """Compare table columns: 'val AUC · pneumonia', 'test AUC · pneumonia', ... (last epoch while running)."""
    if not is_multilabel(record):
        return {}
    summary, metrics = record.summary or {}, record.metrics
    columns = {}
    for split in ("val", "test"):
        labels = ((summary.get("splits") or {}).get(split) or {}).get("labels")
        for task in tasks_of(record):
            value = labels[task]["auc"] if labels and task in labels else (
                metrics[-1].get(f"{split}_auc_{task}") if metrics else None)
            columns[f"{split} AUC · {task}"] = value
    return columns


def targets_at(predictions: dict, split: str, task_index: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(labels 0/1 with -1 unknown, probabilities) of one label on one split, for browsing by outcome."""
    targets = predictions[split]["labels"].float()
    probs = predictions[split]["probs"].float().reshape(len(targets), -1)[:, task_index]
    column = targets[:, task_index]
    return torch.where(torch.isnan(column), -1.0, column).long(), probs


FINDING_COLOURS = {"cardiomegaly": (220, 60, 220), "effusion": (40, 140, 255)}  # RGB outlines


def finding_examples(image_size: int = 128, seed: int = 0) -> list[dict]:
    """One synthetic image per combination (none, cardiomegaly, effusion, both) with the findings
    outlined: the Data page's look at what the multi-task findings are."""
    train = generate_synthetic(image_size=image_size, seed=seed, findings=True, n_train=32, n_val=10, n_test=10).train
    examples = []
    for wanted in ((0, 0), (1, 0), (0, 1), (1, 1)):
        hits = torch.nonzero((train.findings == torch.tensor(wanted, dtype=torch.float)).all(dim=1)).flatten()
        if not len(hits):
            continue
        i = int(hits[0])
        picture = grey(train.images[i])[..., None].repeat(3, axis=2)
        for name in FINDINGS:
            if train.masks[name][i].any():
                picture = outline_mask(picture, train.masks[name][i], FINDING_COLOURS[name])
        present = [name for name, flag in zip(FINDINGS, wanted) if flag]
        examples.append({"picture": picture, "caption": " + ".join(present) or "no finding",
                         "label": train.labels[i].item()})
    return examples
