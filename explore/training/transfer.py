"""Transfer learning: an ImageNet backbone with a new head for chest X-rays (Lab 5 / HW3), the training half.

The networks, their ImageNet weights and which parameters train per mode are explore.models.backbones;
what a run's config does to them (build for a run, optimizer groups, the epoch hook) is
explore.models.transfer_setup. This module holds the frozen-feature run and its cache, the configs,
tables and benchmark for the page and the CLI, and re-exports the names above for its callers.

Four ways to train (`RunConfig.transfer_mode`), as in the course's Table 1 (HW3):
  frozen     "ConvNet as fixed feature extractor": the backbone never changes, only the head
             trains. Its output for every image is computed ONCE and cached (`FrozenFeatureRun`),
             so an epoch only runs the head: milliseconds instead of a full forward pass.
  finetune   "Fine-tuning the ConvNet": everything trains; the backbone at lr × backbone_lr_scale.
  two-phase  frozen for `frozen_epochs` epochs (the new head settles first), then fine-tune.
  partial    only the backbone's last block and the head train.

Input: grey X-rays N×1×H×W in 0..1 (RunConfig.input_norm = "none"). `TransferNet` repeats them
to 3 channels and normalises with the weights' own ImageNet mean/std inside forward(), so the
training loop, attribution and analysis all feed the same 0..1 images.

Weights, honestly: ImageNet weights come from torchvision's `weights=` enums and live in the
torch hub cache (torch.hub.get_dir()/checkpoints/<file named in the weights' url>). They are
loaded with weights_only=True. With no file and no network a run trains from random
initialisation and is labelled "random" (never shown as pretrained); `python -m explore
fetch-weights` on a connected machine fills the cache.

Pretrained on chest X-rays instead: `xrv_densenet121` and `xrv_resnet50` (torchxrayvision's networks,
see explore/models/xrv_backbones.py) are entries of the same registry, with the same four modes and the same
feature cache. Each entry carries its input convention (channels, mean/std, resolution), so
TransferNet feeds them one channel scaled to [-1024, 1024] at 224 / 512 px instead.
"""
from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import OrderedDict
from functools import lru_cache
from pathlib import Path

import torch

from explore.models.backbones import (  # noqa: F401 (re-exported: callers and tests import them from here)
    BACKBONES, HEAD_HIDDEN, MODE_TITLES, MODES, RANDOM, RANDOM_SUFFIX, Backbone, TransferNet, WeightsUnavailable,
    backbone_spec, build_transfer_model, download_allowed, imagenet_state_dict, keep_frozen_parts_in_eval,
    last_block_parameters, make_head, network_reachable, offline_message, set_trainable, weights_path, weights_status,
)
from explore.training.config import RunConfig
from explore.data import DataBundle, DataSpec
from explore.device import Placement
from explore.models.registry import family_of
from explore.training.store import save_tensors
from explore.training.train import EVAL_BATCH_SIZE, TrainingRun, _uses_channels_last, eval_batches
from explore.models.transfer_setup import before_epoch, build_for_run, param_groups  # noqa: F401 (re-exported)
from explore.settings import cache_dir


# ----- frozen runs: features computed once, cached ----------------------------------------
def _fingerprint(tensors) -> str:
    """A hash of tensor contents: a cache key that changes whenever pixels or weights do."""
    digest = hashlib.blake2b(digest_size=16)
    for t in tensors:
        digest.update(t.detach().reshape(-1).contiguous().cpu().view(torch.uint8).numpy())
    return digest.hexdigest()


class FeatureCache:
    """Backbone features per key: in memory (shared by the runs of this process) and on disk as
    tensor files (loaded weights_only=True). Thread-safe: the job manager trains in threads."""

    def __init__(self, disk_dir: str | Path | None = "default", max_items: int = 64):
        self._disk_dir = disk_dir
        self.max_items = max_items
        self._memory: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def disk_dir(self) -> Path | None:
        if self._disk_dir == "default":  # beside the decoded-image cache: $EXPLORE_CACHE_DIR or ./.explore_cache
            return cache_dir() / "features"
        return Path(self._disk_dir) if self._disk_dir else None

    def get(self, key: str) -> tuple[torch.Tensor | None, str]:
        """(features, "memory" | "disk") or (None, "missing")."""
        with self._lock:
            if key in self._memory:
                self._memory.move_to_end(key)
                return self._memory[key], "memory"
        path = self.disk_dir / f"{key}.pt" if self.disk_dir else None
        if path is not None and path.is_file():
            try:
                features = torch.load(path, map_location="cpu", weights_only=True)["features"]
            except Exception:  # a torn or foreign file: recompute (and overwrite it below)
                return None, "missing"
            self._remember(key, features)
            return features, "disk"
        return None, "missing"

    def put(self, key: str, features: torch.Tensor) -> None:
        self._remember(key, features)
        if self.disk_dir is None:
            return
        try:
            save_tensors(self.disk_dir / f"{key}.pt", {"features": features})  # atomic: never half a file
        except OSError:
            pass  # a read-only disk only costs the next process a recomputation

    def _remember(self, key: str, features: torch.Tensor) -> None:
        with self._lock:
            self._memory[key] = features
            self._memory.move_to_end(key)
            while len(self._memory) > self.max_items:
                self._memory.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._memory.clear()


