"""Transfer learning: real weight loading (offline, from a fake hub cache), the four modes, the
frozen-feature cache, honest labelling of random init, the CLI and the page's tables."""
import json

import pytest
import torch
from torch import nn

from explore.training import transfer
from explore.training.config import RunConfig
from explore.data import DataSpec
from explore.training.jobs import execute_run
from explore.training.store import RunRecord, RunStore
from explore.training.runs import make_run
from explore.training.train import TrainingRun
from explore.training.transfer import (BACKBONES, FeatureCache, FrozenFeatureRun, TransferNet, WeightsUnavailable,
                              build_for_run, build_transfer_model, param_groups, transfer_config, weights_path,
                              weights_status)
from explore.cli import fetch_weights
from benchmarks import frozen_bench

from conftest import make_bundle

SIZE = 64


@pytest.fixture(autouse=True)
def offline_hub(tmp_path, monkeypatch, one_thread_fresh_features):
    """An empty torch hub cache, no downloads, and a private feature cache for every test."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("EXPLORE_OFFLINE", "1")
    monkeypatch.setenv("EXPLORE_CACHE_DIR", str(tmp_path / "cache"))
    assert torch.hub.get_dir().startswith(str(tmp_path)), "torch.hub.set_dir() was called elsewhere"


@pytest.fixture(scope="module")
def bundle():
    return make_bundle(size=SIZE, n_train=32, n_val=16, n_test=16)


def put_fake_imagenet_weights(name: str, legacy_densenet_keys: bool = False) -> dict:
    """Save a randomly initialised network's state_dict under the exact file name torchvision expects,
    so the real loading path (hub cache → weights_only load → load_state_dict) runs offline."""
    spec = BACKBONES[name]
    kwargs = {"aux_logits": True, "transform_input": True, "init_weights": False} if name == "googlenet" else {}
    torch.manual_seed(123)
    state = spec.builder(weights=None, **kwargs).state_dict()
    if legacy_densenet_keys:  # the published checkpoint uses 'norm.1'-style names and has no batch counters
        state = {k.replace("norm1.", "norm.1.").replace("conv1.", "conv.1.") if "denselayer" in k else k: v
                 for k, v in state.items() if not ("denselayer" in k and k.endswith("num_batches_tracked"))}
    path = weights_path(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return state


def cfg(mode: str, model: str = "mobilenet_v3_small", **kw) -> RunConfig:
    kw.setdefault("epochs", 2)
    kw.setdefault("pretrained", False)
    return transfer_config(model, mode, image_size=SIZE, precision="fp32", batch_size=16, **kw)


def backbone_state(model: TransferNet) -> dict:
    return {k: v.clone() for k, v in model.backbone.state_dict().items()}


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def count(params) -> int:
    return sum(p.numel() for p in params)


# ----- weights ---------------------------------------------------------------------------
@pytest.mark.parametrize("name,key", [("resnet18", "conv1.weight"), ("mobilenet_v3_small", "features.0.0.weight"),
                                      ("googlenet", "inception5b.branch1.conv.weight"),
                                      ("densenet121", "features.denseblock1.denselayer1.norm1.weight")])
def test_cached_imagenet_weights_load_through_the_real_path(name, key):
    state = put_fake_imagenet_weights(name, legacy_densenet_keys=name == "densenet121")
    saved_key = key.replace("norm1.", "norm.1.") if name == "densenet121" else key
    status = weights_status(name)
    assert status["available"] and status["filename"] in status["path"]
    model = build_transfer_model(name, 1, pretrained=True)
    assert torch.equal(model.backbone.state_dict()[key], state[saved_key])
    assert model.weights_name == BACKBONES[name].weights_name  # e.g. "ResNet18_Weights.IMAGENET1K_V1"
    if name == "googlenet":  # ImageNet-only auxiliary heads are dropped after loading
        assert model.backbone.aux1 is None and not model.backbone.aux_logits
    _, weights_name = build_for_run(cfg("finetune", name, pretrained=True), 2)
    assert weights_name == BACKBONES[name].weights_name


def test_missing_weights_offline_give_the_clear_message_and_a_random_run(bundle):
    status = weights_status("resnet18", check_network=True)
    assert not status["available"]
    for needed in ("resnet18-f37072fd.pth", status["path"], "python -m explore fetch-weights resnet18", "random"):
        assert needed in status["message"]
    with pytest.raises(WeightsUnavailable, match="resnet18-f37072fd.pth"):
        build_transfer_model("resnet18", 1, pretrained=True)
    config = cfg("frozen", "resnet18", pretrained=True, epochs=1)
    assert config.pretrained and "random" not in config.name
    with pytest.warns(UserWarning, match="random initialisation"):
        run = make_run(config, bundle=bundle)
    list(run.fit())
    summary = run.summary()
    assert run.weights_name == "random" and summary["weights"] == "random"
    assert any("fetch-weights" in note for note in summary["notes"])


def test_resolve_pretrained_labels_random_init_before_training():
    config, message = transfer.resolve_pretrained(cfg("finetune", pretrained=True))
    assert not config.pretrained and config.name.endswith(" (random init)") and "fetch-weights" in message
    put_fake_imagenet_weights("mobilenet_v3_small")
    config, message = transfer.resolve_pretrained(cfg("finetune", pretrained=True))
    assert config.pretrained and message == "" and "random" not in config.name


def test_damaged_weights_file_is_a_clear_error():
    path = weights_path("resnet18")
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsUnavailable, match="cannot be loaded safely"):
        build_transfer_model("resnet18", 1, pretrained=True)


# ResNet-50 at its 512 px (torchxrayvision's) takes seconds per forward pass on a CPU: marked slow.
@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if (BACKBONES[n].input_size or 0) >= 512
                                  else n for n in BACKBONES])
def test_head_replacement_gives_the_right_output_shape(name):
    spec = BACKBONES[name]
    x = torch.rand(2, 1, SIZE, SIZE)
    # course head, train mode (GoogLeNet would return a tuple here if its aux heads were kept)
    course = build_transfer_model(name, 1, head="course", pretrained=False).train()
    assert isinstance(getattr(course.backbone, spec.head_attribute), nn.Identity)
    assert [type(m) for m in course.head] == [nn.Linear, nn.ReLU, nn.Dropout, nn.Linear]
    assert course.head[0].out_features == 256 and course.head[2].p == 0.5
    out = course(x)
    assert isinstance(out, torch.Tensor) and out.shape == (2, 1) and torch.isfinite(out).all()
    linear = build_transfer_model(name, 3, head="linear", pretrained=False).eval()
    assert isinstance(linear.head, nn.Linear) and linear.head.in_features == course.head[0].in_features
    with torch.no_grad():
        assert linear(x).shape == (2, 3)


def test_input_is_repeated_and_imagenet_normalised():
    model = build_transfer_model("resnet18", 1, pretrained=False).eval()
    grey = torch.rand(2, 1, SIZE, SIZE)
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    rgb = (grey.expand(-1, 3, -1, -1) - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)
    with torch.no_grad():
        assert torch.allclose(model.features(grey), model.backbone(rgb), atol=1e-6)


# ----- modes -----------------------------------------------------------------------------
def test_frozen_run_changes_only_the_head_and_its_model_is_complete(bundle):
    put_fake_imagenet_weights("mobilenet_v3_small")
    run = make_run(cfg("frozen", pretrained=True, augment=("geometry",)), bundle=bundle)
    assert isinstance(run, FrozenFeatureRun)
    before_backbone, before_head = backbone_state(run.model), {k: v.clone() for k, v in run.model.head.state_dict().items()}
    out = [r for r in run.fit() if r["kind"] == "end"]
    assert out[-1]["status"] == "finished" and "augmentation" in out[-1]["message"]
    assert same(backbone_state(run.model), before_backbone)  # bit-identical, BatchNorm statistics included
    assert not same(run.model.head.state_dict(), before_head)
    summary = run.summary()
    assert summary["params_trainable"] == count(run.model.head.parameters())
    assert summary["weights"] == "MobileNet_V3_Small_Weights.IMAGENET1K_V1"
    assert summary["feature_seconds"] > 0 and summary["feature_cache"]["train"] == "computed"
    assert any("augmentation (geometry) was not applied" in note for note in summary["notes"])
    # run.model is the whole network: on raw 0..1 images it gives what the head gave on cached features
    model = run.model.eval()
    with torch.no_grad():
        probs = torch.sigmoid(model(bundle.val.images.float() / 255).squeeze(1))
    assert torch.allclose(probs, run.predictions()["val"]["probs"], atol=1e-5)


def test_feature_cache_is_hit_the_second_time(bundle, monkeypatch):
    calls = []
    original = TransferNet.features

    def counting_features(self, x):
        calls.append(len(x))
        return original(self, x)

    monkeypatch.setattr(TransferNet, "features", counting_features)
    config = cfg("frozen", epochs=1)
    first = FrozenFeatureRun(config, bundle)
    assert sum(calls) == len(bundle.train) + len(bundle.val) + len(bundle.test)
    assert set(first.feature_sources.values()) == {"computed"}
    list(first.fit())
    assert sum(calls) == len(bundle.train) + len(bundle.val) + len(bundle.test)  # epochs run only the head
    calls.clear()
    second = FrozenFeatureRun(config.replace(lr=3e-3), bundle)  # another head setting, same features
    assert calls == [] and set(second.feature_sources.values()) == {"memory"}
    transfer.FEATURE_CACHE.clear()
    third = FrozenFeatureRun(config, bundle)  # a new process would find them on disk
    assert calls == [] and set(third.feature_sources.values()) == {"disk"}
    other = make_bundle(size=SIZE, n_train=32, n_val=16, n_test=20)  # other pixels: never stale features
    FrozenFeatureRun(config, other, cache=FeatureCache(disk_dir=None))
    assert sum(calls) == len(other.train) + len(other.val) + len(other.test)


def test_finetune_changes_the_backbone_at_the_scaled_learning_rate(bundle):
    run = make_run(cfg("finetune", epochs=1, lr=1e-3, backbone_lr_scale=0.1), bundle=bundle)
    assert type(run) is TrainingRun
    groups = param_groups(run.model, run.config)
    assert [g["name"] for g in groups] == ["backbone", "head"]
    assert groups[0]["lr"] == pytest.approx(1e-4) and groups[1]["lr"] == 1e-3
    before = backbone_state(run.model)
    list(run.fit())
    assert not same(backbone_state(run.model), before)
    assert run.summary()["params_trainable"] == run.summary()["params_total"]


def test_two_phase_keeps_the_backbone_frozen_then_unfreezes_it(bundle):
    run = make_run(cfg("two-phase", epochs=2, frozen_epochs=1), bundle=bundle)
    groups = param_groups(run.model, run.config)  # the optimizer knows the backbone from the start
    assert count(groups[0]["params"]) == count(run.model.backbone.parameters())
    assert count(p for p in run.model.parameters() if p.requires_grad) == count(run.model.head.parameters())
    before = backbone_state(run.model)
    for record in run.fit():
        if record["kind"] == "epoch" and record["epoch"] == 1:
            assert same(backbone_state(run.model), before)
    assert not same(backbone_state(run.model), before)
    assert run.summary()["params_trainable"] == run.summary()["params_total"]


def test_partial_trains_only_the_last_block_and_the_head(bundle):
    run = make_run(cfg("partial", epochs=1), bundle=bundle)
    last_block = transfer.last_block_parameters(run.model)
    trainable = count(p for p in run.model.parameters() if p.requires_grad)
    assert trainable == count(last_block) + count(run.model.head.parameters())
    first_layers = {k: v.clone() for k, v in run.model.backbone.features[0].state_dict().items()}
    last = {k: v.clone() for k, v in run.model.backbone.features[12].state_dict().items()}
    list(run.fit())
    assert same(run.model.backbone.features[0].state_dict(), first_layers)  # frozen BN stats too
    assert not same(run.model.backbone.features[12].state_dict(), last)


def test_frozen_run_stored_and_reloaded_is_the_same_model(bundle, runs_dir, register_data):
    store = RunStore(runs_dir)
    run_id = store.create(cfg("frozen", epochs=1, data=register_data(bundle)))
    end = list(execute_run(store, run_id))[-1]
    assert end["status"] == "finished" and "feature_seconds" in end["summary"]
    model, config = store.load_model(run_id)
    assert config.input_norm == "none"
    with torch.no_grad():
        probs = torch.sigmoid(model(bundle.test.images.float() / 255).squeeze(1))
    assert torch.allclose(probs, store.load_predictions(run_id)["test"]["probs"], atol=1e-5)


# ----- CLI -------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["frozen", "two-phase"])
def test_train_cli_transfer_end_to_end(bundle, runs_dir, register_data, capsys, mode):
    from explore.cli.train import cli_main

    source = register_data(bundle).source  # the CLI's --source names the tiny bundle, like any other source
    rc = cli_main(["--model", "mobilenet_v3_small", "--transfer", mode, "--epochs", "2", "--size", str(SIZE),
                   "--source", source,
                   "--precision", "fp32", "--json", "--runs-dir", str(runs_dir)])
    captured = capsys.readouterr()
    final = json.loads(captured.out.strip().splitlines()[-1])
    assert rc == 0 and final["status"] == "finished"
    assert final["weights"] == "random" and "fetch-weights" in captured.err
    assert 0 < final["params_trainable"] <= final["params_total"]
    config = RunStore(runs_dir).load(final["run_id"]).config
    assert config.input_norm == "none" and config.name.endswith("(random init)") and not config.pretrained


def test_fetch_weights_cli_offline_and_cached(capsys):
    assert fetch_weights.cli_main(["resnet18"]) == 1
    assert "fetch-weights" in capsys.readouterr().out
    put_fake_imagenet_weights("resnet18")
    assert fetch_weights.cli_main(["resnet18", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["available"] is True
    assert fetch_weights.cli_main(["vgg99"]) == 2


# ----- tables and the benchmark ----------------------------------------------------------
def test_parameter_table_counts_the_course_head():
    table = transfer.parameter_table("resnet18", "course").set_index("mode")
    head = 512 * 256 + 256 + 256 * 1 + 1  # Linear(512→256) + Linear(256→1)
    assert table.loc["frozen", "params_trainable"] == head
    assert table.loc["finetune", "params_trainable"] == table.loc["finetune", "params_total"] == 11_176_512 + head
    assert table.loc["two-phase", "params_trainable"] == head
    assert table.loc["two-phase", "params_trainable_after_unfreezing"] == 11_176_512 + head
    layer4 = count(build_transfer_model("resnet18", 1, pretrained=False).backbone.layer4.parameters())
    assert table.loc["partial", "params_trainable"] == layer4 + head


def test_comparison_table_holds_the_group_numbers():
    def record(mode, train_acc, val_acc, test_acc, seconds, feature_seconds=None):
        config = cfg(mode, group="g")
        metrics = [{"epoch": 1, "train_acc": train_acc, "val_acc": val_acc, "test_acc": test_acc, "seconds": seconds}]
        summary = {"weights": "random", "params_total": 1000, "params_trainable": 10, "feature_seconds": feature_seconds}
        return RunRecord(run_id=mode, path=None, config=config, status={}, summary=summary, metrics=metrics)

    table = transfer.comparison_table([record("frozen", 0.9, 0.85, 0.7, 0.01, 2.5), record("finetune", 1.0, 0.9, 0.75, 1.5)])
    frozen, finetune = table.columns
    assert table.loc["Approach", frozen].startswith("ConvNet as fixed feature extractor")
    assert table.loc["Overfitting: train − val accuracy (last epoch)", frozen] == "+0.050"
    assert table.loc["Overfitting: train − val accuracy (last epoch)", finetune] == "+0.100"
    assert table.loc["Cost: one-time feature pass (s)", frozen] == "2.50"
    assert table.loc["Cost: one-time feature pass (s)", finetune] == "none"
    assert table.loc["Test accuracy (site B)", finetune] == "0.750"
    assert table.loc["Trainable parameters", frozen] == "10 of 1,000"
    timing = transfer.timing_table([record("frozen", 0.9, 0.85, 0.7, 0.01, 2.5)])
    assert timing.loc[0, "feature_pass_seconds"] == 2.5 and timing.loc[0, "seconds_per_epoch"] == 0.01


def test_benchmark_reports_cached_vs_recomputed_epochs(bundle):
    small = make_bundle(size=SIZE, n_train=16, n_val=8, n_test=8)
    result = frozen_bench.benchmark_frozen_cache("mobilenet_v3_small", epochs=1, bundle=small, device="cpu")
    assert result["train_images"] == len(small.train) and result["feature_pass_seconds"] > 0
    assert result["speedup"] == pytest.approx(result["recompute_seconds_per_epoch"] / result["cached_seconds_per_epoch"])
    assert result["speedup"] > 1


def test_transfer_config_uses_zero_to_one_input():
    config = transfer_config("resnet18", "frozen", data=DataSpec(), quick=True, epochs=10, image_size=224)
    assert config.input_norm == "none" and config.data.image_size == 128 and config.epochs == 3
    assert config.name == "ResNet-18 · frozen (quick)"
    assert transfer_config("resnet18", "finetune", pretrained=False).name == "ResNet-18 · finetune (random init)"
