"""Chest-X-ray-pretrained backbones (torchxrayvision): the same layout and input convention as the
package's own models, weights loaded from where the package keeps them (weights_only), the honest
random-init path offline, a frozen run with the feature cache, and the ImageNet-vs-X-ray preset."""
import json
import warnings

import pytest
import torch
from torch import nn

from explore.training import transfer
from explore.training.presets import PRESETS
from explore.training.runs import make_run
from explore.training.transfer import (BACKBONES, FrozenFeatureRun, WeightsUnavailable, build_for_run, build_transfer_model,
                              transfer_config, weights_path, weights_status)
from explore.models.xrv_backbones import xrv_cache_dir
from explore.cli import fetch_weights

from conftest import make_bundle

with warnings.catch_warnings():  # torchxrayvision.models silences every warning when imported
    xrv = pytest.importorskip("torchxrayvision")

SIZE = 32  # the models resize to their own resolution inside; the data can stay tiny


@pytest.fixture(autouse=True)
def offline_home(tmp_path, monkeypatch, one_thread_fresh_features):
    """An empty ~/.torchxrayvision (HOME in tmp), no downloads, private caches, one thread."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("EXPLORE_OFFLINE", "1")
    monkeypatch.setenv("EXPLORE_CACHE_DIR", str(tmp_path / "cache"))


def put_fake_xrv_densenet() -> nn.Module:
    """The published DenseNet file is a whole pickled torchxrayvision model (torch.save(model)):
    save one, randomly initialised, under the exact name and folder the package uses."""
    torch.manual_seed(7)
    model = xrv.models.DenseNet(weights=None)
    path = weights_path("xrv_densenet121")
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model, path)
    return model


def test_entries_name_the_packages_own_files_and_folder():
    for name, key in (("xrv_densenet121", "densenet121-res224-all"), ("xrv_resnet50", "resnet50-res512-all")):
        spec = BACKBONES[name]
        assert spec.weights_key == key and spec.url == xrv.models.model_urls[key]["weights_url"]
        assert spec.input_size == xrv.models.model_urls[key]["input_resolution"]
        assert str(xrv_cache_dir()) + "/" == xrv.utils.get_cache_dir()  # HOME is the test's tmp folder
        assert weights_path(name) == xrv_cache_dir() / spec.filename


def test_architecture_and_input_convention_match_torchxrayvision():
    """Same weights → the same 1024 features as the package's own DenseNet, fed 0..1 images at any size."""
    torch.manual_seed(0)
    theirs = xrv.models.DenseNet(weights=None).eval()
    model = build_transfer_model("xrv_densenet121", 1, pretrained=False).eval()
    state = {k: v for k, v in theirs.state_dict().items() if not k.startswith("classifier")}
    model.backbone.load_state_dict(state)
    x = torch.rand(2, 1, SIZE, SIZE)  # the app's 0..1 single-channel images
    # their convention: resized to 224 px (bilinear), then xrv.utils.normalize → [-1024, 1024]
    resized = nn.functional.interpolate(x, size=(224, 224), mode="bilinear", align_corners=False)
    with torch.no_grad():
        expected = theirs.features2((2 * resized - 1) * 1024)
        assert torch.allclose(model.features(x), expected, atol=1e-4, rtol=1e-4)
    assert model.backbone.features.conv0.in_channels == 1


def test_resnet50_layout_is_the_packages():
    """torchxrayvision's ResNet-50 is torchvision's with a one-channel conv1 and 18 outputs (its file is that
    state dict): every key and shape of our architecture must match it."""
    ours = BACKBONES["xrv_resnet50"].architecture().state_dict()
    import torchvision

    theirs = torchvision.models.resnet50(num_classes=18, weights=None)
    theirs.conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in theirs.state_dict().items()}


