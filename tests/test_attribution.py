"""Attribution: reference answers (autograd, IG completeness), safety (the model never changes), and meaning."""
from __future__ import annotations

import copy
import json
import math
import os

import pytest
import torch
import torchvision
from torch import nn

import explore.insight.attribution as A
from explore.training.config import RunConfig
from explore.data import DataSpec, register_bundle
from explore.training.jobs import execute_run
from explore.models.registry import build_model
from explore.training.store import RunStore
from explore.training.train import InputPipeline
from explore.insight import regions, saliency_views, sanity
from explore.cli import attribute
from benchmarks import attribution_bench
from conftest import make_bundle

SIZE = 32


def tiny_cnn(num_outputs: int = 1, inplace: bool = False, batch_norm: bool = False) -> nn.Module:
    layers = [nn.Conv2d(1, 4, 3, padding=1)]
    if batch_norm:
        layers.append(nn.BatchNorm2d(4))
    layers += [nn.ReLU(inplace=inplace), nn.MaxPool2d(2), nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(inplace=inplace),
               nn.Dropout(0.5), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(16, num_outputs)]
    return nn.Sequential(*layers)


class GreyResNet(nn.Module):
    """A torchvision ResNet-18 taking N×1×H×W (grey copied to RGB), frozen, with a 1-logit head."""

    def __init__(self):
        super().__init__()
        self.backbone = torchvision.models.resnet18(weights=None)
        self.backbone.fc = nn.Linear(512, 1)
        for param in self.backbone.parameters():
            param.requires_grad_(False)

    def forward(self, x):
        return self.backbone(x.expand(-1, 3, -1, -1))


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models run fastest on one thread: two OpenMP threads on a busy 2-core machine mostly wait for each other."""
    threads, env = torch.get_num_threads(), os.environ.get("EXPLORE_THREADS")
    torch.set_num_threads(1)
    os.environ["EXPLORE_THREADS"] = "1"  # training (set_cpu_threads) reads this
    yield
    torch.set_num_threads(threads)
    if env is None:
        os.environ.pop("EXPLORE_THREADS", None)
    else:
        os.environ["EXPLORE_THREADS"] = env


@pytest.fixture(scope="module")
def bundle():
    return make_bundle(size=SIZE)


@pytest.fixture(scope="module")
def pipeline(bundle):
    return InputPipeline(RunConfig(), bundle.train.images)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, bundle):
    """A small GAP CNN trained on the tiny bundle (class 1 = a bright blob exactly on the lesion mask)."""
    root = tmp_path_factory.mktemp("runs")
    store = RunStore(root)
    config = RunConfig(data=register_bundle("attribution-tiny", bundle), model="lab4_gap", epochs=4, batch_size=16,
                       lr=3e-3)
    run_id = store.create(config)
    records = list(execute_run(store, run_id))
    assert records[-1]["status"] == "finished", records[-1]
    assert records[-1]["summary"]["val_acc"] >= 0.9
    return store, run_id


def test_saliency_equals_absolute_input_gradient(bundle, pipeline):
    torch.manual_seed(0)
    model = tiny_cnn().eval()
    images = bundle.val.images[:4]
    x = pipeline(images, train=False).requires_grad_(True)
    model(x)[:, 0].sum().backward()  # the single logit is the PNEUMONIA log-odds
    expected = x.grad.abs().squeeze(1)
    maps = A.attribute(A.make_explainer(model, pipeline, SIZE), images, "saliency").maps
    torch.testing.assert_close(maps, expected, rtol=1e-4, atol=1e-7)


def test_saliency_of_a_two_logit_model_explains_the_log_odds(bundle, pipeline):
    torch.manual_seed(0)
    model = tiny_cnn(num_outputs=2).eval()
    images = bundle.val.images[:3]
    x = pipeline(images, train=False).requires_grad_(True)
    logits = model(x)
    (logits[:, 1] - logits[:, 0]).sum().backward()  # log p1/(1-p1) = z1 - z0 with two classes
    maps = A.attribute(A.make_explainer(model, pipeline, SIZE), images, "saliency", target="positive").maps
    torch.testing.assert_close(maps, x.grad.abs().squeeze(1), rtol=1e-4, atol=1e-7)


def test_class_log_odds_match_probabilities():
    logits = torch.tensor([[0.3, -1.0, 2.0], [1.0, 1.0, 1.0]])
    p = torch.softmax(logits, 1)
    torch.testing.assert_close(A.ClassLogOdds.from_logits(logits), torch.log(p / (1 - p)))
    z = torch.tensor([[1.5], [-0.2]])
    torch.testing.assert_close(A.ClassLogOdds.from_logits(z), torch.cat([-z, z], 1))


def test_integrated_gradients_add_up_to_the_score_difference(bundle, pipeline):
    """Completeness: Σ IG = score(image) − score(baseline), the property the page's description promises."""
    torch.manual_seed(0)
    explainer = A.make_explainer(tiny_cnn().eval(), pipeline, SIZE)
    images = bundle.val.images[:3]
    maps = A.attribute(explainer, images, "integrated_gradients", n_steps=64).maps
    with torch.no_grad():
        gain = explainer.scorer(explainer.inputs(images))[:, 1] - explainer.scorer(explainer.baseline(images))[:, 1]
    torch.testing.assert_close(maps.flatten(1).sum(1), gain, rtol=0.02, atol=1e-3)


