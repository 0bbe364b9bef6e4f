"""Presets: the course's homework experiments, one click each.

Each preset lists its runs with the settings the homework reports used (shared/seeds/) and
a two-line note on what to look for. A preset with several runs is queued as one group.
The "quick" variant (smaller images, fewer epochs) is for CPUs and live demos; the page
says so on screen whenever it is used.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields

from explore.training.config import RunConfig
from explore.data import DataSpec

COURSE_SIZE = 256  # the homework resized every X-ray to 256×256


def _cfg(name: str, **kw) -> RunConfig:
    """A preset run. `name` may hold {field} placeholders (e.g. "HW2 lr {lr}"): they are filled
    with the run's real values, after any quick scaling, so a name never states a value it does not train with."""
    data = DataSpec(image_size=kw.pop("image_size", COURSE_SIZE))
    return RunConfig(name=name, data=data, **kw)


def short_number(value: float) -> str:
    """3e-05 → '3e-5', 0.0003 → '3e-4', 0.01 → '0.01': learning rates as the lecture writes them."""
    if value and abs(value) < 1e-2:
        mantissa, exponent = f"{value:.3g}".split("e") if "e" in f"{value:.3g}" else f"{value:.2e}".split("e")
        mantissa = mantissa.rstrip("0").rstrip(".") if "." in mantissa else mantissa
        return f"{mantissa}e{int(exponent)}"
    return f"{value:g}"


def run_name(template: str, config: RunConfig) -> str:
    """Fill a name template with the config's own values ({lr}, {step_size}, {model_options[dropout]}...)."""
    values = {f.name: getattr(config, f.name) for f in fields(config)}
    values["lr"] = short_number(config.lr)
    values["model_options"] = config.options()
    values["batch_norm"] = "with" if config.options().get("batch_norm") else "without"
    values["tasks"] = " + ".join(config.tasks) or "pneumonia"
    values["pneumonia_labels"] = f"{config.pneumonia_label_fraction:.0%}"
    return template.format(**values)


HW3_BASE = dict(model="hw3_cnn", loss="bce", optimizer="adam", lr=1e-3, scheduler="step", step_size=10,
                gamma=0.1, batch_size=32, epochs=30)
# A frozen backbone with the course's head (Linear 256 → ReLU → Dropout 0.5 → out), 0..1 input: the model
# applies each backbone's own normalisation. 224 px: what both DenseNets were trained at.
TRANSFER_FROZEN = dict(transfer_mode="frozen", transfer_head="course", pretrained=True, input_norm="none",
                       loss="bce", optimizer="adam", lr=1e-3, scheduler="none", batch_size=32, epochs=10,
                       image_size=224)
HW2_BASE = dict(model="hw2_mlp", optimizer="adam", lr=3e-6, scheduler="step", step_size=4, gamma=0.4,
                batch_size=128, epochs=30)


# The one-click real mismatch: MedMNIST's files where MedMNIST keeps them (the Data page's "Real data"
# card fetches them, or says where to put them offline). ChestMNIST is mapped to 2 classes by label 6.
# Multi-task learning: the synthetic set with cardiomegaly and effusion drawn in (128 px, default size).
MULTITASK_DATA = DataSpec(image_size=128, findings=True)
MULTITASK_BASE = dict(model="hw3_cnn", loss="bce", optimizer="adam", lr=1e-3, scheduler="none", batch_size=32,
                      epochs=15, pneumonia_label_fraction=0.1)

REAL_MISMATCH_DATA = DataSpec(source="medmnist:~/.medmnist/pneumoniamnist_128.npz",
                              test_source="medmnist:~/.medmnist/chestmnist_128.npz", image_size=128)


