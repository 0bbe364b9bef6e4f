"""Transfer learning: an ImageNet backbone with a new head for chest X-rays (Lab 5 / HW3).

Backbones (torchvision): GoogLeNet, DenseNet-121, ResNet-18, MobileNetV3-Small. The ImageNet
classifier is cut off where torchvision keeps it (`model.fc` for ResNet-18 and GoogLeNet,
`model.classifier` for DenseNet-121 and MobileNetV3-Small) and a new head takes its place:
the course's Linear(features→256) → ReLU → Dropout(0.5) → Linear(256→outputs), or one Linear.

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
see explore/xrv_backbones.py) are entries of the same registry, with the same four modes and the same
feature cache. Each entry carries its input convention (channels, mean/std, resolution), so
TransferNet feeds them one channel scaled to [-1024, 1024] at 224 / 512 px instead.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import socket
import sys
import threading
import time
import urllib.request
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn
from torchvision import models as tvm

from explore.config import RunConfig
from explore.data import DataBundle, DataSpec
from explore.device import Placement
from explore.models import MODELS
from explore.train import EVAL_BATCH_SIZE, TrainingRun, _uses_channels_last
from explore.xrv_backbones import XRV_BACKBONES, XrvBackbone

MODES = ("frozen", "finetune", "two-phase", "partial")
MODE_TITLES = {
    "frozen": "ConvNet as fixed feature extractor (frozen)",
    "finetune": "Fine-tuning the ConvNet",
    "two-phase": "Two-phase: frozen, then fine-tuned",
    "partial": "Partial: last block + head",
}
HEAD_HIDDEN = 256  # the course's head: Linear(features→256) → ReLU → Dropout(0.5) → Linear(256→out)
RANDOM = "random"  # the weights name of a randomly initialised backbone
RANDOM_SUFFIX = " (random init)"


@dataclass(frozen=True)
class Backbone:
    name: str
    title: str
    builder: object  # torchvision's model function, e.g. torchvision.models.resnet18
    weights: tvm.WeightsEnum  # the ImageNet weights
    head_attribute: str  # where torchvision keeps the ImageNet classifier (the course's model.fc / .classifier)
    last_block: tuple[str, ...]  # the modules that also train in "partial" mode

    @property
    def weights_name(self) -> str:
        return f"{type(self.weights).__name__}.{self.weights.name}"  # e.g. "ResNet18_Weights.IMAGENET1K_V1"

    @property
    def filename(self) -> str:
        return os.path.basename(urlparse(self.weights.url).path)  # e.g. "resnet18-f37072fd.pth"

    # What every backbone entry answers (explore/xrv_backbones.py has the chest X-ray ones).
    pretraining = "ImageNet"
    input_size = None  # ImageNet nets take any size: no resizing inside the model

    @property
    def url(self) -> str:
        return self.weights.url

    @property
    def input_mean(self) -> tuple[float, ...]:
        return tuple(self.weights.transforms().mean)  # the weights' own constants (no download needed)

    @property
    def input_std(self) -> tuple[float, ...]:
        return tuple(self.weights.transforms().std)

    def weights_path(self) -> Path:
        """Where torchvision looks for (and downloads) the weights file: <hub dir>/checkpoints/<file>."""
        return Path(torch.hub.get_dir()) / "checkpoints" / self.filename

    def fetch_hint(self) -> str:
        return f"(or set TORCH_HOME to a folder holding hub/checkpoints/{self.filename})"

    def architecture(self, with_aux: bool = False) -> nn.Module:
        return _architecture(self, with_aux)

    def load_pretrained(self) -> nn.Module:
        return _load_imagenet_backbone(self)


BACKBONES: dict[str, "Backbone | XrvBackbone"] = {b.name: b for b in [
    Backbone("googlenet", "GoogLeNet", tvm.googlenet, tvm.GoogLeNet_Weights.IMAGENET1K_V1, "fc", ("inception5b",)),
    # DenseNet's final BatchNorm (norm5) comes after the last dense block, so it trains with it.
    Backbone("densenet121", "DenseNet-121", tvm.densenet121, tvm.DenseNet121_Weights.IMAGENET1K_V1, "classifier",
             ("features.denseblock4", "features.norm5")),
    Backbone("resnet18", "ResNet-18", tvm.resnet18, tvm.ResNet18_Weights.IMAGENET1K_V1, "fc", ("layer4",)),
    # MobileNetV3's whole `classifier` (Linear 576→1024, Hardswish, Dropout, Linear 1024→1000) is replaced,
    # like ResNet's fc: its first Linear is ImageNet-specific too. The head sees the 576 pooled channels.
    # Its last block is the last inverted residual (features.11) plus the 1×1 conv that widens to 576.
    Backbone("mobilenet_v3_small", "MobileNetV3-Small", tvm.mobilenet_v3_small,
             tvm.MobileNet_V3_Small_Weights.IMAGENET1K_V1, "classifier", ("features.11", "features.12")),
    *XRV_BACKBONES,  # pretrained on chest X-rays (torchxrayvision): same modes, same feature cache
]}


def backbone_spec(name: str) -> Backbone:
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose from {', '.join(BACKBONES)}")
    return BACKBONES[name]


# ----- weights: where they are expected, and whether they can be had -------------------------
class WeightsUnavailable(Exception):
    """The ImageNet weights are not in the cache and cannot be downloaded (message says what to do)."""


def weights_path(name: str) -> Path:
    """Where the weights file is expected: the torch hub cache (ImageNet) or torchxrayvision's folder."""
    return backbone_spec(name).weights_path()


