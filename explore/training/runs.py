"""Which kind of run trains a config: the one choice that sits above both training loops.

`TrainingRun` (explore.training.train) is the course's loop; `FrozenFeatureRun` (explore.training.transfer) is the
same loop on features a frozen backbone computed once. Choosing between them here, above both,
keeps the loop from importing the transfer module that extends it.
"""
from __future__ import annotations

from explore.training.config import RunConfig
from explore.training import train
from explore.data import DataBundle
from explore.device import Placement
from explore.models.registry import family_of
from explore.insight.roar import removed_bundle
from explore.training.train import TrainingRun
from explore.training.transfer import FrozenFeatureRun

# The run classes a model family can ask for (explore.models.registry.Family.run_kind).
RUN_CLASSES: dict[str, type[TrainingRun]] = {"training": TrainingRun, "frozen_features": FrozenFeatureRun}


def make_run(config: RunConfig, bundle: DataBundle | None = None, placement: Placement | None = None) -> TrainingRun:
    """The right kind of run for a config, as its model's family says (frozen transfer runs train a head on
    cached features); a remove-and-retrain run trains on images whose top-attributed pixels are gone
    (explore.insight.roar)."""
    config = config.resolve()
    if config.roar_from_run:
        bundle = removed_bundle(config, bundle if bundle is not None else train.load_bundle(config.data))
    return RUN_CLASSES[family_of(config.model).run_kind(config)](config, bundle, placement)
