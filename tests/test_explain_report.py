"""The explanation report card: reference tests where the right answer is known."""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import explore.insight.explain_report as R
from explore.cli.explain import permuted_explainer
from explore.insight import attribution as A
from explore.training.config import RunConfig
from explore.data import Split
from explore.training.train import InputPipeline

SIZE = 32
REGION = (slice(4, 10), slice(20, 26))  # rows, columns of the only pixels the model reads


def checkerboard() -> torch.Tensor:
    rows, cols = torch.meshgrid(torch.arange(SIZE), torch.arange(SIZE), indexing="ij")
    return ((rows + cols) % 2).float() * 2 - 1  # ±1


class RegionModel(nn.Module):
    """Logit = a checkerboard filter over REGION only: high when the region holds the matching checkerboard.

    A blurred copy or the image mean wipes the checkerboard out, so removing REGION's pixels
    removes the evidence; nothing else in the image matters.
    """

    def __init__(self, scale: float = 0.5):
        super().__init__()
        weight = torch.zeros(SIZE, SIZE)
        weight[REGION] = checkerboard()[REGION]
        self.weight = nn.Parameter(weight)
        self.scale = scale

    def forward(self, x):
        return (x[:, 0] * self.weight).flatten(1).sum(1, keepdim=True) * self.scale - 3.0

    def calibrate(self, x: torch.Tensor) -> "RegionModel":
        """Scale so that the whole checkerboard gives log-odds +6 (p ≈ 0.998) and none gives −3:
        the score then needs most of the region, and random pixel orders only restore it slowly."""
        with torch.no_grad():
            self.scale = 9.0 / float((x[:, 0] * self.weight).flatten(1).sum(1).mean())
        return self


class ConstantModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.bias = nn.Parameter(torch.tensor([1.5]))

    def forward(self, x):
        return x.flatten(1).sum(1, keepdim=True) * 0.0 + self.bias  # depends on nothing (but keeps a graph)


class LinearModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(SIZE * SIZE, generator=torch.Generator().manual_seed(3)))

    def forward(self, x):
        return (x.flatten(1) @ self.weight).unsqueeze(1)


def region_split(n: int = 8, all_pneumonia: bool = False) -> Split:
    """Flat grey images with noise; the pneumonia images carry the checkerboard in REGION (the 'lesion')."""
    g = torch.Generator().manual_seed(0)
    images = 110 + torch.randint(-10, 11, (n, 1, SIZE, SIZE), generator=g).float()
    labels = torch.ones(n, dtype=torch.long) if all_pneumonia else torch.arange(n) % 2
    board = checkerboard()[REGION]
    images[labels == 1, 0, REGION[0], REGION[1]] = 110 + 80 * board
    lesion = torch.zeros(n, 1, SIZE, SIZE, dtype=torch.bool)
    lesion[labels == 1, 0, REGION[0], REGION[1]] = True
    return Split(images=images.clamp(0, 255).to(torch.uint8), labels=labels, sites=("A",) * n,
                 ids=tuple(f"r/{i}" for i in range(n)), original_sizes=torch.full((n, 2), SIZE),
                 masks={"lesion": lesion})


def explainer_for(model: nn.Module, split: Split) -> A.Explainer:
    return A.make_explainer(model, InputPipeline(RunConfig(), split.images), SIZE)


