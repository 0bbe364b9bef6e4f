"""Registry-wide shape/no-NaN tests, and the course architectures' exact parameter counts."""
import pytest
import torch
from torch import nn

from explore.models.registry import MODELS, SCRATCH_MODELS, build_model, count_parameters


@pytest.mark.parametrize("size", [64, 256])
@pytest.mark.parametrize("name", SCRATCH_MODELS)
@pytest.mark.parametrize("outputs", [1, 2])
def test_every_model_forward_shape_and_finite(name, size, outputs):
    torch.manual_seed(0)
    model = build_model(name, size, outputs).eval()
    x = torch.randn(2, 1, size, size)
    with torch.no_grad():
        y = model(x)
    assert y.shape == (2, outputs)
    assert torch.isfinite(y).all()


def linear(i, o):
    return i * o + o


def conv3(i, o):
    return 3 * 3 * i * o + o


# Hand-computed from the homework code in shared/seeds (256×256 input, 1 output).
COURSE_PARAMS_256 = {
    "hw2_mlp": linear(256 * 256, 64) + linear(64, 64) + linear(64, 64) + linear(64, 1),
    "hw3_cnn": conv3(1, 32) + conv3(32, 32) + conv3(32, 32) + linear(32 * 32 * 32, 32) + linear(32, 1),
    "hw3_cnn_dropout": conv3(1, 32) + conv3(32, 32) + conv3(32, 32) + linear(32 * 32 * 32, 32) + linear(32, 1),
    "hw3_ann": (linear(256 * 256, 512) + 2 * 512 + linear(512, 256) + 2 * 256 + linear(256, 256) + 2 * 256
                + linear(256, 1)),
    "lab4_gap": conv3(1, 32) + conv3(32, 32) + conv3(32, 32) + linear(32, 1),
    "hw3_gap_wide": conv3(1, 32) + conv3(32, 32) + conv3(32, 128) + linear(128, 128) + linear(128, 1),
}


@pytest.mark.parametrize("name,expected", COURSE_PARAMS_256.items())
def test_course_architectures_match_the_homework(name, expected):
    total, trainable = count_parameters(build_model(name, 256, 1))
    assert total == expected == trainable


def test_hw3_cnn_flattens_32x32x32_at_256():
    model = build_model("hw3_cnn", 256, 1)
    assert model.fc1.in_features == 32 * 32 * 32


def test_hw3_dropout_positions():
    model = build_model("hw3_cnn_dropout", 128, 1)
    assert isinstance(model.dropout3, nn.Dropout) and model.dropout3.p == 0.6
    assert isinstance(model.dropout, nn.Dropout) and model.dropout.p == 0.6


def test_hw3_ann_layer_specs():
    layers = list(build_model("hw3_ann", 64, 1))
    dropouts = [m.p for m in layers if isinstance(m, nn.Dropout)]
    assert dropouts == [0.9, 0.9, 0.8]
    assert sum(isinstance(m, nn.BatchNorm1d) for m in layers) == 3


def test_generic_options_and_errors():
    model = build_model("mlp", 32, 3, hidden_layers=2, width=16, dropout=0.5, batch_norm=True)
    assert model(torch.randn(4, 1, 32, 32)).shape == (4, 3)
    with pytest.raises(ValueError, match="does not take"):
        build_model("hw3_cnn", 64, 1, width=3)
    with pytest.raises(ValueError, match="unknown model"):
        build_model("vgg99", 64, 1)


def test_registry_lists_course_models():
    for name in ("mlp", "cnn", "cnn_gap", *COURSE_PARAMS_256, "googlenet", "densenet121", "resnet18",
                 "mobilenet_v3_small"):
        assert name in MODELS
