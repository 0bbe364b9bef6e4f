"""One registry of models: `MODELS[name].build(in_size, num_outputs, **options)`.

The UI's model list, the CLI's `--model` choices and the parametrized tests all read
`MODELS`. The course's homework architectures are reproduced exactly (layer for layer, as
in the reports in shared/seeds); flattened sizes are computed from the input size, never
typed in, so every model works at 64, 128, 224 and 256 px.

Inputs are N×1×H×W float tensors (grey X-rays). Outputs are N×num_outputs logits:
1 logit for BCE-with-logits, K logits for cross-entropy.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from explore.backbones import build_transfer_model


def conv_block(in_ch: int, out_ch: int, batch_norm: bool = False) -> list[nn.Module]:
    """conv3×3 'same' → (BatchNorm) → ReLU → maxpool 2×2: the course's basic CNN block."""
    layers: list[nn.Module] = [nn.Conv2d(in_ch, out_ch, kernel_size=3, stride=1, padding="same")]
    if batch_norm:
        layers.append(nn.BatchNorm2d(out_ch))
    layers += [nn.ReLU(), nn.MaxPool2d(kernel_size=2, stride=2)]
    return layers


def flat_features(features: nn.Module, in_size: int) -> int:
    """How many numbers `features` produces for one in_size×in_size image (no hand arithmetic)."""
    with torch.no_grad():
        return int(features(torch.zeros(1, 1, in_size, in_size)).numel())


def mlp(in_size: int, num_outputs: int, hidden_layers: int = 3, width: int = 64,
        dropout: float = 0.0, batch_norm: bool = False) -> nn.Sequential:
    """Flatten → [Linear → (BN) → ReLU → (Dropout)] × hidden_layers → Linear."""
    layers: list[nn.Module] = [nn.Flatten()]
    in_features = in_size * in_size
    for _ in range(hidden_layers):
        layers.append(nn.Linear(in_features, width))
        if batch_norm:
            layers.append(nn.BatchNorm1d(width))
        layers.append(nn.ReLU())
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        in_features = width
    layers.append(nn.Linear(in_features, num_outputs))
    return nn.Sequential(*layers)


def cnn(in_size: int, num_outputs: int, blocks: int = 3, channels: int = 32, fc_width: int = 32,
        dropout: float = 0.0, batch_norm: bool = False) -> nn.Sequential:
    """[conv3×3 → ReLU → maxpool2] × blocks → flatten → Linear(fc_width) → ReLU → Linear."""
    convs: list[nn.Module] = []
    in_ch = 1
    for _ in range(blocks):
        convs += conv_block(in_ch, channels, batch_norm)
        in_ch = channels
    features = nn.Sequential(*convs)
    head: list[nn.Module] = [nn.Flatten(), nn.Linear(flat_features(features, in_size), fc_width), nn.ReLU()]
    if dropout > 0:
        head.append(nn.Dropout(dropout))
    head.append(nn.Linear(fc_width, num_outputs))
    return nn.Sequential(*convs, *head)


def cnn_gap(in_size: int, num_outputs: int, blocks: int = 3, channels: int = 32,
            dropout: float = 0.0, batch_norm: bool = False) -> nn.Sequential:
    """The same conv blocks, then global average pooling instead of flatten: no size-dependent weights."""
    convs: list[nn.Module] = []
    in_ch = 1
    for _ in range(blocks):
        convs += conv_block(in_ch, channels, batch_norm)
        in_ch = channels
    head: list[nn.Module] = [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    if dropout > 0:
        head.append(nn.Dropout(dropout))
    head.append(nn.Linear(channels, num_outputs))
    return nn.Sequential(*convs, *head)


def hw2_mlp(in_size: int, num_outputs: int) -> nn.Sequential:
    """Homework 2: flatten → 3 hidden layers of 64 with ReLU → output."""
    return mlp(in_size, num_outputs, hidden_layers=3, width=64)


class HW3ConvModel(nn.Module):
    """Homework 3's `ConvModel`, written as in the reports (conv1..3, pool1..3, fc1, fc2).

    With dropout > 0 it is the homework's overfitting fix: Dropout after the third conv
    and after fc1 (the reports used 0.6).
    """

    def __init__(self, in_size: int, num_outputs: int, dropout: float = 0.0):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, kernel_size=3, stride=1, padding="same")
        self.pool1 = nn.MaxPool2d(kernel_size=2, stride=2)
        self.conv2 = nn.Conv2d(32, 32, kernel_size=3, stride=1, padding="same")
        self.pool2 = nn.MaxPool2d(kernel_size=2, stride=2)
        self.conv3 = nn.Conv2d(32, 32, kernel_size=3, stride=1, padding="same")
        self.dropout3 = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.pool3 = nn.MaxPool2d(kernel_size=2, stride=2)
        flattened_dim = 32 * (in_size // 8) * (in_size // 8)  # 32×32×32 at 256 px, as in the homework
        self.fc1 = nn.Linear(flattened_dim, 32)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc2 = nn.Linear(32, num_outputs)
        # ReLU as modules (not F.relu) so attribution can find and replace them.
        self.relu1, self.relu2, self.relu3, self.relu4 = nn.ReLU(), nn.ReLU(), nn.ReLU(), nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(self.relu1(self.conv1(x)))
        x = self.pool2(self.relu2(self.conv2(x)))
        x = self.pool3(self.dropout3(self.relu3(self.conv3(x))))
        x = x.reshape(x.size(0), -1)
        x = self.dropout(self.relu4(self.fc1(x)))
        return self.fc2(x)


def hw3_cnn(in_size: int, num_outputs: int) -> nn.Module:
    return HW3ConvModel(in_size, num_outputs)


def hw3_cnn_dropout(in_size: int, num_outputs: int, dropout: float = 0.6) -> nn.Module:
    return HW3ConvModel(in_size, num_outputs, dropout=dropout)


def hw3_ann(in_size: int, num_outputs: int) -> nn.Sequential:
    """Homework 3's `LinearModel`: 512-256-256 with BatchNorm and heavy dropout (0.9, 0.9, 0.8)."""
    layers: list[nn.Module] = [nn.Flatten()]
    in_features = in_size * in_size
    for width, p in ((512, 0.9), (256, 0.9), (256, 0.8)):
        layers += [nn.Linear(in_features, width), nn.BatchNorm1d(width), nn.ReLU(), nn.Dropout(p)]
        in_features = width
    layers.append(nn.Linear(in_features, num_outputs))
    return nn.Sequential(*layers)


def _gap_net(num_outputs: int, last_channels: int, head: list[nn.Module]) -> nn.Sequential:
    return nn.Sequential(
        *conv_block(1, 32), *conv_block(32, 32), *conv_block(32, last_channels),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), *head,
    )


