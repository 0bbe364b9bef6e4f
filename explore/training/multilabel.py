"""Multi-task learning: one image, several findings, one sigmoid output per finding.

The lecture's last topic (deeplearning.ai's "simplified autonomous driving example": one image,
labels pedestrian / car / stop sign / traffic light). Here the findings are pneumonia,
cardiomegaly and pleural effusion (the synthetic set with DataSpec.findings on), or the 14 NIH
findings of ChestMNIST / NIH. Unlike softmax, one image can have several labels.

A run is multi-label when `RunConfig.tasks` names its findings, e.g. ("pneumonia", "cardiomegaly",
"effusion"). Then:
  targets   N×K floats per split: 1 present, 0 absent, NaN unknown. "pneumonia" comes from the
            class label (not NORMAL) unless the bundle has a "pneumonia" finding column
            (ChestMNIST, NIH); every other task is a column of Split.findings.
  scarce    `pneumonia_label_fraction` < 1 hides the pneumonia label of the other training images
            (NaN), chosen by seed. Training images with no known label at all are dropped, so a
            pneumonia-only run trains on the labelled share alone, while a three-task run still
            sees every image for the other findings.
  loss      the lecture's J = 1/m Σ_i Σ_j L(ŷ_j, y_j), summed over the known labels only:
            BCE per label, unknown labels masked out (they add nothing, not even zero).
  accuracy  exact match: an image counts as right when every known label is right at 0.5.
  metrics   per label: AUC, and the confusion counts at threshold 0.5 (tn, fp, fn, tp),
            sensitivity, specificity; per epoch on val/test (record keys `val_auc_<task>`) and
            in the summary (`splits.<split>.labels.<task>`).

The training loop (explore/training/train.py) calls these functions through a few hooks; everything
about targets, masking and per-label metrics lives here.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from explore.training.metrics import auc

PNEUMONIA = "pneumonia"
# The tasks of the synthetic set with findings on (explore/data/synthetic.py FINDINGS, plus pneumonia).
SYNTHETIC_TASKS = ("pneumonia", "cardiomegaly", "effusion")
THRESHOLD = 0.5


# ----------------------------------------------------------------------------- config checks
def validate(config) -> None:
    """RunConfig's checks for the multi-task fields (which names exist is checked against the data)."""
    tasks = config.tasks
    if not 0 < config.pneumonia_label_fraction <= 1:
        raise ValueError(f"pneumonia_label_fraction must be in (0, 1]; got {config.pneumonia_label_fraction}")
    if not tasks:
        if config.pneumonia_label_fraction < 1:
            raise ValueError("pneumonia_label_fraction needs tasks (e.g. tasks=('pneumonia',)): "
                             "a multi-label run, where an unknown label can be left out of the loss")
        return
    if any(not isinstance(t, str) or not t or t != t.strip().lower() for t in tasks):
        raise ValueError(f"tasks must be lower-case finding names such as 'pneumonia'; got {list(tasks)}")
    if len(set(tasks)) != len(tasks):
        raise ValueError(f"tasks must not repeat a name; got {list(tasks)}")
    if config.loss != "bce":
        raise ValueError("a multi-label run uses one sigmoid output per task with BCE: set loss 'bce'")
    if config.data.num_classes != 2:
        raise ValueError("a multi-label run needs the two-class data (pneumonia is one of its tasks)")
    if config.pneumonia_label_fraction < 1 and PNEUMONIA not in tasks:
        raise ValueError("pneumonia_label_fraction makes pneumonia labels scarce: include 'pneumonia' in tasks")


def available_tasks(bundle) -> tuple[str, ...]:
    """The task names a bundle can train: pneumonia, then its findings."""
    return (PNEUMONIA,) + tuple(name for name in bundle.finding_names if name != PNEUMONIA)


def check_tasks(tasks: tuple[str, ...], bundle) -> None:
    missing = [t for t in tasks if t not in available_tasks(bundle)]
    if missing:
        hint = ("" if bundle.finding_names else
                " (this data has no findings besides pneumonia: turn on findings, e.g. DataSpec(findings=True) "
                "or --findings on the CLI)")
        raise ValueError(f"task(s) {missing} are not in the data; it has {list(available_tasks(bundle))}{hint}")


# ----------------------------------------------------------------------------- targets
def split_targets(split, bundle, tasks: tuple[str, ...]) -> torch.Tensor:
    """N×K float targets (1, 0, NaN unknown) of one split, columns in `tasks` order."""
    columns = []
    for task in tasks:
        if task in bundle.finding_names:
            columns.append(split.findings[:, bundle.finding_names.index(task)].float())
        else:  # pneumonia from the class label: any disease class is pneumonia
            columns.append((split.labels != 0).float())
    return torch.stack(columns, dim=1) if columns else torch.zeros(len(split), 0)