@pytest.mark.parametrize("replacement", ["blur", "mean"])
def test_deletion_drops_when_the_region_goes_and_the_map_points_at_it(replacement):
    pneumonia = region_split(4, all_pneumonia=True)
    pipeline = InputPipeline(RunConfig(), pneumonia.images)
    model = RegionModel().calibrate(pipeline(pneumonia.images, train=False))
    explainer = A.make_explainer(model, pipeline, SIZE)
    settings = R.ReportSettings(methods=("saliency", "occlusion"), n_images=4, splits=("val",),
                                replacement=replacement, n_perturb=4)
    report = R.compute_report(explainer, {"val": pneumonia}, settings)
    assert report["replacement"] == R.REPLACEMENTS[replacement]
    entry = report["splits"]["val"]
    for name, m in entry["methods"].items():
        curve = m["deletion_curve"]
        assert curve[0] > 0.9, (name, curve)  # the model is sure: the checkerboard is there
        assert curve[1] < 0.2, (name, curve)  # the region is 3.5% of the image: gone within the first 10%
        assert m["deletion_auc"] < m["random_deletion_auc"] - 0.3
        assert m["insertion_auc"] > m["random_insertion_auc"] + 0.2, (m["insertion_curve"], entry["random_insertion_curve"])
        assert m["pointing_game"] == 1.0
        assert m["lesion_area"] == pytest.approx(36 / SIZE ** 2)
        # saliency is exactly |w|: all of it on the region; occlusion's patches spill over its edge
        assert m["lesion_share"] > (0.99 if name == "saliency" else 10 * m["lesion_area"])
        verdict = R.verdicts(m)
        assert [verdict[c]["verdict"] for c in ("deletion", "insertion", "lesion", "pointing_game")] == ["pass"] * 4
    # random order: the score falls only once most pixels are gone
    assert entry["random_deletion_curve"][1] > 0.8


def test_a_constant_model_gives_flat_curves():
    split = region_split()
    explainer = explainer_for(ConstantModel(), split)
    settings = R.ReportSettings(methods=("saliency", "occlusion"), n_images=4, splits=("val",), n_perturb=2)
    report = R.compute_report(explainer, {"val": split}, settings)
    p = float(torch.sigmoid(torch.tensor(1.5)))  # "predicted" target: PNEUMONIA, probability σ(1.5) everywhere
    entry = report["splits"]["val"]
    assert entry["random_deletion_curve"] == pytest.approx([p] * 11, abs=1e-4)
    for m in entry["methods"].values():
        assert m["deletion_curve"] == pytest.approx([p] * 11, abs=1e-4)
        assert m["insertion_curve"] == pytest.approx([p] * 11, abs=1e-4)
        assert m["deletion_auc"] == pytest.approx(m["random_deletion_auc"], abs=1e-6)
        assert R.verdicts(m)["deletion"]["verdict"] == "fail"  # no better than random


def test_sensitivity_max_of_saliency_on_a_linear_model_is_zero():
    """Saliency of a linear model is |w| whatever the input: analytically, noise changes nothing."""
    split = region_split(4)
    explainer = explainer_for(LinearModel(), split)
    x = explainer.inputs(split.images)
    target = torch.ones(4, dtype=torch.long)
    sensitivity = R.map_sensitivity(explainer, x, "saliency", False, target, radius=0.5, n_perturb=5, seed=0)
    assert sensitivity.shape == (4,)
    torch.testing.assert_close(sensitivity, torch.zeros(4), atol=1e-6, rtol=0)


def test_sensitivity_max_of_integrated_gradients_on_a_linear_model_is_bounded_analytically():
    """IG of a linear model from a black baseline b is w ⊙ (x − b): noise δ changes it by w ⊙ δ, so the
    largest relative change is at most radius·‖w‖ / ‖w ⊙ (x − b)‖, and the value is > 0."""
    split = region_split(4)
    model = LinearModel()
    explainer = explainer_for(model, split)
    x = explainer.inputs(split.images)
    target = torch.ones(4, dtype=torch.long)
    radius = 0.1
    sensitivity = R.map_sensitivity(explainer, x, "integrated_gradients", False, target, radius, 5, 0)
    w = model.weight.detach()
    bound = radius * w.norm() / (w * (x - explainer.baseline(split.images)).flatten(1)).norm(dim=1)
    assert bool((sensitivity > 0).all()) and bool((sensitivity <= bound * 1.001).all()), (sensitivity, bound)


