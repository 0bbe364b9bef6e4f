"""explore.charts: every chart the app draws, read back from its Vega-Lite spec.

The pages only place these charts, so what a student sees (titles, axes, which colour is which
split, one line per run and split) is checked here; tests/test_rules.py-style, the last test keeps
chart building out of pages/.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest
import torch

from explore import charts
from explore.insight import report
from explore.insight import mismatch as mm


def layers(spec: dict) -> list[dict]:
    return spec.get("layer", [spec])


def epoch_records(*values):
    return [{"kind": "epoch", "epoch": e, "train_loss": v, "val_loss": v + 0.1, "train_acc": 1 - v, "val_acc": 0.9 - v,
             "lr": 1e-3 / e} for e, v in enumerate(values, 1)]


def test_one_run_is_coloured_by_split_in_the_split_colours():
    one = report.curves_frame(epoch_records(0.5, 0.4), "run a")
    spec = charts.curves(one, "loss").to_dict()
    colour = spec["encoding"]["color"]
    assert colour["field"] == "split" and "strokeDash" not in spec["encoding"]
    assert colour["scale"]["domain"] == ["train", "val (site A)"]
    assert colour["scale"]["range"] == [report.SPLIT_COLOURS["train"], report.SPLIT_COLOURS["val"]]
    assert spec["title"] == "loss per epoch" and spec["encoding"]["y"]["title"] == "loss"


def test_several_runs_get_a_colour_each_and_a_dash_per_split():
    two = pd.concat([report.curves_frame(epoch_records(0.5, 0.4), "run a"),
                     report.curves_frame(epoch_records(0.6), "run b")])
    spec = charts.curves(two, "accuracy").to_dict()
    lines, dots = spec["layer"]
    assert lines["encoding"]["color"]["field"] == "run" and lines["encoding"]["strokeDash"]["field"] == "split"
    assert lines["encoding"]["y"]["axis"]["format"] == "%" and dots["mark"]["type"] == "circle"
    dashes = lines["encoding"]["strokeDash"]["scale"]
    assert dashes["domain"] == ["train", "val (site A)"] and dashes["range"][0] == [1, 0]  # train solid
    # the lr rows never leak into a loss or accuracy chart
    assert set(charts.curves(two, "loss").data["metric"]) == {"loss"}


def test_compare_keeps_run_colours_for_a_single_run_and_draws_only_the_picked_splits():
    one = report.curves_frame(epoch_records(0.5, 0.4), "run a")
    chart = charts.curves(one, "accuracy", splits=["val"], by_run=True)
    assert set(chart.data["split"]) == {"val (site A)"} and len(chart.data) == 2
    assert chart.to_dict()["layer"][0]["encoding"]["color"]["field"] == "run"


def test_learning_rate_chart_is_a_step_line_on_a_log_axis():
    frame = report.curves_frame(epoch_records(0.5, 0.4, 0.3), "step")
    spec = charts.learning_rate(frame).to_dict()
    assert spec["mark"]["interpolate"] == "step-after" and spec["encoding"]["y"]["scale"]["type"] == "log"
    assert list(charts.learning_rate(frame).data["value"]) == [1e-3, 5e-4, pytest.approx(1e-3 / 3)]


def predictions():
    labels = torch.tensor([0, 0, 1, 1, 1, 0])
    probs = torch.tensor([0.1, 0.4, 0.35, 0.8, 0.9, 0.2])
    return {"val": {"labels": labels, "probs": probs}, "test": {"labels": labels, "probs": 1 - probs}}


def test_roc_names_each_curve_with_its_auc_and_draws_the_chance_line():
    frame, aucs = report.roc_frame(predictions())
    spec = charts.roc(frame, aucs).to_dict()
    chance, curves = spec["layer"]
    assert chance["mark"]["strokeDash"] == [4, 4]
    colour = curves["encoding"]["color"]["scale"]
    assert colour["domain"] == [f"val (site A) · AUC {aucs['val']:.3f}", f"test (site B) · AUC {aucs['test']:.3f}"]
    assert colour["range"] == [report.SPLIT_COLOURS["val"], report.SPLIT_COLOURS["test"]]
    assert spec["title"] == "ROC curve (disease vs normal)"
    json.dumps(spec)  # the infinite first threshold is not in the spec (JSON has no inf)


def test_mismatch_roc_is_the_same_chart_with_its_titles_and_the_threshold_dots():
    preds = predictions()
    frame, aucs = mm.roc_points(preds)
    points = pd.DataFrame(mm.operating_points(mm.internal_external(preds, 0.5)))
    spec = charts.roc(frame, aucs, points, titles=mm.SPLIT_TITLES, legend_below=True,
                      title="ROC curves; dots: the chosen threshold").to_dict()
    assert [layer["mark"]["type"] for layer in spec["layer"]] == ["line", "line", "point"]
    dots = spec["layer"][2]
    assert dots["encoding"]["color"]["scale"]["domain"][0].startswith(mm.SPLIT_TITLES["val"])
    assert spec["layer"][1]["encoding"]["color"]["legend"]["orient"] == "bottom"


def test_error_components_colour_what_adds_error_red():
    chart = charts.error_components([{"name": "variance", "value": 0.05}, {"name": "data mismatch", "value": -0.02}])
    assert list(chart.data["component"]) == ["variance", "data mismatch"]
    assert chart.to_dict()["encoding"]["color"]["condition"]["value"] == "#d62728"


def test_feature_pca_by_source_uses_the_split_colours():
    projected = {"rows": [{"pc1": 0.0, "pc2": 1.0, "split": "val", "source": "val", "class": "NORMAL", "id": "a"},
                          {"pc1": 1.0, "pc2": 0.0, "split": "test", "source": "test", "class": "PNEUMONIA", "id": "b"}],
                 "explained": [0.6, 0.3], "dims": 8}
    by_source = charts.feature_pca(projected, "split").to_dict()
    assert by_source["encoding"]["color"]["scale"]["range"] == [report.SPLIT_COLOURS["val"], report.SPLIT_COLOURS["test"]]
    assert by_source["encoding"]["x"]["title"] == "PC1 (60% of variance)"
    assert charts.feature_pca(projected, "class").to_dict()["title"] == "by class"


def test_data_page_charts_keep_their_axis_titles():
    counts = pd.DataFrame({"split": ["train", "val"], "class": ["NORMAL", "NORMAL"], "count": [3, 1]})
    assert charts.class_counts(counts, ["train", "val"], ["NORMAL"]).to_dict()["encoding"]["x"]["sort"] == ["train", "val"]
    histograms = pd.DataFrame({"split": ["train"], "site": ["A"], "intensity_bin": [4], "density": [0.5]})
    chart = charts.intensity_histograms(histograms)
    assert list(chart.data["group"]) == ["train · site A"]
    assert chart.to_dict()["encoding"]["x"]["title"] == "grey level (0 black … 255 white)"
    rows = [{"value": "PA", "share_of_NORMAL": 0.8, "share_of_PNEUMONIA": 0.3},
            {"value": "AP", "share_of_NORMAL": 0.2, "share_of_PNEUMONIA": 0.7}]
    shares = charts.label_shares(rows, ["NORMAL", "PNEUMONIA"], "view")
    assert sorted(shares.data["class"].unique()) == ["NORMAL", "PNEUMONIA"] and len(shares.data) == 4
    assert shares.to_dict()["encoding"]["x"]["sort"] == ["PA", "AP"]


def test_saliency_charts_read_the_library_rows():
    rows = [{"method": "saliency", "region": "lung", "split": "val", "share": 0.7, "area": 0.4},
            {"method": "saliency", "region": "lung", "split": "test", "share": None, "area": 0.4}]
    shares = charts.region_shares(rows, {"saliency": "Saliency (|gradient|)"})
    assert list(shares.data["method"]) == ["Saliency (|gradient|)"]  # the unmeasured share is left out
    stages = [{"layers": 1, "spearman_mean": 0.8}, {"layers": 2, "spearman_mean": 0.1}]
    assert list(charts.randomisation(stages).data["Spearman ρ"]) == [1.0, 0.8, 0.1]
    points = [{"method": "random", "fraction removed": 0.1, "test accuracy": 0.8}]
    assert charts.roar(points, "random").to_dict()["encoding"]["strokeDash"]["condition"]["value"] == [4, 4]


def test_pages_build_no_chart():
    """Every chart comes from explore.charts: no page imports Altair or draws with st.*_chart shortcuts."""
    pages = Path(__file__).resolve().parents[1] / "pages"
    builders = re.compile(r"import altair|\balt\.|st\.(line|bar|area|scatter)_chart\(")
    offenders = [f"{path.name}:{n}" for path in sorted(pages.glob("*.py"))
                 for n, line in enumerate(path.read_text().splitlines(), 1) if builders.search(line)]
    assert not offenders, offenders
