"""The training loop: `TrainingRun(config).fit()` yields one small record per event.

Records are plain dicts (JSON-ready):
  {"kind": "progress", "epoch": 3, "batch": 20, "batches": 50}
  {"kind": "epoch", "epoch": 3, "train_loss": ..., "train_acc": ..., "val_loss": ..., "val_acc": ...,
   "test_loss": ..., "test_acc": ..., "lr": ..., "seconds": ...}
  {"kind": "end", "status": "finished" | "diverged" | "stopped" | "failed", "message": "..."}
The same generator feeds the CLI (JSON lines), the background jobs (run store) and tests.

Why it is fast (after airbench): the whole dataset sits on the device as one uint8 tensor
and is normalised and augmented there per batch; conv nets run channels_last under bf16
autocast where the hardware has it; losses and correct counts are summed on the device
and read once per epoch (one host sync), except for the cheap finite-loss check.
"""
from __future__ import annotations

import copy
import math
import time
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from explore.training import augment as augmentations
from explore.training import multilabel
from explore.training.config import RunConfig
from explore.data import DataBundle, Split, load_bundle
from explore.device import Placement, reuse_freed_memory, set_cpu_threads, tune_cuda
from explore.training.metrics import binary_report
from explore.models.registry import count_parameters, family_of

EVAL_BATCH_SIZE = 256
# On a CPU evaluation is no faster above 64 images per batch (measured, BENCHMARKS.md), while one
# batch of 256 images at 256 px needs over 1 GiB per conv activation: smaller batches keep the
# memory peak down (hw3_cnn quick preset: 1.8 → 1.3 GB peak RSS).
CPU_EVAL_BATCH_SIZE = 64
# A mean loss above this is divergence even while still finite: a sane classifier's BCE/CE
# loss is around 0.7 at chance, so 10^4 means the logits have blown up.
DIVERGED_LOSS = 1e4
PROGRESS_UPDATES_PER_EPOCH = 20


class InputPipeline:
    """Turns stored uint8 images into the float tensors the model sees.

    One object holds the normalisation statistics (from the training split only, so val and
    test never leak into training) and the augmentation settings.
    """

    def __init__(self, config: RunConfig, train_images: torch.Tensor):
        self.norm = config.input_norm
        self.augment = tuple(config.augment)
        images = train_images.float() / 255.0
        self.mean = float(images.mean()) if len(images) else 0.5
        self.std = float(images.std()) if len(images) > 1 else 0.25
        self.std = self.std if self.std > 1e-6 else 1.0

    def stored(self, images: torch.Tensor) -> torch.Tensor:
        """Per-image transforms that never change between epochs are applied once, at load."""
        return augmentations.equalize_histogram(images) if self.norm == "histeq" else images

    def __call__(self, images: torch.Tensor, train: bool, generator: torch.Generator | None = None) -> torch.Tensor:
        # In place on the fresh float copy: the same numbers as (x - mean) / std without allocating two
        # more batch-sized tensors (on a CPU each new allocation costs page faults; BENCHMARKS.md).
        x = images.float().div_(255.0)
        if train and self.augment:
            x = augmentations.apply(x, self.augment, generator)
        if self.norm == "dataset":
            return x.sub_(self.mean).div_(self.std)
        if self.norm in ("per_image", "histeq"):
            mean = x.mean(dim=(1, 2, 3), keepdim=True)
            std = x.std(dim=(1, 2, 3), keepdim=True).clamp_min(1e-3)
            return x.sub_(mean).div_(std)
        return x  # "none": 0..1, like the course's ToTensor()

    def to_dict(self) -> dict:
        return {"norm": self.norm, "mean": self.mean, "std": self.std}


def pipeline_for_run(config: RunConfig, summary: dict | None = None, bundle: DataBundle | None = None) -> InputPipeline:
    """A finished run's own InputPipeline: the statistics stored in its summary.json, else recomputed from
    the training images (the config's data, or `bundle`). Attribution, analysis and ROAR all rebuild it here."""
    stats = (summary or {}).get("input_pipeline") or {}
    if "mean" in stats and "std" in stats:
        pipeline = InputPipeline(config, torch.zeros(0, 1, 1, 1, dtype=torch.uint8))
        pipeline.mean, pipeline.std = float(stats["mean"]), float(stats["std"])
        return pipeline
    bundle = bundle if bundle is not None else load_bundle(config.data)
    return InputPipeline(config, bundle.train.images)