def check_all_methods(model: nn.Module, images: torch.Tensor, pipeline, size: int, smooth_too: bool = True,
                      window: int | None = None):
    explainer = A.make_explainer(model, pipeline, size)
    assert explainer.gradcam_layer is not None
    for method, info in A.METHODS.items():
        for smooth in (False, True) if info.smoothable and smooth_too else (False,):
            result = A.attribute(explainer, images, method, smooth=smooth, n_steps=4, nt_samples=2, window=window)
            assert result.maps.shape == (len(images), size, size), (method, smooth)
            assert torch.isfinite(result.maps).all(), (method, smooth)
            assert result.maps.abs().sum() > 0, (method, smooth)
            if method == "saliency":
                assert (result.maps >= 0).all()


def test_every_method_runs_on_a_model_with_inplace_relu(bundle, pipeline):
    torch.manual_seed(0)
    model = tiny_cnn(inplace=True).eval()
    check_all_methods(model, bundle.val.images[:3], pipeline, SIZE)
    assert model[1].inplace, "the trained model itself keeps its in-place ReLU"


def test_every_method_runs_on_a_frozen_torchvision_backbone(pipeline):
    torch.manual_seed(0)
    model = GreyResNet().eval()
    images = torch.randint(0, 256, (2, 1, SIZE, SIZE), dtype=torch.uint8)
    # Smoothing is covered above; big occlusion patches keep this CPU test to a few dozen ResNet passes.
    check_all_methods(model, images, pipeline, SIZE, smooth_too=False, window=16)
    assert A.attribute(A.make_explainer(model, pipeline, SIZE), images, "gradcam", smooth=True, nt_samples=2).maps.shape \
        == (2, SIZE, SIZE)
    explainer = A.make_explainer(model, pipeline, SIZE)
    assert explainer.gradcam_layer_name == "backbone.layer4.1.conv2"
    assert not any(p.requires_grad for p in model.parameters()), "the frozen backbone stays frozen"


def test_attribution_never_changes_the_model(bundle, pipeline):
    """Weights, batch-norm running statistics, train/eval mode and requires_grad flags are untouched."""
    torch.manual_seed(0)
    model = tiny_cnn(batch_norm=True, inplace=True)
    model.train()  # even a model left in training mode (batch norm would update its statistics)
    model[0].weight.requires_grad_(False)
    before = copy.deepcopy(model.state_dict())
    flags = [p.requires_grad for p in model.parameters()]
    explainer = A.make_explainer(model, pipeline, SIZE)
    images = bundle.val.images[:4]
    for method in A.METHODS:
        A.attribute(explainer, images, method, n_steps=4)
    sanity.randomisation_check(explainer, images, "saliency", max_stages=2)
    after = model.state_dict()
    assert before.keys() == after.keys()
    for key in before:
        assert torch.equal(before[key], after[key]), key
    assert model.training
    assert [p.requires_grad for p in model.parameters()] == flags
    assert all(p.grad is None for p in model.parameters())


def test_gradcam_on_an_mlp_is_a_clear_error(bundle, pipeline):
    explainer = A.make_explainer(build_model("hw2_mlp", SIZE, 1).eval(), pipeline, SIZE)
    with pytest.raises(ValueError, match="convolutional layer"):
        A.attribute(explainer, bundle.val.images[:2], "gradcam")
    with pytest.raises(ValueError, match="unknown attribution method"):
        A.attribute(explainer, bundle.val.images[:2], "lime")


