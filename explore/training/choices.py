"""What the Train form offers: option lists built from config.py's tuples, their titles, slider grids.

The pages draw these; they never repeat a list. An option that config.py gains shows up in the form
(under its own name until it gets a title here).
"""
from __future__ import annotations

import math

from explore.training.config import AUGMENTATIONS, DEVICES, INPUT_NORMS, LOSSES, OPTIMIZERS, PRECISIONS, SCHEDULERS

# Slider grids: roughly ×3 steps, the values a student would try by hand.
LEARNING_RATES = (1e-7, 3e-7, 1e-6, 3e-6, 1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0)
WEIGHT_DECAYS = (0.0, 1e-5, 1e-4, 1e-3, 1e-2, 0.1, 1.0, 10.0)
BATCH_SIZES = (8, 16, 32, 64, 128, 256, 512)
BACKBONE_LR_SCALES = (0.01, 0.1, 0.3, 1.0)  # transfer learning: the backbone's lr = lr × this

_TITLES = {
    "optimizer": {"sgd": "SGD", "momentum": "SGD + momentum", "rmsprop": "RMSprop", "adam": "Adam", "adamw": "AdamW"},
    "scheduler": {"none": "constant", "step": "StepLR", "exponential": "exponential decay", "cosine": "cosine",
                  "plateau": "reduce on plateau", "onecycle": "one-cycle"},
    "input_norm": {"dataset": "train-set mean/std", "per_image": "per image", "histeq": "histogram equalisation",
                   "none": "none (pixels 0..1)"},
    "loss": {"bce": "BCE (1 output)", "ce": "cross-entropy (K outputs)"},
}
_OPTIONS = {"optimizer": OPTIMIZERS, "scheduler": SCHEDULERS, "input_norm": INPUT_NORMS, "loss": LOSSES}


def titled(setting: str) -> dict[str, str]:
    """config.py's options for `setting` ("optimizer", "scheduler", "input_norm", "loss") → their titles."""
    return {key: _TITLES[setting].get(key, key) for key in _OPTIONS[setting]}


OPTIMIZER_TITLES = titled("optimizer")
SCHEDULER_TITLES = titled("scheduler")
NORM_TITLES = titled("input_norm")
LOSS_TITLES = titled("loss")
DEVICE_CHOICES = DEVICES
PRECISION_CHOICES = PRECISIONS
# Horizontal flip is offered apart, with the warning why it is off (the heart is on the patient's left).
AUGMENT_CHOICES = tuple(name for name in AUGMENTATIONS if name != "hflip")
SCHEDULERS_WITH_GAMMA = ("step", "exponential", "plateau")


def losses_for(num_classes: int) -> list[str]:
    """BCE needs exactly two classes (one output); cross-entropy works for any number."""
    return [loss for loss in LOSSES if num_classes == 2 or loss != "bce"]


def default_gamma(scheduler: str) -> float:
    """The decay factor the form starts from: exponential decay is applied every epoch, so gently."""
    return 0.9 if scheduler == "exponential" else 0.1


def automatic_name(model: str, options: dict, optimizer: str, lr: float, tasks: tuple[str, ...] = (),
                   pneumonia_label_fraction: float = 1.0) -> str:
    """'hw3_cnn + batch norm · Adam lr 0.001': the name of a custom run the student left unnamed; a multi-task
    run adds its findings and, when pneumonia labels are scarce, their share."""
    name = f"{model}{' + batch norm' if options.get('batch_norm') else ''} · {OPTIMIZER_TITLES[optimizer]} lr {lr:g}"
    if tasks:
        name += " · " + " + ".join(tasks)
    if pneumonia_label_fraction < 1:
        name += f" · {pneumonia_label_fraction:.0%} of pneumonia labels"
    return name


def nearest_learning_rate(value: float | None) -> float | None:
    """The learning-rate slider's value closest to `value` on a log scale (None stays None)."""
    if not value or value <= 0:
        return None
    return min(LEARNING_RATES, key=lambda v: abs(math.log10(v) - math.log10(value)))
