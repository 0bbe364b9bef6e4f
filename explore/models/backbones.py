"""Pretrained backbones for transfer learning: the ImageNet weights, the network, and which parameters train.

The network-building half of transfer learning (Lab 5 / HW3), with no training code in it, so the
model registry (explore.models.registry) can build a transfer model like any other. The training half (the
frozen-feature run and its cache, configs and tables for the page) is explore.training.transfer.

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

Pretrained on chest X-rays instead: `xrv_densenet121` and `xrv_resnet50` (torchxrayvision's networks,
see explore/models/xrv_backbones.py) are entries of the same registry, with the same four modes and the same
feature cache. Each entry carries its input convention (channels, mean/std, resolution), so
TransferNet feeds them one channel scaled to [-1024, 1024] at 224 / 512 px instead. What both kinds
share about weight files (the error, the download check, the offline message) is explore.models.pretrained_files.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn

from explore.models.pretrained_files import (  # noqa: F401 (re-exported)
    RANDOM, WeightsUnavailable, network_reachable, spec_download_allowed, spec_offline_message, torchvision_models,
)
from explore.models.xrv_backbones import XRV_BACKBONES, XrvBackbone

MODES = ("frozen", "finetune", "two-phase", "partial")
MODE_TITLES = {
    "frozen": "ConvNet as fixed feature extractor (frozen)",
    "finetune": "Fine-tuning the ConvNet",
    "two-phase": "Two-phase: frozen, then fine-tuned",
    "partial": "Partial: last block + head",
}
HEAD_HIDDEN = 256  # the course's head: Linear(features→256) → ReLU → Dropout(0.5) → Linear(256→out)
RANDOM_SUFFIX = " (random init)"


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
        return getattr(torchvision_models(), self.builder_name)

    @property
    def weights(self):  # torchvision's WeightsEnum member: url, transforms(), get_state_dict()
        enum_name, member = self.weights_name.split(".")
        return getattr(getattr(torchvision_models(), enum_name), member)

    @property
    def filename(self) -> str:
        return os.path.basename(urlparse(self.weights.url).path)  # e.g. "resnet18-f37072fd.pth"

    # What every backbone entry answers (explore/models/xrv_backbones.py has the chest X-ray ones).
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
    *XRV_BACKBONES,  # pretrained on chest X-rays (torchxrayvision): same modes, same feature cache
]}


def backbone_spec(name: str) -> Backbone:
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose from {', '.join(BACKBONES)}")
    return BACKBONES[name]


# ----- weights: where they are expected, and whether they can be had -------------------------
def weights_path(name: str) -> Path:
    """Where the weights file is expected: the torch hub cache (ImageNet) or torchxrayvision's folder."""
    return backbone_spec(name).weights_path()


def download_allowed(name: str) -> bool:
    """Downloads are off with EXPLORE_OFFLINE=1, and pointless when the server cannot be reached."""
    return spec_download_allowed(backbone_spec(name))


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
    return spec_offline_message(backbone_spec(name))


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