@dataclass(frozen=True)
class Preset:
    name: str
    title: str
    note: str  # two lines: what to look for
    runs: tuple[RunConfig, ...]
    quick_size: int = 128
    quick_epochs: int = 8
    quick_lr_scale: float = 1.0  # tiny course learning rates need a boost when epochs are cut
    # Shrink StepLR step sizes, exponential decay and early-stopping patience with the epochs, so the
    # quick run decays (and can stop) as often as the full one. A preset that compares step sizes
    # keeps them as they are instead (scaled, 2/4/8 over 30 epochs would collapse to 1/1/3).
    quick_scales_schedule: bool = True
    tags: tuple[str, ...] = field(default=())
    own_data: bool = False  # True: the runs keep the preset's DataSpec (the Train page does not swap in its own)

    def configs(self, quick: bool = False, group: str | None = None) -> list[RunConfig]:
        """The runs to queue, named by their real values; `quick` shrinks image size and epochs and says so."""
        group = group or self.name
        return [self._one(run, quick).replace(group=group) for run in self.runs]

    def _one(self, run: RunConfig, quick: bool) -> RunConfig:
        if not quick:
            return run.replace(name=run_name(run.name, run))
        epochs = min(run.epochs, self.quick_epochs)
        changes = {"data_image_size": min(run.data.image_size, self.quick_size), "epochs": epochs,
                   "lr": run.lr * self.quick_lr_scale}
        ratio = epochs / run.epochs
        if self.quick_scales_schedule and ratio < 1:
            if run.scheduler == "step":  # the same number of decays within the shorter run
                changes["step_size"] = max(1, round(run.step_size * ratio))
            if run.scheduler == "exponential":  # the same total decay: gamma^epochs unchanged
                changes["gamma"] = round(run.gamma ** (1 / ratio), 3)
            if run.early_stopping_patience:  # patience that can still run out before the last epoch
                changes["early_stopping_patience"] = max(2, min(round(run.early_stopping_patience * ratio),
                                                                epochs // 3))
        quick_run = run.replace(**changes)
        return quick_run.replace(name=f"{run_name(run.name, quick_run)} {self.quick_suffix(run, quick_run)}")

    def quick_suffix(self, full: RunConfig, quick: RunConfig) -> str:
        """'(quick ×10 lr · 128 px · 10 epochs · step 3)': what the quick variant changed, in the run's name."""
        parts = [f"×{self.quick_lr_scale:g} lr"] if self.quick_lr_scale != 1 else []
        parts += [f"{quick.data.image_size} px", f"{quick.epochs} epochs"]
        for label, key in (("step", "step_size"), ("γ", "gamma"), ("patience", "early_stopping_patience")):
            text = f"{label} {getattr(quick, key):g}"
            if getattr(full, key) != getattr(quick, key) and text not in run_name(full.name, quick):
                parts.append(text)
        return f"(quick {' · '.join(parts)})"

    def describe_quick(self) -> str:
        return (f"quick variant: {self.quick_size} px, at most {self.quick_epochs} epochs"
                + (f", learning rate ×{self.quick_lr_scale:g}" if self.quick_lr_scale != 1 else "")
                + (", step sizes, decay and patience scaled to the epochs" if self.quick_scales_schedule else "")
                + " — for CPUs and live demos; the full preset replays the homework settings")

    def to_dict(self) -> dict:
        """What `python -m explore presets --json` prints: every run of both variants as its RunConfig JSON."""
        return {"name": self.name, "title": self.title, "note": self.note,
                "full": [c.to_dict() for c in self.configs()],
                "quick": [c.to_dict() for c in self.configs(quick=True)]}



def at_image_size(config: RunConfig, size: int) -> RunConfig:
    """The run at another image size (the Data page's), its name saying the size it really trains at."""
    if size == config.data.image_size:
        return config
    said = f"{config.data.image_size} px"
    name = config.name.replace(said, f"{size} px") if said in config.name else f"{config.name} ({size} px)"
    return config.replace(name=name, data_image_size=size)

PRESETS: dict[str, Preset] = {p.name: p for p in [
    Preset(
        "hw2_bce_vs_ce", "HW2 · BCE vs CE",
        "Same MLP, one output + BCE vs two outputs + cross-entropy.\n"
        "Look for: near-identical curves (softmax over two classes is a sigmoid of the logit difference).",
        (_cfg("HW2 BCE · lr {lr}", **HW2_BASE, loss="bce"), _cfg("HW2 CE · lr {lr}", **HW2_BASE, loss="ce")),
        quick_epochs=10, quick_lr_scale=10.0),
    Preset(
        "hw2_lr_sweep", "HW2 · learning-rate sweep",
        "Adam at 3e-5, 3e-6 and 3e-7 with StepLR(4, 0.4).\n"
        "Look for: the large rate overfits fast (train ≫ val), the small one underfits and stalls.",
        tuple(_cfg("HW2 lr {lr}", **(HW2_BASE | {"lr": lr})) for lr in (3e-5, 3e-6, 3e-7)),
        quick_epochs=10, quick_lr_scale=10.0),
    Preset(
        "hw2_step_sweep", "HW2 · StepLR step-size sweep",
        "StepLR step size 2, 4 and 8 at lr 3e-6 (gamma 0.4).\n"
        "Look for: a small step size decays the rate early and the loss flattens too soon.",
        tuple(_cfg("HW2 StepLR step {step_size}", **(HW2_BASE | {"step_size": s})) for s in (2, 4, 8)),
        quick_epochs=12, quick_lr_scale=10.0, quick_scales_schedule=False),
    Preset(
        "hw3_baseline", "HW3 · CNN baseline",
        "The course CNN: Adam 1e-3, StepLR(10, 0.1), BCE, batch 32, 30 epochs, 256 px.\n"
        "Look for: train accuracy → 100% while val loss rises after ~10 epochs (overfitting), and test ≪ val.",
        (_cfg("HW3 CNN", **HW3_BASE),)),
    Preset(
        "hw3_overfitting", "HW3 · reducing overfitting",
        "Baseline vs Dropout(0.6), vs AdamW with weight decay, vs early stopping (patience 5).\n"
        "Look for: the gap between train and val curves closing, and what each fix does to test accuracy.",
        (_cfg("HW3 CNN", **HW3_BASE),
         _cfg("HW3 CNN + dropout {model_options[dropout]:g}",
              **(HW3_BASE | {"model": "hw3_cnn_dropout", "model_options": (("dropout", 0.6),)})),
         _cfg("HW3 CNN + AdamW wd {weight_decay:g}", **(HW3_BASE | {"optimizer": "adamw", "weight_decay": 10.0})),
         _cfg("HW3 CNN + early stopping (patience {early_stopping_patience})", **HW3_BASE,
              early_stopping_patience=5))),
    Preset(
        "hw3_ann_vs_cnn", "HW3 · ANN vs CNN",
        "The homework's fully connected net (512-256-256, BN, dropout 0.9) vs the CNN, same training.\n"
        "Look for: the ANN's 33 M first-layer weights vs the CNN's 320, and which generalises to site B.",
        (_cfg("HW3 ANN", **(HW3_BASE | {"model": "hw3_ann"})), _cfg("HW3 CNN", **HW3_BASE))),
    Preset(
        "hw3_gap", "HW3 · global average pooling",
        "Lab 4's GAP net (32 channels, one Linear) vs the widened version (128 channels, 128-128 head).\n"
        "Look for: GAP alone underfits; more channels and a hidden layer recover most of the accuracy.",
        (_cfg("Lab4 GAP", **(HW3_BASE | {"model": "lab4_gap"})),
         _cfg("HW3 GAP wide", **(HW3_BASE | {"model": "hw3_gap_wide"})))),
    Preset(
        "lecture_batch_size", "Lecture · batch size vs time",
        "The same CNN with batch 32, 128 and 512 for 5 epochs.\n"
        "Look for: seconds per epoch fall as the batch grows, with no magic at powers of two.",
        tuple(_cfg("batch {batch_size}", **(HW3_BASE | {"batch_size": b, "epochs": 5, "scheduler": "none"}))
              for b in (32, 128, 512)),
        quick_epochs=3),
    Preset(
        "lecture_optimizers", "Lecture · SGD vs momentum vs Adam",
        "Plain SGD, SGD with momentum 0.9 and Adam, all at their usual learning rates.\n"
        "Look for: momentum smooths and speeds SGD; Adam gets there fastest on this problem.",
        (_cfg("SGD lr {lr}", **(HW3_BASE | {"optimizer": "sgd", "lr": 0.01, "scheduler": "none", "epochs": 15})),
         _cfg("momentum {momentum:g} lr {lr}", **(HW3_BASE | {"optimizer": "momentum", "lr": 0.01,
                                                                "scheduler": "none", "epochs": 15})),
         _cfg("Adam lr {lr}", **(HW3_BASE | {"scheduler": "none", "epochs": 15})))),
    Preset(
        "lecture_lr_schedules", "Lecture · learning-rate schedules",
        "The course CNN with Adam 1e-3: constant, StepLR(10, 0.1), exponential (γ 0.9) and cosine.\n"
        "Look for: the learning-rate plot under the loss (a staircase, a smooth decay, a half cosine) and "
        "how the val loss settles as the rate falls.",
        (_cfg("constant lr {lr}", **(HW3_BASE | {"scheduler": "none"})),
         _cfg("StepLR({step_size}, {gamma:g})", **HW3_BASE),
         _cfg("exponential γ {gamma:g}", **(HW3_BASE | {"scheduler": "exponential", "gamma": 0.9})),
         _cfg("cosine over {epochs} epochs", **(HW3_BASE | {"scheduler": "cosine"})))),
    Preset(
        "lecture_batch_norm", "Lecture · batch normalisation",
        "The same 3-block CNN without and with BatchNorm after each convolution, SGD + momentum lr 0.01.\n"
        "Look for: with batch norm the loss falls faster in the first epochs (BN keeps each layer's "
        "input well scaled); compare the parameter counts too.",
        tuple(_cfg("CNN {batch_norm} batch norm", **(HW3_BASE | {
            "model": "cnn", "model_options": (("batch_norm", bn),), "optimizer": "momentum", "lr": 0.01,
            "scheduler": "none", "epochs": 15})) for bn in (False, True)),
        quick_epochs=8),
    Preset(
        "lecture_multitask", "Lecture · one task vs three tasks",
        "The course CNN on pneumonia alone vs on pneumonia + cardiomegaly + effusion (shared layers, one sigmoid "
        "each); only 10% of train keeps its pneumonia label in both.\n"
        "Look for: the per-label AUCs — does learning the other findings from every image help the scarce one?",
        tuple(RunConfig(name="CNN on {tasks} · {pneumonia_labels} of pneumonia labels", data=MULTITASK_DATA,
                        tasks=tasks, **MULTITASK_BASE)
              for tasks in (("pneumonia",), ("pneumonia", "cardiomegaly", "effusion"))),
        quick_size=64, quick_epochs=8, own_data=True, tags=("multi-task",)),
    Preset(
        "real_mismatch", "Real mismatch: pediatric → adult",
        "The course CNN trained on PneumoniaMNIST (children, Guangzhou) and tested on ChestMNIST (adults, NIH).\n"
        "Look for: val AUC near 0.95 and a test AUC far lower (Xin et al. 2021: 0.95 → 0.54) — real, not simulated.",
        (RunConfig(name="HW3 CNN pediatric → adult", data=REAL_MISMATCH_DATA, **(HW3_BASE | {"epochs": 15})),),
        quick_size=64, quick_epochs=5, tags=("real data",), own_data=True),
    Preset(
        "imagenet_vs_xray_frozen", "ImageNet vs chest X-ray pretraining (frozen)",
        "The same course head on DenseNet-121 pretrained on ImageNet and on chest X-rays (torchxrayvision), frozen.\n"
        "Look for: whose features separate pneumonia better on site A (val) — and which hold up on site B (test).",
        tuple(_cfg(name, **TRANSFER_FROZEN, model=backbone) for name, backbone in (
            ("DenseNet-121 · ImageNet · frozen", "densenet121"),
            ("DenseNet-121 · chest X-rays · frozen", "xrv_densenet121"))),
        quick_size=128, quick_epochs=5, tags=("transfer",)),
]}
