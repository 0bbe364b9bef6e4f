"""AppTest for the Train page with the real job queue on tiny in-memory data.

AppTest runs the page in this process; each test gets its own JobManager with the in-process
(thread) executor, so the tiny data handed to the trainer here reaches it: tests wait with
job_manager().wait_idle() or poll the run store.
"""
from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch
from streamlit.testing.v1 import AppTest

import pages.common
from conftest import make_bundle
from explore.data import DataSpec
from explore.training.jobs import JobManager
from explore.training.store import RunStore

TRAIN_PAGE = str(Path(__file__).resolve().parents[1] / "pages/train.py")


@pytest.fixture
def store(runs_dir, monkeypatch) -> RunStore:
    monkeypatch.setenv("EXPLORE_RUNS_DIR", str(runs_dir))
    # Every run the page queues trains on a tiny learnable bundle instead of the 2,400-image synthetic set.
    manager = JobManager(max_concurrent=1, executor="thread",
                         bundles=lambda spec: make_bundle(32, 64, 32, 32, spec.num_classes))
    monkeypatch.setattr(pages.common, "job_manager", lambda: manager)
    yield RunStore(runs_dir)
    manager.wait_idle(120)  # never leave a run training into the next test
    manager.close()


def run_page(at: AppTest) -> AppTest:
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def new_page() -> AppTest:
    return run_page(AppTest.from_file(TRAIN_PAGE, default_timeout=60))


def shown_runs(at: AppTest) -> list[str]:
    value = at.query_params.get("run", [])
    return [value] if isinstance(value, str) else list(value)