def permuted_labels(labels: torch.Tensor, seed: int) -> torch.Tensor:
    """The data-randomisation test's training labels: the same labels in a seeded random order.

    Class counts stay the same; any link between an image and its label is gone, so a model can
    only memorise. Val and test keep their true labels (its accuracy there should be chance).
    """
    g = torch.Generator().manual_seed(seed + 7)
    return labels[torch.randperm(len(labels), generator=g)]


def split_train_dev(train: Split, fraction: float, seed: int, num_classes: int) -> tuple[Split, Split | None]:
    """(train, train-dev): `fraction` of each class held out, seeded, for the mismatch analysis.

    The one split: the loop trains on the first part, explore.insight.mismatch re-measures train error on it.
    """
    if fraction <= 0:
        return train, None
    g = torch.Generator().manual_seed(seed + 1)
    keep, hold = [], []
    for cls in range(num_classes):
        idx = torch.nonzero(train.labels == cls).flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        n_hold = int(round(len(idx) * fraction))
        hold.append(idx[:n_hold])
        keep.append(idx[n_hold:])
    return train.subset(torch.cat(keep).sort().values), train.subset(torch.cat(hold).sort().values)


def make_loss(config: RunConfig, train_labels: torch.Tensor, num_classes: int, device: torch.device):
    """BCE-with-logits on 1 output, or cross-entropy on K outputs; optional inverse-frequency weights."""
    counts = torch.bincount(train_labels.cpu(), minlength=num_classes).float().clamp_min(1)
    if config.loss == "bce":
        pos_weight = (counts[0] / counts[1]).to(device) if config.class_weights else None
        bce = nn.BCEWithLogitsLoss(pos_weight=pos_weight, reduction="sum")
        return lambda logits, y: bce(logits.float().squeeze(1), y.float())
    weight = (counts.sum() / (num_classes * counts)).to(device) if config.class_weights else None
    ce = nn.CrossEntropyLoss(weight=weight, reduction="sum")
    return lambda logits, y: ce(logits.float(), y)


def count_correct(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    if labels.ndim == 2:  # multi-label targets: images with every known label right
        return multilabel.count_exact_matches(logits, labels)
    if logits.shape[1] == 1:
        return ((logits.squeeze(1) > 0).long() == labels).sum()
    return (logits.argmax(dim=1) == labels).sum()


def probabilities(logits: torch.Tensor) -> torch.Tensor:
    """N (sigmoid of one logit) or N×K (softmax)."""
    logits = logits.float()
    return torch.sigmoid(logits.squeeze(1)) if logits.shape[1] == 1 else torch.softmax(logits, dim=1)


def make_optimizer(config: RunConfig, param_groups) -> torch.optim.Optimizer:
    kind, lr, wd = config.optimizer, config.lr, config.weight_decay
    if kind == "sgd":
        return torch.optim.SGD(param_groups, lr=lr, weight_decay=wd)
    if kind == "momentum":
        return torch.optim.SGD(param_groups, lr=lr, momentum=config.momentum, nesterov=config.nesterov, weight_decay=wd)
    if kind == "rmsprop":
        return torch.optim.RMSprop(param_groups, lr=lr, momentum=0.0, weight_decay=wd)
    adam = torch.optim.Adam if kind == "adam" else torch.optim.AdamW
    # The same update as a fused kernel: one pass over each weight instead of ~10. It halves the
    # MLPs' epoch time on a CPU (millions of first-layer weights; BENCHMARKS.md). Older torch
    # builds have no fused CPU Adam and refuse it when constructed: then the plain loop runs.
    try:
        return adam(param_groups, lr=lr, weight_decay=wd, fused=True)
    except (RuntimeError, TypeError):
        return adam(param_groups, lr=lr, weight_decay=wd)


def make_scheduler(config: RunConfig, optimizer, epochs: int, batches_per_epoch: int):
    """Returns (scheduler or None, steps_per_batch). One-cycle steps every batch, the rest every epoch."""
    kind = config.scheduler
    if kind == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=config.step_size, gamma=config.gamma), False
    if kind == "exponential":
        return torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=config.gamma), False
    if kind == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, epochs)), False
    if kind == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=config.gamma, patience=2), False
    if kind == "onecycle":
        max_lr = [g["lr"] for g in optimizer.param_groups]
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=max_lr, epochs=epochs,
                                                   steps_per_epoch=max(1, batches_per_epoch)), True
    return None, False