FEATURE_CACHE = FeatureCache()  # holds immutable tensors only, keyed by content: safe to share


def extract_features(model: TransferNet, images: torch.Tensor, pipeline, placement: Placement,
                     batch_size: int = EVAL_BATCH_SIZE) -> torch.Tensor:
    """The backbone's output for uint8 images (eval mode: BatchNorm uses its stored statistics)."""
    channels_last = _uses_channels_last(model)

    def step(batch: slice) -> torch.Tensor:
        x = pipeline(images[batch], train=False)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with placement.autocast():
            return model.features(x).float()

    out = eval_batches(model, len(images), batch_size, step)
    return torch.cat(out) if out else torch.zeros(0)


class FrozenFeatureRun(TrainingRun):
    """A frozen-backbone run that trains the head on cached features.

    The backbone's output for every image of every split is computed once (or taken from the
    cache) while the run is set up; each epoch then only runs the head. The training loop is
    TrainingRun's: `self.data` holds (features, labels) instead of (images, labels) and
    forward() runs the head alone. `self.model` stays the full model (backbone + trained head),
    so the stored weights.pt works for attribution like any other run.
    Augmentation cannot apply to cached features: the run says so in its message and summary.
    """

    def __init__(self, config: RunConfig, bundle: DataBundle | None = None, placement: Placement | None = None,
                 cache: FeatureCache | None = None):
        self.cache = cache if cache is not None else FEATURE_CACHE
        self.feature_seconds = 0.0  # the one-time feature pass (also counted inside setup_seconds)
        self.feature_sources: dict[str, str] = {}  # split → "computed" | "memory" | "disk"
        super().__init__(config, bundle, placement)

    def _place_data(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        images_by_split = super()._place_data()
        started = time.perf_counter()
        backbone_key = _fingerprint(self.model.backbone.state_dict().values())
        placed = {}
        for split, (images, labels) in images_by_split.items():
            key = self._feature_key(split, images, backbone_key)
            features, source = self.cache.get(key)
            if features is None:
                features, source = extract_features(self.model, images, self.pipeline, self.placement).cpu(), "computed"
                self.cache.put(key, features)
            self.feature_sources[split] = source
            placed[split] = (features.to(self.placement.device), labels)
        self.feature_seconds = time.perf_counter() - started
        return placed

    def _feature_key(self, split: str, images: torch.Tensor, backbone_key: str) -> str:
        """(backbone, weights, image size, data, split) plus content hashes of the weights and pixels,
        so a different bundle or weights file can never reuse stale features."""
        parts = {"backbone": self.config.model, "weights": self.weights_name, "backbone_state": backbone_key,
                 "image_size": int(images.shape[-1]), "data": self.config.data.key(), "split": split,
                 "pixels": _fingerprint([images]), "pipeline": self.pipeline.to_dict(),
                 "dtype": str(self.placement.dtype)}
        return hashlib.sha1(json.dumps(parts, sort_keys=True).encode()).hexdigest()

    def forward(self, features: torch.Tensor, train: bool, generator=None) -> torch.Tensor:
        # Only the small head runs, in fp32: on a head this size autocast's casts cost more than bf16 saves.
        return self.model.head(features)

    def notes(self) -> list[str]:
        sources = ", ".join(f"{split}: {source}" for split, source in self.feature_sources.items())
        notes = [f"backbone features computed once before training ({self.feature_seconds:.2f} s; {sources})"]
        if self.config.augment:
            notes.append(f"augmentation ({', '.join(self.config.augment)}) was not applied: a frozen run trains on "
                         f"features computed once from the un-augmented images")
        if getattr(self.model, "weights_message", ""):
            notes.append(self.model.weights_message)
        return notes

    def _end(self, status: str, message: str = ""):
        if self.config.augment and status == "finished":
            message += "; augmentation does not apply to cached frozen features (see the summary notes)"
        super()._end(status, message)

    def summary(self, predictions: dict | None = None) -> dict:
        out = super().summary(predictions)
        out |= {"feature_seconds": self.feature_seconds, "feature_cache": dict(self.feature_sources),
                "notes": self.notes()}
        return out


# ----- configs, tables and the benchmark (for the page, the CLI and `explore bench`) ------
def resolve_pretrained(config: RunConfig, check_network: bool = True) -> tuple[RunConfig, str]:
    """Before queuing: a config that asks for ImageNet weights that cannot be had becomes a random-init
    config, named so. Returns (config, message for the user or "")."""
    if not config.pretrained:
        return _with_random_suffix(config), ""
    status = weights_status(config.model, check_network=check_network)
    if status["available"] or status["downloadable"]:
        return config, ""
    return _with_random_suffix(config.replace(pretrained=False)), status["message"]


def honest_configs(configs: list[RunConfig], check_network: bool = True) -> tuple[list[RunConfig], list[str]]:
    """Every page and the CLI call this before queueing: transfer runs whose ImageNet weights cannot be
    had become random-init runs named '(random init)'; other runs pass unchanged. Returns (configs, messages)."""
    out, messages = [], []
    for config in configs:
        if family_of(config.model).pretrained_weights:
            config, message = resolve_pretrained(config, check_network=check_network)
            if message and message not in messages:
                messages.append(message)
        out.append(config)
    return out, messages


def relabel_if_random(config: RunConfig, weights_name: str | None) -> RunConfig | None:
    """After the model is built: a run that asked for ImageNet weights but got random ones (the download
    failed after it was queued) → its config, relabelled '(random init)'; None when nothing changes."""
    if weights_name != RANDOM or not family_of(config.model).pretrained_weights:
        return None
    honest = _with_random_suffix(config.replace(pretrained=False))
    return None if honest == config else honest


def _with_random_suffix(config: RunConfig) -> RunConfig:
    if config.pretrained or config.name.endswith(RANDOM_SUFFIX):
        return config
    return config.replace(name=f"{config.name or config.model}{RANDOM_SUFFIX}")


def transfer_config(backbone: str, mode: str, data: DataSpec | None = None, head: str = "course",
                    lr: float = 1e-3, backbone_lr_scale: float = 0.1, epochs: int = 5, image_size: int = 224,
                    frozen_epochs: int = 2, pretrained: bool = True, quick: bool = False, group: str = "",
                    **changes) -> RunConfig:
    """A transfer run's config: 0..1 input (the model applies the ImageNet normalisation itself),
    named after backbone and mode; quick = at most 128 px and 3 epochs (for CPUs and demos)."""
    if quick:
        image_size, epochs = min(image_size, 128), min(epochs, 3)
    name = f"{backbone_spec(backbone).title} · {mode}" + (" (quick)" if quick else "")
    config = RunConfig(data=data or DataSpec(), model=backbone, transfer_mode=mode, transfer_head=head, lr=lr,
                       backbone_lr_scale=backbone_lr_scale, epochs=epochs, frozen_epochs=frozen_epochs,
                       pretrained=pretrained, input_norm="none", name=name, group=group, **changes)
    return _with_random_suffix(config.replace(data_image_size=image_size))


def suggested_settings() -> dict:
    """Defaults for the page: 224 px (what ImageNet nets saw); on a CPU, MobileNetV3-Small at 128 px."""
    if torch.cuda.is_available():
        return {"backbone": "resnet18", "image_size": 224, "note": ""}
    return {"backbone": "mobilenet_v3_small", "image_size": 128,
            "note": "No GPU here: MobileNetV3-Small at 128 px keeps fine-tuning to seconds per epoch; "
                    "224 px (what ImageNet models saw) is about 3× slower."}


@lru_cache(maxsize=16)
def _parameter_rows(backbone: str, head: str, modes: tuple[str, ...], num_outputs: int) -> tuple[dict, ...]:
    model = build_transfer_model(backbone, num_outputs, head, pretrained=False)
    total = sum(p.numel() for p in model.parameters())
    rows = []
    for mode in modes:
        set_trainable(model, mode, backbone_unfrozen=False)
        start = sum(p.numel() for p in model.parameters() if p.requires_grad)
        set_trainable(model, mode, backbone_unfrozen=True)
        end = sum(p.numel() for p in model.parameters() if p.requires_grad)
        rows.append({"mode": mode, "params_total": total, "params_trainable": start,
                     "params_trainable_after_unfreezing": end, "trainable_percent": round(100 * start / total, 2)})
    return tuple(rows)


def parameter_table(backbone: str, head: str = "course", modes=MODES, num_outputs: int = 1):
    """Total vs trainable parameters per mode (two-phase: before and after unfreezing), as a DataFrame."""
    import pandas as pd

    return pd.DataFrame(list(_parameter_rows(backbone, head, tuple(modes), num_outputs)))


def group_records(store, group: str) -> list:
    """The transfer runs of one group (e.g. the frozen and fine-tuned runs of one "Run both"), oldest first."""
    return [r for r in store.group_runs(group) if r.config.model in BACKBONES]


def transfer_groups(store) -> list[str]:
    """Groups that hold transfer runs, newest first."""
    seen = []
    for record in sorted(store.list(), key=lambda r: r.created, reverse=True):
        if record.config is not None and record.config.model in BACKBONES and record.config.group not in seen:
            seen.append(record.config.group)
    return [g for g in seen if g]


def timing_table(records):
    """Per run: mode, weights, parameters, one-time feature pass, seconds per epoch, val and test accuracy."""
    import pandas as pd

    rows = []
    for r in records:
        summary, metrics = r.summary or {}, r.metrics
        seconds = sorted(m["seconds"] for m in metrics if "seconds" in m)
        rows.append({
            "run": r.label, "mode": r.config.transfer_mode, "state": r.state,
            "weights": summary.get("weights") or r.status.get("weights") or "",
            "params_total": summary.get("params_total"), "params_trainable": summary.get("params_trainable"),
            "feature_pass_seconds": summary.get("feature_seconds"),
            "seconds_per_epoch": seconds[len(seconds) // 2] if seconds else None,
            "epochs": len(metrics),
            "val_acc": metrics[-1].get("val_acc") if metrics else None,
            "test_acc": metrics[-1].get("test_acc") if metrics else None,
        })
    return pd.DataFrame(rows)


COURSE_TABLE = {  # HW3 Table 1 (shared/seeds/002): what the course expects of each approach
    "frozen": ("Freeze the pre-trained weights; train only the new fully connected head.",
               "low: only the head is updated", "lower, especially with little data"),
    "finetune": ("Train the entire model: convolutional base and the new head.",
                 "high: every weight gets gradients", "higher on a small dataset"),
    "two-phase": ("Train the head with the backbone frozen, then fine-tune everything.",
                  "low at first, then high", "in between"),
    "partial": ("Freeze all but the last block; train that block and the head.",
                "medium", "in between"),
}


def _fmt(value, pattern: str = "{:.3f}") -> str:
    return "—" if value is None else pattern.format(value)


def comparison_table(records):
    """The course's comparison (approach, cost, risk of overfitting) with this group's measured numbers.
    Rows are aspects, columns are the runs; every cell is text so the table renders as one grid."""
    import pandas as pd

    columns = {}
    for r in records:
        mode, summary, metrics = r.config.transfer_mode, r.summary or {}, r.metrics
        approach, cost, risk = COURSE_TABLE.get(mode, ("", "", ""))
        last = metrics[-1] if metrics else {}
        seconds = sorted(m["seconds"] for m in metrics if "seconds" in m)
        gap = (last["train_acc"] - last["val_acc"]) if "train_acc" in last and "val_acc" in last else None
        shift = (last["val_acc"] - last["test_acc"]) if last.get("test_acc") is not None and "val_acc" in last else None
        feature_pass = _fmt(summary.get("feature_seconds"), "{:.2f}")
        sources = list((summary.get("feature_cache") or {}).values())
        if sources and "computed" not in sources:
            feature_pass += " (features were already cached)"
        columns[r.label if r.label not in columns else f"{r.label} · {r.run_id}"] = {
            "Approach": f"{MODE_TITLES.get(mode, mode)}: {approach}",
            "Weights": summary.get("weights") or r.status.get("weights") or "—",
            "Trainable parameters": _fmt(summary.get("params_trainable"), "{:,}")
            + (f" of {summary['params_total']:,}" if summary.get("params_total") else ""),
            "Cost (course)": cost,
            "Cost: one-time feature pass (s)": feature_pass if mode == "frozen" else "none",
            "Cost: seconds per epoch": _fmt(seconds[len(seconds) // 2] if seconds else None, "{:.3f}"),
            "Risk of overfitting (course)": risk,
            "Overfitting: train − val accuracy (last epoch)": _fmt(gap, "{:+.3f}"),
            "Val accuracy (site A)": _fmt(last.get("val_acc")),
            "Test accuracy (site B)": _fmt(last.get("test_acc")),
            "Val − test accuracy (site shift)": _fmt(shift, "{:+.3f}"),
        }
    return pd.DataFrame(columns)
