"""The instructor's class view: the library functions, the job manager's overview, and the page (AppTest)."""
from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

import pages.common
from conftest import make_bundle
from explore import charts
from explore.insight import classview
from explore.training.config import RunConfig
from explore.data import DataSpec
from explore.training.jobs import JobManager
from explore.settings import instructor_allowed, load_settings
from explore.training.store import RunStore
from test_compare import write_run

ROOT = Path(__file__).resolve().parents[1]
PAGE = str(ROOT / "pages/instructor.py")
TOKEN = "lecture-7-secret"
CNN = RunConfig(data=DataSpec(image_size=32), model="hw3_cnn", epochs=3, name="my cnn")
MLP = RunConfig(data=DataSpec(image_size=32), model="hw2_mlp", epochs=3, name="my mlp", group="hw2_baseline")


@pytest.fixture
def two_sessions(runs_dir):
    """Two students' namespaces: A has a CNN and an MLP finished, B a CNN finished and one still running."""
    a = RunStore(runs_dir, namespace="session-aaaa1111")
    b = RunStore(runs_dir, namespace="session-bbbb2222")
    ids = {"a_cnn": write_run(a, CNN, val_accs=(0.8, 0.9), test_acc=0.7),
           "a_mlp": write_run(a, MLP, val_accs=(0.7, 0.75), test_acc=0.72)}
    time.sleep(1.1)  # run ids carry the second they were made: B's first run comes after A's
    ids["b_cnn"] = write_run(b, CNN.replace(name="b cnn"), val_accs=(0.85,), test_acc=0.6)
    ids["b_running"] = write_run(b, CNN.replace(name="still going"), status="running")
    write_run(b, CNN.replace(name="broke"), status="failed")
    return runs_dir, ids


# ----- settings ---------------------------------------------------------------------------
def test_token_comes_from_the_environment_and_must_match():
    settings = load_settings({"EXPLORE_INSTRUCTOR_TOKEN": TOKEN})
    assert instructor_allowed(settings, TOKEN)
    assert not instructor_allowed(settings, "wrong") and not instructor_allowed(settings, None)
    assert not instructor_allowed(settings, TOKEN[:-1])
    assert TOKEN not in repr(settings)  # never printed in logs or tracebacks
    off = load_settings({})
    assert off.instructor_token is None and not instructor_allowed(off, "") and not instructor_allowed(off, "x")


# ----- the library ------------------------------------------------------------------------
def test_class_runs_lists_every_sessions_finished_runs_anonymously(two_sessions):
    root, ids = two_sessions
    runs = classview.class_runs(root)
    assert set(runs.run_id) == {ids["a_cnn"], ids["a_mlp"], ids["b_cnn"]}  # not running, not failed
    by_id = runs.set_index("run_id")
    assert by_id.loc[ids["a_cnn"], "session"] == by_id.loc[ids["a_mlp"], "session"] == "student 1"
    assert by_id.loc[ids["b_cnn"], "session"] == "student 2"
    assert by_id.loc[ids["a_cnn"], "val_acc"] == 0.9 and by_id.loc[ids["a_cnn"], "test_acc"] == 0.7
    assert by_id.loc[ids["a_cnn"], "drop"] == pytest.approx(0.2)
    assert by_id.loc[ids["a_mlp"], "preset"] != classview.CUSTOM  # queued from a course preset
    assert by_id.loc[ids["a_cnn"], "preset"] == classview.CUSTOM
    text = runs.to_csv()
    assert "aaaa1111" not in text and "bbbb2222" not in text  # session ids are keys to students' runs


def test_runs_without_sessions_and_an_empty_root(runs_dir, tmp_path):
    assert classview.class_runs(tmp_path / "missing").empty
    run_id = write_run(RunStore(runs_dir), CNN)
    runs = classview.class_runs(runs_dir)
    assert list(runs.run_id) == [run_id] and runs.session[0] == "this server (no session)"


def test_summary_counts_runs_below_the_diagonal(two_sessions):
    summary = classview.class_summary(classview.class_runs(two_sessions[0]))
    assert summary["runs"] == 3 and summary["sessions"] == 2 and summary["below_diagonal"] == 3
    assert summary["val_acc"] == pytest.approx((0.9 + 0.75 + 0.85) / 3)
    assert summary["drop"] == pytest.approx(summary["val_acc"] - summary["test_acc"])
    assert classview.class_summary(pd.DataFrame(columns=classview.RUN_COLUMNS))["runs"] == 0


def test_scatter_has_the_diagonal_and_colours_by_the_choice(two_sessions):
    runs = classview.class_runs(two_sessions[0])
    spec = charts.class_scatter(runs, color="preset").to_dict()
    marks = [layer["mark"]["type"] if isinstance(layer["mark"], dict) else layer["mark"] for layer in spec["layer"]]
    assert marks == ["line", "text", "circle"]
    dots = spec["layer"][2]["encoding"]
    assert dots["x"]["field"] == "val_acc" and dots["y"]["field"] == "test_acc" and dots["color"]["field"] == "preset"
    assert dots["x"]["scale"]["domain"] == dots["y"]["scale"]["domain"] == spec["layer"][0]["encoding"]["x"]["scale"]["domain"]
    normal, big = spec, charts.class_scatter(runs, projector=True).to_dict()
    assert big["width"] > normal["width"] and big["config"]["axis"]["labelFontSize"] > normal["config"]["axis"]["labelFontSize"]
    with pytest.raises(ValueError):
        charts.class_scatter(runs, color="session_id")


def test_server_memory_counts_this_process():
    memory = classview.server_memory_mb()
    assert memory["server_mb"] > 20 and memory["total_mb"] >= memory["server_mb"] and memory["children_mb"] >= 0


