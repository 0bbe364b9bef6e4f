"""Presets: the course's homework experiments, one click each.

Each preset lists its runs with the settings the homework reports used (shared/seeds/) and
a two-line note on what to look for. A preset with several runs is queued as one group.
The "quick" variant (smaller images, fewer epochs) is for CPUs and live demos; the page
says so on screen whenever it is used.
"""
from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field

from explore.config import RunConfig
from explore.data import DataSpec

COURSE_SIZE = 256  # the homework resized every X-ray to 256×256


def _cfg(name: str, **kw) -> RunConfig:
    data = DataSpec(image_size=kw.pop("image_size", COURSE_SIZE))
    return RunConfig(name=name, data=data, **kw)


HW3_BASE = dict(model="hw3_cnn", loss="bce", optimizer="adam", lr=1e-3, scheduler="step", step_size=10,
                gamma=0.1, batch_size=32, epochs=30)
HW2_BASE = dict(model="hw2_mlp", optimizer="adam", lr=3e-6, scheduler="step", step_size=4, gamma=0.4,
                batch_size=128, epochs=30)


# The one-click real mismatch: MedMNIST's files where MedMNIST keeps them (the Data page's "Real data"
# card fetches them, or says where to put them offline). ChestMNIST is mapped to 2 classes by label 6.
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
    tags: tuple[str, ...] = field(default=())
    own_data: bool = False  # True: the runs keep the preset's DataSpec (the Train page does not swap in its own)

    def configs(self, quick: bool = False, group: str | None = None) -> list[RunConfig]:
        """The runs to queue; `quick` shrinks image size and epochs (the page says so)."""
        group = group or self.name
        out = []
        for run in self.runs:
            changes = {"group": group}
            if quick:
                changes |= {"data_image_size": min(run.data.image_size, self.quick_size),
                            "epochs": min(run.epochs, self.quick_epochs),
                            "lr": run.lr * self.quick_lr_scale,
                            "name": f"{run.name} (quick)"}
                if run.scheduler == "step":  # keep the same number of decays within the shorter run
                    changes["step_size"] = max(1, round(run.step_size * self.quick_epochs / run.epochs))
            out.append(run.replace(**changes))
        return out

    def describe_quick(self) -> str:
        return (f"quick variant: {self.quick_size} px, at most {self.quick_epochs} epochs"
                + (f", learning rate ×{self.quick_lr_scale:g}" if self.quick_lr_scale != 1 else "")
                + " — for CPUs and live demos; the full preset replays the homework settings")


PRESETS: dict[str, Preset] = {p.name: p for p in [
    Preset(
        "hw2_bce_vs_ce", "HW2 · BCE vs CE",
        "Same MLP, one output + BCE vs two outputs + cross-entropy.\n"
        "Look for: near-identical curves (softmax over two classes is a sigmoid of the logit difference).",
        (_cfg("HW2 BCE", **HW2_BASE, loss="bce"), _cfg("HW2 CE", **HW2_BASE, loss="ce")),
        quick_epochs=10, quick_lr_scale=10.0),
    Preset(
        "hw2_lr_sweep", "HW2 · learning-rate sweep",
        "Adam at 3e-5, 3e-6 and 3e-7 with StepLR(4, 0.4).\n"
        "Look for: the large rate overfits fast (train ≫ val), the small one underfits and stalls.",
        tuple(_cfg(f"HW2 lr {lr:g}", **(HW2_BASE | {"lr": lr})) for lr in (3e-5, 3e-6, 3e-7)),
        quick_epochs=10, quick_lr_scale=10.0),
    Preset(
        "hw2_step_sweep", "HW2 · StepLR step-size sweep",
        "StepLR step size 2, 4 and 8 at lr 3e-6 (gamma 0.4).\n"
        "Look for: a small step size decays the rate early and the loss flattens too soon.",
        tuple(_cfg(f"HW2 step {s}", **(HW2_BASE | {"step_size": s})) for s in (2, 4, 8)),
        quick_epochs=10, quick_lr_scale=10.0),
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
         _cfg("HW3 CNN + dropout 0.6", **(HW3_BASE | {"model": "hw3_cnn_dropout"})),
         _cfg("HW3 CNN + AdamW wd 10", **(HW3_BASE | {"optimizer": "adamw", "weight_decay": 10.0})),
         _cfg("HW3 CNN + early stopping", **HW3_BASE, early_stopping_patience=5))),
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
        tuple(_cfg(f"batch {b}", **(HW3_BASE | {"batch_size": b, "epochs": 5, "scheduler": "none"}))
              for b in (32, 128, 512)),
        quick_epochs=3),
    Preset(
        "lecture_optimizers", "Lecture · SGD vs momentum vs Adam",
        "Plain SGD, SGD with momentum 0.9 and Adam, all at their usual learning rates.\n"
        "Look for: momentum smooths and speeds SGD; Adam gets there fastest on this problem.",
        (_cfg("SGD lr 0.01", **(HW3_BASE | {"optimizer": "sgd", "lr": 0.01, "scheduler": "none", "epochs": 15})),
         _cfg("momentum 0.9 lr 0.01", **(HW3_BASE | {"optimizer": "momentum", "lr": 0.01, "scheduler": "none",
                                                     "epochs": 15})),
         _cfg("Adam lr 1e-3", **(HW3_BASE | {"scheduler": "none", "epochs": 15})))),
    Preset(
        "real_mismatch", "Real mismatch: pediatric → adult",
        "The course CNN trained on PneumoniaMNIST (children, Guangzhou) and tested on ChestMNIST (adults, NIH).\n"
        "Look for: val AUC near 0.95 and a test AUC far lower (Xin et al. 2021: 0.95 → 0.54) — real, not simulated.",
        (RunConfig(name="HW3 CNN pediatric → adult", data=REAL_MISMATCH_DATA, **(HW3_BASE | {"epochs": 15})),),
        quick_size=64, quick_epochs=5, tags=("real data",), own_data=True),
]}


def cli_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m explore presets", description="List the homework presets.")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    rows = [{"name": p.name, "title": p.title, "note": p.note, "runs": [r.name for r in p.runs]}
            for p in PRESETS.values()]
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for row in rows:
            print(f"{row['name']:<20} {row['title']}  ({len(row['runs'])} run(s))")
    return 0