def hide_labels(targets: torch.Tensor, column: int, keep_fraction: float, seed: int) -> torch.Tensor:
    """A copy with `column` unknown (NaN) except on a seeded `keep_fraction` of the images."""
    n = len(targets)
    keep = round(n * keep_fraction)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed + 15))
    hidden = targets.clone()
    hidden[order[keep:], column] = float("nan")
    return hidden


def training_split(split, bundle, config, tasks: tuple[str, ...]):
    """(split, targets) for training: scarce pneumonia labels hidden, images without any label dropped."""
    targets = split_targets(split, bundle, tasks)
    if config.pneumonia_label_fraction < 1:
        targets = hide_labels(targets, tasks.index(PNEUMONIA), config.pneumonia_label_fraction, config.seed)
    labelled = torch.nonzero(known(targets).any(dim=1)).flatten()
    if len(labelled) < len(split):
        return split.subset(labelled), targets[labelled]
    return split, targets


def known(targets: torch.Tensor) -> torch.Tensor:
    return ~torch.isnan(targets)


# ----------------------------------------------------------------------------- loss and accuracy
def masked_bce_sum(logits: torch.Tensor, targets: torch.Tensor, pos_weight: torch.Tensor | None = None) -> torch.Tensor:
    """Σ over images and known labels of BCE(sigmoid(logit), target); unknown labels add nothing."""
    mask = known(targets)
    losses = F.binary_cross_entropy_with_logits(logits.float(), torch.where(mask, targets, 0.0),
                                                pos_weight=pos_weight, reduction="none")
    return torch.where(mask, losses, 0.0).sum()


def make_loss(config, train_targets: torch.Tensor, device: torch.device):
    """The masked multi-label BCE; with class_weights, each label's positives weighted by negatives/positives."""
    pos_weight = None
    if config.class_weights:
        mask = known(train_targets)
        positives = torch.where(mask, train_targets, 0.0).sum(0)
        negatives = mask.sum(0) - positives
        pos_weight = (negatives / positives.clamp_min(1)).clamp_min(1e-3).to(device)
    return lambda logits, y: masked_bce_sum(logits, y, pos_weight)


