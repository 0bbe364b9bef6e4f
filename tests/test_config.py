import pytest

from explore.config import RunConfig
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
