"""Pretrained backbones for transfer learning: the ImageNet weights, the network, and which parameters train.

The network-building half of transfer learning (Lab 5 / HW3), with no training code in it, so the
model registry (explore.models) can build a transfer model like any other. The training half (the
frozen-feature run and its cache, configs and tables for the page) is explore.transfer.

Backbones (torchvision): GoogLeNet, DenseNet-121, ResNet-18, MobileNetV3-Small. The ImageNet
classifier is cut off where torchvision keeps it (`model.fc` for ResNet-18 and GoogLeNet,
`model.classifier` for DenseNet-121 and MobileNetV3-Small) and a new head takes its place:
the course's Linear(features→256) → ReLU → Dropout(0.5) → Linear(256→outputs), or one Linear.

Input: grey X-rays N×1×H×W in 0..1. `TransferNet` repeats them to 3 channels and normalises with
the weights' own ImageNet mean/std inside forward(), so every caller feeds the same 0..1 images.

Weights, honestly: ImageNet weights come from torchvision's `weights=` enums and live in the
torch hub cache (torch.hub.get_dir()/checkpoints/<file named in the weights' url>). They are
loaded with weights_only=True. With no file and no network a run trains from random
initialisation and is labelled "random" (never shown as pretrained).
"""
from __future__ import annotations

import os
import re
import socket
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn

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


def _torchvision_models():
    """torchvision.models, imported on first use: importing it takes seconds, and a server, a worker
    process or the CLI training a course model never needs it (the table below is names only)."""
    from torchvision import models

    return models


@dataclass(frozen=True)
class Backbone:
    name: str
    title: str
    builder_name: str  # torchvision's model function, e.g. "resnet18" (torchvision.models.resnet18)
    weights_name: str  # the ImageNet weights, e.g. "ResNet18_Weights.IMAGENET1K_V1"
    head_attribute: str  # where torchvision keeps the ImageNet classifier (the course's model.fc / .classifier)
    last_block: tuple[str, ...]  # the modules that also train in "partial" mode

    @property
    def builder(self):
        return getattr(_torchvision_models(), self.builder_name)

    @property
    def weights(self):  # torchvision's WeightsEnum member: url, transforms(), get_state_dict()
        enum_name, member = self.weights_name.split(".")
        return getattr(getattr(_torchvision_models(), enum_name), member)

    @property
    def filename(self) -> str:
        return os.path.basename(urlparse(self.weights.url).path)  # e.g. "resnet18-f37072fd.pth"


BACKBONES: dict[str, Backbone] = {b.name: b for b in [
    Backbone("googlenet", "GoogLeNet", "googlenet", "GoogLeNet_Weights.IMAGENET1K_V1", "fc", ("inception5b",)),
    # DenseNet's final BatchNorm (norm5) comes after the last dense block, so it trains with it.
    Backbone("densenet121", "DenseNet-121", "densenet121", "DenseNet121_Weights.IMAGENET1K_V1", "classifier",
             ("features.denseblock4", "features.norm5")),
    Backbone("resnet18", "ResNet-18", "resnet18", "ResNet18_Weights.IMAGENET1K_V1", "fc", ("layer4",)),
    # MobileNetV3's whole `classifier` (Linear 576→1024, Hardswish, Dropout, Linear 1024→1000) is replaced,
    # like ResNet's fc: its first Linear is ImageNet-specific too. The head sees the 576 pooled channels.
    # Its last block is the last inverted residual (features.11) plus the 1×1 conv that widens to 576.
    Backbone("mobilenet_v3_small", "MobileNetV3-Small", "mobilenet_v3_small",
             "MobileNet_V3_Small_Weights.IMAGENET1K_V1", "classifier", ("features.11", "features.12")),
]}


def backbone_spec(name: str) -> Backbone:
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose from {', '.join(BACKBONES)}")
    return BACKBONES[name]


# ----- weights: where they are expected, and whether they can be had -------------------------
class WeightsUnavailable(Exception):
    """The ImageNet weights are not in the cache and cannot be downloaded (message says what to do)."""


def weights_path(name: str) -> Path:
    """Where torchvision looks for (and downloads) the weights file: <hub dir>/checkpoints/<file>."""
    return Path(torch.hub.get_dir()) / "checkpoints" / backbone_spec(name).filename


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
    return network_reachable(backbone_spec(name).weights.url)


def weights_status(name: str, check_network: bool = False) -> dict:
    """What a page or the CLI shows BEFORE training: are the ImageNet weights here, and if not, why not."""
    spec, path = backbone_spec(name), weights_path(name)
    status = {"backbone": name, "weights": spec.weights_name, "available": path.is_file(), "path": str(path),
              "filename": spec.filename, "url": spec.weights.url, "downloadable": False}
    if status["available"]:
        status["message"] = f"ImageNet weights {spec.weights_name} found: {path}"
    elif check_network and download_allowed(name):
        status["downloadable"] = True
        status["message"] = (f"ImageNet weights for {spec.title} are not cached yet; they will be downloaded "
                             f"from {spec.weights.url} to {path} when the first run starts.")
    else:
        status["message"] = offline_message(name)
    return status


def offline_message(name: str) -> str:
    spec, path = backbone_spec(name), weights_path(name)
    return (f"The ImageNet weights for {spec.title} are not on this machine, and this machine cannot download "
            f"them (no network). Expected file: {spec.filename} in {path.parent} (full path: {path}). "
            f"On a computer with internet, run `python -m explore fetch-weights {name}` and copy the file to "
            f"that folder (or set TORCH_HOME to a folder holding hub/checkpoints/{spec.filename}). Without it, "
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
    """Grey X-ray (N×1×H×W, 0..1) → 3 channels, ImageNet-normalised → backbone → features → head.

    The backbone is torchvision's network with its ImageNet classifier replaced by Identity, so
    `features(x)` is what the course's new `model.fc` received; `head` is that new classifier.
    Keeping them apart lets a frozen run compute the features once and train only the head.
    """

    def __init__(self, backbone_name: str, backbone: nn.Module, head: nn.Module, mean, std):
        super().__init__()
        self.backbone_name = backbone_name
        self.backbone = backbone
        self.head = head
        # Buffers, so weights.pt carries them and a reloaded model normalises exactly the same way.
        self.register_buffer("input_mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("input_std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))
        self.weights_name = RANDOM  # set by build_transfer_model: the ImageNet weights used, or "random"
        self.weights_message = ""  # why a run asked for ImageNet weights but got random ones

    def features(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)  # ImageNet nets expect RGB: the grey image in all three channels
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
    """A backbone with a new head. pretrained=True loads ImageNet weights or raises WeightsUnavailable;
    pretrained=False never touches the weights file (random init, `model.weights_name == "random"`)."""
    spec = backbone_spec(backbone)
    net = _load_imagenet_backbone(spec) if pretrained else _architecture(spec)
    in_features = _cut_classifier(net, spec)
    transforms = spec.weights.transforms()  # the weights' own preprocessing constants (no download needed)
    model = TransferNet(backbone, net, make_head(head, in_features, num_outputs), transforms.mean, transforms.std)
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
