"""The lecture's knobs (issue 15): batch norm everywhere a model takes it, swept and counted."""
import pytest
from torch import nn

from explore.insight import analysis, compare
from explore import charts
from explore.training.config import RunConfig
from explore.models.registry import MODELS, build_model, count_parameters
from explore.cli.train import build_parser, configs_from_args


@pytest.mark.parametrize("name", ["mlp", "cnn", "cnn_gap"])
def test_batch_norm_adds_two_parameters_per_channel(name):
    plain, with_bn = (build_model(name, 32, 1, batch_norm=bn) for bn in (False, True))
    norms = [m for m in with_bn.modules() if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d))]
    assert norms and not any(isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)) for m in plain.modules())
    assert count_parameters(with_bn)[0] - count_parameters(plain)[0] == sum(2 * m.num_features for m in norms)


def test_architecture_table_counts_batch_norm():
    plain, _ = analysis.profile_architectures(["cnn", "hw3_cnn"], 64)
    with_bn, _ = analysis.profile_architectures(["cnn", "hw3_cnn"], 64, batch_norm=True)
    assert with_bn.params[0] - plain.params[0] == 3 * 2 * 32  # three conv blocks of 32 channels: γ and β
    assert with_bn.params[1] == plain.params[1]  # hw3_cnn takes no batch-norm option: unchanged
    assert list(with_bn.batch_norm) == [True, False]


def test_cli_batch_norm_flag():
    args = build_parser().parse_args(["--model", "cnn", "--batch-norm", "--dropout", "0.2"])
    (config,) = configs_from_args(args)
    assert config.options() == {"batch_norm": True, "dropout": 0.2}
    with pytest.raises(ValueError, match="no batch-norm option"):
        configs_from_args(build_parser().parse_args(["--model", "hw3_cnn", "--batch-norm"]))


def test_sweep_batch_norm_on_and_off():
    assert compare.parse_values("batch_norm", "on, off, on") == [True, False]
    with pytest.raises(ValueError, match="not on or off"):
        compare.parse_values("batch_norm", "maybe")
    base = RunConfig(model="cnn", model_options=(("dropout", 0.3),))
    configs = compare.sweep_configs(base, {"batch_norm": [False, True]}, group="bn")
    assert [c.options() for c in configs] == [{"dropout": 0.3, "batch_norm": False},
                                              {"dropout": 0.3, "batch_norm": True}]
    assert compare.swept_settings(configs) == ["batch_norm"]
    with pytest.raises(ValueError, match="no batch norm"):
        compare.sweep_configs(RunConfig(model="hw3_cnn"), {"batch_norm": [True]}, group="x")
    assert all("batch_norm" in MODELS[m].options for m in ("mlp", "cnn", "cnn_gap"))


def test_a_transfer_run_that_got_random_weights_is_relabelled():
    from explore.training.transfer import RANDOM, honest_configs, relabel_if_random

    asked = RunConfig(model="resnet18", name="ResNet-18 · finetune")
    relabelled = relabel_if_random(asked, RANDOM)
    assert relabelled.name == "ResNet-18 · finetune (random init)" and relabelled.pretrained is False
    assert relabel_if_random(asked, "IMAGENET1K_V1") is None  # the weights were there: nothing to say
    assert relabel_if_random(relabelled, RANDOM) is None  # already honest
    course = RunConfig(model="hw3_cnn", name="x")
    assert honest_configs([course], check_network=False) == ([course], [])


def test_lr_finder_reference(tiny_bundle):
    from explore.training import lr_finder

    test = lr_finder.RangeTest(1e-5, 1.0, 11)
    assert [round(test.lr_at(i), 12) for i in (0, 5, 10)] == [1e-5, round(10 ** -2.5, 12), 1.0]
    points = [{"lr": 10.0 ** e, "loss": loss} for e, loss in zip(range(-5, 1), (0.70, 0.69, 0.60, 0.40, 0.35, 2.0))]
    assert lr_finder.suggest(points) == pytest.approx(1e-1 / 10)  # a tenth of the rate at the lowest loss
    assert lr_finder.steepest(points) == pytest.approx(1e-3)  # 0.60 → 0.40 is the steepest fall
    config = RunConfig(model="cnn", batch_size=16)
    result = lr_finder.find_lr(config, tiny_bundle, test=lr_finder.RangeTest(1e-5, 10.0, 40))
    assert 5 < len(result["points"]) <= 40 and result["rule"] == lr_finder.RULE
    assert result["suggested_lr"] == pytest.approx(min(result["points"], key=lambda p: p["loss"])["lr"] / 10)
    lrs = [p["lr"] for p in result["points"]]
    assert lrs == sorted(lrs)


def test_a_run_queued_with_imagenet_weights_that_trains_from_random_says_so(tmp_path, monkeypatch, register_data):
    """Queued from any page without the submit-time check (a sweep from a base run, a Mismatch fix...):
    when the weights turn out missing, execute_run relabels the stored config, so every page shows it."""
    from conftest import make_bundle
    from explore.training.jobs import execute_run
    from explore.training.store import RunStore

    monkeypatch.setenv("EXPLORE_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "no-weights"))
    store = RunStore(tmp_path / "runs")
    config = RunConfig(model="mobilenet_v3_small", transfer_mode="frozen", epochs=1, name="MobileNet · frozen",
                       data=register_data(make_bundle(32, 32, 16, 16)))
    run_id = store.create(config)
    end = list(execute_run(store, run_id))[-1]
    assert end["status"] == "finished", end
    record = store.load(run_id)
    assert record.label == "MobileNet · frozen (random init)" and record.config.pretrained is False
    assert record.summary["weights"] == "random"


def test_a_batch_norm_sweep_charts_on_and_off_as_categories():
    import pandas as pd

    results = pd.DataFrame({"run": ["a", "b"], "batch_norm": [False, True], "test_acc": [0.7, 0.8]})
    spec = charts.sweep(results, ["batch_norm"]).to_dict()
    assert spec["encoding"]["x"]["type"] == "nominal"