def test_targets(bundle, pipeline):
    torch.manual_seed(0)
    explainer = A.make_explainer(tiny_cnn(num_outputs=3).eval(), pipeline, SIZE, classes=("N", "B", "V"))
    x = explainer.inputs(bundle.val.images[:6])
    with torch.no_grad():
        log_odds = explainer.scorer(x)
    assert torch.equal(A.resolve_target(explainer, x, "predicted"), log_odds.argmax(1))
    assert torch.equal(A.resolve_target(explainer, x, "positive"), log_odds[:, 1:].argmax(1) + 1)


def test_spearman_and_ranks():
    assert sanity.spearman(torch.tensor([1.0, 2, 3, 4]), torch.tensor([10.0, 20, 30, 40])) == pytest.approx(1.0)
    assert sanity.spearman(torch.tensor([1.0, 2, 3, 4]), torch.tensor([4.0, 3, 2, 1])) == pytest.approx(-1.0)
    assert sanity.rank(torch.tensor([5.0, 1.0, 5.0, 3.0])).tolist() == [2.5, 0.0, 2.5, 1.0]
    # ties: ranks a = [0, 1.5, 1.5, 3], b = [0, 2, 1, 3] → Pearson of the ranks
    ra, rb = torch.tensor([0, 1.5, 1.5, 3]), torch.tensor([0.0, 2, 1, 3])
    ra, rb = ra - ra.mean(), rb - rb.mean()
    expected = float((ra * rb).sum() / (ra.norm() * rb.norm()))
    assert sanity.spearman(torch.tensor([1.0, 2, 2, 3]), torch.tensor([1.0, 3, 2, 4])) == pytest.approx(expected)
    assert sanity.spearman(torch.ones(5), torch.arange(5.0)) == 0.0


def test_attribution_shares_against_hand_counts():
    maps = torch.zeros(2, 4, 4)
    maps[0, 0, 0], maps[0, 3, 3], maps[0, 1, 1] = 3.0, 1.0, -5.0  # negative attribution does not count
    mask = torch.zeros(2, 4, 4, dtype=torch.bool)
    mask[0, 0, 0] = True
    shares = regions.attribution_shares(maps, {"m": mask})["m"]
    assert shares[0].item() == pytest.approx(0.75)
    assert math.isnan(shares[1].item())  # empty mask and an all-zero map: undefined, not 0
    geometric = regions.geometric_regions(10)
    assert geometric["centre"].sum() == 36 and geometric["corners"].sum() == 16
    assert not (geometric["centre"] & geometric["border"]).any()


def test_cascade_stages_go_from_the_top():
    names = [f"l{i}" for i in range(10)]
    stages = sanity.cascade_stages(names, max_stages=4)
    assert stages[0][-1] == "l9" and stages[-1] == names
    assert [len(s) for s in stages] == sorted(len(s) for s in stages)
    assert sanity.cascade_stages(["a", "b"], 6) == [["b"], ["a", "b"]]


def test_outcomes_cells_and_top_losses():
    probs = torch.tensor([0.9, 0.2, 0.6, 0.01, 0.99, 0.4])
    labels = torch.tensor([1, 0, 0, 1, 1, 0])
    outcome = A.outcomes(probs, labels)
    assert outcome["predicted"].tolist() == [1, 0, 1, 0, 1, 0]
    assert A.select(outcome, "wrong") == [2, 3]
    assert A.select(outcome, "correct", limit=3) == [0, 1, 4]
    assert A.select(outcome, "cell", (1, 0)) == [3]  # false negative
    assert A.select(outcome, "cell", (0, 1)) == [2]  # false positive
    assert A.select(outcome, "top_losses") == [3, 2]  # p=0.01 on a pneumonia is the most confident mistake
    assert outcome["loss"][3].item() == pytest.approx(-math.log(0.01), rel=1e-5)
    assert A.cell_name(1, 0, ("NORMAL", "PNEUMONIA")) == "FN"


def test_pipeline_for_run_reproduces_training_statistics(trained_run, bundle):
    store, run_id = trained_run
    record = store.load(run_id)
    rebuilt = A.pipeline_for_run(record.config, record.summary)
    reference = InputPipeline(record.config, bundle.train.images)
    assert (rebuilt.mean, rebuilt.std) == pytest.approx((reference.mean, reference.std))
    images = bundle.val.images[:4]
    torch.testing.assert_close(rebuilt(images, train=False), reference(images, train=False))


