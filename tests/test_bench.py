"""`python -m explore bench`: the course's loop is what the homework ran, and the report has its shape."""
from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import ROOT, make_bundle
from benchmarks import bench


def test_spread_is_median_min_max():
    assert bench.spread([3.0, 1.0, 2.0, 10.0]) == {"median": 2.5, "min": 1.0, "max": 10.0, "n": 4}
    assert bench.spread([]) == {"median": None, "min": None, "max": None, "n": 0}
    assert bench.ratio({"median": 6.0}, {"median": 2.0}) == 3.0
    assert bench.ratio({"median": None}, {"median": 2.0}) is None


def test_png_folder_reads_back_through_the_course_pipeline(tmp_path):
    """ImageFolder + Grayscale/Resize/ToTensor sees exactly the bundle's pixels and labels."""
    bundle = make_bundle(size=16, n_train=6, n_val=4, n_test=2)
    assert bench.write_png_folder(bundle, tmp_path) == 10
    train_loader, val_loader = bench.course_loaders(tmp_path, image_size=16, workers=0)
    dataset = train_loader.dataset
    assert dataset.classes == list(bundle.classes)
    assert len(dataset) == 6 and len(val_loader.dataset) == 4
    for k, (path, label) in enumerate(dataset.samples):
        i = int(Path(path).stem)
        image, _ = dataset[k]
        assert label == int(bundle.train.labels[i])
        assert torch.equal((image * 255).round().to(torch.uint8), bundle.train.images[i])


def test_png_folder_limit_and_upscale(tmp_path):
    bundle = make_bundle(size=16, n_train=6, n_val=4, n_test=2)
    assert bench.write_png_folder(bundle, tmp_path, splits=("train", "val", "test"), limit=7, scale=2) == 7
    from PIL import Image

    files = sorted(tmp_path.rglob("*.png"))
    assert len(files) == 7 and Image.open(files[0]).size == (32, 32)


def test_training_comparison_same_work_same_accuracy(monkeypatch):
    """Both loops learn the tiny learnable set; the row reports both accuracies and the ratio."""
    bundle = make_bundle(size=32, n_train=256, n_val=64, n_test=8)
    monkeypatch.setattr(bench, "load_bundle", lambda spec: bundle)
    settings = dataclasses.replace(bench.Settings.make(quick=True, device="cpu"), image_sizes=(32,),
                                   models=("hw3_cnn",), epochs=3)
    result = bench.bench_training(settings)
    [row] = result["rows"]
    assert row["model"] == "hw3_cnn" and row["train_images"] == 256 and row["val_images"] == 64
    assert row["course"]["epochs"] == row["fast"]["epochs"] == 3
    assert row["course"]["val_acc"] >= 0.9 and row["fast"]["val_acc"] >= 0.9
    assert row["speedup"] == pytest.approx(row["course"]["seconds_per_epoch"]["median"]
                                           / row["fast"]["seconds_per_epoch"]["median"])
    assert "num_workers=0" in result["course_loop"]


def test_format_report_survives_failed_and_missing_sections():
    report = {"command": "python -m explore bench --quick", "settings": {},
              "machine": {"cpu": "x", "cpu_count": 2, "torch": "2", "torch_threads": 2, "gpu": None,
                          "load_average": (1.0, 1.0, 1.0), "load_average_after": (1.0, 1.0, 1.0), "date": "today"},
              "sections": {"frozen": {"available": False, "note": "not available: missing"},
                           "live": {"error": "RuntimeError: boom"}}}
    text = bench.format_report(report)
    assert "not available: missing" in text and "failed: RuntimeError: boom" in text


