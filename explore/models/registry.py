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
from typing import TYPE_CHECKING, Callable

import torch
from torch import nn

from explore.models import transfer_setup
from explore.models.backbones import build_transfer_model

if TYPE_CHECKING:  # annotations only: RunConfig sits above the registry (it validates model names)
    from explore.training.config import RunConfig


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


def conv_stack(blocks: int, channels: int, batch_norm: bool) -> list[nn.Module]:
    """`blocks` conv blocks on the grey input, `channels` wide each (shared by cnn and cnn_gap)."""
    convs: list[nn.Module] = []
    in_ch = 1
    for _ in range(blocks):
        convs += conv_block(in_ch, channels, batch_norm)
        in_ch = channels
    return convs


def cnn(in_size: int, num_outputs: int, blocks: int = 3, channels: int = 32, fc_width: int = 32,
        dropout: float = 0.0, batch_norm: bool = False) -> nn.Sequential:
    """[conv3×3 → ReLU → maxpool2] × blocks → flatten → Linear(fc_width) → ReLU → Linear."""
    convs = conv_stack(blocks, channels, batch_norm)
    features = nn.Sequential(*convs)
    head: list[nn.Module] = [nn.Flatten(), nn.Linear(flat_features(features, in_size), fc_width), nn.ReLU()]
    if dropout > 0:
        head.append(nn.Dropout(dropout))
    head.append(nn.Linear(fc_width, num_outputs))
    return nn.Sequential(*convs, *head)


def cnn_gap(in_size: int, num_outputs: int, blocks: int = 3, channels: int = 32,
            dropout: float = 0.0, batch_norm: bool = False) -> nn.Sequential:
    """The same conv blocks, then global average pooling instead of flatten: no size-dependent weights."""
    convs = conv_stack(blocks, channels, batch_norm)
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


# ----- families: what the run machinery asks a model's family ----------------------------------
@dataclass(frozen=True)
class Family:
    """The behaviour shared by every model of one family: models trained from scratch (mlp, cnn, cnn_gap).

    The training loop, the run store, the config and the job code ask the model's family (`family_of`)
    how to build a model for a run, which parameters train, what to do before an epoch, how to rebuild a
    stored run and which kind of run trains it; none of them tests the family's name.
    """

    name: str
    # True when its models start from downloaded weights (ImageNet, chest X-rays): runs then have
    # transfer settings, and whether the weights can be had is checked before queueing.
    pretrained_weights: bool = False

    def config_defaults(self, config: "RunConfig") -> dict:
        """Settings whose default depends on the model, as changes for `config.resolve`. None here."""
        return {}

    def check_config(self, config: "RunConfig") -> None:
        """Raise ValueError for settings this family cannot train with."""
        if config.transfer_mode != "none":
            raise ValueError(f"transfer mode {config.transfer_mode!r} needs a pretrained backbone, not {config.model!r}")

    def offline_options(self) -> dict:
        """Build options that never download anything (for profiles, tables and timing)."""
        return {}

    def build_for_run(self, config: "RunConfig", num_classes: int, image_size: int,
                      load_pretrained: bool = True) -> tuple[nn.Module, str | None]:
        """(model for this run, name of the pretrained weights it starts from or None)."""
        return build_model(config.model, image_size, config.num_outputs, **config.options()), None

    def restore(self, config: "RunConfig", image_size: int) -> nn.Module:
        """The architecture of a stored run, to load its weights.pt into (nothing downloaded)."""
        return self.build_for_run(config, config.data.num_classes, image_size, load_pretrained=False)[0]

    def param_groups(self, model: nn.Module, config: "RunConfig") -> list[dict]:
        """Optimizer groups; the loop reports the last group's learning rate."""
        return [{"params": [p for p in model.parameters() if p.requires_grad]}]

    def before_epoch(self, model: nn.Module, config: "RunConfig", epoch: int) -> None:
        """Called after model.train() at the start of every epoch."""

    def run_kind(self, config: "RunConfig") -> str:
        """Which run class trains this config (a key of explore.training.runs.RUN_CLASSES)."""
        return "training"


