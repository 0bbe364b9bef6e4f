"""Why does a model that scores ~95% on val drop to 70–85% on test? The evidence, as numbers.

Val comes from the same hospital as training (site A); test from another (site B). Five
measurements, each a plain function (the Mismatch page and `python -m explore mismatch`
show the same numbers):

  internal_external      the same model on val and on test: accuracy, AUC, sensitivity,
                         specificity at a chosen threshold, prevalence; ROC curves
  error_decomposition    Andrew Ng's "bias and variance with mismatched data": human/Bayes
                         error → train → train-dev → val → test; each step is one kind of error
  source_classifier      can a small network tell the two sources apart from the image alone?
                         (held-out AUC near 1.0: the sources differ in ways a model can use
                         as a shortcut)
  feature_pca            the model's penultimate features in 2-D, by source and by class
  fix_configs            retrain variants (per-image standardisation, histogram equalisation,
                         intensity augmentation, no shortcut marker) and compare val–test gaps

All errors and accuracies here are for the clinical question, disease vs NORMAL, at the
chosen threshold on P(disease); for a two-class model that is the ordinary accuracy.
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from explore.insight.finished_run import FinishedRun, predict
from explore.training.config import RunConfig
from explore.training.metrics import auc, binary_report, positive_score
from explore.models.registry import forward_order
from explore.insight.report import roc_frame
from explore.training.store import RunStore, StoreError
from explore.training.train import split_train_dev

SPLIT_TITLES = {
    "train": "train (site A, seen in training)",
    "train_dev": "train-dev (site A, held out from training)",
    "val": "val (site A, same source as training)",
    "test": "test (site B, the other hospital)",
}


# ----------------------------------------------------------------------------- internal vs external
def threshold_report(labels: torch.Tensor, probs: torch.Tensor, threshold: float = 0.5) -> dict:
    """Disease-vs-NORMAL metrics with 'disease' called when P(disease) ≥ threshold."""
    is_disease = (labels.long() != 0).long()
    return binary_report(is_disease, positive_score(probs.float()), 2, threshold)


def internal_external(predictions: dict, threshold: float = 0.5) -> dict[str, dict]:
    """Per split (val, test, and train-dev when the run held one out): metrics at the threshold."""
    out = {}
    for name in ("train_dev", "val", "test"):
        stored = predictions.get(name)
        if stored is None or len(stored["labels"]) == 0:
            continue
        report = threshold_report(stored["labels"], stored["probs"], threshold)
        report["title"] = SPLIT_TITLES[name]
        out[name] = report
    if "val" in out and "test" in out and out["val"]["acc"] is not None and out["test"]["acc"] is not None:
        out["gap"] = {"acc": out["val"]["acc"] - out["test"]["acc"],
                      "auc": (out["val"]["auc"] - out["test"]["auc"])
                      if out["val"]["auc"] is not None and out["test"]["auc"] is not None else None}
    return out


def internal_external_rows(report: dict[str, dict]) -> list[dict]:
    """`internal_external`'s splits as table rows: split, images, accuracy, AUC, sensitivity, specificity, prevalence."""
    return [{"split": r["title"], "images": r["n"], "accuracy": r["acc"], "AUC": r["auc"], "sensitivity": r["sensitivity"],
             "specificity": r["specificity"], "prevalence": r["prevalence"]}
            for name, r in report.items() if name != "gap"]


def error_levels(parts: dict) -> list[dict]:
    """`decompose_run`'s levels as table rows: level, error."""
    return [{"level": level["name"], "error": level["error"]} for level in parts["levels"]]


def train_error_note(parts: dict) -> str:
    """The sentence under the decomposition: the components add up to the test error, and how train error was measured."""
    logged = parts["train_error_logged"]
    return (f"Human error + the components = test error ({parts['test_error']:.1%}). Train error: "
            f"{parts['train_error_how']}"
            + (f"; the last epoch's logged training error was {logged:.1%} (measured with dropout and augmentation "
               f"on, while the weights changed)." if logged is not None else "."))


def operating_points(report: dict[str, dict]) -> list[dict]:
    """Where the chosen threshold sits on each ROC curve (val and test): {split, fpr, tpr} for `charts.roc`."""
    return [{"split": r["title"], "fpr": 1 - r["specificity"], "tpr": r["sensitivity"]}
            for name, r in report.items() if name in ("val", "test")
            and r["specificity"] is not None and r["sensitivity"] is not None]