def test_cli_rejects_unknown_sections(capsys):
    assert bench.cli_main(["--only", "training,nonsense"]) == 2
    assert "nonsense" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_quick_bench_runs_end_to_end_as_json():
    """The smoke test CI runs: every section reports figures (not a time limit: the machine is shared)."""
    out = subprocess.run([sys.executable, "-m", "explore", "bench", "--quick", "--json"], cwd=ROOT,
                         capture_output=True, text=True, timeout=1700)
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout)
    assert report["command"] == "python -m explore bench --quick --json"
    assert set(report["sections"]) == set(bench.SECTIONS)
    for name, section in report["sections"].items():
        assert "error" not in section, (name, section)
    machine = report["machine"]
    assert machine["cpu_count"] >= 1 and len(machine["load_average"]) == 3 and machine["torch"]
    training = report["sections"]["training"]["rows"]
    assert {(r["model"], r["image_size"]) for r in training} == {("hw3_cnn", 64), ("hw2_mlp", 64)}
    for row in training:
        for side in ("course", "fast"):
            s = row[side]["seconds_per_epoch"]
            assert s["n"] == 3 and 0 < s["min"] <= s["median"] <= s["max"]
            assert 0 <= row[side]["val_acc"] <= 1
        assert row["speedup"] > 0
    parity = report["sections"]["parity"]["rows"]
    assert {r["model"] for r in parity} == {"hw3_cnn", "hw2_mlp"}
    for row in parity:
        course, fast = row["course_val_acc"], row["fast_val_acc"]
        assert len(course["values"]) == len(fast["values"]) == row["seeds"] == 1
        assert row["difference"] == pytest.approx(fast["mean"] - course["mean"])
        assert row["goal_met"] == (abs(row["difference"]) <= 0.02) and row["not_worse"] == (row["difference"] >= -0.02)
    live = report["sections"]["live"]
    assert live["overhead"] > 0 and live["thread_cost"] > 0 and live["job_seconds"]["n"] == 1
    startup = report["sections"]["startup"]
    assert startup["streamlit_seconds"]["median"] > 0 and startup["first_script_run_seconds"]["median"] > 0
    memory = startup["memory"]
    assert list(memory["peak_rss_mb_after"]) == ["start", "data", "training", "saliency"]
    assert memory["peak_rss_mb"] >= memory["peak_rss_mb_after"]["training"] >= memory["peak_rss_mb_after"]["start"] > 50
    precision = report["sections"]["precision"]["rows"]
    assert {r["model"] for r in precision} == {"hw3_cnn", "hw2_mlp"}
    assert all(r["fp32_seconds_per_epoch"]["n"] == 1 and r["auto_picks"] in ("float32", "bfloat16") for r in precision)
    data = report["sections"]["data"]
    assert data["synthetic"]["images"] == 384 and data["synthetic"]["seconds"]["median"] > 0
    if data["folder"]["available"]:
        assert data["folder"]["images"] == 200 and data["folder"]["cached_seconds"]["median"] > 0
    attribution = report["sections"]["attribution"]
    if attribution["available"]:
        assert attribution["ms_per_image"]["saliency"]["median"] > 0
    workers = report["sections"]["workers"]
    assert workers["thread_seconds"]["n"] == 1 and workers["process_first_seconds"]["median"] > 0
    assert workers["extra_first_seconds"] == pytest.approx(
        workers["process_first_seconds"]["median"] - workers["thread_seconds"]["median"])


def test_soak_is_opt_in_and_reads_as_a_sentence():
    from benchmarks.soak import least_squares_slope

    assert "soak" not in bench.SECTIONS and "soak" in bench.EXTRA_SECTIONS
    assert least_squares_slope([100.0, 102.0, 104.0]) == pytest.approx(2.0)
    assert least_squares_slope([5.0]) == 0.0
    soak = {"sessions": 20, "epochs_per_session": 2, "data": "small", "idle_mb": 54.0, "after_first_session_mb": 990.0,
            "max_mb": 995.0, "final_mb": 930.0, "growth_after_first_mb": -60.0, "slope_mb_per_session": -0.5}
    [line] = bench.FORMATTERS["soak"](soak)
    assert "20 browser sessions" in line and "idle 54 MB" in line and "-60 MB since the first session" in line