def eval_batch_size(device: torch.device) -> int:
    """Images per evaluation batch on this device (why CPUs take fewer: see CPU_EVAL_BATCH_SIZE)."""
    return EVAL_BATCH_SIZE if device.type == "cuda" else CPU_EVAL_BATCH_SIZE


@torch.no_grad()
def eval_batches(model: nn.Module, n: int, batch_size: int, step: Callable[[slice], object]) -> list:
    """The one evaluation loop: `step(batch)` for each slice of n items, model in eval mode (dropout off,
    BatchNorm on its stored statistics), no gradients; the model's mode is restored afterwards.

    Evaluation during training, the frozen backbone's feature pass (explore.training.transfer) and a finished run's
    predictions (explore.insight.attribution.predict) all run through it; each says what one batch does.
    """
    was_training = model.training
    model.eval()
    try:
        return [step(slice(start, start + batch_size)) for start in range(0, n, batch_size)]
    finally:
        model.train(was_training)


def _uses_channels_last(model: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d) for m in model.modules())


class TrainingRun:
    """One training run: the model, its data on the device, and the loop.

    Usage: `run = TrainingRun(config); for record in run.fit(should_stop): ...`; afterwards
    `run.model` holds the weights to keep (best epoch when early stopping restores them),
    `run.status`/`run.message` say how it ended and `run.summary()` gives the final metrics.
    """

    def __init__(self, config: RunConfig, bundle: DataBundle | None = None, placement: Placement | None = None):
        self.config = config = config.resolve()
        self.family = family_of(config.model)  # how this model builds, which parameters train, the epoch hook
        self.bundle = bundle if bundle is not None else load_bundle(config.data)
        self.placement = placement or Placement.choose(config.device, config.precision)
        if self.placement.device.type == "cpu":
            set_cpu_threads()
            reuse_freed_memory()
        elif self.placement.device.type == "cuda":
            tune_cuda()
        torch.manual_seed(config.seed)
        self.status, self.message = "created", ""
        self.history: list[dict] = []
        self.best_epoch, self.best_val_loss = 0, math.inf
        self.setup_seconds = 0.0
        self.weights_name = None  # set by transfer models: the pretrained weights used, or "random"
        started = time.perf_counter()
        self.tasks = config.tasks  # multi-label run (explore/training/multilabel.py) when not empty
        if self.tasks:
            multilabel.check_tasks(self.tasks, self.bundle)
        self.model = self._build_model()
        self.pipeline = InputPipeline(config, self.bundle.train.images)
        self.data = self._place_data()
        self.loss_fn = (multilabel.make_loss(config, self.data["train"][1], self.placement.device) if self.tasks else
                        make_loss(config, self.data["train"][1], self.bundle.num_classes, self.placement.device))
        # fp16 only (a T4's fast path): scales the loss so small gradients survive fp16; a pass-through otherwise
        self.scaler = self.placement.grad_scaler()
        self.setup_seconds = time.perf_counter() - started

    # ----- setup -----------------------------------------------------------------------
    def _build_model(self) -> nn.Module:
        model, self.weights_name = self.family.build_for_run(self.config, self.bundle.num_classes,
                                                             self.bundle.image_size)
        model = model.to(self.placement.device)
        if _uses_channels_last(model):
            model = model.to(memory_format=torch.channels_last)
        return model

    def _place_data(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Every split as (uint8 images, labels) on the device, decoded and moved once."""
        device = self.placement.device
        train, train_dev = split_train_dev(self.bundle.train, self.config.train_dev_fraction, self.config.seed,
                                           self.bundle.num_classes)
        splits = {"train": train, "val": self.bundle.val}
        if train_dev is not None:
            splits["train_dev"] = train_dev
        if self.config.eval_test and len(self.bundle.test):
            splits["test"] = self.bundle.test
        placed = {}
        for name, split in splits.items():
            targets = None
            if self.tasks:  # N×K targets; train may drop images that lost all their labels
                split, targets = (multilabel.training_split(split, self.bundle, self.config, self.tasks) if name == "train"
                                  else (split, multilabel.split_targets(split, self.bundle, self.tasks)))
            if len(split) == 0 and name != "test":
                raise ValueError(f"the {name} split is empty: a run needs training and validation images")
            images = split.images
            images = self.pipeline.stored(images).to(device)
            labels = split.labels if targets is None else targets
            if name == "train" and self.config.permute_labels:
                labels = permuted_labels(labels, self.config.seed)
            placed[name] = (images, labels.to(device))
        return placed

    def param_groups(self):
        return self.family.param_groups(self.model, self.config)

    # ----- the loop --------------------------------------------------------------------
    def forward(self, images: torch.Tensor, train: bool, generator=None) -> torch.Tensor:
        x = self.pipeline(images, train, generator)
        if _uses_channels_last(self.model):
            x = x.contiguous(memory_format=torch.channels_last)
        with self.placement.autocast():
            return self.model(x)

    def evaluate(self, split: str) -> dict[str, torch.Tensor]:
        """Summed loss, correct count and probabilities on one split, left on the device (torchvision's
        `evaluate`; the epoch record reads every split's sums in one host sync)."""
        images, labels = self.data[split]

        def step(batch: slice):
            logits = self.forward(images[batch], train=False)
            probs = multilabel.probabilities(logits) if self.tasks else probabilities(logits)
            return self.loss_fn(logits, labels[batch]), count_correct(logits, labels[batch]), probs

        outputs = eval_batches(self.model, len(images), eval_batch_size(images.device), step)
        loss_sum = torch.zeros((), device=images.device)
        correct = torch.zeros((), device=images.device, dtype=torch.long)
        for loss, right, _ in outputs:
            loss_sum += loss
            correct += right
        return {"loss_sum": loss_sum, "correct": correct, "n": len(images),
                "probs": torch.cat([probs for _, _, probs in outputs]) if outputs else torch.zeros(0)}

    def fit(self, should_stop: Callable[[], bool] = lambda: False) -> Iterator[dict]:
        try:
            yield from self._fit(should_stop)
        except (torch.OutOfMemoryError, MemoryError) as error:
            self._end("failed", f"out of memory ({type(error).__name__}): try a smaller batch size or image size")
            self._release_memory()
            yield self._end_record()
        except RuntimeError as error:
            if "out of memory" not in str(error) and "can't allocate memory" not in str(error):
                raise
            self._end("failed", "out of memory: try a smaller batch size or image size")
            self._release_memory()
            yield self._end_record()

    def _release_memory(self):
        self.data = {}
        if self.placement.device.type == "cuda":
            torch.cuda.empty_cache()

    def _end(self, status: str, message: str = ""):
        self.status, self.message = status, message

    def _end_record(self) -> dict:
        return {"kind": "end", "status": self.status, "message": self.message}

    def _diverged(self, message: str) -> dict:
        """Back to the last good weights (the previous epoch's), and the 'end' record that says so."""
        self.model.load_state_dict(self._last_good)
        self._end("diverged", message)
        return self._end_record()

    def _fit(self, should_stop) -> Iterator[dict]:
        """Epoch after epoch: train, evaluate, record, step the schedule, maybe stop early. Every way out
        (finished, early stop, stopped by the user, diverged) yields exactly one 'end' record."""
        config = self.config
        batches = math.ceil(len(self.data["train"][0]) / config.batch_size)
        optimizer = make_optimizer(config, self.param_groups())
        scheduler, per_batch = make_scheduler(config, optimizer, config.epochs, batches)
        self._shuffle = torch.Generator().manual_seed(config.seed)
        self._aug_generator = torch.Generator(device=self.placement.device).manual_seed(config.seed + 7)
        self._last_good = copy.deepcopy(self.model.state_dict())
        self._best_state, self._epochs_without_improvement = None, 0
        self.status = "running"
        for epoch in range(1, config.epochs + 1):
            started = time.perf_counter()
            sums = yield from self.train_one_epoch(epoch, optimizer, scheduler if per_batch else None, should_stop)
            if sums is None:
                return  # stopped or diverged: train_one_epoch yielded the 'end' record
            record = self._epoch_record(epoch, *sums, time.perf_counter() - started)
            if not all(math.isfinite(v) for k, v in record.items() if isinstance(v, float)):
                yield self._diverged(f"the validation loss became non-finite in epoch {epoch}; kept the weights "
                                     f"of epoch {epoch - 1}. Try a lower learning rate.")
                return
            self.history.append(record)
            yield record
            self._last_good = copy.deepcopy(self.model.state_dict())
            if scheduler is not None and not per_batch:
                if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                    scheduler.step(record["val_loss"])
                else:
                    scheduler.step()
            if self._stops_early(record):
                yield self._end_record()
                return
        if self._best_state is not None:
            self.model.load_state_dict(self._best_state)
        self._end("finished", f"trained {config.epochs} epochs")
        yield self._end_record()

    def train_one_epoch(self, epoch: int, optimizer, batch_scheduler, should_stop) -> Iterator[dict]:
        """One pass over the shuffled training images (torchvision's `train_one_epoch`). Yields progress
        records; returns (summed loss, correct count, images, learning rate), sums left on the device, or
        None when the run ended in this epoch (stopped by the user, or diverged) after its 'end' record."""
        config, device = self.config, self.placement.device
        images, labels = self.data["train"]
        n = len(images)
        batches = math.ceil(n / config.batch_size)
        progress_every = max(1, batches // PROGRESS_UPDATES_PER_EPOCH)
        self.model.train()
        self._before_epoch(epoch)
        order = torch.randperm(n, generator=self._shuffle).to(device)
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device, dtype=torch.long)
        lr = optimizer.param_groups[-1]["lr"]
        for batch in range(batches):
            if should_stop():
                self._end("stopped", f"stopped by the user in epoch {epoch}, batch {batch + 1} of {batches}")
                yield self._end_record()
                return None
            index = order[batch * config.batch_size:(batch + 1) * config.batch_size]
            # index_select copies whole rows; images[index] takes the generic indexing path (~20× slower on a CPU)
            x, y = images.index_select(0, index), labels.index_select(0, index)
            logits = self.forward(x, train=True, generator=self._aug_generator)
            loss = self.loss_fn(logits, y)
            # One check per batch (free on the CPU, one sync on a GPU): a NaN step would ruin the weights.
            batch_loss = float(loss.detach())
            if not math.isfinite(batch_loss) or batch_loss > DIVERGED_LOSS * len(y):
                yield self._diverged(
                    f"the loss became {batch_loss / len(y):.3g} in epoch {epoch}, batch {batch + 1}: the run stopped "
                    f"and kept the weights of epoch {epoch - 1}. Try a lower learning rate (now {lr:g}).")
                return None
            self._optimizer_step(optimizer, loss / len(y))
            if batch_scheduler is not None:
                batch_scheduler.step()
            loss_sum += loss.detach()
            correct += count_correct(logits.detach(), y)
            if (batch + 1) % progress_every == 0 or batch + 1 == batches:
                yield {"kind": "progress", "epoch": epoch, "batch": batch + 1, "batches": batches}
        return loss_sum, correct, n, lr

    def _optimizer_step(self, optimizer, mean_loss: torch.Tensor) -> None:
        optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(mean_loss).backward()
        self.scaler.step(optimizer)  # skips the step if fp16 gradients overflowed, then
        self.scaler.update()  # lowers the scale; raises it again after a run of clean steps

    def _stops_early(self, record: dict) -> bool:
        """Track the best val loss (and its weights when early stopping restores them); True when early
        stopping ends the run now (the best weights restored, the status set)."""
        config = self.config
        if record["val_loss"] < self.best_val_loss:
            self.best_val_loss, self.best_epoch = record["val_loss"], record["epoch"]
            self._epochs_without_improvement = 0
            if config.early_stopping_patience and config.restore_best:
                self._best_state = copy.deepcopy(self.model.state_dict())
        else:
            self._epochs_without_improvement += 1
        if not config.early_stopping_patience or self._epochs_without_improvement < config.early_stopping_patience:
            return False
        message = f"early stopping: no better val loss for {self._epochs_without_improvement} epochs"
        if self._best_state is not None:
            self.model.load_state_dict(self._best_state)
            message += f"; restored the weights of epoch {self.best_epoch}"
        self._end("finished", message)
        return True

    def _before_epoch(self, epoch: int):
        """The family's hook (two-phase transfer learning unfreezes the backbone after `frozen_epochs`)."""
        self.family.before_epoch(self.model, self.config, epoch)

    def _epoch_record(self, epoch, loss_sum, correct, n, lr, seconds) -> dict:
        evaluations = {name: self.evaluate(name) for name in self.data if name != "train"}
        # The one host sync of the epoch: every number is read back together.
        sums = torch.stack([loss_sum, correct.float()] + [t for e in evaluations.values()
                                                         for t in (e["loss_sum"], e["correct"].float())]).tolist()
        record = {"kind": "epoch", "epoch": epoch, "train_loss": sums[0] / n, "train_acc": sums[1] / n}
        for i, (name, e) in enumerate(evaluations.items()):
            count = max(e["n"], 1)
            record[f"{name}_loss"] = sums[2 + 2 * i] / count
            record[f"{name}_acc"] = sums[3 + 2 * i] / count
        if self.tasks:  # per-label AUC and confusion counts of every evaluated split
            record.update(multilabel.epoch_metrics(evaluations, self.data, self.tasks))
        record["lr"] = float(lr)
        record["seconds"] = seconds + 0.0
        return record

    # ----- results ---------------------------------------------------------------------
    def predictions(self) -> dict[str, dict[str, torch.Tensor]]:
        """Probabilities and labels on val, test (and train-dev) from the final weights, on the CPU."""
        out = {}
        for name in self.data:
            if name == "train":
                continue
            out[name] = {"probs": self.evaluate(name)["probs"].cpu(), "labels": self.data[name][1].cpu()}
        return out

    def summary(self, predictions: dict | None = None) -> dict:
        """Final metrics for summary.json: per split accuracy, AUC, sensitivity, specificity, confusion."""
        predictions = predictions if predictions is not None else (self.predictions() if self.data else {})
        total, trainable = count_parameters(self.model)
        history = self.history
        seconds = [r["seconds"] for r in history]
        reports = {name: multilabel.split_report(p["labels"], p["probs"], self.tasks) if self.tasks else
                   binary_report(p["labels"], p["probs"], self.bundle.num_classes) for name, p in predictions.items()}
        return {
            "status": self.status,
            "message": self.message,
            "epochs_completed": len(history),
            "best_epoch": self.best_epoch,
            "best_val_acc": max((r["val_acc"] for r in history), default=None),
            "last_val_acc": history[-1]["val_acc"] if history else None,
            "val_acc": reports.get("val", {}).get("acc"),
            "test_acc": reports.get("test", {}).get("acc"),
            "seconds_per_epoch": sorted(seconds)[len(seconds) // 2] if seconds else None,
            "seconds_total": sum(seconds),
            "setup_seconds": self.setup_seconds,
            "params_total": total,
            "params_trainable": trainable,
            "device": self.placement.describe(),
            **self.placement.record(),  # device_name, device_index, precision, grad_scaler
            "weights": self.weights_name,
            "weights_message": getattr(self.model, "weights_message", None),
            "classes": list(self.bundle.classes),
            **({"tasks": list(self.tasks)} if self.tasks else {}),
            "image_size": self.bundle.image_size,
            "input_pipeline": self.pipeline.to_dict(),
            "splits": reports,
        }
