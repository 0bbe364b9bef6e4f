"""`python -m explore data`: JSON summary, readable summary and one-line errors."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from explore.cli.data import cli_main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
JSON_KEYS = {"source", "image_size", "classes", "splits", "skipped", "original_sizes"}


@pytest.fixture(autouse=True)
def cache_in_tmp(tmp_path, monkeypatch):
    """Decoded-image caches go to tmp, never into the working directory."""
    monkeypatch.setenv("EXPLORE_CACHE_DIR", str(tmp_path / "cache"))


def make_folder(root, per_class: int = 5, value: int = 80) -> str:
    for k, cls in enumerate(("NORMAL", "PNEUMONIA")):
        os.makedirs(root / cls, exist_ok=True)
        for i in range(per_class):
            Image.new("L", (40, 48), value + 60 * k).save(root / cls / f"{i}.png")
    return str(root)


def make_npz(path) -> str:
    labels = np.array([0, 0, 0, 1, 1, 1], dtype=np.uint8)[:, None]
    images = np.full((6, 28, 28), 100, dtype=np.uint8)
    np.savez(path, **{f"{s}_{k}": v for s in ("train", "val", "test")
                      for k, v in (("images", images), ("labels", labels))})
    return str(path)


def run_json(capsys, *argv) -> dict:
    assert cli_main(list(argv) + ["--json"]) == 0
    out = capsys.readouterr().out
    assert len(out.strip().splitlines()) == 1  # exactly one JSON object
    return json.loads(out)


def test_folder_source_prints_the_json_summary(tmp_path, capsys):
    folder = make_folder(tmp_path / "xrays")
    (tmp_path / "xrays" / "NORMAL" / "bad.png").write_text("oops")
    summary = run_json(capsys, "--source", f"folder:{folder}", "--size", "64")
    assert set(summary) == JSON_KEYS
    assert summary["classes"] == ["NORMAL", "PNEUMONIA"] and summary["image_size"] == 64
    assert sum(sum(c.values()) for c in summary["splits"].values()) == 10
    assert [os.path.basename(s["path"]) for s in summary["skipped"]] == ["bad.png"]
    assert summary["original_sizes"]["NORMAL"]["width_median"] == 40


def test_medmnist_source_and_mixed_test_source(tmp_path, capsys):
    npz = make_npz(tmp_path / "pneumoniamnist.npz")
    summary = run_json(capsys, "--source", f"medmnist:{npz}", "--size", "64")
    assert summary["splits"]["val"] == {"NORMAL": 3, "PNEUMONIA": 3}

    folder = make_folder(tmp_path / "hospital_b", per_class=4)
    summary = run_json(capsys, "--source", f"medmnist:{npz}", "--test-source", f"folder:{folder}", "--size", "64")
    assert summary["splits"]["train"] == {"NORMAL": 3, "PNEUMONIA": 3}
    assert summary["splits"]["test"] == {"NORMAL": 4, "PNEUMONIA": 4}  # the whole folder is the test set


def test_readable_summary(tmp_path, capsys):
    folder = make_folder(tmp_path / "xrays")
    assert cli_main(["--source", f"folder:{folder}", "--size", "64"]) == 0
    out = capsys.readouterr().out
    assert "NORMAL" in out and "PNEUMONIA" in out and "skipped files: 0" in out


@pytest.mark.parametrize("source", ["folder:/definitely/not/here", "medmnist:/definitely/not/here.npz", "nonsense:x"])
def test_unusable_source_is_one_line_on_stderr(source, capsys):
    assert cli_main(["--source", source, "--size", "64", "--json"]) != 0
    captured = capsys.readouterr()
    assert captured.out == ""
    assert len(captured.err.strip().splitlines()) == 1 and captured.err.startswith("error: ")


def test_module_entry_point_exit_code_without_traceback(tmp_path):
    env = dict(os.environ, EXPLORE_CACHE_DIR=str(tmp_path / "cache"))
    result = subprocess.run([sys.executable, "-m", "explore", "data", "--source", f"folder:{tmp_path / 'missing'}"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr and result.stderr.strip().count("\n") == 0
    assert "missing" in result.stderr


def test_synthetic_source(capsys):
    pytest.importorskip("explore.data.synthetic")
    small = ["--knob", "n_train=12", "--knob", "n_val=10", "--knob", "n_test=10"]
    summary = run_json(capsys, "--source", "synthetic", "--size", "64", *small)
    assert set(summary) == JSON_KEYS and summary["classes"][0] == "NORMAL"
    assert sum(summary["splits"]["train"].values()) == 12
    assert cli_main(["--source", "synthetic", "--size", "64", "--knob", "no_such_knob=1"]) == 1
    assert capsys.readouterr().err.startswith("error: ")