def test_weights_where_the_package_keeps_them_are_loaded_and_named(tmp_path):
    saved = put_fake_xrv_densenet()
    status = weights_status("xrv_densenet121")
    assert status["available"] and status["pretraining"] == "chest X-ray"
    model = build_transfer_model("xrv_densenet121", 1, pretrained=True)
    key = "features.denseblock1.denselayer1.conv1.weight"
    assert torch.equal(model.backbone.state_dict()[key], saved.state_dict()[key])
    assert model.weights_name == "torchxrayvision:densenet121-res224-all"
    config = transfer_config("xrv_densenet121", "frozen", image_size=SIZE)
    assert transfer.resolve_pretrained(config) == (config, "")  # pretrained, no "(random init)"
    _, weights_name = build_for_run(config, 2)
    assert weights_name == "torchxrayvision:densenet121-res224-all"


def test_resnet50_state_dict_file_loads(tmp_path):
    torch.manual_seed(3)
    state = BACKBONES["xrv_resnet50"].architecture().state_dict()
    path = weights_path("xrv_resnet50")
    path.parent.mkdir(parents=True)
    torch.save(state, path)
    model = build_transfer_model("xrv_resnet50", 1, head="linear", pretrained=True)
    assert torch.equal(model.backbone.conv1.weight, state["conv1.weight"])
    assert model.weights_name == "torchxrayvision:resnet50-res512-all" and model.input_size == 512


def test_offline_without_the_file_says_where_it_goes_and_runs_are_random_init():
    status = weights_status("xrv_densenet121", check_network=True)
    assert not status["available"] and not status["downloadable"]
    filename = "nih-pc-chex-mimic_ch-google-openi-kaggle-densenet121-d121-tw-lr001-rot45-tr15-sc15-seed0-best.pt"
    for needed in (filename, str(xrv_cache_dir()), "python -m explore fetch-weights xrv_densenet121", "random"):
        assert needed in status["message"]
    config, message = transfer.resolve_pretrained(transfer_config("xrv_densenet121", "frozen", image_size=SIZE))
    assert not config.pretrained and config.name.endswith("(random init)") and filename in message
    with pytest.warns(UserWarning, match="random initialisation"):
        model, weights_name = build_for_run(transfer_config("xrv_densenet121", "finetune", image_size=SIZE), 2)
    assert weights_name == "random" and "chest X-ray" in model.weights_message


def test_a_file_holding_other_classes_is_refused_not_unpickled():
    path = weights_path("xrv_densenet121")
    path.parent.mkdir(parents=True)
    torch.save(nn.Sequential(nn.GELU()), path)  # a class outside the allowlist
    with pytest.raises(WeightsUnavailable, match="cannot be loaded safely.*torch.nn.modules.activation.GELU"):
        build_transfer_model("xrv_densenet121", 1, pretrained=True)


