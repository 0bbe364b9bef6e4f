"""AppTest: the Train page in multi-label mode (custom run with several findings, per-label results)."""
from __future__ import annotations

from dataclasses import replace

import pytest
import torch

import pages.common
from conftest import make_bundle
from explore.training.jobs import JobManager
from explore.training.store import RunStore
from test_page_train import new_page, run_page


def bundle_with_findings(spec):
    """The tiny learnable bundle, plus two findings when the spec asks for them (random, 1 in 3 images)."""
    bundle = make_bundle(32, 64, 32, 32, spec.num_classes)
    if not spec.findings:
        return bundle
    g = torch.Generator().manual_seed(5)
    splits = {name: replace(s, findings=(torch.rand(len(s), 2, generator=g) < 0.34).float())
              for name, s in bundle.splits.items()}
    return replace(bundle, splits=splits, finding_names=("cardiomegaly", "effusion"))


@pytest.fixture
def store(runs_dir, monkeypatch) -> RunStore:
    monkeypatch.setenv("EXPLORE_RUNS_DIR", str(runs_dir))
    manager = JobManager(max_concurrent=1, executor="thread", bundles=bundle_with_findings)
    monkeypatch.setattr(pages.common, "job_manager", lambda: manager)
    yield RunStore(runs_dir)
    manager.wait_idle(120)
    manager.close()


def test_a_multi_label_custom_run_shows_results_per_finding(store):
    at = new_page()
    at.checkbox(key="mt_on").check()
    run_page(at)
    assert at.multiselect(key="mt_tasks").value == ["pneumonia", "cardiomegaly", "effusion"]
    at.select_slider(key="mt_share").set_value(0.5)
    at.number_input(key="epochs").set_value(2)
    at.button(key="train_custom").click()
    run_page(at)
    [run_id] = store.run_ids()
    config = store.load(run_id).config
    assert config.tasks == ("pneumonia", "cardiomegaly", "effusion") and config.data.findings
    assert config.pneumonia_label_fraction == 0.5
    assert config.name.endswith("pneumonia + cardiomegaly + effusion · 50% of pneumonia labels")  # says what it is
    assert pages.common.job_manager().wait_idle(120)
    run_page(at)
    record = store.load(run_id)
    assert record.state == "finished" and "val_auc_effusion" in record.metrics[-1]
    metrics = {m.label: m.value for m in at.metric}
    for task in config.tasks:
        value = record.summary["splits"]["val"]["labels"][task]["auc"]
        assert metrics[f"{task} · val AUC"] == ("—" if value is None else f"{value:.3f}")
    table = next(df.value for df in at.dataframe if "task" in df.value.columns)
    assert list(table["task"]) == list(config.tasks) * 2  # val and test
    assert [t.label for t in at.tabs if t.label.startswith("confusion")] == [f"confusion · {t}" for t in config.tasks]
    assert len(at.get("vega_lite_chart")) >= 3 + 2 * 3  # curves, AUC per epoch, 2 confusion per finding, ROC


def test_the_multi_task_preset_brings_its_data_with_findings(store):
    at = new_page()
    at.selectbox(key="preset").set_value("lecture_multitask")
    run_page(at)
    assert any("pneumonia + cardiomegaly + effusion" in str(df.value) for df in at.dataframe)
    assert any("brings its own data" in c.value and "with findings (cardiomegaly, effusion)" in c.value
               for c in at.caption)