_REACHABLE: dict[str, tuple[float, bool]] = {}  # host → (checked at, reachable): one probe a minute at most


def network_reachable(url: str, timeout_s: float = 2.0) -> bool:
    """Can this machine open a connection to the download server (or its https proxy)? Fast when offline."""
    proxy = urllib.request.getproxies().get("https")
    target = urlparse(proxy) if proxy else urlparse(url)
    host, port = target.hostname, target.port or (443 if target.scheme == "https" else 80)
    checked = _REACHABLE.get(f"{host}:{port}")
    if checked and time.monotonic() - checked[0] < 60:
        return checked[1]
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            reachable = True
    except OSError:
        reachable = False
    _REACHABLE[f"{host}:{port}"] = (time.monotonic(), reachable)
    return reachable


def download_allowed(name: str) -> bool:
    """Downloads are off with EXPLORE_OFFLINE=1, and pointless when the server cannot be reached."""
    if os.environ.get("EXPLORE_OFFLINE", "") not in ("", "0"):
        return False
    return network_reachable(backbone_spec(name).url)


def weights_status(name: str, check_network: bool = False) -> dict:
    """What a page or the CLI shows BEFORE training: are the pretrained weights here, and if not, why not."""
    spec, path = backbone_spec(name), weights_path(name)
    status = {"backbone": name, "weights": spec.weights_name, "available": path.is_file(), "path": str(path),
              "filename": spec.filename, "url": spec.url, "pretraining": spec.pretraining, "downloadable": False}
    if status["available"]:
        status["message"] = f"{spec.pretraining} weights {spec.weights_name} found: {path}"
    elif check_network and download_allowed(name):
        status["downloadable"] = True
        status["message"] = (f"{spec.pretraining} weights for {spec.title} are not cached yet; they will be "
                             f"downloaded from {spec.url} to {path} when the first run starts.")
    else:
        status["message"] = offline_message(name)
    return status


def offline_message(name: str) -> str:
    spec, path = backbone_spec(name), weights_path(name)
    return (f"The {spec.pretraining} weights for {spec.title} are not on this machine, and this machine cannot "
            f"download them (no network). Expected file: {spec.filename} in {path.parent} (full path: {path}). "
            f"On a computer with internet, run `python -m explore fetch-weights {name}` and copy the file to "
            f"that folder {spec.fetch_hint()}. Without it, "
            f"a run starts from random weights and is labelled '{RANDOM}': that is training from scratch, "
            f"not transfer learning.")


def imagenet_state_dict(name: str) -> dict[str, torch.Tensor]:
    """The ImageNet state_dict from the hub cache (downloaded first when allowed), loaded weights_only."""
    spec, path = backbone_spec(name), weights_path(name)
    if not path.is_file() and not download_allowed(name):
        raise WeightsUnavailable(offline_message(name))
    try:  # torchvision reads the cached file, or downloads it (progress bar, hash checked) when missing
        return spec.weights.get_state_dict(progress=True, check_hash=True, weights_only=True)
    except OSError as error:  # includes URLError: the download failed after all
        raise WeightsUnavailable(f"downloading {spec.weights.url} failed ({error}). {offline_message(name)}") from error
    except Exception as error:  # a truncated file, or one holding pickled code that weights_only refuses
        raise WeightsUnavailable(f"the weights file {path} cannot be loaded safely ({str(error).splitlines()[0][:160]}); "
                                 f"delete it and run `python -m explore fetch-weights {name}` again") from error


