"""Results a student hands in (issue 15): per-class precision/recall/F1 and the reproduce command."""
import shlex

import pytest

from explore.insight import report
from explore.training.config import RunConfig
from explore.data import DataSpec
from explore.training.metrics import per_class
from explore.training.presets import PRESETS
from explore.training.reproduce import reproduce_command, settings_rows
from explore.cli.train import build_parser, configs_from_args


def test_per_class_against_hand_counts():
    confusion = [[5, 1, 0],   # NORMAL: 5 right, 1 called BACTERIAL
                 [2, 6, 2],   # BACTERIAL
                 [0, 0, 0]]   # VIRAL: absent, never called
    normal, bacterial, viral = per_class(confusion)
    assert normal["precision"] == pytest.approx(5 / 7) and normal["recall"] == pytest.approx(5 / 6)
    assert normal["f1"] == pytest.approx(2 * (5 / 7) * (5 / 6) / (5 / 7 + 5 / 6))
    assert bacterial["precision"] == pytest.approx(6 / 7) and bacterial["recall"] == pytest.approx(0.6)
    assert (viral["precision"], viral["recall"], viral["f1"], viral["support"]) == (0.0, None, None, 0)
    summary = {"classes": ["NORMAL", "BACTERIAL", "VIRAL"], "splits": {"test": {"confusion": confusion}}}
    table = report.per_class_table(summary)
    assert list(table["class"]) == ["NORMAL", "BACTERIAL", "VIRAL"] and list(table["support"]) == [6, 10, 0]


@pytest.mark.parametrize("config", [
    RunConfig(),
    PRESETS["hw3_overfitting"].configs(quick=True)[1],
    PRESETS["lecture_batch_norm"].configs()[1].replace(train_dev_fraction=0.15, class_weights=True, seed=3),
    RunConfig(model="mlp", model_options=(("width", 128), ("batch_norm", True)), augment=("noise",), lr=3.1623e-4,
              data=DataSpec(image_size=64, num_classes=3, seed=2, synthetic=(("noise", 0.8), ("n_train", 200))),
              loss="ce", eval_test=False, name="it's mine"),
    RunConfig(model="resnet18", transfer_mode="two-phase", transfer_head="linear", pretrained=False,
              backbone_lr_scale=0.3, name="ResNet-18 (random init)").resolve(),  # as stored: 0..1 input
])
def test_the_reproduce_command_gives_back_the_same_run(config):
    command = reproduce_command(config)
    assert command.startswith("python -m explore train --model ")
    (again,) = configs_from_args(build_parser().parse_args(shlex.split(command)[4:]))
    assert again == config, config.differences(again)


def test_settings_rows_show_everything_and_what_it_ran_on():
    config = RunConfig(data=DataSpec(synthetic=(("noise", 0.5),)), seed=4)
    rows = {r["setting"]: r["value"] for r in settings_rows(config, {"device": "cpu · fp32", "code_version": "0.1.0+abc"})}
    assert rows["seed"] == "4" and rows["data.synthetic.noise"] == "0.5" and rows["data.source"] == "synthetic"
    assert rows["device and precision used"] == "cpu · fp32" and rows["code version"] == "0.1.0+abc"
