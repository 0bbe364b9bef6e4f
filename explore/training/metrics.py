"""Classification metrics from predicted probabilities, in plain torch (no sklearn needed).

`positive_score` is the model's probability of disease (PNEUMONIA, or "not NORMAL" with
three classes), so every metric here is about normal-vs-disease, the clinical question.
"""
from __future__ import annotations

import torch


def positive_score(probs: torch.Tensor) -> torch.Tensor:
    """N (BCE: p(pneumonia)) or N×K (CE: softmax) → N scores for 'not class 0 (NORMAL)'."""
    return probs if probs.ndim == 1 else 1.0 - probs[:, 0]


def predicted_class(probs: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    if probs.ndim == 1:
        return (probs >= threshold).long()
    return probs.argmax(dim=1)


def confusion_matrix(labels: torch.Tensor, predicted: torch.Tensor, num_classes: int) -> torch.Tensor:
    """K×K counts, rows = true class, columns = predicted class."""
    index = labels.long() * num_classes + predicted.long()
    return torch.bincount(index, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def roc_curve(is_positive: torch.Tensor, score: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """False-positive rate, true-positive rate and thresholds, from the highest score down."""
    order = torch.argsort(score, descending=True, stable=True)
    score, is_positive = score[order].double(), is_positive[order].double()
    # Keep the last index of each run of equal scores so ties move the curve diagonally.
    distinct = torch.nonzero(torch.diff(score) != 0).flatten()
    last = torch.cat([distinct, torch.tensor([len(score) - 1])])
    tps = torch.cumsum(is_positive, 0)[last]
    fps = (last + 1).double() - tps
    positives, negatives = max(float(is_positive.sum()), 1.0), max(float(len(score) - is_positive.sum()), 1.0)
    tpr = torch.cat([torch.zeros(1, dtype=torch.double), tps / positives])
    fpr = torch.cat([torch.zeros(1, dtype=torch.double), fps / negatives])
    thresholds = torch.cat([torch.tensor([float("inf")], dtype=torch.double), score[last]])
    return fpr, tpr, thresholds


def auc(is_positive: torch.Tensor, score: torch.Tensor) -> float | None:
    """Area under the ROC curve; None when only one class is present (undefined)."""
    positives = int(is_positive.sum())
    if positives == 0 or positives == len(is_positive):
        return None
    fpr, tpr, _ = roc_curve(is_positive, score)
    return float(torch.trapezoid(tpr, fpr))


def per_class(confusion) -> list[dict]:
    """K×K counts (rows true, columns predicted) → per class: precision, recall, F1 and support.

    precision = correct calls of the class / all calls of it; recall = correct calls / all images
    of it; F1 = their harmonic mean. None where the denominator is 0 (never called, or absent).
    """
    matrix = torch.as_tensor(confusion, dtype=torch.float64)
    rows = []
    for k in range(matrix.shape[0]):
        hit, called, support = float(matrix[k, k]), float(matrix[:, k].sum()), float(matrix[k].sum())
        precision = hit / called if called else None
        recall = hit / support if support else None
        f1 = (2 * precision * recall / (precision + recall) if precision is not None and recall is not None
              and precision + recall > 0 else (0.0 if precision is not None and recall is not None else None))
        rows.append({"precision": precision, "recall": recall, "f1": f1, "support": int(support)})
    return rows


def binary_report(labels: torch.Tensor, probs: torch.Tensor, num_classes: int, threshold: float = 0.5) -> dict:
    """Accuracy, confusion matrix, and disease-vs-normal AUC, sensitivity and specificity."""
    labels = labels.long().cpu()
    probs = probs.float().cpu()
    predicted = predicted_class(probs, threshold)
    is_positive = labels != 0
    score = positive_score(probs)
    says_positive = score >= threshold if probs.ndim == 1 else predicted != 0
    tp = int((says_positive & is_positive).sum())
    tn = int((~says_positive & ~is_positive).sum())
    positives, negatives = int(is_positive.sum()), int((~is_positive).sum())
    return {
        "n": len(labels),
        "acc": float((predicted == labels).float().mean()) if len(labels) else None,
        "auc": auc(is_positive, score),
        "sensitivity": tp / positives if positives else None,
        "specificity": tn / negatives if negatives else None,
        "prevalence": positives / len(labels) if len(labels) else None,
        "confusion": confusion_matrix(labels, predicted, num_classes).tolist(),
        "per_class": per_class(confusion_matrix(labels, predicted, num_classes)),
    }
