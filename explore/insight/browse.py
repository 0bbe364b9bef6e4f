"""Browsing a run's test images by outcome: correct, wrong, one confusion-matrix cell, top losses.

Pure tensor bookkeeping, shared by the Saliency page (explore.insight.attribution) and the Train page's
confusion matrix (explore.insight.report); kept apart so neither has to import the other.
"""
from __future__ import annotations

import torch

from explore.training.metrics import confusion_matrix, positive_score

CELLS_BINARY = {(0, 0): "TN", (0, 1): "FP", (1, 0): "FN", (1, 1): "TP"}
CELL_MEANING = {"TN": "true negatives: NORMAL called NORMAL", "FP": "false positives: NORMAL called PNEUMONIA",
                "FN": "false negatives: PNEUMONIA missed", "TP": "true positives: PNEUMONIA found"}
BROWSE_MODES = ("all", "correct", "wrong", "cell", "top_losses")
BROWSE_TITLES = {"all": "All", "correct": "Correct", "wrong": "Wrong", "cell": "Confusion-matrix cell",
                 "top_losses": "Top losses (most confident mistakes)"}


def outcomes(probs: torch.Tensor, labels: torch.Tensor, threshold: float = 0.5) -> dict[str, torch.Tensor]:
    """Per image: predicted class, P(disease), whether correct, and the loss on its true class."""
    probs, labels = probs.float().cpu(), labels.long().cpu()
    eps = 1e-7
    if probs.ndim == 1:
        predicted = (probs >= threshold).long()
        p_true = torch.where(labels == 1, probs, 1 - probs)
    else:
        predicted = probs.argmax(dim=1)
        p_true = probs.gather(1, labels.view(-1, 1)).squeeze(1)
    return {"predicted": predicted, "labels": labels, "disease_prob": positive_score(probs),
            "correct": predicted == labels, "loss": -torch.log(p_true.clamp_min(eps))}


def confusion(outcome: dict[str, torch.Tensor], num_classes: int) -> list[list[int]]:
    """K×K counts of `outcomes` (rows: true class, columns: predicted), as the buttons of a confusion matrix."""
    return confusion_matrix(outcome["labels"], outcome["predicted"], num_classes).tolist()


def select(outcome: dict[str, torch.Tensor], how: str = "all", cell: tuple[int, int] | None = None,
           limit: int = 8) -> list[int]:
    """Indices to show: all / correct / wrong / one confusion-matrix cell (true, predicted) / top losses.

    Top losses are the most confident mistakes: wrong predictions, highest loss first.
    """
    if how not in BROWSE_MODES:
        raise ValueError(f"browse mode must be one of {BROWSE_MODES}")
    n = len(outcome["labels"])
    keep = torch.ones(n, dtype=torch.bool)
    if how == "correct":
        keep = outcome["correct"]
    elif how in ("wrong", "top_losses"):
        keep = ~outcome["correct"]
    elif how == "cell":
        if cell is None:
            raise ValueError("browsing a confusion-matrix cell needs cell=(true class, predicted class)")
        keep = (outcome["labels"] == cell[0]) & (outcome["predicted"] == cell[1])
    index = torch.nonzero(keep).flatten()
    if how == "top_losses":
        index = index[torch.argsort(outcome["loss"][index], descending=True, stable=True)]
    return index[:limit].tolist()


def cell_name(true: int, predicted: int, classes: tuple[str, ...]) -> str:
    if len(classes) == 2:
        return CELLS_BINARY[(true, predicted)]
    return f"{classes[true]}→{classes[predicted]}"