def test_fetch_weights_cli_reports_the_xray_file(capsys):
    assert fetch_weights.cli_main(["xrv_densenet121"]) == 1  # offline, not there
    assert xrv_cache_dir().name in capsys.readouterr().out
    put_fake_xrv_densenet()
    assert fetch_weights.cli_main(["xrv_densenet121", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["weights"] == "torchxrayvision:densenet121-res224-all"


def test_frozen_run_uses_the_feature_cache_and_records_the_xrv_weights():
    put_fake_xrv_densenet()
    bundle = make_bundle(size=SIZE, n_train=8, n_val=4, n_test=4)
    config = transfer_config("xrv_densenet121", "frozen", image_size=SIZE, epochs=1, batch_size=8,
                             precision="fp32")
    run = make_run(config, bundle=bundle)
    assert isinstance(run, FrozenFeatureRun)
    end = list(run.fit())[-1]
    assert end["status"] == "finished" and run.summary()["weights"] == "torchxrayvision:densenet121-res224-all"
    assert set(run.feature_sources.values()) == {"computed"}
    again = FrozenFeatureRun(config.replace(lr=3e-3), bundle)
    assert set(again.feature_sources.values()) == {"memory"}
    # a stored run reloads into the same architecture (RunStore.load_model's path): same outputs on raw images
    reloaded, _ = build_for_run(config, 2, load_pretrained=False)
    reloaded.load_state_dict(run.model.state_dict())
    with torch.no_grad():
        probs = torch.sigmoid(reloaded.eval()(bundle.val.images.float() / 255).squeeze(1))
    assert torch.allclose(probs, run.predictions()["val"]["probs"], atol=1e-5)


def test_preset_compares_imagenet_and_xray_pretraining_with_the_same_head():
    imagenet, xray = PRESETS["imagenet_vs_xray_frozen"].configs()
    assert (imagenet.model, xray.model) == ("densenet121", "xrv_densenet121")
    assert imagenet.differences(xray).keys() == {"model", "name"}
    assert imagenet.transfer_mode == "frozen" and imagenet.pretrained and imagenet.input_norm == "none"
    assert BACKBONES[imagenet.model].pretraining == "ImageNet" and BACKBONES[xray.model].pretraining == "chest X-ray"


def test_transfer_page_offers_the_xray_backbones_and_says_where_the_file_goes(runs_dir, monkeypatch):
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("EXPLORE_RUNS_DIR", str(runs_dir))
    at = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "pages" / "transfer.py"), default_timeout=60)
    at.run()
    titles = {BACKBONES[n].title for n in ("xrv_densenet121", "xrv_resnet50")}
    assert titles <= set(at.selectbox(key="tl_backbone").options)
    at.selectbox(key="tl_backbone").set_value("xrv_densenet121").run()
    assert not at.exception
    warning = " ".join(w.value for w in at.warning)
    assert BACKBONES["xrv_densenet121"].filename in warning and str(xrv_cache_dir()) in warning
    assert all(button.disabled for button in at.button)  # random init only when chosen knowingly


def test_saliency_maps_come_back_at_the_datas_size_through_the_resize():
    """The 224 px resize happens inside the model: attribution still maps onto the app's own pixels."""
    from explore.insight import attribution
    from explore.training.train import InputPipeline

    images = (torch.rand(2, 1, 64, 64) * 255).to(torch.uint8)
    config = transfer_config("xrv_densenet121", "frozen", image_size=64, pretrained=False)
    explainer = attribution.make_explainer(build_transfer_model("xrv_densenet121", 1, pretrained=False),
                                           InputPipeline(config, images), 64)
    for method in ("saliency", "gradcam"):
        maps = attribution.attribute(explainer, images, method).maps
        assert maps.shape == (2, 64, 64) and torch.isfinite(maps).all()


def test_the_preset_on_the_train_page_queues_both_and_names_missing_weights_random(runs_dir, monkeypatch):
    """Offline, with neither weights file: the Train page queues both runs as one group, each named
    '(random init)', and says which files are missing (nothing trains here: no workers)."""
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    from explore.training.jobs import JobManager
    from explore.training.store import RunStore

    monkeypatch.setenv("EXPLORE_RUNS_DIR", str(runs_dir))
    manager = JobManager(max_concurrent=0, executor="thread")
    monkeypatch.setattr("pages.common.job_manager", lambda: manager)
    at = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "pages" / "train.py"), default_timeout=60)
    at.run()
    at.selectbox(key="preset").set_value("imagenet_vs_xray_frozen").run()
    at.button(key="train_preset").click().run()
    assert not at.exception, [e.value for e in at.exception]
    configs = [r.config for r in RunStore(runs_dir).list()]
    assert sorted(c.model for c in configs) == ["densenet121", "xrv_densenet121"]
    assert all(c.name.endswith("(random init)") and not c.pretrained for c in configs)
    assert {c.group for c in configs} == {"imagenet_vs_xray_frozen"}
    warnings_shown = " ".join(w.value for w in at.warning)
    assert BACKBONES["xrv_densenet121"].filename in warnings_shown and "densenet121-" in warnings_shown
    manager.close()
