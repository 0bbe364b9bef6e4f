"""The CLI as a user runs it: a subprocess, JSON lines out."""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args, env_extra=None, timeout=300):
    import os

    env = os.environ | {"EXPLORE_THREADS": "1"} | (env_extra or {})
    return subprocess.run([sys.executable, "-m", "explore", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env=env)


def test_help_lists_commands():
    out = run_cli("--help")
    assert out.returncode == 0 and "train" in out.stdout and "bench" in out.stdout


def test_unknown_command():
    assert run_cli("frobnicate").returncode == 2


def test_train_cli_json_lines(tmp_path, make_npz_dataset):
    out = run_cli("train", "--model", "hw2_mlp", "--epochs", "2", "--size", "64", "--source",
                  f"medmnist:{make_npz_dataset}", "--runs-dir", str(tmp_path), "--json")
    assert out.returncode == 0, out.stderr
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert [l["epoch"] for l in lines if l["kind"] == "epoch"] == [1, 2]
    final = lines[-1]
    assert final["status"] == "finished"
    for key in ("run_id", "run_dir", "best_val_acc", "last_val_acc", "test_acc", "seconds_per_epoch"):
        assert key in final
    assert Path(final["run_dir"], "weights.pt").exists()


def test_train_cli_bad_value_is_one_line(tmp_path):
    out = run_cli("train", "--model", "hw3_cnn", "--size", "100", "--runs-dir", str(tmp_path))
    assert out.returncode != 0


def test_models_cli_lists_every_model():
    out = run_cli("models", "--size", "64", "--json", "--no-layers")
    assert out.returncode == 0, out.stderr
    rows = {r["name"]: r for r in json.loads(out.stdout)}
    assert rows["hw3_cnn"]["params_total"] == rows["hw3_cnn"]["params_trainable"] > 0
    assert "hw3_ann" in rows and "resnet18" in rows


def test_presets_cli():
    out = run_cli("presets", "--json")
    presets = json.loads(out.stdout)
    names = {p["name"] for p in presets}
    assert {"hw2_bce_vs_ce", "hw3_baseline", "hw3_ann_vs_cnn", "hw3_gap", "lecture_lr_schedules",
            "lecture_batch_norm"} <= names
    from explore.training.config import RunConfig

    for preset in presets:
        assert set(preset) == {"name", "title", "note", "full", "quick"}
        for run in preset["full"] + preset["quick"]:
            assert RunConfig.from_dict(run).to_dict() == run and run["name"]  # the run store's config.json


def test_train_cli_passes_the_same_gate(tmp_path, make_npz_dataset):
    """On a demo server the CLI's runs are capped like the app's, and it says so."""
    out = run_cli("train", "--model", "hw2_mlp", "--epochs", "3", "--size", "64", "--source",
                  f"medmnist:{make_npz_dataset}", "--runs-dir", str(tmp_path), "--json",
                  env_extra={"EXPLORE_DEMO_MODE": "1", "EXPLORE_MAX_EPOCHS": "1", "EXPLORE_DATA_ROOT": str(tmp_path)})
    assert out.returncode == 0, out.stderr
    assert "note: epochs capped at 1 (asked 3)" in out.stderr
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert [line["epoch"] for line in lines if line["kind"] == "epoch"] == [1]