def count_exact_matches(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Images whose every known label is predicted right at threshold 0.5 (logit 0)."""
    right = ((logits > 0).float() == targets) | ~known(targets)
    return right.all(dim=1).sum()


def probabilities(logits: torch.Tensor) -> torch.Tensor:
    """N×K sigmoid probabilities, one independent probability per task (no softmax)."""
    return torch.sigmoid(logits.float())


# ----------------------------------------------------------------------------- per-label metrics
def label_report(targets: torch.Tensor, probs: torch.Tensor, threshold: float = THRESHOLD) -> dict:
    """One label's AUC and confusion at `threshold`, over the images where it is known."""
    mask = known(targets)
    y, p = targets[mask].bool(), probs[mask].float()
    says = p >= threshold
    tp, fn = int((says & y).sum()), int((~says & y).sum())
    fp, tn = int((says & ~y).sum()), int((~says & ~y).sum())
    n = tp + fn + fp + tn
    return {
        "auc": auc(y, p) if n else None,
        "acc": (tp + tn) / n if n else None,
        "sensitivity": tp / (tp + fn) if tp + fn else None,
        "specificity": tn / (tn + fp) if tn + fp else None,
        "tn": tn, "fp": fp, "fn": fn, "tp": tp,
        "n": n, "positives": tp + fn,
    }


def split_report(targets: torch.Tensor, probs: torch.Tensor, tasks: tuple[str, ...]) -> dict:
    """A split's multi-label summary: exact-match accuracy, mean AUC and a report per label."""
    targets, probs = targets.float().cpu(), probs.float().cpu().reshape(len(targets), -1)
    labels = {task: label_report(targets[:, j], probs[:, j]) for j, task in enumerate(tasks)}
    right = ((probs >= THRESHOLD).float() == targets) | ~known(targets)
    aucs = [r["auc"] for r in labels.values() if r["auc"] is not None]
    return {
        "acc": float(right.all(dim=1).float().mean()) if len(targets) else None,
        "auc": sum(aucs) / len(aucs) if aucs else None,
        "n": len(targets),
        "tasks": list(tasks),
        "labels": labels,
    }


def epoch_metrics(evaluations: dict, data: dict, tasks: tuple[str, ...]) -> dict:
    """Per epoch, per evaluated split and task: `<split>_auc_<task>` and the confusion counts
    `<split>_confusion_<task>` = [tn, fp, fn, tp] (None where the AUC is undefined: one class only)."""
    record = {}
    for name, evaluation in evaluations.items():
        report = split_report(data[name][1], evaluation["probs"], tasks)
        for task, r in report["labels"].items():
            record[f"{name}_auc_{task}"] = r["auc"]
            record[f"{name}_confusion_{task}"] = [r["tn"], r["fp"], r["fn"], r["tp"]]
    return record


def per_label_table(summary: dict, split: str = "val") -> list[dict]:
    """Rows for a table: one per task with AUC, sensitivity, specificity and the confusion counts."""
    report = ((summary or {}).get("splits") or {}).get(split) or {}
    rows = []
    labels = report.get("labels") or {}
    for task in [t for t in (summary or {}).get("tasks") or labels if t in labels]:  # the run's order
        r = labels[task]
        rows.append({"task": task, "AUC": r["auc"], "sensitivity": r["sensitivity"], "specificity": r["specificity"],
                     "TP": r["tp"], "FN": r["fn"], "FP": r["fp"], "TN": r["tn"], "positives": r["positives"],
                     "images": r["n"]})
    return rows


def auc_curves(history: list[dict], tasks: tuple[str, ...] | list[str], split: str = "val") -> list[dict]:
    """Long-format rows (epoch, task, AUC) of the per-epoch AUCs, for a line chart per label."""
    rows = []
    for record in history:
        for task in tasks:
            value = record.get(f"{split}_auc_{task}")
            if isinstance(value, (int, float)) and math.isfinite(value):
                rows.append({"epoch": record["epoch"], "task": task, "AUC": float(value)})
    return rows


def label_aucs(summary: dict, split: str = "val") -> dict[str, float | None]:
    """{task: AUC} of a finished run's split (for Compare and the CLI's JSON)."""
    report = ((summary or {}).get("splits") or {}).get(split) or {}
    return {task: r.get("auc") for task, r in (report.get("labels") or {}).items()}


# ----------------------------------------------------------------------------- the CLI's options
def parse_tasks(text: str, data) -> tuple[str, ...]:
    """'pneumonia,cardiomegaly,effusion' → the tuple; 'all' → pneumonia and every finding of the data."""
    names = tuple(t.strip().lower() for t in text.split(",") if t.strip())
    if names != ("all",):
        return names
    if data.source == "synthetic" and data.test_source is None:
        return SYNTHETIC_TASKS
    from explore.data import load_bundle  # a real set names its own findings (ChestMNIST, NIH: 14)

    return available_tasks(load_bundle(replace_findings(data, True)))


def replace_findings(data, on: bool):
    from dataclasses import replace

    return replace(data, findings=on)


def run_changes(config, tasks: str | None, label_fraction: float | None, findings: bool) -> dict:
    """RunConfig changes for `--tasks`, `--pneumonia-label-fraction` and `--findings`. Tasks other
    than pneumonia need the findings in the data, so naming one turns them on."""
    changes = {}
    data = replace_findings(config.data, True) if findings else config.data
    if tasks is not None:
        changes["tasks"] = parse_tasks(tasks, data)
        if any(t != PNEUMONIA for t in changes["tasks"]):
            data = replace_findings(data, True)
    if label_fraction is not None:
        changes["pneumonia_label_fraction"] = label_fraction
    if data != config.data:
        changes["data"] = data
    return changes


def summary_json(summary: dict) -> dict:
    """The per-label part of the CLI's final JSON line: {"tasks", "per_label_auc": {split: {task: AUC}}}."""
    if not (summary or {}).get("tasks"):
        return {}
    splits = (summary.get("splits") or {})
    return {"tasks": summary["tasks"],
            "per_label_auc": {name: label_aucs(summary, name) for name in splits}}


def epoch_text(record: dict) -> str:
    """'  val AUC pneumonia 0.81 · effusion 0.95' for the CLI's readable epoch lines ('' for single-task runs)."""
    parts = [f"{key.removeprefix('val_auc_')} {value:.3f}" for key, value in record.items()
             if key.startswith("val_auc_") and isinstance(value, (int, float))]
    return f"  val AUC {' · '.join(parts)}" if parts else ""


def task_choices(spec) -> tuple[str, ...]:
    """The findings a data source can train (the Train page's choices): pneumonia, plus the synthetic
    set's cardiomegaly and effusion, or ChestMNIST's / NIH's 14 findings."""
    from explore.data.chestmnist import FINDINGS as NIH_FINDINGS, is_chestmnist

    kind, _, arg = spec.source.partition(":")
    if kind == "synthetic":
        return SYNTHETIC_TASKS
    if (kind == "medmnist" and is_chestmnist(arg)) or (kind == "xrv" and arg.startswith("nih:")):
        return (PNEUMONIA,) + tuple(n for n in NIH_FINDINGS if n != PNEUMONIA)
    return (PNEUMONIA,)


def reproduce_flags(config) -> list[str]:
    """The `python -m explore train` flags that give back a run's multi-task settings (explore/training/reproduce.py)."""
    flags = ["--findings"] if config.data.findings else []
    if config.tasks:
        flags += ["--tasks", ",".join(config.tasks)]
    if config.pneumonia_label_fraction != 1.0:
        flags += ["--pneumonia-label-fraction", str(config.pneumonia_label_fraction)]
    return flags