def test_trained_cnn_looks_at_the_lesion_more_than_its_randomised_copy(trained_run, bundle):
    store, run_id = trained_run
    loaded = A.load_run(store, run_id, bundle=bundle)
    explainer = loaded.explainer()
    index = torch.nonzero(bundle.val.labels == 1).flatten()[:8]
    masks = regions.region_masks(bundle.val, index)
    lesion_area = regions.area_shares(masks)["lesion"]
    for method in ("saliency", "integrated_gradients", "gradcam", "occlusion"):
        check = sanity.randomisation_check(explainer, bundle.val.images[index], method, max_stages=1)
        trained = regions.nanmean(regions.attribution_shares(check["original"], masks)["lesion"])
        randomised = regions.nanmean(regions.attribution_shares(check["stages"][-1]["maps"], masks)["lesion"])
        assert trained > randomised + 0.05, (method, trained, randomised)
        assert trained > 2 * lesion_area, (method, trained, lesion_area)
        assert check["stages"][-1]["layers"] == len(check["layers"])


def test_where_attribution_falls_rows(trained_run, bundle):
    store, run_id = trained_run
    loaded = A.load_run(store, run_id, bundle=bundle)
    rows = regions.where_attribution_falls(loaded.explainer(), {"val": bundle.val, "test": bundle.test},
                                           methods=("saliency", "gradcam"), n_images=6)
    assert {r["region"] for r in rows} == {"lung", "lesion", "marker", "centre", "border", "corners"}
    centre = next(r for r in rows if r["method"] == "saliency" and r["split"] == "val" and r["region"] == "centre")
    assert 0 <= centre["share"] <= 1
    assert centre["area"] == pytest.approx(20 * 20 / 32**2)  # 6-px borders (20% of 32) around a 20×20 centre
    assert any(r["share"] is None for r in rows if r["region"] == "marker")  # no markers in the tiny bundle
    table = saliency_views.shares_table(rows)
    assert {"val_share", "test_share"} <= set(table[0])


def test_cli_writes_one_png_per_image(trained_run, tmp_path, capsys):
    store, run_id = trained_run
    out = tmp_path / "maps"
    code = attribute.cli_main(["--run", str(store.path(run_id)), "--method", "gradcam", "--split", "test", "--n", "3",
                       "--out", str(out), "--json"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert len(report["images"]) == 3
    for item in report["images"]:
        assert {"path_or_id", "label", "pred", "prob", "png", "lung_share", "lesion_share", "marker_share"} <= set(item)
        assert (out / item["png"].rsplit("/", 1)[-1]).exists()
        assert 0.0 <= item["prob"] <= 1.0
    code = attribute.cli_main(["--run", str(tmp_path / "nope"), "--out", str(out)])
    assert code == 2 and "not a run folder" in capsys.readouterr().err


def test_overlay_colours():
    image = torch.full((4, 4), 128, dtype=torch.uint8)
    attribution = torch.zeros(4, 4)
    attribution[0, 0], attribution[3, 3] = 1.0, -1.0
    rgb = A.overlay(image, attribution, signed=True, zoom=2)
    assert rgb.shape == (8, 8, 3) and rgb.dtype.name == "uint8"
    assert rgb[0, 0, 0] > rgb[0, 0, 2]  # positive: red
    assert rgb[7, 7, 2] > rgb[7, 7, 0]  # negative: blue
    assert tuple(rgb[3, 3]) == (128, 128, 128)  # no attribution: the grey image


def test_benchmark_reports_every_method():
    result = attribution_bench.benchmark_attribution("lab4_gap", image_size=32, n_images=2, repeats=1)
    assert set(result["ms_per_image"]) == set(A.METHODS)
    assert all(v > 0 for v in result["ms_per_image"].values())


def test_describe_shares_names_markers_and_val_test_differences():
    rows = [
        {"method": "gradcam", "split": "val", "region": "marker", "share": 0.10, "area": 0.01},
        {"method": "gradcam", "split": "test", "region": "marker", "share": 0.01, "area": 0.01},
        {"method": "gradcam", "split": "val", "region": "lung", "share": 0.50, "area": 0.25},
        {"method": "gradcam", "split": "test", "region": "lung", "share": 0.20, "area": 0.25},
        {"method": "saliency", "split": "val", "region": "lung", "share": 0.40, "area": 0.25},
        {"method": "saliency", "split": "test", "region": "lung", "share": 0.41, "area": 0.25},
    ]
    sentences = saliency_views.describe_shares(rows)
    assert sentences[0].startswith("Grad-CAM: 10.0% of the positive attribution on val falls on burned-in markers")
    assert "10× their area" in sentences[0]
    assert any("inside the lungs is 50% on val (site A) but 20% on test" in s for s in sentences)
    assert not any(s.startswith("Saliency") for s in sentences)  # a 1-point difference is not news
