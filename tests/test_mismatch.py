"""Mismatch analysis: the decomposition adds up, the source classifier sees a site shift, fixes queue as a group."""
from __future__ import annotations

import json
import os

import pytest
import torch
from torch import nn

import explore.insight.attribution as A
import explore.insight.mismatch as M
import explore.training.train
from conftest import make_bundle, make_split
from explore.training.config import RunConfig
from explore.data import DataSpec, register_bundle
from explore.training.jobs import JobManager, execute_run
from explore.training.store import RunStore
from explore.training.train import TrainingRun
from explore.cli import mismatch as mismatch_cli


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
    return make_bundle(size=32)


@pytest.fixture(scope="module")
def run_with_train_dev(tmp_path_factory, bundle):
    root = tmp_path_factory.mktemp("runs")
    store = RunStore(root)
    data = register_bundle("mismatch-tiny", bundle)  # the run, its fixes and the CLI all load it by name
    config = RunConfig(data=data, model="lab4_gap", epochs=2, batch_size=16, lr=3e-3,
                       train_dev_fraction=0.25, name="tiny")
    run_id = store.create(config)
    records = list(execute_run(store, run_id))
    assert records[-1]["status"] == "finished", records[-1]
    return store, run_id


def test_decomposition_adds_up_to_the_test_error():
    parts = M.error_decomposition(train_error=0.02, val_error=0.06, test_error=0.25, train_dev_error=0.05,
                                  human_error=0.01)
    values = {c["key"]: c["value"] for c in parts["components"]}
    assert values == pytest.approx({"avoidable_bias": 0.01, "variance": 0.03, "val_overfit": 0.01,
                                    "data_mismatch": 0.19})
    assert parts["human_error"] + sum(values.values()) == pytest.approx(parts["test_error"])
    assert parts["largest"] == "data mismatch" and not parts["notes"]


def test_decomposition_without_train_dev_uses_val_and_says_so():
    parts = M.error_decomposition(train_error=0.0, val_error=0.04, test_error=0.2)
    assert [c["key"] for c in parts["components"]] == ["avoidable_bias", "variance", "data_mismatch"]
    assert [c["value"] for c in parts["components"]] == pytest.approx([0.0, 0.04, 0.16])
    assert sum(c["value"] for c in parts["components"]) == pytest.approx(0.2)
    assert "train-dev" in parts["notes"][0]


def test_threshold_report_moves_sensitivity_and_specificity():
    labels = torch.tensor([0, 0, 0, 1, 1, 1])
    probs = torch.tensor([0.1, 0.4, 0.6, 0.3, 0.7, 0.9])
    low, high = M.threshold_report(labels, probs, 0.25), M.threshold_report(labels, probs, 0.65)
    assert (low["sensitivity"], low["specificity"]) == pytest.approx((1.0, 1 / 3))
    assert (high["sensitivity"], high["specificity"]) == pytest.approx((2 / 3, 1.0))
    two_logit = torch.stack([1 - probs, probs], 1)  # a cross-entropy model's softmax gives the same answers
    assert M.threshold_report(labels, two_logit, 0.65)["sensitivity"] == pytest.approx(2 / 3)
    predictions = {"val": {"labels": labels, "probs": probs}, "test": {"labels": labels, "probs": 1 - probs}}
    report = M.internal_external(predictions, 0.5)
    assert report["val"]["acc"] == pytest.approx(4 / 6) and report["test"]["acc"] == pytest.approx(2 / 6)
    assert report["gap"]["acc"] == pytest.approx(2 / 6)
    roc, aucs = M.roc_points(predictions)  # the app's one ROC, splits named for this page
    assert set(roc["split"]) == {M.SPLIT_TITLES["val"], M.SPLIT_TITLES["test"]}
    assert aucs["val"] == pytest.approx(1 - aucs["test"])  # test's scores are val's, flipped
    points = M.operating_points(report)  # the threshold's dot sits on each curve
    assert {p["split"] for p in points} == {M.SPLIT_TITLES["val"], M.SPLIT_TITLES["test"]}
    for point in points:
        curve = roc[roc["split"] == point["split"]]
        assert (((curve.fpr - point["fpr"]).abs() < 1e-9) & ((curve.tpr - point["tpr"]).abs() < 1e-9)).any()


def test_source_classifier_sees_a_site_shift_and_nothing_without_one():
    site_a = make_split(160, 32, "A", seed=11)
    shifted = make_split(160, 32, "B", seed=12, brightness_shift=40)
    same = make_split(160, 32, "B", seed=13, brightness_shift=0)
    assert M.source_classifier(site_a.images, shifted.images, epochs=8)["auc"] > 0.95
    unshifted = M.source_classifier(site_a.images, same.images, epochs=8)["auc"]
    assert abs(unshifted - 0.5) < 0.2, unshifted


def test_decompose_run_re_evaluates_train_in_eval_mode(run_with_train_dev, bundle):
    store, run_id = run_with_train_dev
    loaded = A.load_run(store, run_id, bundle=bundle)
    parts = M.decompose_run(loaded, threshold=0.5, human_error=0.0)
    kept, _ = M.split_train_dev(bundle.train, 0.25, loaded.config.seed, 2)
    probs = A.predict(loaded.model, loaded.pipeline, kept.images)
    expected_train = 1.0 - float(((probs >= 0.5).long() == kept.labels).float().mean())
    levels = {level["key"]: level["error"] for level in parts["levels"]}
    assert levels["train"] == pytest.approx(expected_train)
    assert "train_dev" in levels and f"{len(kept)} training images" in parts["train_error_how"]
    assert sum(c["value"] for c in parts["components"]) == pytest.approx(levels["test"])


