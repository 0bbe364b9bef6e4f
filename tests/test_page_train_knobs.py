"""Train page (issue 15): the LR finder, the train-dev hold-out, batch norm and honest transfer weights."""
from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

import pages.common
from conftest import make_bundle
from explore.data import DataSpec
from explore.training.jobs import JobManager
from explore.training.store import RunStore

TRAIN_PAGE = str(Path(__file__).resolve().parents[1] / "pages/train.py")
SPEC = DataSpec(image_size=32, seed=1515)  # its own cache key: the page's shared cache never mixes it up


@pytest.fixture
def store(runs_dir, monkeypatch) -> RunStore:
    monkeypatch.setenv("EXPLORE_RUNS_DIR", str(runs_dir))
    tiny = lambda spec: make_bundle(32, 64, 32, 32, spec.num_classes)  # noqa: E731
    monkeypatch.setattr(pages.common, "load_bundle", tiny)  # the page's own look at the data (the LR finder)
    manager = JobManager(max_concurrent=1, executor="thread", bundles=tiny)  # the runs it queues  # in this process, so the tiny data reaches it
    monkeypatch.setattr(pages.common, "job_manager", lambda: manager)
    yield RunStore(runs_dir)
    manager.wait_idle(120)


def custom_page() -> AppTest:
    at = AppTest.from_file(TRAIN_PAGE, default_timeout=120)
    at.session_state["data_spec"] = SPEC
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def click(at: AppTest, key: str) -> AppTest:
    at.button(key=key).click().run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_lr_finder_suggests_a_rate_and_trains_nothing(store):
    at = custom_page()
    at.selectbox(key="model").set_value("cnn").run()
    click(at, "find_lr")
    result = at.session_state["lr_finder"]
    assert result["for"] == "cnn" and len(result["points"]) > 5 and result["suggested_lr"] > 0
    assert any("Suggested learning rate" in m.value for m in at.markdown)
    assert store.run_ids() == []  # the range test is not a run
    click(at, "use_suggested_lr")
    assert f"Use {at.select_slider(key='lr').value:g}" == at.button(key="use_suggested_lr").label


def test_custom_run_holds_out_train_dev_with_batch_norm(store):
    at = custom_page()
    at.selectbox(key="model").set_value("cnn").run()
    at.checkbox(key="batch_norm").check()
    at.number_input(key="train_dev").set_value(20)
    at.number_input(key="epochs").set_value(1)
    click(at, "train_custom")
    pages.common.job_manager().wait_idle(120)
    (record,) = [store.load(i) for i in store.run_ids()]
    assert record.config.train_dev_fraction == 0.2 and record.config.options()["batch_norm"] is True
    assert "batch norm" in record.config.name
    assert "train_dev_acc" in record.metrics[-1]  # the held-out set was evaluated every epoch


def test_missing_imagenet_weights_are_said_before_queueing_and_in_the_name(store, tmp_path, monkeypatch):
    monkeypatch.setenv("EXPLORE_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "no-weights"))
    at = custom_page()
    at.selectbox(key="model").set_value("mobilenet_v3_small").run()
    assert any("(random init)" in w.value for w in at.warning)  # before anything is queued
    at.number_input(key="epochs").set_value(1)
    at.selectbox(key="transfer_mode").set_value("finetune")
    click(at, "train_custom")
    pages.common.job_manager().wait_idle(180)
    (record,) = [store.load(i) for i in store.run_ids()]
    assert record.config.name.endswith("(random init)") and record.config.pretrained is False
    assert record.label.endswith("(random init)")


def test_three_classes_report_per_class_open_cells_and_reproduce(store):
    import shlex

    from explore.cli.train import build_parser, configs_from_args

    at = AppTest.from_file(TRAIN_PAGE, default_timeout=120)
    at.session_state["data_spec"] = DataSpec(image_size=32, seed=1515, num_classes=3)
    at.run()
    at.selectbox(key="model").set_value("cnn").run()
    at.number_input(key="epochs").set_value(2)
    click(at, "train_custom")
    pages.common.job_manager().wait_idle(120)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    (run_id,) = store.run_ids()
    per_class = next(d.value for d in at.dataframe if "f1" in d.value.columns)
    assert list(per_class["class"][:3]) == ["NORMAL", "BACTERIAL", "VIRAL"]
    summary = store.load(run_id).summary
    confusion = summary["splits"]["test"]["confusion"]
    assert len(confusion) == 3 and all(len(row) == 3 for row in confusion)
    # a cell with images opens them
    t, p = next((t, p) for t in range(3) for p in range(3) if confusion[t][p])
    click(at, f"cell-{run_id}-test-{t}-{p}")
    assert len(at.get("image")) >= 1
    assert any("true " in m.value and "predicted " in m.value for m in at.markdown)
    # the reproduce command trains the same settings
    (command,) = [c.value for c in at.code if "python -m explore train" in c.value]
    (again,) = configs_from_args(build_parser().parse_args(shlex.split(command)[4:]))
    assert again == store.load(run_id).config
    assert summary["code_version"].startswith("0.")
