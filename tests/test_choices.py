"""explore.training.choices: the Train form's options come from config.py, and what the form builds is a valid RunConfig."""
from __future__ import annotations

import pytest

from explore.training import choices
from explore.training.config import RunConfig


@pytest.mark.parametrize("field, offered", [
    ("optimizer", list(choices.OPTIMIZER_TITLES)), ("scheduler", list(choices.SCHEDULER_TITLES)),
    ("input_norm", list(choices.NORM_TITLES)), ("loss", choices.losses_for(2)),
    ("device", list(choices.DEVICE_CHOICES)), ("precision", list(choices.PRECISION_CHOICES)),
])
def test_every_offered_option_makes_a_valid_config(field, offered):
    for value in offered:
        RunConfig(**{field: value}).validate()  # a choice config.py would refuse must never be offered
    with pytest.raises(ValueError):
        RunConfig(**{field: "not-an-option"}).validate()


def test_three_classes_are_never_offered_bce():
    assert choices.losses_for(3) == ["ce"] and "bce" in choices.losses_for(2)


def test_the_automatic_name_says_model_optimiser_and_rate():
    assert choices.automatic_name("hw3_cnn", {"batch_norm": True}, "momentum", 3e-4) == "hw3_cnn + batch norm · SGD + momentum lr 0.0003"
    assert choices.automatic_name("hw3_ann", {}, "adam", 1e-3) == "hw3_ann · Adam lr 0.001"
    assert choices.automatic_name("hw3_cnn", {}, "adam", 1e-3, ("pneumonia", "effusion"), 0.1) == \
        "hw3_cnn · Adam lr 0.001 · pneumonia + effusion · 10% of pneumonia labels"


def test_the_lr_finders_suggestion_snaps_to_the_slider_on_a_log_scale():
    assert choices.nearest_learning_rate(1.8e-3) == 3e-3  # on a linear scale 1e-3 would be nearer
    assert choices.nearest_learning_rate(1.6e-3) == 1e-3
    assert choices.nearest_learning_rate(5.0) == 1.0 and choices.nearest_learning_rate(None) is None
    assert choices.nearest_learning_rate(1.6e-3) in choices.LEARNING_RATES


def test_flips_are_offered_apart_from_the_other_augmentations():
    assert "hflip" not in choices.AUGMENT_CHOICES
    RunConfig(augment=choices.AUGMENT_CHOICES + ("hflip",)).validate()