def test_penultimate_features_and_pca(run_with_train_dev, bundle):
    store, run_id = run_with_train_dev
    loaded = A.load_run(store, run_id, bundle=bundle)
    features = M.penultimate_features(loaded.model, loaded.pipeline, bundle.val.images[:5])
    assert features.shape == (5, 32)  # lab4_gap: 32 channels pooled into Linear(32 → 1)
    result = M.feature_pca(loaded)
    assert len(result["rows"]) == len(bundle.val) + len(bundle.test)
    assert {"pc1", "pc2", "source", "class"} <= set(result["rows"][0])
    line = torch.arange(10.0).unsqueeze(1) * torch.tensor([[1.0, 2.0, 3.0]])
    coords, explained = M.pca_2d(line)
    assert explained[0] == pytest.approx(1.0) and coords[:, 1].abs().max() < 1e-4


def test_penultimate_features_leave_the_model_without_hooks():
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 4), nn.ReLU(), nn.Linear(4, 1)).eval()
    pipeline = explore.training.train.InputPipeline(RunConfig(), torch.zeros(0, 1, 1, 1, dtype=torch.uint8))
    features = M.penultimate_features(model, pipeline, torch.zeros(3, 1, 4, 4, dtype=torch.uint8))
    assert features.shape == (3, 4)
    assert not any(m._forward_hooks for m in model.modules())


def test_fix_configs():
    base = RunConfig(data=DataSpec(image_size=64), model="hw3_cnn", epochs=7, augment=("geometry",))
    keys = [fix.key for fix in M.available_fixes(base)]
    assert "no_shortcut" in keys
    configs = dict(zip(keys, M.fix_configs(base, "base-run", keys, epochs=2)))
    assert configs["per_image"].input_norm == "per_image"
    assert configs["histeq"].input_norm == "histeq"
    assert set(configs["intensity_aug"].augment) == {"geometry", "intensity", "noise"}
    assert dict(configs["no_shortcut"].data.synthetic)["shortcut_fraction"] == 0.0
    assert configs["all"].input_norm == "histeq" and dict(configs["all"].data.synthetic)["shortcut_fraction"] == 0.0
    assert all(c.group == "fix:base-run" and c.epochs == 2 for c in configs.values())
    folder = base.replace(data_source="folder:/data/xray")
    assert "no_shortcut" not in [fix.key for fix in M.available_fixes(folder)]


def test_fixes_queue_as_one_group_and_fill_the_table(run_with_train_dev):
    store, run_id = run_with_train_dev
    base = store.load(run_id).config
    manager = JobManager(max_concurrent=1, executor="thread")
    ids = manager.submit(store, M.fix_configs(base, run_id, ["per_image", "histeq"], epochs=1))
    assert manager.wait_idle(timeout=300)
    rows = M.fix_table(store, run_id)
    assert [r["variant"] for r in rows] == ["as trained (baseline)", "per-image standardisation", "histogram equalisation"]
    assert [r["run_id"] for r in rows[1:]] == ids
    for row in rows:
        assert row["status"] == "finished" and row["gap"] == pytest.approx(row["val_acc"] - row["test_acc"])
    assert "input_norm: dataset → histeq" in rows[2]["changes"]


def test_cli_prints_the_report(run_with_train_dev, capsys):
    store, run_id = run_with_train_dev
    assert mismatch_cli.cli_main(["--run", str(store.path(run_id)), "--json", "--human-error", "0.01"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert {"internal_external", "decomposition", "source_classifier"} <= set(report)
    assert report["decomposition"]["human_error"] == 0.01
    assert 0.0 <= report["source_classifier"]["auc"] <= 1.0
    assert mismatch_cli.cli_main(["--run", str(store.path(run_id)), "--threshold", "2"]) == 2


def test_demo_mode_caps_the_fix_runs_on_the_page(run_with_train_dev, bundle, tmp_path, monkeypatch):
    """The page queues through the job manager's gate: 40 epochs per fix become the demo's 15, and it says so."""
    import shutil
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    import pages.common

    store, run_id = run_with_train_dev
    session_runs = tmp_path / "runs" / "session-visitor"  # demo mode: the runs of this browser session
    shutil.copytree(store.path(run_id), session_runs / run_id)
    monkeypatch.setenv("EXPLORE_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("EXPLORE_DEMO_MODE", "1")
    waiting = JobManager(max_concurrent=0, executor="thread")  # the real gate; nothing trains
    monkeypatch.setattr(pages.common, "job_manager", lambda: waiting)
    monkeypatch.setattr(pages.common, "cached_bundle", lambda spec: bundle)
    at = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "pages/mismatch.py"), default_timeout=120)
    at.query_params["session"] = "visitor"
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    at.number_input(key="mismatch_epochs").set_value(40)
    next(b for b in at.button if b.label.startswith("Queue")).click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("epochs capped at 15 (asked 40)" in i.value for i in at.info), ([i.value for i in at.info], [e.value for e in at.error], [w.value for w in at.warning])
    queued = [r for r in RunStore(session_runs).list() if r.run_id != run_id]
    assert queued and all(r.config.epochs == 15 for r in queued)