def _modern_densenet_keys(state: dict) -> dict:
    """DenseNet checkpoints name layers 'norm.1'; today's modules are 'norm1' (torchvision renames them too)."""
    pattern = re.compile(r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$")
    return {(m.group(1) + m.group(2) if (m := pattern.match(k)) else k): v for k, v in state.items()}


# ----- the model --------------------------------------------------------------------------
class TransferNet(nn.Module):
    """Grey X-ray (N×1×H×W, 0..1) → the backbone's input convention → backbone → features → head.

    The convention comes from the backbone's entry: ImageNet nets get 3 channels, ImageNet-normalised;
    the chest X-ray nets (torchxrayvision) one channel scaled to [-1024, 1024], resized to their resolution.

    The backbone is torchvision's network with its ImageNet classifier replaced by Identity, so
    `features(x)` is what the course's new `model.fc` received; `head` is that new classifier.
    Keeping them apart lets a frozen run compute the features once and train only the head.
    """

    def __init__(self, backbone_name: str, backbone: nn.Module, head: nn.Module, mean, std,
                 input_size: int | None = None):
        super().__init__()
        self.backbone_name = backbone_name
        self.backbone = backbone
        self.head = head
        # Buffers, so weights.pt carries them and a reloaded model normalises exactly the same way.
        # One value per channel the backbone takes: 3 for ImageNet nets, 1 for the chest X-ray ones.
        self.register_buffer("input_mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("input_std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))
        self.input_size = input_size  # resize to this (the weights' training resolution); None: any size
        self.weights_name = RANDOM  # set by build_transfer_model: the pretrained weights used, or "random"
        self.weights_message = ""  # why a run asked for pretrained weights but got random ones

    def features(self, x: torch.Tensor) -> torch.Tensor:
        channels = self.input_mean.shape[1]
        if x.shape[1] == 1 and channels == 3:
            x = x.expand(-1, 3, -1, -1)  # ImageNet nets expect RGB: the grey image in all three channels
        if self.input_size and x.shape[-1] != self.input_size:  # as torchxrayvision's models do (bilinear)
            x = nn.functional.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear",
                                          align_corners=False)
        x = (x - self.input_mean) / self.input_std
        out = self.backbone(x)
        return out[0] if isinstance(out, tuple) else out  # GoogLeNet returns a tuple while aux heads exist

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def make_head(kind: str, in_features: int, num_outputs: int) -> nn.Module:
    if kind == "linear":
        return nn.Linear(in_features, num_outputs)
    if kind == "course":
        return nn.Sequential(nn.Linear(in_features, HEAD_HIDDEN), nn.ReLU(), nn.Dropout(0.5),
                             nn.Linear(HEAD_HIDDEN, num_outputs))
    raise ValueError(f"unknown head {kind!r}; use 'course' or 'linear'")


def _architecture(spec: Backbone, with_aux: bool = False) -> nn.Module:
    """torchvision's network with random weights (1000 ImageNet classes; the classifier is cut off later)."""
    if spec.name == "googlenet":
        # transform_input=True always: the ImageNet weights expect -1..1 inputs and this rescales the
        # ImageNet-normalised input to that; keeping it for random init too means a stored run reloads
        # into the same architecture either way. init_weights=False: PyTorch's default init (torchvision's
        # truncated-normal init takes seconds and is overwritten by ImageNet weights anyway).
        return spec.builder(weights=None, aux_logits=with_aux, transform_input=True, init_weights=False)
    return spec.builder(weights=None)


def _load_imagenet_backbone(spec: Backbone) -> nn.Module:
    state = imagenet_state_dict(spec.name)
    if spec.name == "densenet121":
        state = _modern_densenet_keys(state)
    net = _architecture(spec, with_aux=spec.name == "googlenet")  # the checkpoint holds GoogLeNet's aux heads
    net.load_state_dict(state)
    if spec.name == "googlenet":  # drop the auxiliary classifiers: they are ImageNet-only and unused here
        net.aux_logits, net.aux1, net.aux2 = False, None, None
    return net


def _cut_classifier(net: nn.Module, spec: Backbone) -> int:
    """Replace the ImageNet classifier by Identity; returns how many features it received."""
    classifier = getattr(net, spec.head_attribute)
    first_linear = next(m for m in classifier.modules() if isinstance(m, nn.Linear))
    setattr(net, spec.head_attribute, nn.Identity())
    return first_linear.in_features


def build_transfer_model(backbone: str, num_outputs: int, head: str = "course", pretrained: bool = True,
                         **_) -> TransferNet:
    """A backbone with a new head. pretrained=True loads its pretrained weights or raises WeightsUnavailable;
    pretrained=False never touches the weights file (random init, `model.weights_name == "random"`)."""
    spec = backbone_spec(backbone)
    net = spec.load_pretrained() if pretrained else spec.architecture()
    in_features = _cut_classifier(net, spec)
    model = TransferNet(backbone, net, make_head(head, in_features, num_outputs), spec.input_mean, spec.input_std,
                        input_size=spec.input_size)
    model.weights_name = spec.weights_name if pretrained else RANDOM
    return model