def test_infidelity_of_integrated_gradients_on_a_linear_model_is_zero():
    """For a linear model Δlog-odds = w·I exactly, and IG ∝ w ⊙ (x − b)... but infidelity needs map·I = w·I:
    the map w (the gradient, signed) is perfectly faithful, an empty map explains nothing."""
    split = region_split(4)
    model = LinearModel()
    explainer = explainer_for(model, split)
    x = explainer.inputs(split.images)
    target = torch.ones(4, dtype=torch.long)
    gradient_map = model.weight.detach().view(1, SIZE, SIZE).expand(4, SIZE, SIZE)
    value = R.map_infidelity(explainer, x, gradient_map, target, sigma=0.1, n_perturb=6, seed=0)
    empty = R.empty_map_infidelity(explainer, x, target, sigma=0.1, n_perturb=6, seed=0)
    torch.testing.assert_close(value, torch.zeros(4), atol=1e-4 * float(empty.mean()), rtol=0)
    assert bool((empty > 0).all())


def test_pointing_game_and_pixel_order():
    maps = torch.zeros(3, 4, 4)
    maps[0, 1, 1] = 5.0  # peak inside the mask
    maps[1, 3, 3] = 5.0  # peak outside
    masks = torch.zeros(3, 4, 4, dtype=torch.bool)
    masks[:2, :2, :2] = True  # image 2 has no lesion: undefined
    hits = R.pointing_game(maps, masks)
    assert hits[:2].tolist() == [1.0, 0.0] and torch.isnan(hits[2])
    order = R.pixel_order(torch.tensor([[0.1, 0.9], [0.5, -1.0]]), torch.Generator().manual_seed(0))
    assert order.tolist() == [1, 2, 0, 3]


def test_settings_key_and_cache_round_trip(tmp_path):
    a, b = R.ReportSettings(), R.ReportSettings(n_images=8)
    assert a.key() == R.ReportSettings().key() and a.key() != b.key()
    assert R.load_cached_report(tmp_path, a) is None
    R.save_report(tmp_path, a, {"key": a.key(), "splits": {}})
    assert R.load_cached_report(tmp_path, a)["key"] == a.key()
    assert R.load_cached_report(tmp_path, b) is None
    R.report_path(tmp_path, b).write_text("{not json")
    assert R.load_cached_report(tmp_path, b) is None  # unreadable: computed again, never a crash
    with pytest.raises(ValueError, match="unknown method"):
        R.ReportSettings(methods=("guided_backprop",))


def test_card_rows_and_sentences_read_the_verdicts():
    good = {"deletion_auc": 0.2, "random_deletion_auc": 0.5, "insertion_auc": 0.8, "random_insertion_auc": 0.5,
            "sensitivity_max": 0.1, "infidelity": 0.1, "infidelity_empty_map": 1.0,
            "model_randomisation_spearman": 0.1, "data_randomisation_spearman": None,
            "lesion_share": 0.5, "lesion_area": 0.05, "pointing_game": 0.9}
    bad = dict(good, deletion_auc=0.5, insertion_auc=0.5, model_randomisation_spearman=0.9)
    report = {"splits": {"val": {"methods": {"gradcam": good, "saliency": bad}},
                         "test": {"methods": {"gradcam": dict(good, deletion_auc=0.49), "saliency": bad}}}}
    rows = {r["method"]: r for r in R.card_rows(report)}
    assert rows["Grad-CAM"]["deletion"] == "pass | FAIL"  # val | test
    assert rows["Saliency"]["model_randomisation"] == "FAIL | FAIL"
    assert rows["Grad-CAM"]["data_randomisation"] == "n/a | n/a"
    text = " ".join(R.card_sentences(report))
    assert "Grad-CAM 7/7" in text and "Saliency barely changes" in text and "faithful on val but not" in text


