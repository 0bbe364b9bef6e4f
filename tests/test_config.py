import pytest

from explore.training.config import RunConfig
from explore.data import DataSpec


def test_json_round_trip_and_hashable():
    config = RunConfig(model="hw3_cnn_dropout", model_options={"dropout": 0.5}.items(), augment=("geometry",),
                       data=DataSpec(image_size=64).with_knobs(noise_shift=0.0))
    again = RunConfig.from_json(config.to_json())
    assert again == config
    assert hash(again) == hash(config)


@pytest.mark.parametrize("changes,match", [
    ({"loss": "hinge"}, "loss must be one of"),
    ({"optimizer": "lion"}, "optimizer"),
    ({"lr": 0}, "learning rate"),
    ({"transfer_mode": "frozen"}, "needs a pretrained backbone"),
    ({"augment": ("mixup",)}, "augment"),
])
def test_bad_values_are_clear_errors(changes, match):
    with pytest.raises(ValueError, match=match):
        RunConfig(**changes)


def test_bce_refuses_three_classes():
    with pytest.raises(ValueError, match="BCE needs two classes"):
        RunConfig(loss="bce", data=DataSpec(num_classes=3))
    assert RunConfig(loss="ce", data=DataSpec(num_classes=3)).num_outputs == 3


def test_unknown_json_key_rejected():
    with pytest.raises(ValueError, match="unknown setting"):
        RunConfig.from_dict({"learning_rate": 0.1})


def test_replace_with_data_keys_and_differences():
    a = RunConfig()
    b = a.replace(lr=0.01, data_image_size=64)
    assert b.data.image_size == 64 and b.lr == 0.01
    assert set(a.differences(b)) == {"lr", "data.image_size"}


def test_model_dependent_defaults_are_resolved_in_one_step_not_by_validation(tmp_path):
    from explore.training.store import RunStore

    asked = RunConfig(model="resnet18")  # validation leaves the frozen object as it was given
    assert (asked.transfer_mode, asked.input_norm) == ("none", "dataset")
    resolved = asked.resolve()
    assert (resolved.transfer_mode, resolved.input_norm) == ("finetune", "none")  # a backbone fine-tunes on 0..1 input
    assert resolved.resolve() == resolved and asked.transfer_mode == "none"
    chosen = RunConfig(model="resnet18", transfer_mode="frozen", input_norm="per_image").resolve()
    assert (chosen.transfer_mode, chosen.input_norm) == ("frozen", "per_image")  # a user's choice stays
    assert RunConfig(model="hw3_cnn").resolve() == RunConfig(model="hw3_cnn")
    store = RunStore(tmp_path)  # where runs are made: the stored config says what trains
    assert store.load(store.create(asked)).config == resolved


def test_the_family_decides_how_a_model_trains():
    from explore.models.registry import MODELS, family_of

    scratch, pretrained = family_of("hw3_cnn"), family_of("resnet18")
    assert not scratch.pretrained_weights and pretrained.pretrained_weights
    assert scratch.run_kind(RunConfig()) == "training"
    assert pretrained.run_kind(RunConfig(model="resnet18", transfer_mode="frozen")) == "frozen_features"
    assert pretrained.offline_options() == {"pretrained": False} and scratch.offline_options() == {}
    assert all(family_of(name) is info.behaviour for name, info in MODELS.items())
    with pytest.raises(ValueError, match="unknown model"):
        family_of("nope")