# ----- which parameters train, per mode ---------------------------------------------------
def last_block_parameters(model: TransferNet) -> list[nn.Parameter]:
    spec = backbone_spec(model.backbone_name)
    return [p for path in spec.last_block for p in model.backbone.get_submodule(path).parameters()]


def set_trainable(model: TransferNet, mode: str, backbone_unfrozen: bool = False) -> None:
    """requires_grad per mode: the head always trains; the backbone all, none, or only its last block."""
    train_backbone = mode in ("finetune", "none") or (mode == "two-phase" and backbone_unfrozen)
    for p in model.backbone.parameters():
        p.requires_grad_(train_backbone)
    if mode == "partial":
        for p in last_block_parameters(model):
            p.requires_grad_(True)
    for p in model.head.parameters():
        p.requires_grad_(True)


def keep_frozen_parts_in_eval(model: TransferNet) -> None:
    """Frozen layers must not change at all: BatchNorm in train mode would still update its running
    statistics (and dropout would add noise), so a fully frozen backbone runs in eval mode, and in
    "partial" mode every BatchNorm whose weights are frozen does."""
    backbone = model.backbone
    if not any(p.requires_grad for p in backbone.parameters()):
        backbone.eval()
        return
    for module in backbone.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and not any(
                p.requires_grad for p in module.parameters(recurse=False)):
            module.eval()


def build_for_run(config: RunConfig, num_classes: int, load_pretrained: bool = True) -> tuple[TransferNet, str]:
    """The model for a run, with its mode's trainable parameters set, and the weights' name or "random".

    ImageNet weights asked for but unavailable → random init, weights name "random", and
    `model.weights_message` says why. load_pretrained=False (RunStore.load_model) builds the
    architecture only; the run's own weights.pt is loaded over it.
    """
    num_outputs = 1 if config.loss == "bce" else num_classes
    want_imagenet = config.pretrained and load_pretrained
    try:
        model = build_transfer_model(config.model, num_outputs, config.transfer_head, pretrained=want_imagenet)
    except WeightsUnavailable as error:
        model = build_transfer_model(config.model, num_outputs, config.transfer_head, pretrained=False)
        model.weights_message = f"{error} This run trains from random initialisation (weights: '{RANDOM}')."
        warnings.warn(model.weights_message, stacklevel=2)
    set_trainable(model, config.transfer_mode, backbone_unfrozen=config.frozen_epochs < 1)
    keep_frozen_parts_in_eval(model)
    return model, model.weights_name


def param_groups(model: TransferNet, config: RunConfig) -> list[dict]:
    """Optimizer groups: the backbone at lr × backbone_lr_scale (every parameter that trains now or will
    after two-phase unfreezing, so the optimizer knows them from the start), then the head at lr.
    The head comes last: the training loop reports the last group's learning rate."""
    if config.transfer_mode in ("finetune", "two-phase", "none"):
        backbone = list(model.backbone.parameters())
    elif config.transfer_mode == "partial":
        backbone = last_block_parameters(model)
    else:  # frozen
        backbone = []
    groups = [{"params": backbone, "lr": config.lr * config.backbone_lr_scale, "name": "backbone"}] if backbone else []
    return groups + [{"params": list(model.head.parameters()), "lr": config.lr, "name": "head"}]


def before_epoch(model: TransferNet, config: RunConfig, epoch: int) -> None:
    """Called after model.train() at the start of every epoch: unfreeze in two-phase, keep frozen BN in eval."""
    if config.transfer_mode == "two-phase":
        set_trainable(model, "two-phase", backbone_unfrozen=epoch > config.frozen_epochs)
    keep_frozen_parts_in_eval(model)


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
            return Path(os.environ.get("EXPLORE_CACHE_DIR") or Path.cwd() / ".explore_cache") / "features"
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
            from explore.store import save_tensors  # atomic write: a reader never sees half a file

            save_tensors(self.disk_dir / f"{key}.pt", {"features": features})
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