def roc_points(predictions: dict):
    """The val and test ROC curves (`report.roc_frame`, the app's one ROC), splits named by SPLIT_TITLES."""
    return roc_frame(predictions, ("val", "test"), SPLIT_TITLES)


# ----------------------------------------------------------------------------- error decomposition
def measure_train_error(loaded: FinishedRun, threshold: float = 0.5, max_images: int = 2000,
                        device: torch.device | str | None = None) -> dict:
    """Train error re-evaluated in eval mode (no dropout, no augmentation, final weights).

    The number logged during training is measured while the weights change, with dropout
    and augmentation on, so it is not comparable with val and test; this one is.
    Above `max_images` a seeded random sample keeps it fast on a CPU.
    """
    config = loaded.config
    train, _ = split_train_dev(loaded.bundle.train, config.train_dev_fraction, config.seed, loaded.bundle.num_classes)
    n_total = len(train)
    if n_total > max_images:
        pick = torch.randperm(n_total, generator=torch.Generator().manual_seed(0))[:max_images].sort().values
        train = train.subset(pick)
    model = copy.deepcopy(loaded.model)
    probs = predict(model, loaded.pipeline, train.images, device or "cpu")
    report = threshold_report(train.labels, probs, threshold)
    how = (f"re-evaluated in eval mode on {len(train)} training images"
           + (f" (a random sample of {n_total})" if n_total > len(train) else ""))
    logged = loaded.record.metrics[-1].get("train_acc") if loaded.record.metrics else None
    return {"error": 1.0 - report["acc"], "n": len(train), "how": how,
            "logged_error": (1.0 - logged) if isinstance(logged, (int, float)) else None}


@dataclass(frozen=True)
class Component:
    name: str
    meaning: str


COMPONENTS = {
    "avoidable_bias": Component("avoidable bias", "train error above human/Bayes error: the model underfits its own data"),
    "variance": Component("variance", "held-out images of the training source score worse than the training images: "
                                      "the model does not generalise beyond the images it saw"),
    "val_overfit": Component("overfitting to val", "val worse than train-dev (both site A, both unseen): "
                                                 "choosing settings by val has overfitted val"),
    "data_mismatch": Component("data mismatch", "test (site B) worse than val (site A): the other hospital's images "
                                                "differ in ways the model never learned to handle"),
}


def error_decomposition(train_error: float, val_error: float, test_error: float, train_dev_error: float | None = None,
                        human_error: float = 0.0) -> dict:
    """Human → train → (train-dev) → val → test, as components that add up to the test error.

    Without a train-dev set, val (the same source, unseen) is the held-out estimate and
    variance = val − train. Components can be negative (a noisy estimate, or a later
    split that happens to be easier); the sum is exact either way.
    """
    levels = [("human", "human / Bayes error", human_error), ("train", "train error", train_error)]
    if train_dev_error is not None:
        levels.append(("train_dev", "train-dev error", train_dev_error))
    levels += [("val", "val error", val_error), ("test", "test error", test_error)]
    steps = {("human", "train"): "avoidable_bias", ("train", "train_dev"): "variance", ("train", "val"): "variance",
             ("train_dev", "val"): "val_overfit", ("val", "test"): "data_mismatch"}
    components = []
    for (a, _, error_a), (b, _, error_b) in zip(levels, levels[1:]):
        key = steps[(a, b)]
        components.append({"key": key, "name": COMPONENTS[key].name, "value": error_b - error_a,
                           "from": a, "to": b, "meaning": COMPONENTS[key].meaning})
    notes = []
    if train_dev_error is None:
        notes.append("This run held out no train-dev set (train_dev_fraction = 0), so val, the same source and "
                     "unseen, stands in for it: variance = val error − train error. To separate variance from "
                     "overfitting to val, train with 'Hold out a train-dev set (%)' on the Train page (Custom run) "
                     "or `python -m explore train ... --train-dev 0.1`.")
    largest = max(components, key=lambda c: c["value"]) if components else None
    return {"levels": [{"key": k, "name": n, "error": e} for k, n, e in levels], "components": components,
            "test_error": test_error, "human_error": human_error,
            "largest": largest["name"] if largest and largest["value"] > 0 else None, "notes": notes}