def test_cli_prints_the_documented_json(tmp_path, capsys, register_data):
    from conftest import make_bundle
    from explore.training.jobs import execute_run
    from explore.training.store import RunStore

    bundle = make_bundle(size=SIZE, n_train=32, n_val=16, n_test=16)
    store = RunStore(tmp_path)
    run_id = store.create(RunConfig(data=register_data(bundle), model="lab4_gap", epochs=1, batch_size=16))
    assert list(execute_run(store, run_id))[-1]["status"] == "finished"
    from explore.cli.main import main

    code = main(["explain-report", "--run", str(tmp_path / run_id), "--n", "4", "--methods", "saliency", "gradcam",
                 "--split", "test", "--json"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert out["split"] == "test" and out["n_images"] == 4 and set(out["methods"]) == {"saliency", "gradcam"}
    for figures in out["methods"].values():
        assert set(R.METRIC_KEYS) <= set(figures)
        assert all(figures[k] is not None for k in R.METRIC_KEYS)  # the tiny bundle has lesion masks
    assert list((tmp_path / run_id / "explain_report").glob("*.json"))  # cached for the page
    assert main(["explain-report", "--run", str(tmp_path / "nope")]) == 2


def test_data_randomisation_run_trains_on_a_permutation_of_the_labels(tmp_path):
    from conftest import make_bundle
    from explore.data import DataSpec
    from explore.training.train import TrainingRun, permuted_labels

    bundle = make_bundle(size=SIZE, n_train=32, n_val=16, n_test=16)
    config = RunConfig(data=DataSpec(image_size=SIZE), model="lab4_gap", epochs=1, batch_size=16, name="tiny")
    shuffled = R.data_randomisation_config(config)
    assert shuffled.permute_labels and shuffled.name == "tiny · shuffled labels"
    assert set(config.differences(shuffled)) == {"permute_labels", "name"}
    with pytest.raises(ValueError, match="itself"):
        R.data_randomisation_config(shuffled)

    labels = permuted_labels(bundle.train.labels, seed=0)
    assert torch.equal(labels.sort().values, bundle.train.labels.sort().values)  # a permutation: same counts
    assert not torch.equal(labels, bundle.train.labels)
    run = TrainingRun(shuffled, bundle)
    assert torch.equal(run.data["train"][1].cpu(), labels)  # what the loop trains on
    assert torch.equal(run.data["val"][1].cpu(), bundle.val.labels)  # evaluated against the truth
    plain = TrainingRun(config, bundle)
    assert torch.equal(plain.data["train"][1].cpu(), bundle.train.labels)


def test_the_shuffled_label_run_is_found_and_compared(tmp_path, register_data):
    from conftest import make_bundle
    from explore.training.jobs import execute_run
    from explore.training.store import RunStore

    bundle = make_bundle(size=SIZE, n_train=32, n_val=16, n_test=16)
    store = RunStore(tmp_path)
    config = RunConfig(data=register_data(bundle), model="lab4_gap", epochs=1, batch_size=16, name="tiny")
    original = store.create(config)
    assert R.find_data_randomisation_run(store, config) == (None, None)
    shuffled = store.create(R.data_randomisation_config(config))
    assert R.find_data_randomisation_run(store, config) == (shuffled, "queued")
    for run_id in (original, shuffled):
        assert list(execute_run(store, run_id))[-1]["status"] == "finished"
    assert R.find_data_randomisation_run(store, config) == (shuffled, "finished")
    other = config.replace(epochs=2, name="")
    assert R.find_data_randomisation_run(store, other) == (None, None)  # a different run's copy does not count

    loaded = A.load_run(store, original, bundle=bundle)
    permuted_id, permuted = permuted_explainer(loaded)
    assert permuted_id == shuffled
    settings = R.ReportSettings(methods=("saliency",), n_images=4, splits=("val",), n_perturb=2)
    report = R.compute_report(loaded.explainer(), {"val": bundle.val}, settings, permuted)
    rho = report["splits"]["val"]["methods"]["saliency"]["data_randomisation_spearman"]
    assert rho is not None and -1 <= rho <= 1
    assert R.verdicts(report["splits"]["val"]["methods"]["saliency"])["data_randomisation"]["verdict"] in ("pass", "fail")