@torch.no_grad()
def extract_features(model: TransferNet, images: torch.Tensor, pipeline, placement: Placement,
                     batch_size: int = EVAL_BATCH_SIZE) -> torch.Tensor:
    """The backbone's output for uint8 images (eval mode: BatchNorm uses its stored statistics)."""
    was_training = model.training
    model.eval()
    out = []
    for start in range(0, len(images), batch_size):
        x = pipeline(images[start:start + batch_size], train=False)
        if _uses_channels_last(model):
            x = x.contiguous(memory_format=torch.channels_last)
        with placement.autocast():
            out.append(model.features(x).float())
    model.train(was_training)
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
        if MODELS[config.model].family == "transfer":
            config, message = resolve_pretrained(config, check_network=check_network)
            if message and message not in messages:
                messages.append(message)
        out.append(config)
    return out, messages


def relabel_if_random(config: RunConfig, weights_name: str | None) -> RunConfig | None:
    """After the model is built: a run that asked for ImageNet weights but got random ones (the download
    failed after it was queued) → its config, relabelled '(random init)'; None when nothing changes."""
    if weights_name != RANDOM or MODELS[config.model].family != "transfer":
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
    records = [r for r in store.list(with_metrics=True)
               if r.config is not None and r.config.group == group and r.config.model in BACKBONES]
    return sorted(records, key=lambda r: r.created)


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


def benchmark_frozen_cache(backbone: str = "mobilenet_v3_small", image_size: int = 224, n_train: int = 300,
                           n_val: int = 50, n_test: int = 50, epochs: int = 5, batch_size: int = 32,
                           device: str = "auto", bundle: DataBundle | None = None) -> dict:
    """Frozen backbone, same head and data: cached features vs recomputing the backbone every epoch
    (what the course's loop does). Random backbone weights: the timing does not depend on their values."""
    if bundle is None:
        from explore.data.synthetic import generate_synthetic

        bundle = generate_synthetic(image_size=image_size, seed=0, n_train=n_train, n_val=n_val, n_test=n_test)
    config = transfer_config(backbone, "frozen", data=DataSpec(image_size=bundle.image_size), epochs=epochs,
                             image_size=bundle.image_size, pretrained=False, batch_size=batch_size, device=device)
    cached = FrozenFeatureRun(config, bundle, cache=FeatureCache(disk_dir=None))
    recompute = TrainingRun(config, bundle)  # the same frozen model, backbone run in every batch

    def epoch_seconds(run):
        return (r["seconds"] for r in run.fit() if r["kind"] == "epoch")

    # Alternate one epoch of each, so a busy machine slows both alike.
    cached_s, recompute_s = zip(*zip(epoch_seconds(cached), epoch_seconds(recompute)))
    median = lambda xs: sorted(xs)[len(xs) // 2]  # noqa: E731
    return {
        "backbone": backbone, "image_size": bundle.image_size, "train_images": len(bundle.train),
        "eval_images": len(bundle.val) + len(bundle.test), "epochs": epochs, "batch_size": batch_size,
        "device": cached.placement.describe(), "feature_pass_seconds": cached.feature_seconds,
        "cached_seconds_per_epoch": median(cached_s), "recompute_seconds_per_epoch": median(recompute_s),
        "speedup": median(recompute_s) / max(median(cached_s), 1e-9),
        # On a shared, busy machine the fastest epoch of each is the least disturbed measurement.
        "speedup_best_epochs": min(recompute_s) / max(min(cached_s), 1e-9),
        "note": "epoch time includes evaluating val and test; the feature pass happens once, before epoch 1",
    }


# ----- python -m explore fetch-weights ----------------------------------------------------
def cli_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m explore fetch-weights",
                                     description="Download pretrained weights: ImageNet ones into the torch hub "
                                                 f"cache ({Path(torch.hub.get_dir()) / 'checkpoints'}), chest "
                                                 "X-ray ones (xrv_*) into torchxrayvision's folder.")
    parser.add_argument("names", nargs="*", help=f"backbones (default: all of {', '.join(BACKBONES)})")
    parser.add_argument("--check", action="store_true", help="only report what is cached; download nothing")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in BACKBONES]
    if unknown:
        print(f"error: unknown backbone(s) {unknown}; choose from {', '.join(BACKBONES)}", file=sys.stderr)
        return 2
    results = [_fetch_one(name, download=not args.check) for name in (args.names or list(BACKBONES))]
    for result in results:
        print(json.dumps(result) if args.json else f"{result['backbone']}: {result['message']}", flush=True)
    return 0 if all(r["available"] for r in results) else 1


def _fetch_one(name: str, download: bool) -> dict:
    status = weights_status(name)
    if status["available"] or not download:
        return status
    try:
        backbone_spec(name).load_pretrained()
    except WeightsUnavailable as error:
        return status | {"message": str(error)}
    return weights_status(name) | {"message": f"downloaded to {weights_path(name)}"}
