"""`RunConfig`: everything that decides a training run, in one frozen dataclass.

It is JSON in and out (stored as config.json beside each run), hashable, and validated
on construction so a bad value fails before any work starts, with a message a student
can act on.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace

from explore.training import multilabel
from explore.data import DataSpec
from explore.models.registry import MODELS, family_of

LOSSES = ("bce", "ce")
OPTIMIZERS = ("sgd", "momentum", "rmsprop", "adam", "adamw")
SCHEDULERS = ("none", "step", "exponential", "cosine", "plateau", "onecycle")
AUGMENTATIONS = ("geometry", "intensity", "noise", "hflip")
INPUT_NORMS = ("dataset", "per_image", "histeq", "none")
TRANSFER_MODES = ("none", "frozen", "finetune", "two-phase", "partial")
TRANSFER_HEADS = ("course", "linear")
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


@dataclass(frozen=True)
class RunConfig:
    # What to train on
    data: DataSpec = field(default_factory=DataSpec)
    model: str = "hw3_cnn"
    model_options: tuple[tuple[str, object], ...] = ()  # e.g. (("dropout", 0.5),) for registry options
    # Loss
    loss: str = "bce"  # "bce": 1 logit + BCEWithLogits; "ce": K logits + CrossEntropy
    class_weights: bool = False  # weight the loss by inverse class frequency in train
    # Multi-task learning (explore/training/multilabel.py): one sigmoid output per named finding, e.g.
    # ("pneumonia", "cardiomegaly", "effusion"); () = the single pneumonia classifier above
    tasks: tuple[str, ...] = ()
    pneumonia_label_fraction: float = 1.0  # < 1: only this share of train keeps its pneumonia label
    # Optimiser and schedule
    optimizer: str = "adam"
    lr: float = 1e-3
    momentum: float = 0.9  # used by "momentum" and "rmsprop"
    nesterov: bool = False
    weight_decay: float = 0.0
    scheduler: str = "none"
    step_size: int = 10  # StepLR
    gamma: float = 0.1  # StepLR / exponential decay factor
    batch_size: int = 32
    epochs: int = 10
    # Regularisation
    early_stopping_patience: int = 0  # 0 = off; else stop after this many epochs without a better val loss
    restore_best: bool = True  # with early stopping: keep the weights of the best val-loss epoch
    augment: tuple[str, ...] = ()  # subset of AUGMENTATIONS; no horizontal flip unless asked
    input_norm: str = "dataset"  # how pixels are standardised before the model
    train_dev_fraction: float = 0.0  # hold out this share of train as "train-dev" (mismatch analysis)
    permute_labels: bool = False  # data-randomisation test (Adebayo 2018): train on shuffled labels
    # Remove and retrain (ROAR, explore/insight/roar.py): remove the top roar_fraction of pixels of every image,
    # ranked by roar_method's maps of the finished run in folder roar_from_run ("random": a seeded order)
    roar_from_run: str = ""
    roar_method: str = ""
    roar_fraction: float = 0.0
    # Transfer learning (pretrained backbones only)
    transfer_mode: str = "none"
    transfer_head: str = "course"
    pretrained: bool = True  # ImageNet weights; False (or weights missing offline) = random init, labelled so
    backbone_lr_scale: float = 0.1  # backbone lr = lr × this when fine-tuning
    frozen_epochs: int = 2  # two-phase: epochs with the backbone frozen
    # Reproducibility and hardware
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"
    eval_test: bool = True  # evaluate the test split every epoch (cheap; the curves show the gap)
    # Labels for the run store and the Compare page
    name: str = ""
    group: str = ""

    def __post_init__(self):
        object.__setattr__(self, "augment", tuple(self.augment))
        object.__setattr__(self, "tasks", tuple(self.tasks))
        object.__setattr__(self, "model_options", tuple(sorted((str(k), v) for k, v in dict(self.model_options).items())))
        self.validate()

    def validate(self) -> None:
        def one_of(name, value, choices):
            if value not in choices:
                raise ValueError(f"{name} must be one of {', '.join(map(str, choices))}; got {value!r}")

        one_of("model", self.model, tuple(MODELS))
        one_of("loss", self.loss, LOSSES)
        one_of("optimizer", self.optimizer, OPTIMIZERS)
        one_of("scheduler", self.scheduler, SCHEDULERS)
        one_of("input_norm", self.input_norm, INPUT_NORMS)
        one_of("transfer_mode", self.transfer_mode, TRANSFER_MODES)
        one_of("transfer_head", self.transfer_head, TRANSFER_HEADS)
        one_of("device", self.device, DEVICES)
        one_of("precision", self.precision, PRECISIONS)
        for aug in self.augment:
            one_of("augment", aug, AUGMENTATIONS)
        if self.loss == "bce" and self.data.num_classes > 2:
            raise ValueError("BCE needs two classes; use loss 'ce' for three classes")
        multilabel.validate(self)
        if not (self.lr > 0):
            raise ValueError(f"learning rate must be positive; got {self.lr}")
        if self.batch_size < 1 or self.epochs < 1 or self.step_size < 1:
            raise ValueError("batch_size, epochs and step_size must be at least 1")
        if not (0 <= self.train_dev_fraction < 0.5):
            raise ValueError("train_dev_fraction must be in [0, 0.5)")
        if (self.roar_method or self.roar_fraction) and not self.roar_from_run:
            raise ValueError("roar_method and roar_fraction need roar_from_run (the run whose maps decide)")
        if self.roar_from_run and not (0 < self.roar_fraction < 1):
            raise ValueError(f"roar_fraction must be between 0 and 1 (the share of pixels removed); "
                             f"got {self.roar_fraction}")
        # (which roar_method names exist is checked by explore.insight.roar when the run is made)
        family_of(self.model).check_config(self)

    def resolve(self) -> "RunConfig":
        """This config with the defaults that depend on the model filled in (the model's family decides:
        a pretrained backbone fine-tunes and takes 0..1 input unless told otherwise). Idempotent; called
        where runs are made (RunStore.create, TrainingRun), so stored configs say what actually trained."""
        changes = family_of(self.model).config_defaults(self)
        return replace(self, **changes) if changes else self

    @property
    def num_outputs(self) -> int:
        if self.tasks:  # multi-label: one sigmoid output per task
            return len(self.tasks)
        return 1 if self.loss == "bce" else self.data.num_classes

    def options(self) -> dict:
        return dict(self.model_options)

    def replace(self, **changes) -> "RunConfig":
        """A copy with some fields changed; `data_*` keys change the DataSpec (e.g. data_image_size=64)."""
        data_changes = {k.removeprefix("data_"): v for k, v in changes.items() if k.startswith("data_")}
        changes = {k: v for k, v in changes.items() if not k.startswith("data_")}
        if data_changes:
            changes["data"] = replace(changes.get("data", self.data), **data_changes)
        return replace(self, **changes)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["data"] = self.data.to_dict()
        d["augment"] = list(self.augment)
        d["model_options"] = dict(self.model_options)
        d["tasks"] = list(self.tasks)
        if not self.tasks and self.pneumonia_label_fraction == 1.0:
            # Single-task runs keep the dict they had before multi-task learning existed (Compare tables
            # of old and new runs show no spurious difference).
            del d["tasks"], d["pneumonia_label_fraction"]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "RunConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown setting(s) {sorted(unknown)}")
        d = dict(d)
        if "data" in d:
            d["data"] = DataSpec.from_dict(d["data"])
        if "model_options" in d:
            d["model_options"] = tuple(dict(d["model_options"]).items())
        if "augment" in d:
            d["augment"] = tuple(d["augment"])
        if "tasks" in d:
            d["tasks"] = tuple(d["tasks"])
        return cls(**d)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "RunConfig":
        return cls.from_dict(json.loads(text))

    def differences(self, other: "RunConfig") -> dict[str, tuple]:
        """Settings that differ from `other` (flattened data.* keys), for tables and legends."""
        a, b = flatten(self.to_dict()), flatten(other.to_dict())
        return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}


def flatten(d: dict, prefix: str = "") -> dict:
    """{"data": {"image_size": 128}} → {"data.image_size": 128}"""
    out = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, prefix=f"{name}."))
        else:
            out[name] = value
    return out
