"""Each CLI command the issue-15 work added, run once as a user runs it (a subprocess, JSON out)."""
import json
import zipfile
from pathlib import Path

from test_cli import run_cli


def last_json(out) -> dict:
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.splitlines()[-1])


def test_sweep_repeat_compare_export_import(tmp_path, make_npz_dataset):
    runs = str(tmp_path / "runs")
    data = ["--source", f"medmnist:{make_npz_dataset}", "--size", "64", "--epochs", "2", "--runs-dir", runs, "--json"]
    sweep = last_json(run_cli("sweep", "--model", "hw2_mlp", "--vary", "lr=1e-4,1e-2", "--group", "s", *data))
    assert sweep["kind"] == "sweep" and sweep["settings"] == ["lr"]
    assert [row["lr"] for row in sweep["results"]] == [1e-4, 1e-2]
    assert all(row["status"] == "finished" and row["epochs"] == 2 for row in sweep["results"])

    repeat = last_json(run_cli("repeat", "--run", sweep["results"][0]["run_id"], "--seeds", "0", "1", *data))
    assert [row["seed"] for row in repeat["runs"]] == [0, 1]
    test_acc = next(row for row in repeat["summary"] if row["metric"] == "test_acc")
    assert test_acc["n"] == 2 and 0 <= test_acc["mean"] <= 1

    out_dir = tmp_path / "cmp"
    compared = last_json(run_cli("compare", "--group", "s", "--out", str(out_dir), "--runs-dir", runs, "--json"))
    assert len(compared["runs"]) == 2 and {row["lr"] for row in compared["table"]} == {1e-4, 1e-2}
    names = {Path(f).name for f in compared["files"]}
    assert {"comparison.csv", "curves.csv", "curves-accuracy.png", "curves-loss.png", "learning-rate.png"} <= names
    assert (out_dir / "curves-loss.png").read_bytes()[:4] == b"\x89PNG"
    assert "learning rate" in (out_dir / "curves.csv").read_text()

    bundle = tmp_path / "run.zip"
    exported = last_json(run_cli("export", compared["runs"][0], "--out", str(bundle), "--runs-dir", runs, "--json"))
    assert exported["bytes"] > 0 and any(n.endswith("weights.pt") for n in zipfile.ZipFile(bundle).namelist())
    other = str(tmp_path / "elsewhere")
    imported = last_json(run_cli("import", str(bundle), "--runs-dir", other, "--json"))
    assert imported["state"] == "finished" and Path(imported["run_dir"], "weights.pt").is_file()


def test_lr_find_cli(make_npz_dataset):
    result = last_json(run_cli("lr-find", "--model", "hw2_mlp", "--source", f"medmnist:{make_npz_dataset}",
                               "--size", "64", "--steps", "30", "--json"))
    assert set(result) >= {"suggested_lr", "points"} and result["suggested_lr"] > 0
    assert all(set(p) == {"lr", "loss"} for p in result["points"]) and len(result["points"]) > 5


def test_train_sets_every_page_setting(tmp_path, make_npz_dataset):
    from explore.cli.train import build_parser, configs_from_args

    args = build_parser().parse_args([
        "--model", "cnn", "--batch-norm", "--class-weights", "--train-dev", "0.2", "--classes", "3",
        "--knob", "noise=0.8", "--exposure", "0.1", "--momentum", "0.8", "--nesterov", "--name", "mine",
        "--group", "g", "--data-seed", "7", "--no-restore-best"])
    (config,) = configs_from_args(args)
    assert (config.class_weights, config.train_dev_fraction, config.loss, config.data.num_classes) == (True, 0.2, "ce", 3)
    assert dict(config.data.synthetic) == {"noise": 0.8, "exposure": 0.1} and config.data.seed == 7
    assert (config.momentum, config.nesterov, config.name, config.group, config.restore_best) == \
        (0.8, True, "mine", "g", False)
    args = build_parser().parse_args(["--model", "resnet18", "--transfer", "two-phase", "--transfer-head", "linear",
                                      "--backbone-lr-scale", "0.3", "--frozen-epochs", "1"])
    (config,) = configs_from_args(args)
    assert (config.transfer_mode, config.transfer_head, config.backbone_lr_scale, config.frozen_epochs) == \
        ("two-phase", "linear", 0.3, 1)
    bad = run_cli("train", "--model", "hw3_cnn", "--knob", "loudness=1", "--runs-dir", str(tmp_path))
    assert bad.returncode == 2 and "loudness" in bad.stderr
    # a train-dev run through the real CLI: the held-out split is evaluated every epoch
    out = run_cli("train", "--model", "hw2_mlp", "--epochs", "1", "--size", "64", "--train-dev", "0.25",
                  "--source", f"medmnist:{make_npz_dataset}", "--runs-dir", str(tmp_path), "--json")
    epoch = next(json.loads(line) for line in out.stdout.splitlines() if '"epoch"' in line)
    assert "train_dev_acc" in epoch, out.stderr