# ----- the job manager's overview ----------------------------------------------------------
def test_overview_shape_queues_by_session_and_cancel(runs_dir, register_data):
    tiny = register_data(make_bundle(size=32, n_train=64, n_val=32, n_test=32))
    a, b = RunStore(runs_dir, namespace="session-a"), RunStore(runs_dir, namespace="session-b")
    manager = JobManager(max_concurrent=1, executor="thread")  # in this process: the registered data reaches it
    [long_run] = manager.submit(a, [CNN.replace(epochs=500, batch_size=8, precision="fp32", data=tiny)])
    queued_a = manager.submit(a, [CNN.replace(epochs=1, data=tiny)])
    queued_b = manager.submit(b, [CNN.replace(epochs=1, data=tiny)])
    deadline = time.monotonic() + 30
    while manager.overview()["workers"][0]["run_id"] != long_run and time.monotonic() < deadline:
        time.sleep(0.05)
    overview = manager.overview()
    assert overview["workers"] == [{"index": 0, "device": overview["workers"][0]["device"], "pid": os.getpid(),
                                    "run_id": long_run, "node": socket.gethostname()}]
    assert overview["running"] == {long_run: "session-a"}
    assert overview["queues"] == {"session-a": queued_a, "session-b": queued_b}
    json.dumps(overview)  # plain data, as the process-based manager will send it

    labels = classview.session_labels(runs_dir)
    queue = classview.queue_rows(overview, runs_dir, labels)
    assert list(queue.state) == ["running", "queued #1", "queued #1"]
    assert set(queue.session) == {"student 1", "student 2"}
    workers = classview.worker_rows(overview, runs_dir, labels)
    assert workers.run[0] == "my cnn" and workers.session[0] == labels["session-a"]

    assert manager.stop(queued_b[0]) and manager.stop(long_run)  # the instructor cancels any session's run
    assert manager.wait_idle(timeout=60)
    assert b.load(queued_b[0]).state == "stopped" and a.load(long_run).state == "stopped"
    assert manager.overview() == {"workers": [{"index": 0, "device": overview["workers"][0]["device"],
                                               "pid": None, "run_id": None, "node": socket.gethostname()}],
                                  "queues": {}, "running": {}}  # idle


# ----- the page ---------------------------------------------------------------------------
class QuietJobs:
    def __init__(self):
        self.stopped = []

    def overview(self):
        return {"workers": [{"index": 0, "device": "cpu", "pid": os.getpid(), "run_id": None}], "queues": {},
                "running": {}}

    def stop(self, run_id):
        self.stopped.append(run_id)
        return True


@pytest.fixture
def page_env(two_sessions, monkeypatch):
    root, ids = two_sessions
    monkeypatch.setenv("EXPLORE_RUNS_DIR", str(root))
    monkeypatch.setenv("EXPLORE_INSTRUCTOR_TOKEN", TOKEN)
    monkeypatch.setattr(pages.common, "job_manager", lambda: QuietJobs())
    return ids


def open_page(token: str | None) -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=60)
    if token is not None:
        at.query_params["token"] = token
    return at.run()


def test_page_with_the_token_shows_both_sessions_runs(page_env):
    at = open_page(TOKEN)
    assert not at.exception and not at.error
    [chart] = at.get("vega_lite_chart")
    from test_pages_compare import chart_data

    data = chart_data(chart).dropna(subset=["run_id"])  # the diagonal and its label are datasets too
    assert set(page_env[k] for k in ("a_cnn", "a_mlp", "b_cnn")) <= set(data.run_id)
    assert set(data.session) == {"student 1", "student 2"}
    assert at.metric[0].value == "3" and at.metric[1].value == "2"
    assert any("memory" in m.label for m in at.metric)
    at.toggle(key="projector").set_value(True).run()
    assert not at.exception
    assert any("font-size" in m.value for m in at.markdown)


@pytest.mark.parametrize("token", [None, "wrong", TOKEN.upper()])
def test_page_without_the_right_token_is_refused(page_env, token):
    at = open_page(token)
    assert at.error and "instructor only" in at.error[0].value
    assert not at.get("vega_lite_chart") and not at.metric and not at.dataframe


def test_page_is_refused_when_no_token_is_configured(page_env, monkeypatch):
    monkeypatch.delenv("EXPLORE_INSTRUCTOR_TOKEN")
    at = open_page(TOKEN)
    assert at.error and not at.get("vega_lite_chart")


class BusyJobs(QuietJobs):
    """One run training for student 2, one queued for student 1."""

    def __init__(self, running: str, queued: str):
        super().__init__()
        self.running, self.queued = running, queued

    def overview(self):
        return {"workers": [{"index": 0, "device": "cpu", "pid": os.getpid(), "run_id": self.running}],
                "queues": {"session-aaaa1111": [self.queued]}, "running": {self.running: "session-bbbb2222"}}


def test_page_shows_the_queue_by_session_and_cancels_any_run(page_env, monkeypatch):
    queued = write_run(RunStore(os.environ["EXPLORE_RUNS_DIR"], namespace="session-aaaa1111"),
                       CNN.replace(name="waiting"), status="queued")
    jobs = BusyJobs(page_env["b_running"], queued)
    monkeypatch.setattr(pages.common, "job_manager", lambda: jobs)
    at = open_page(TOKEN)
    assert not at.exception
    queue, workers = at.dataframe[0].value, at.dataframe[1].value
    assert list(queue.state) == ["running", "queued #1"] and list(queue.session) == ["student 2", "student 1"]
    assert list(queue.name) == ["still going", "waiting"]
    assert workers.run[0] == "still going" and workers.session[0] == "student 2"
    at.selectbox(key="cancel_pick").set_value(queued).run()
    at.button(key="cancel").click().run()
    assert jobs.stopped == [queued]
