"""explore.insight.analysis: MACs and parameters against textbook formulas, timing, translation sensitivity."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from torch import nn

from conftest import make_bundle
from explore.insight import analysis
from explore.training.config import RunConfig
from explore.device import Placement
from explore.training.jobs import execute_run
from explore.models.registry import SCRATCH_MODELS, build_model, count_parameters
from explore.cli.models import describe
from explore.training.store import RunStore

CPU = Placement(torch.device("cpu"), torch.float32)
ROOT = Path(__file__).resolve().parents[1]


def rows_by_name(profile: dict) -> dict:
    return {row["name"]: row for row in profile["layers"]}


def test_conv_macs_equal_the_textbook_formula():
    # H_out·W_out·C_out·C_in·k·k, for 'same' padding, no padding and stride 2
    model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 6, 5), nn.Conv2d(6, 4, 3, stride=2))
    rows = rows_by_name(analysis.model_profile(model, 20))
    assert rows["0"]["macs"] == 20 * 20 * 8 * 1 * 3 * 3 and rows["0"]["output_shape"] == [8, 20, 20]
    assert rows["2"]["macs"] == 16 * 16 * 6 * 8 * 5 * 5 and rows["2"]["output_shape"] == [6, 16, 16]
    assert rows["3"]["macs"] == 7 * 7 * 4 * 6 * 3 * 3 and rows["3"]["output_shape"] == [4, 7, 7]
    assert rows["1"]["macs"] == 0  # ReLU: no multiply-accumulates
    assert rows["0"]["params"] == 8 * 9 + 8 and rows["2"]["params"] == 6 * 8 * 25 + 6


def test_linear_macs_equal_in_times_out_and_totals_are_sums():
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10), nn.BatchNorm1d(10), nn.ReLU(), nn.Linear(10, 3))
    profile = analysis.model_profile(model, 8)
    rows = rows_by_name(profile)
    assert rows["1"]["macs"] == 64 * 10 and rows["4"]["macs"] == 10 * 3
    assert rows["1"]["params"] == 64 * 10 + 10 and rows["2"]["params"] == 20  # BN: scale and shift
    assert profile["macs"] == sum(r["macs"] for r in profile["layers"]) == 670
    assert profile["params"] == sum(r["params"] for r in profile["layers"]) == count_parameters(model)[0]
    assert model.training  # profiling runs in eval mode and restores the mode


def test_hw3_cnn_at_256_matches_hand_computation():
    profile = analysis.model_profile(build_model("hw3_cnn", 256, 1), 256)
    by_hand = (256 * 256 * 32 * 1 * 9      # conv1, 'same' padding
               + 128 * 128 * 32 * 32 * 9   # conv2 after pool1
               + 64 * 64 * 32 * 32 * 9     # conv3 after pool2
               + 32 * 32 * 32 * 32         # fc1: 32×32×32 flattened → 32
               + 32 * 1)                   # fc2
    assert by_hand == 208_666_656
    assert profile["macs"] == by_hand
    assert profile["params"] == count_parameters(build_model("hw3_cnn", 256, 1))[0] == 1_067_457
    assert rows_by_name(profile)["pool3"]["output_shape"] == [32, 32, 32]


@pytest.mark.parametrize("name", SCRATCH_MODELS)
def test_every_scratch_model_profiles_with_consistent_totals(name):
    model = build_model(name, 64, 1)
    profile = analysis.model_profile(model, 64)
    assert profile["macs"] == sum(r["macs"] for r in profile["layers"]) > 0
    assert profile["params"] == sum(r["params"] for r in profile["layers"]) == count_parameters(model)[0]
    assert {"name", "type", "output_shape", "params", "macs"} <= set(profile["layers"][0])


def test_work_outside_layers_and_unused_parameters_get_their_own_rows():
    class Odd(nn.Module):
        def __init__(self):
            super().__init__()
            self.used = nn.Linear(16, 4)
            self.unused = nn.Linear(4, 4)
            self.extra = nn.Parameter(torch.ones(4, 2))

        def forward(self, x):
            return self.used(x.flatten(1)) @ self.extra  # a matmul written in forward(): 4·2 MACs

    profile = analysis.model_profile(Odd(), 4)
    rows = rows_by_name(profile)
    assert rows["(outside layers)"]["macs"] == 8 and rows["used"]["macs"] == 64
    assert rows["(not used for this input)"]["params"] == 20 + 8
    assert profile["macs"] == 72 and profile["params"] == 68 + 20 + 8


def test_first_layer_weights_ann_vs_cnn_at_256():
    totals, layers = analysis.profile_architectures(["hw3_ann", "hw3_cnn"], 256)
    totals = totals.set_index("model")
    assert totals.loc["hw3_ann", "first_layer_weights"] == 65_536 * 512 + 512
    assert totals.loc["hw3_cnn", "first_layer_weights"] == 3 * 3 * 32 + 32
    assert "65,536 inputs × 512 units" in totals.loc["hw3_ann", "first_layer_formula"]
    assert totals.loc["hw3_cnn", "macs"] == 208_666_656
    cnn = layers[layers.model == "hw3_cnn"]
    assert cnn.macs.sum() == 208_666_656 and cnn.iloc[0].output_shape == "32×256×256"


def test_profile_reports_a_model_that_cannot_take_the_size():
    totals, _ = analysis.profile_architectures(["hw3_cnn", "lab4_gap"], 4)  # three poolings of 4 px → 0 px
    assert totals.set_index("model").loc["hw3_cnn", "error"]


def test_models_cli_reports_macs_per_layer():
    cnn = describe("hw3_cnn", 32)  # what `python -m explore models --size 32 --json` prints per model
    assert cnn["macs"] == 32 * 32 * 9 * 32 + 16 * 16 * 32 * 32 * 9 + 8 * 8 * 32 * 32 * 9 + 4 * 4 * 32 * 32 + 32
    assert sum(layer["macs"] for layer in cnn["layers"]) == cnn["macs"]
    assert json.loads(json.dumps(cnn)) == cnn  # JSON-ready: plain ints, lists and strings


def test_shift_image_moves_content_and_repeats_the_border():
    image = torch.zeros(1, 6, 6, dtype=torch.uint8)
    image[0, 2, 1] = 200
    image[0, :, 5] = 50  # right border column
    right = analysis.shift_image(image, dx=2)
    assert right[0, 2, 3] == 200 and right[0, 2, 1] == 0
    left = analysis.shift_image(image, dx=-2)
    assert (left[0, :, 3:] == 50).all()  # the border column is repeated into the gap
    down = analysis.shift_image(image, dy=3)
    assert down[0, 5, 1] == 200 and down.shape == image.shape and down.dtype == torch.uint8
    assert torch.equal(analysis.shift_image(image), image)


class OnePixel(nn.Module):
    """Logit = the value of pixel (row 4, column 4): a model that is all position, no invariance."""

    def forward(self, x):
        return x[:, :, 4, 4].reshape(-1, 1)


def test_translation_sensitivity_against_a_known_answer():
    image = torch.zeros(10, 10, dtype=torch.uint8)
    image[4, 6] = 255  # two pixels to the right of where the model looks
    classifier = analysis.Classifier("one pixel", OnePixel(), 10, lambda x: x.float() / 255 * 4)
    result = analysis.translation_sensitivity([classifier], image, shifts=[-2, -1, 0, 1])
    probs = dict(zip(result.shift_px, result.prob))
    assert probs[-2] == pytest.approx(torch.sigmoid(torch.tensor(4.0)).item())  # shifted onto the pixel
    assert probs[0] == probs[-1] == probs[1] == pytest.approx(0.5)
    assert list(result.columns) == ["model", "shift_px", "prob", "change"]
    assert dict(zip(result.shift_px, result.change))[0] == 0.0
    summary = analysis.translation_summary(result).iloc[0]
    assert summary.prob_unshifted == pytest.approx(0.5) and summary.largest_change == pytest.approx(0.482, abs=1e-3)


def test_translation_sensitivity_of_fresh_models_resizes_and_checks_input():
    models = [analysis.fresh_classifier("hw3_cnn", 32), analysis.fresh_classifier("hw3_ann", 64)]
    image = make_bundle(size=48).test.images[0]
    result = analysis.translation_sensitivity(models, image, shifts=range(-4, 5, 2), axis="y")
    assert len(result) == 2 * 5 and result.prob.between(0, 1).all()
    with pytest.raises(ValueError, match="uint8"):
        analysis.translation_sensitivity(models, image.float())
    with pytest.raises(ValueError, match="axis"):
        analysis.translation_sensitivity(models, image, axis="z")


def test_classifier_from_a_finished_run_uses_its_stored_pipeline(runs_dir, register_data):
    bundle = make_bundle(size=32, n_train=32, n_val=16, n_test=16)
    store = RunStore(runs_dir)
    run_id = store.create(RunConfig(data=register_data(bundle), model="hw3_cnn", epochs=1, device="cpu",
                                    precision="fp32", name="tiny cnn"))
    end = list(execute_run(store, run_id))[-1]
    assert end["status"] == "finished", end
    classifier = analysis.classifier_from_run(store, run_id)
    stats = end["summary"]["input_pipeline"]
    images = bundle.test.images[:4]
    expected = (images.float() / 255 - stats["mean"]) / stats["std"]
    assert torch.allclose(classifier.prepare(images), expected)
    result = analysis.translation_sensitivity([classifier], images[0], shifts=[0, 3])
    assert result.prob.between(0, 1).all() and result.iloc[0].change == 0.0
    results = analysis.trained_results(store.list(with_metrics=True), ["hw3_cnn"])
    assert results.iloc[0].run_id == run_id and 0 <= results.iloc[0].test_acc <= 1
    assert results.iloc[0].train_acc == store.load(run_id).metrics[-1]["train_acc"]
    assert analysis.trained_results(store.list(with_metrics=True), ["hw3_ann"]).empty


def test_measure_architectures_on_this_machine():
    table = analysis.measure_architectures(["hw3_ann", "lab4_gap"], size=32, batch_size=16, n_images=32,
                                           placement=CPU).set_index("model")
    assert table.error.isna().all(), table.error
    assert (table.seconds_per_epoch > 0).all() and (table.images_per_second > 0).all()
    assert table.loc["hw3_ann", "params"] == count_parameters(build_model("hw3_ann", 32, 1))[0]
    assert table.device.iloc[0].startswith("CPU")
    assert "RSS" in table.memory_measure.iloc[0] or "not measurable" in table.memory_measure.iloc[0]


def test_peak_memory_measures_a_known_allocation():
    """Reference test: a 256 MiB tensor made inside the meter shows up as about 256 MB.

    In a fresh process, because this test process keeps freed memory resident (reuse_freed_memory),
    so a new tensor here could reuse pages that were already counted."""
    import subprocess
    import sys

    code = ("import torch; from explore.insight.analysis import PeakMemory; from explore.device import Placement\n"
            "meter = PeakMemory(Placement(torch.device('cpu'), torch.float32))\n"
            "with meter:\n    block = torch.ones(64 * 2**20)  # 64 Mi float32 = 256 MiB, touched\n"
            "print(meter.megabytes)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr
    measured = out.stdout.strip().splitlines()[-1]
    if measured == "None":
        pytest.skip("peak RSS is not measurable on this system (no /proc/self/clear_refs)")
    assert 240 <= float(measured) <= 400


def test_time_batch_sizes_includes_non_powers_of_two():
    table = analysis.time_batch_sizes("lab4_gap", 32, batch_sizes=[12, 16], n_images=48, placement=CPU)
    assert table.batch_size.tolist() == [12, 16]
    assert table.power_of_two.tolist() == [False, True]
    assert table.batches.tolist() == [4, 3]
    assert (table.seconds_per_epoch > 0).all()


def test_the_pages_default_architectures_all_profile():
    """The ANN vs CNN page opens with analysis.COURSE_ARCHITECTURES: every one of them must profile (a name
    missing from the registry, or a model that fails at the page's sizes, would be a warning, not a row)."""
    totals, layers = analysis.profile_architectures(analysis.COURSE_ARCHITECTURES, 64)
    assert list(totals.model) == list(analysis.COURSE_ARCHITECTURES) and totals.error.isna().all(), totals.error
    assert set(layers.model) == set(analysis.COURSE_ARCHITECTURES)
    by_model = totals.set_index("model")  # the page's point: the ANN's first layer dwarfs the CNN's
    assert by_model.loc["hw3_ann", "first_layer_weights"] > 100 * by_model.loc["hw3_cnn", "first_layer_weights"]
