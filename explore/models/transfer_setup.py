"""A run's transfer settings applied to its backbone: the model for a run, its optimizer groups, the epoch hook.

explore.models.backbones builds networks and knows which parameters train in each mode, without knowing
about runs; this module reads a RunConfig (transfer_mode, frozen_epochs, backbone_lr_scale,
pretrained) and applies it. The model registry's transfer family (explore.models.registry.PretrainedFamily)
calls it; it needs RunConfig's fields, never the class, so it sits below explore.training.config and the
registry with no cycle.
"""
from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

from explore.models.backbones import (RANDOM, TransferNet, WeightsUnavailable, build_transfer_model, keep_frozen_parts_in_eval,
                               last_block_parameters, set_trainable)

if TYPE_CHECKING:  # annotations only: the config module sits above the registry that calls this one
    from explore.training.config import RunConfig


def build_for_run(config: RunConfig, num_classes: int, load_pretrained: bool = True) -> tuple[TransferNet, str]:
    """The model for a run, with its mode's trainable parameters set, and the weights' name or "random".

    ImageNet weights asked for but unavailable → random init, weights name "random", and
    `model.weights_message` says why. load_pretrained=False (RunStore.load_model) builds the
    architecture only; the run's own weights.pt is loaded over it.
    """
    num_outputs = config.num_outputs if config.tasks else (1 if config.loss == "bce" else num_classes)
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