def wait_for(predicate, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError("timed out")


def test_custom_run_goes_on_when_a_widget_changes(store):
    at = new_page()
    at.number_input(key="epochs").set_value(3)
    at.select_slider(key="lr").set_value(3e-3)
    at.button(key="train_custom").click()
    run_page(at)
    [run_id] = shown_runs(at)
    assert store.load(run_id).config.lr == 3e-3 and store.load(run_id).config.epochs == 3
    # Change widgets while it trains: same run, nothing new queued, nothing restarted.
    at.select_slider(key="lr").set_value(1e-4)
    run_page(at)
    at.selectbox(key="optimizer").set_value("sgd")
    run_page(at)
    assert shown_runs(at) == [run_id] and store.run_ids() == [run_id]
    assert pages.common.job_manager().wait_idle(120)
    run_page(at)
    record = store.load(run_id)
    assert record.state == "finished"
    assert [m["epoch"] for m in record.metrics] == [1, 2, 3]  # one pass of 3 epochs: never restarted
    assert any("trained 3 epochs" in s.value for s in at.success)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["val accuracy"] == f"{record.summary['val_acc']:.1%}"
    assert metrics["test AUC"] == f"{record.summary['splits']['test']['auc']:.3f}"
    assert len(at.get("vega_lite_chart")) >= 5  # loss, accuracy, 2 confusion matrices, ROC


def test_stop_ends_the_run_and_keeps_what_it_learned(store):
    at = new_page()
    at.number_input(key="epochs").set_value(300)
    at.button(key="train_custom").click()
    run_page(at)
    [run_id] = shown_runs(at)
    wait_for(lambda: len(store.load(run_id).metrics) >= 1)
    run_page(at)
    assert any(p.value > 0 for p in at.get("progress")) or store.load(run_id).state == "running"
    at.button(key=f"stop-{run_id}").click()
    run_page(at)
    assert pages.common.job_manager().wait_idle(60)
    record = store.load(run_id)
    assert record.state == "stopped" and 1 <= len(record.metrics) < 300
    assert (record.path / "weights.pt").exists()  # what was learned is kept
    run_page(at)
    assert any("stopped by the user" in i.value for i in at.info)


def test_preset_queues_its_runs_as_one_group_in_order(store):
    at = new_page()
    assert at.checkbox(key="quick").value == (not torch.cuda.is_available())  # quick by default on a CPU
    at.selectbox(key="preset").set_value("hw2_bce_vs_ce")
    at.checkbox(key="quick").check()
    at.checkbox(key="preset_own_size").check()
    run_page(at)
    assert any("quick variant" in c.value for c in at.caption)  # the page says when quick is used
    at.button(key="train_preset").click()
    run_page(at)
    run_ids = shown_runs(at)
    assert len(run_ids) == 2
    configs = [store.load(r).config for r in run_ids]
    assert [c.loss for c in configs] == ["bce", "ce"] and {c.group for c in configs} == {"hw2_bce_vs_ce"}
    assert all(c.data == DataSpec() for c in configs)  # the Data page's set, at its own size
    assert pages.common.job_manager().wait_idle(120)
    records = [store.load(r) for r in run_ids]
    assert [r.state for r in records] == ["finished", "finished"]
    assert records[0].status["started"] <= records[1].status["started"]  # in sequence, in order
    run_page(at)
    assert at.selectbox(key="result_pick") is not None


def test_a_config_that_cannot_work_is_an_error_not_a_traceback(store):
    at = AppTest.from_file(TRAIN_PAGE, default_timeout=60)
    at.session_state["data_spec"] = DataSpec(num_classes=3)
    run_page(at)
    at.selectbox(key="preset").set_value("hw2_bce_vs_ce")  # its first run uses BCE: two classes only
    run_page(at)
    assert "BCE needs two classes" in at.error[0].value
    assert not [b for b in at.button if b.key == "train_preset"]  # nothing to start
    at.tabs  # the custom form still works: cross-entropy is the only loss offered
    assert at.radio(key="loss").options == ["cross-entropy (K outputs)"]
    at.number_input(key="epochs").set_value(1)
    at.button(key="train_custom").click()
    run_page(at)
    assert len(store.run_ids()) == 1 and store.load(store.run_ids()[0]).config.loss == "ce"


def test_a_refresh_finds_the_run_from_the_url_and_damaged_folders_do_not_crash(store):
    at = new_page()
    at.number_input(key="epochs").set_value(2)
    at.button(key="train_custom").click()
    run_page(at)
    [run_id] = shown_runs(at)
    assert pages.common.job_manager().wait_idle(120)
    damaged = store.root / "20990101-000000-broken-abcdef"
    damaged.mkdir()
    (damaged / "config.json").write_text("{not json")
    (store.root / "20990101-000001-nonsense-abcdef").mkdir()  # no files at all
    # A new session (a browser refresh) with only the URL.
    fresh = AppTest.from_file(TRAIN_PAGE, default_timeout=60)
    fresh.query_params["run"] = run_id
    run_page(fresh)
    assert any("trained 2 epochs" in s.value for s in fresh.success)
    recent = fresh.dataframe[-1].value
    broken = recent[recent["run"] == damaged.name].iloc[0]
    assert "damaged" in broken["status"] and "config.json is unreadable" in broken["note"]
    assert recent[recent["run"] == run_id].iloc[0]["status"].endswith("finished")
    # A hostile run id in the URL is ignored, not opened.
    hostile = AppTest.from_file(TRAIN_PAGE, default_timeout=60)
    hostile.query_params["run"] = "../../etc"
    run_page(hostile)
    assert not hostile.error and not any(s.value.startswith("Your run") for s in hostile.subheader)


def test_a_stopped_run_without_final_metrics_shows_its_curves_and_message(store):
    """A run that ended before any evaluation still shows its curves (from metrics.jsonl) and why it ended."""
    from explore.training.config import RunConfig

    run_id = store.create(RunConfig(name="hand", epochs=2))
    for epoch in (1, 2):
        store.append_metrics(run_id, {"kind": "epoch", "epoch": epoch, "train_loss": 1.0 / epoch,
                                      "train_acc": 0.6, "val_loss": 1.2 / epoch, "val_acc": 0.55})
    store.set_status(run_id, status="stopped")
    store.save_results(run_id, {"status": "stopped", "message": "stopped by hand"}, None, None)
    at = AppTest.from_file(TRAIN_PAGE, default_timeout=60)
    at.query_params["run"] = run_id
    run_page(at)
    assert len(at.get("vega_lite_chart")) == 2  # loss and accuracy; no per-split tables to show
    assert any("stopped by hand" in i.value for i in at.info)
    assert not at.metric


class QueueOnly:
    """A stand-in JobManager that reports every run as queued at a fixed position and trains nothing."""

    def __init__(self, position: int):
        self.position, self.stopped = position, []

    def queue_position(self, run_id):
        return self.position

    def estimated_wait(self, run_id):
        return 150.0

    def active(self):
        return {"running": [], "queued": ["x"]}

    def stop(self, run_id):
        self.stopped.append(run_id)
        return True

    def wait_idle(self, timeout):
        return True


def test_a_queued_run_says_how_many_runs_are_ahead(store, monkeypatch):
    from explore.training.config import RunConfig

    fake = QueueOnly(position=3)
    monkeypatch.setattr(pages.common, "job_manager", lambda: fake)
    run_id = store.create(RunConfig(name="waiting", epochs=1))
    at = AppTest.from_file(TRAIN_PAGE, default_timeout=60)
    at.query_params["run"] = run_id
    run_page(at)
    assert any("waiting: 2 runs ahead · starts in about 2 min" in m.value for m in at.markdown)
    at.button(key=f"stop-{run_id}").click()
    run_page(at)
    assert fake.stopped == [run_id]


@pytest.mark.parametrize("status, message, alert", [
    ("diverged", "the loss became 3.1e+05 in epoch 2, batch 4: ... Try a lower learning rate (now 1).", "warning"),
    ("failed", "DataError: folder not found: /gone", "error"),
])
def test_how_a_run_ended_is_said_plainly(store, status, message, alert):
    from explore.training.config import RunConfig

    run_id = store.create(RunConfig(name=status, epochs=3))
    store.set_status(run_id, status=status, message=message)
    store.save_results(run_id, {"status": status, "message": message, "epochs_completed": 1}, None, None)
    at = AppTest.from_file(TRAIN_PAGE, default_timeout=60)
    at.query_params["run"] = run_id
    run_page(at)
    shown = [a.value for a in getattr(at, alert)]
    assert any(message in text for text in shown), shown


def test_demo_mode_caps_runs_and_says_so(store, monkeypatch):
    monkeypatch.setenv("EXPLORE_DEMO_MODE", "1")
    at = new_page()
    assert at.number_input(key="epochs").max == 15
    at.selectbox(key="preset").set_value("hw3_baseline")
    at.checkbox(key="quick").uncheck()  # the full preset: 30 epochs at 256 px
    run_page(at)
    at.button(key="train_preset").click()
    run_page(at)
    assert any("epochs capped at 15" in i.value and "image size capped at 128" in i.value for i in at.info)
    [run_id] = shown_runs(at)
    sessions = list(store.root.glob("session-*"))  # demo mode keeps each browser session's runs apart
    assert len(sessions) == 1
    config = RunStore(sessions[0]).load(run_id).config
    assert (config.epochs, config.data.image_size) == (15, 128)
    pages.common.job_manager().stop(run_id)


def test_a_shared_link_opens_its_configuration(store):
    from explore.training.config import RunConfig
    from explore.training.share import encode_config

    config = RunConfig(model="lab4_gap", lr=3e-4, epochs=1, data=DataSpec(image_size=64), name="from a link")
    at = AppTest.from_file(TRAIN_PAGE, default_timeout=60)
    at.query_params["config"] = encode_config(config)
    run_page(at)
    at.button(key="train_shared").click()
    run_page(at)
    [run_id] = shown_runs(at)
    assert store.load(run_id).config.model == "lab4_gap" and store.load(run_id).config.lr == 3e-4


def test_a_damaged_link_is_a_message_not_a_crash(store):
    at = AppTest.from_file(TRAIN_PAGE, default_timeout=60)
    at.query_params["config"] = "not-a-config"
    run_page(at)
    assert any("cannot be read" in e.value for e in at.error)


def test_a_preset_link_preselects_the_preset(store):
    at = AppTest.from_file(TRAIN_PAGE, default_timeout=60)
    at.query_params["preset"] = "hw3_gap"
    run_page(at)
    assert at.selectbox(key="preset").value == "hw3_gap"


def test_a_finished_run_offers_its_link_and_bundle(store):
    at = new_page()
    at.number_input(key="epochs").set_value(1)
    at.button(key="train_custom").click()
    run_page(at)
    assert pages.common.job_manager().wait_idle(120)
    run_page(at)
    [run_id] = shown_runs(at)
    link = at.text_input(key=f"link-{run_id}").value
    assert link.startswith("?config=")
    from explore.training.share import decode_config

    assert decode_config(link.removeprefix("?config=")) == store.load(run_id).config


def test_demo_mode_caps_a_custom_run_and_refuses_more_than_a_session_may_queue(store, monkeypatch):
    """The gate is the job manager's: the page only shows the cap it applied, or its refusal."""
    monkeypatch.setenv("EXPLORE_DEMO_MODE", "1")
    monkeypatch.setenv("EXPLORE_MAX_QUEUED_PER_SESSION", "1")
    waiting = JobManager(max_concurrent=0, executor="thread")  # runs wait in the queue: the cap stays reached
    monkeypatch.setattr(pages.common, "job_manager", lambda: waiting)
    at = AppTest.from_file(TRAIN_PAGE, default_timeout=60)
    at.session_state["data_spec"] = DataSpec(image_size=256)  # above the demo's 128 px
    run_page(at)
    at.button(key="train_custom").click()
    run_page(at)
    assert any("image size capped at 128 px (asked 256)" in i.value for i in at.info)
    [run_id] = shown_runs(at)
    config = RunStore(next(store.root.glob("session-*"))).load(run_id).config
    assert config.data.image_size == 128
    at.button(key="train_custom").click()
    run_page(at)
    assert any("at most 1 of your runs may be queued or training at once" in e.value for e in at.error)
    assert shown_runs(at) == [run_id]  # the refused request queued nothing