def decompose_run(loaded: FinishedRun, threshold: float = 0.5, human_error: float = 0.0,
                  device: torch.device | str | None = None) -> dict:
    """The decomposition for a stored run (train error re-evaluated; the rest from predictions.pt)."""
    errors = {}
    for name in ("train_dev", "val", "test"):
        stored = loaded.predictions.get(name)
        if stored is not None and len(stored["labels"]):
            errors[name] = 1.0 - threshold_report(stored["labels"], stored["probs"], threshold)["acc"]
    if "val" not in errors or "test" not in errors:
        raise ValueError("the decomposition needs the run's val and test predictions (train with test evaluation on)")
    train = measure_train_error(loaded, threshold, device=device)
    result = error_decomposition(train["error"], errors["val"], errors["test"], errors.get("train_dev"), human_error)
    result["train_error_how"] = train["how"]
    result["train_error_logged"] = train["logged_error"]
    result["threshold"] = threshold
    return result


# ----------------------------------------------------------------------------- source classifier
class SourceNet(nn.Module):
    """A deliberately small CNN: if even this tells the hospitals apart, the difference is easy to learn."""

    def __init__(self, width: int = 8):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(2 * width, 2 * width, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4),
        )
        self.head = nn.Linear(2 * width * 16, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))


def _downsample(images: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 N×1×H×W → float N×1×size×size in 0..1 (area averaging, so nothing aliases)."""
    x = images.float() / 255.0
    return F.interpolate(x, size=(size, size), mode="area") if x.shape[-1] != size else x


def source_classifier(images_a: torch.Tensor, images_b: torch.Tensor, seed: int = 0, size: int = 32,
                      epochs: int = 15, holdout: float = 0.3, device: torch.device | str | None = None) -> dict:
    """Train SourceNet to tell source A (0) from source B (1); AUC on a held-out part of each source.

    Images are only downsampled, not normalised per image, so brightness, contrast, markers,
    framing and patient size all count. Held-out AUC ≈ 0.5: indistinguishable; ≈ 1.0: a
    network can tell which hospital an X-ray came from.
    """
    started = time.perf_counter()
    device = torch.device(device or "cpu")
    g = torch.Generator().manual_seed(seed)
    x = torch.cat([_downsample(images_a, size), _downsample(images_b, size)])
    y = torch.cat([torch.zeros(len(images_a)), torch.ones(len(images_b))])
    train_idx, test_idx = [], []
    for source in (0, 1):  # hold out the same share of each source
        idx = torch.nonzero(y == source).flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        n_hold = max(1, int(round(len(idx) * holdout)))
        test_idx.append(idx[:n_hold])
        train_idx.append(idx[n_hold:])
    train_idx, test_idx = torch.cat(train_idx), torch.cat(test_idx)
    if len(train_idx) < 4 or min(int((y[test_idx] == s).sum()) for s in (0, 1)) == 0:
        raise ValueError("too few images to train and test a source classifier (need several from each source)")
    mean, std = float(x[train_idx].mean()), float(x[train_idx].std()) or 1.0
    x = ((x - mean) / std).to(device)
    y = y.to(device)
    torch.manual_seed(seed)
    model = SourceNet().to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3, weight_decay=1e-4)
    positives = float(y[train_idx].sum())
    pos_weight = torch.tensor((len(train_idx) - positives) / max(positives, 1.0), device=device)
    for _ in range(epochs):
        model.train()
        order = train_idx[torch.randperm(len(train_idx), generator=g)]
        for start in range(0, len(order), 64):
            batch = order[start:start + 64]
            loss = F.binary_cross_entropy_with_logits(model(x[batch]).squeeze(1), y[batch], pos_weight=pos_weight)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    model.eval()
    with torch.no_grad():
        scores = model(x[test_idx]).squeeze(1).cpu()
    held_out_labels = y[test_idx].cpu()
    value = auc(held_out_labels.bool(), scores)
    accuracy = float(((scores > 0).float() == held_out_labels).float().mean())
    return {"auc": value, "accuracy": accuracy, "n_train": len(train_idx), "n_holdout": len(test_idx),
            "size": size, "epochs": epochs, "seconds": time.perf_counter() - started,
            "verdict": source_verdict(value)}


def source_verdict(value: float | None) -> str:
    if value is None:
        return "undefined (one source missing from the held-out part)"
    if value >= 0.9:
        return ("the sources are easy to tell apart: a network can learn 'which hospital' from the image alone, "
                "and anything correlated with the hospital is a shortcut")
    if value >= 0.7:
        return "the sources differ noticeably: a network can partly tell them apart"
    return "the sources are hard to tell apart from the image alone"


def run_source_classifier(loaded: FinishedRun, seed: int = 0, device: torch.device | str | None = None) -> dict:
    """Val (site A) vs test (site B) of a run's dataset, with a note when the class mix differs."""
    val, test = loaded.bundle.val, loaded.bundle.test
    if len(test) == 0:
        raise ValueError("this dataset has no test images, so there is no second source to compare with")
    result = source_classifier(val.images, test.images, seed=seed, device=device)
    prevalence = [float((s.labels != 0).float().mean()) for s in (val, test)]
    result["prevalence"] = {"val": prevalence[0], "test": prevalence[1]}
    if abs(prevalence[0] - prevalence[1]) > 0.1:
        result["note"] = ("the two sources have different disease prevalence, so part of what tells them apart "
                          "may be the disease itself")
    return result


# ----------------------------------------------------------------------------- feature space
@torch.no_grad()
def penultimate_features(model: nn.Module, pipeline, images: torch.Tensor, device: torch.device | str | None = None,
                         batch_size: int = 256) -> torch.Tensor:
    """What the last Linear layer receives (a forward hook on its input): N×D features.

    Runs on a copy, so the hook never touches the shared trained model.
    """
    device = torch.device(device or "cpu")
    clone = copy.deepcopy(model).to(device).eval()
    size = images.shape[-1]
    linears = [m for _, m in forward_order(clone, torch.zeros(1, 1, size, size, device=device), (nn.Linear,))]
    if not linears:
        raise ValueError("this model has no Linear layer to take features from")
    captured: list[torch.Tensor] = []
    handle = linears[-1].register_forward_hook(lambda module, inputs, output: captured.append(inputs[0].flatten(1).cpu()))
    try:
        for start in range(0, len(images), batch_size):
            chunk = images[start:start + batch_size]
            clone(pipeline(pipeline.stored(chunk), train=False).to(device))
    finally:
        handle.remove()
    return torch.cat(captured).float() if captured else torch.zeros(0, 0)


def pca_2d(features: torch.Tensor) -> tuple[torch.Tensor, list[float]]:
    """Project onto the first two principal components (SVD of the centred features)."""
    centred = features.double() - features.double().mean(dim=0, keepdim=True)
    _, singular, vh = torch.linalg.svd(centred, full_matrices=False)
    k = min(2, vh.shape[0])
    coords = centred @ vh[:k].T
    if k < 2:
        coords = torch.cat([coords, torch.zeros(len(coords), 2 - k, dtype=coords.dtype)], dim=1)
    variance = singular.pow(2)
    explained = (variance[:2] / variance.sum().clamp_min(1e-30)).tolist()
    return coords.float(), explained + [0.0] * (2 - len(explained))


def feature_pca(loaded: FinishedRun, max_per_split: int = 300, device: torch.device | str | None = None) -> dict:
    """Val and test images in the model's penultimate feature space, as rows for a scatter plot."""
    splits = {"val": loaded.bundle.val, "test": loaded.bundle.test}
    features, rows = [], []
    for name, split in splits.items():
        n = min(len(split), max_per_split)
        if n == 0:
            continue
        index = torch.randperm(len(split), generator=torch.Generator().manual_seed(0))[:n].sort().values
        features.append(penultimate_features(loaded.model, loaded.pipeline, split.images[index], device))
        for i in index.tolist():
            rows.append({"source": SPLIT_TITLES[name], "split": name, "class": loaded.bundle.classes[int(split.labels[i])],
                         "id": split.ids[i]})
    coords, explained = pca_2d(torch.cat(features))
    for row, (a, b) in zip(rows, coords.tolist()):
        row["pc1"], row["pc2"] = a, b
    return {"rows": rows, "explained": explained, "dims": int(features[0].shape[1])}


# ----------------------------------------------------------------------------- trying a fix
@dataclass(frozen=True)
class Fix:
    key: str
    title: str
    why: str
    synthetic_only: bool = False


FIXES = {
    f.key: f
    for f in [
        Fix("per_image", "per-image standardisation",
            "each image scaled to mean 0, std 1: removes the hospitals' exposure and brightness differences"),
        Fix("histeq", "histogram equalisation",
            "each image's grey levels spread evenly: removes tone-curve and contrast differences"),
        Fix("intensity_aug", "intensity + noise augmentation",
            "random brightness, contrast, gamma and noise while training: the model sees many 'hospitals'"),
        Fix("histeq_aug", "histogram equalisation + intensity/noise augmentation", "both of the above"),
        Fix("no_shortcut", "shortcut marker removed",
            "no corner tag on site-A pneumonia images: the model must look at the lungs", synthetic_only=True),
        Fix("all", "all of the above", "every fix at once", synthetic_only=True),
    ]
}


SUGGESTED_FIXES = ("per_image", "intensity_aug", "no_shortcut")  # ticked when the page opens


def available_fixes(config: RunConfig) -> list[Fix]:
    synthetic = config.data.source == "synthetic" and config.data.test_source in (None, "synthetic")
    return [fix for fix in FIXES.values() if synthetic or not fix.synthetic_only]


def apply_fix(config: RunConfig, key: str) -> RunConfig:
    augmented = tuple(sorted(set(config.augment) | {"intensity", "noise"}))
    if key == "per_image":
        return config.replace(input_norm="per_image")
    if key == "histeq":
        return config.replace(input_norm="histeq")
    if key == "intensity_aug":
        return config.replace(augment=augmented)
    if key == "histeq_aug":
        return config.replace(input_norm="histeq", augment=augmented)
    if key == "no_shortcut":
        return config.replace(data=config.data.with_knobs(shortcut_fraction=0.0))
    if key == "all":
        return apply_fix(apply_fix(config, "histeq_aug"), "no_shortcut")
    raise ValueError(f"unknown fix {key!r}; choose from {', '.join(FIXES)}")


def fix_group(base_run_id: str) -> str:
    return f"fix:{base_run_id}"


def fix_configs(base: RunConfig, base_run_id: str, keys: list[str], epochs: int | None = None) -> list[RunConfig]:
    """One config per chosen fix, all in one group so they queue together and the table finds them."""
    base_name = base.name or base.model
    configs = []
    for key in keys:
        config = apply_fix(base, key).replace(group=fix_group(base_run_id), name=f"{base_name} · {FIXES[key].title}",
                                               eval_test=True)
        configs.append(config.replace(epochs=epochs) if epochs else config)
    return configs


def fixes_active(rows: list[dict]) -> bool:
    """True while a fix (a row of `fix_table`) is queued or training: worth polling."""
    return any(row["status"] in ("queued", "running") for row in rows)


def fix_table(store: RunStore, base_run_id: str) -> list[dict]:
    """The base run and every fix queued for it: val acc, test acc, the gap, and what changed."""
    base = store.load(base_run_id, with_metrics=False)
    if base.config is None:
        raise StoreError(f"run {base_run_id} cannot be read: {base.damaged}")
    group = fix_group(base_run_id)
    rows = [_fix_row(base, "as trained (baseline)", "")]
    for record in store.group_runs(group, with_metrics=False):
        changes = base.config.differences(record.config)
        changed = ", ".join(f"{k}: {a} → {b}" for k, (a, b) in changes.items() if k not in ("name", "group", "epochs"))
        title = record.config.name.rsplit(" · ", 1)[-1]
        rows.append(_fix_row(record, title, changed))
    return rows


def _fix_row(record, title: str, changed: str) -> dict:
    summary = record.summary or {}
    val, test = summary.get("val_acc"), summary.get("test_acc")
    return {"variant": title, "status": record.state, "val_acc": val, "test_acc": test,
            "gap": (val - test) if isinstance(val, (int, float)) and isinstance(test, (int, float)) else None,
            "epochs": record.config.epochs if record.config else None, "changes": changed, "run_id": record.run_id}


# ----------------------------------------------------------------------------- everything, for the CLI
def mismatch_report(loaded: FinishedRun, threshold: float = 0.5, human_error: float = 0.0,
                    with_source_classifier: bool = True, device: torch.device | str | None = None) -> dict:
    report = {"run_id": loaded.run_id, "model": loaded.config.model, "threshold": threshold,
              "internal_external": internal_external(loaded.predictions, threshold),
              "decomposition": decompose_run(loaded, threshold, human_error, device),
              "warnings": list(loaded.warnings)}
    if with_source_classifier:
        report["source_classifier"] = run_source_classifier(loaded, device=device)
    return report