def lab4_gap(in_size: int, num_outputs: int) -> nn.Sequential:
    """Lab 4's `ConvGAP`: the three hw3 conv blocks, global average pooling, Linear(32 → out)."""
    return _gap_net(num_outputs, 32, [nn.Linear(32, num_outputs)])


def hw3_gap_wide(in_size: int, num_outputs: int) -> nn.Sequential:
    """Homework 3's improved GAP net: last block 128 channels, then Linear 128→128, ReLU, Linear."""
    return _gap_net(num_outputs, 128, [nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, num_outputs)])


@dataclass(frozen=True)
class ModelInfo:
    """A registered model: how to build it and what the UI should say about it."""

    name: str
    build: Callable[..., nn.Module]
    family: str  # "mlp" | "cnn" | "cnn_gap" | "transfer"
    description: str
    options: tuple[str, ...] = field(default=())  # keyword options the builder accepts


def _transfer_builder(backbone: str) -> Callable[..., nn.Module]:
    def build(in_size: int, num_outputs: int, **options) -> nn.Module:
        return build_transfer_model(backbone, num_outputs, **options)

    return build


MODELS: dict[str, ModelInfo] = {
    info.name: info
    for info in [
        ModelInfo("mlp", mlp, "mlp", "Fully connected: hidden layers × width, optional dropout and batch norm",
                  ("hidden_layers", "width", "dropout", "batch_norm")),
        ModelInfo("cnn", cnn, "cnn", "Conv3×3 → ReLU → maxpool blocks, then flatten and two Linear layers",
                  ("blocks", "channels", "fc_width", "dropout", "batch_norm")),
        ModelInfo("cnn_gap", cnn_gap, "cnn_gap", "Conv blocks, then global average pooling and one Linear layer",
                  ("blocks", "channels", "dropout", "batch_norm")),
        ModelInfo("hw2_mlp", hw2_mlp, "mlp", "HW2: flatten → 3 × (Linear 64, ReLU) → output"),
        ModelInfo("hw3_cnn", hw3_cnn, "cnn", "HW3 ConvModel: 3 conv(32) + maxpool, fc 32, output"),
        ModelInfo("hw3_cnn_dropout", hw3_cnn_dropout, "cnn", "HW3 ConvModel + Dropout(0.6) after conv3 and fc1",
                  ("dropout",)),
        ModelInfo("hw3_ann", hw3_ann, "mlp", "HW3 LinearModel: 512-256-256, BatchNorm, Dropout 0.9/0.9/0.8"),
        ModelInfo("lab4_gap", lab4_gap, "cnn_gap", "Lab 4 ConvGAP: 3 conv(32) blocks, GAP, Linear(32 → out)"),
        ModelInfo("hw3_gap_wide", hw3_gap_wide, "cnn_gap", "HW3 improved GAP: conv 32-32-128, GAP, 128-128-out"),
        ModelInfo("googlenet", _transfer_builder("googlenet"), "transfer", "GoogLeNet (Inception v1), ImageNet"),
        ModelInfo("densenet121", _transfer_builder("densenet121"), "transfer", "DenseNet-121, ImageNet"),
        ModelInfo("resnet18", _transfer_builder("resnet18"), "transfer", "ResNet-18, ImageNet"),
        ModelInfo("mobilenet_v3_small", _transfer_builder("mobilenet_v3_small"), "transfer",
                  "MobileNetV3-Small, ImageNet (light: good for CPU classrooms)"),
        ModelInfo("xrv_densenet121", _transfer_builder("xrv_densenet121"), "transfer",
                  "DenseNet-121 pretrained on 7 public chest X-ray sets (torchxrayvision), 224 px, one channel"),
        ModelInfo("xrv_resnet50", _transfer_builder("xrv_resnet50"), "transfer",
                  "ResNet-50 pretrained on 5 public chest X-ray sets (torchxrayvision), 512 px, one channel"),
    ]
}

SCRATCH_MODELS = tuple(name for name, info in MODELS.items() if info.family != "transfer")
TRANSFER_MODELS = tuple(name for name, info in MODELS.items() if info.family == "transfer")


def build_model(name: str, in_size: int, num_outputs: int, **options) -> nn.Module:
    """Build a registered model. Options it does not accept are a clear error, not silently ignored."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose from {', '.join(MODELS)}")
    info = MODELS[name]
    if info.family != "transfer":
        unknown = set(options) - set(info.options)
        if unknown:
            raise ValueError(f"model {name!r} does not take option(s) {sorted(unknown)}; it takes {list(info.options)}")
    return info.build(in_size, num_outputs, **options)


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(total, trainable) parameter counts."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return total, trainable