@dataclass(frozen=True)
class PretrainedFamily(Family):
    """Pretrained backbones with a new head (transfer learning; explore.models.backbones, explore.models.transfer_setup)."""

    pretrained_weights: bool = True

    def config_defaults(self, config: "RunConfig") -> dict:
        changes = {}
        if config.transfer_mode == "none":
            changes["transfer_mode"] = "finetune"
        if config.input_norm == "dataset":
            # Pretrained backbones apply their own ImageNet mean/std to 0..1 input; standardising
            # by the X-ray set's statistics first would normalise twice.
            changes["input_norm"] = "none"
        return changes

    def check_config(self, config: "RunConfig") -> None:
        pass  # every transfer mode applies; "none" becomes "finetune" when the config is resolved

    def offline_options(self) -> dict:
        return {"pretrained": False}

    def build_for_run(self, config, num_classes, image_size, load_pretrained=True):
        return transfer_setup.build_for_run(config, num_classes, load_pretrained)

    def param_groups(self, model, config):
        return transfer_setup.param_groups(model, config)

    def before_epoch(self, model, config, epoch):
        transfer_setup.before_epoch(model, config, epoch)

    def run_kind(self, config):
        # A frozen backbone never changes: its features are computed once and only the head trains.
        return "frozen_features" if config.transfer_mode == "frozen" else "training"


FAMILIES: dict[str, Family] = {f.name: f for f in (Family("mlp"), Family("cnn"), Family("cnn_gap"),
                                                   PretrainedFamily("transfer"))}


@dataclass(frozen=True)
class ModelInfo:
    """A registered model: how to build it and what the UI should say about it."""

    name: str
    build: Callable[..., nn.Module]
    family: str  # a key of FAMILIES: "mlp" | "cnn" | "cnn_gap" | "transfer"
    description: str
    options: tuple[str, ...] = field(default=())  # keyword options the builder accepts

    @property
    def behaviour(self) -> Family:
        return FAMILIES[self.family]


def family_of(name: str) -> Family:
    """The family of a registered model: what the loop, the store and the config ask."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose from {', '.join(MODELS)}")
    return MODELS[name].behaviour


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

SCRATCH_MODELS = tuple(name for name, info in MODELS.items() if not info.behaviour.pretrained_weights)
TRANSFER_MODELS = tuple(name for name, info in MODELS.items() if info.behaviour.pretrained_weights)


def build_model(name: str, in_size: int, num_outputs: int, **options) -> nn.Module:
    """Build a registered model. Options it does not accept are a clear error, not silently ignored."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose from {', '.join(MODELS)}")
    info = MODELS[name]
    if not info.behaviour.pretrained_weights:  # backbones take their own keywords (head, pretrained)
        unknown = set(options) - set(info.options)
        if unknown:
            raise ValueError(f"model {name!r} does not take option(s) {sorted(unknown)}; it takes {list(info.options)}")
    return info.build(in_size, num_outputs, **options)


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(total, trainable) parameter counts."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return total, trainable


def forward_order(model: nn.Module, example: torch.Tensor, kinds=(nn.Conv2d, nn.Linear)) -> list[tuple[str, nn.Module]]:
    """Modules of the given kinds in the order the forward pass calls them (not the order they were defined).

    Registration order can lie (GoogLeNet defines its auxiliary heads after the last block),
    so one forward pass with hooks records what really runs.
    """
    calls: list[tuple[str, nn.Module]] = []
    seen: set[int] = set()

    def record(name):
        def hook(module, inputs, output):
            if id(module) not in seen:
                seen.add(id(module))
                calls.append((name, module))
        return hook

    handles = [m.register_forward_hook(record(name)) for name, m in model.named_modules()
               if isinstance(m, kinds) or (kinds == () and any(True for _ in m.parameters(recurse=False)))]
    try:
        with torch.no_grad():
            model(example)
    finally:
        for handle in handles:
            handle.remove()
    return calls
