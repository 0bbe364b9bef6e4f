"""The learning-rate range test ("LR finder", Smith 2017; popularised by fast.ai).

A short throw-away run: start at a tiny learning rate and multiply it by the same factor after
every batch until it is huge, recording the training loss at each step. The loss first barely
moves (rate too small), then falls fastest, then blows up (rate too large). A good learning
rate sits where the loss is still falling steeply, before the minimum.

The rule used here (stated on the page and in the CLI output): **one tenth of the rate at which
the smoothed loss was lowest**. At the minimum the rate is already on the edge of instability;
a tenth of it is safely on the falling part of the curve. The steepest-descent rate is reported
too, as a second opinion.

The test trains its own freshly built copy of the model (same config, same seed): it never
touches a model the user trains, and the run store is not written.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from explore.training.config import RunConfig
from explore.data import DataBundle
from explore.device import Placement
from explore.training.train import TrainingRun, make_optimizer

RULE = "one tenth of the learning rate at the lowest smoothed loss"
SMOOTHING = 0.9  # exponential moving average of the batch loss (one batch alone is too noisy)
STOP_FACTOR = 4.0  # stop once the smoothed loss is 4× the best seen: the rate is far too large


@dataclass(frozen=True)
class RangeTest:
    start_lr: float = 1e-7
    end_lr: float = 1.0
    steps: int = 100

    def lr_at(self, step: int) -> float:
        """Exponential ramp: start_lr at step 0, end_lr at the last step."""
        return self.start_lr * (self.end_lr / self.start_lr) ** (step / max(1, self.steps - 1))


def find_lr(config: RunConfig, bundle: DataBundle | None = None, placement: Placement | None = None,
            test: RangeTest = RangeTest()) -> dict:
    """Run the range test for `config`'s model, loss, optimiser and batch size.

    Returns {"suggested_lr", "steepest_lr", "rule", "points": [{"lr", "loss"}, ...], "stopped_early"}.
    `loss` is the smoothed (bias-corrected moving average) training loss per batch.
    """
    if not 0 < test.start_lr < test.end_lr:
        raise ValueError("the range test needs 0 < start_lr < end_lr")
    if test.steps < 5:
        raise ValueError("the range test needs at least 5 steps")
    # Its own run: a fresh model from the seed, no train-dev hold-out, no test split, no schedule.
    run = TrainingRun(config.replace(lr=test.start_lr, scheduler="none", train_dev_fraction=0.0, eval_test=False,
                                     early_stopping_patience=0), bundle, placement)
    images, labels = run.data["train"]
    optimizer = make_optimizer(run.config, run.param_groups())
    # Transfer runs give the backbone lr × backbone_lr_scale: keep each group's ratio to the rate tested.
    scales = [group["lr"] / test.start_lr for group in optimizer.param_groups]
    order = _batch_order(len(images), config.batch_size, test.steps, config.seed)
    run.model.train()
    points, average, best, stopped_early = [], 0.0, math.inf, False
    for step, index in enumerate(order):
        lr = test.lr_at(step)
        for group, scale in zip(optimizer.param_groups, scales):
            group["lr"] = lr * scale
        x, y = images.index_select(0, index.to(images.device)), labels.index_select(0, index.to(labels.device))
        loss = run.loss_fn(run.forward(x, train=True), y) / len(y)
        value = float(loss.detach())
        if not math.isfinite(value):
            stopped_early = True
            break
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        average = SMOOTHING * average + (1 - SMOOTHING) * value
        smoothed = average / (1 - SMOOTHING ** (step + 1))  # bias correction: the first steps start at 0
        points.append({"lr": lr, "loss": smoothed})
        best = min(best, smoothed)
        if step > 5 and smoothed > STOP_FACTOR * best:
            stopped_early = True
            break
    return {"suggested_lr": suggest(points), "steepest_lr": steepest(points), "rule": RULE, "points": points,
            "stopped_early": stopped_early, "model": config.model, "batch_size": config.batch_size,
            "optimizer": config.optimizer}


def _batch_order(n: int, batch_size: int, steps: int, seed: int) -> list[torch.Tensor]:
    """`steps` batches of indices, reshuffling after each pass over the training set."""
    g = torch.Generator().manual_seed(seed)
    batches: list[torch.Tensor] = []
    while len(batches) < steps:
        order = torch.randperm(n, generator=g)
        batches += [order[i:i + batch_size] for i in range(0, n, batch_size)]
    return batches[:steps]


def suggest(points: list[dict]) -> float | None:
    """The rule: one tenth of the rate at the lowest smoothed loss."""
    if not points:
        return None
    lowest = min(points, key=lambda p: p["loss"])
    return lowest["lr"] / 10


def steepest(points: list[dict]) -> float | None:
    """The rate where the smoothed loss falls fastest per decade of learning rate (before the minimum)."""
    lowest = min(range(len(points)), key=lambda i: points[i]["loss"], default=None)
    if lowest is None or lowest < 2:
        return None
    slopes = [(points[i + 1]["loss"] - points[i]["loss"]) / math.log10(points[i + 1]["lr"] / points[i]["lr"])
              for i in range(lowest)]
    i = min(range(len(slopes)), key=slopes.__getitem__)
    return points[i]["lr"]
