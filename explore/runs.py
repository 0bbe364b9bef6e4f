"""Which kind of run trains a config: the one choice that sits above both training loops.

`TrainingRun` (explore.train) is the course's loop; `FrozenFeatureRun` (explore.transfer) is the
same loop on features a frozen backbone computed once. Choosing between them here, above both,
keeps the loop from importing the transfer module that extends it.
"""
from __future__ import annotations

from explore.config import RunConfig
from explore import train
from explore.data import DataBundle
from explore.device import Placement
from explore.roar import removed_bundle
from explore.train import TrainingRun
from explore.transfer import FrozenFeatureRun


def make_run(config: RunConfig, bundle: DataBundle | None = None, placement: Placement | None = None) -> TrainingRun:
    """The right kind of run for a config: frozen transfer runs train a head on cached features; a
    remove-and-retrain run trains on images whose top-attributed pixels are gone (explore.roar)."""
    if config.roar_from_run:
        bundle = removed_bundle(config, bundle if bundle is not None else train.load_bundle(config.data))
    if config.transfer_mode == "frozen":
        return FrozenFeatureRun(config, bundle, placement)
    return TrainingRun(config, bundle, placement)
