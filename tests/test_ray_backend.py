"""Runs on a Ray cluster (explore.training.ray_backend): the same gate, queue and Stop as local workers.

With `ray` installed, a local Ray instance (2 CPUs, started once for this module) trains runs
through the Ray backend: their curves, weights and predictions arrive in the server's store; a
run stops mid-run; a run whose Ray worker process is killed ends failed naming its node while the
next run finishes. Without `ray` those tests are skipped; the tests of the pieces that need no
cluster (the forwarding store, the data plan, the settings) always run.
"""
from __future__ import annotations

import os
import signal
import socket
import time

import pytest
import torch

from conftest import wait_for
from explore.training.config import RunConfig
from explore.data import DataSpec, load_bundle
from explore.data.disk_cache import bundle_from_payload
from explore.training.jobs import JobManager, execute_run
from explore.training.ray_backend import ForwardingStore, data_for_nodes, missing_on_node, write_record
from explore.settings import AppSettings, load_settings
from explore.training.store import RunStore

try:
    import ray
except ImportError:
    ray = None

needs_ray = pytest.mark.skipif(ray is None, reason='ray is not installed: pip install "explore[cluster]" '
                                                   "to run the Ray backend tests")

# Small enough to generate on the Ray worker in well under a second (workers cannot see data
# built in this process, so these tests use the real synthetic source, regenerated from its spec).
SMALL = DataSpec(image_size=64, synthetic=(("n_train", 96), ("n_val", 32), ("n_test", 32)))


def cfg(**kw) -> RunConfig:
    return RunConfig(**(dict(data=SMALL, model="lab4_gap", epochs=1, batch_size=8) | kw))


# ----- the pieces, no cluster needed ---------------------------------------------------------

def test_the_records_a_node_streams_back_rebuild_the_run_folder(runs_dir, tiny_bundle):
    """What a Ray task sends (every store write as a record) makes the same run folder on the server
    as training straight into the store."""
    config = RunConfig(model="lab4_gap", epochs=2, batch_size=16, data=DataSpec(image_size=64))
    server = RunStore(runs_dir)
    run_id = server.create(config)
    node_side = ForwardingStore(run_id, config)
    streamed = []
    for _ in execute_run(node_side, run_id, device=None, bundle=tiny_bundle):
        streamed += node_side.take()
    streamed += node_side.take()
    for item in streamed:
        write_record(server, run_id, item, {"executor": "ray", "node": "gpu-box-1"})

    record = server.load(run_id)
    assert record.state == "finished" and len(record.metrics) == 2
    assert [m["epoch"] for m in record.metrics] == [1, 2]
    assert record.summary["executor"] == "ray" and record.summary["node"] == "gpu-box-1"
    assert record.status["status"] == "finished" and record.status["pid"] == os.getpid()
    model, _ = server.load_model(run_id)  # the weights arrived whole and fit the model
    assert sum(p.numel() for p in model.parameters()) == record.summary["params_total"]
    predictions = server.load_predictions(run_id)
    assert predictions["test"]["probs"].shape[0] == len(tiny_bundle.test)


def test_data_plan_synthetic_is_made_on_the_node_small_files_travel_large_ones_must_be_there(make_npz_dataset):
    assert data_for_nodes(cfg(), ship_mb=256) == (None, None)  # regenerated from its spec on each node

    npz = RunConfig(model="lab4_gap", data=DataSpec(source=f"medmnist:{make_npz_dataset}", image_size=64))
    payload, note = data_for_nodes(npz, ship_mb=256)
    assert note is None
    sent = bundle_from_payload(payload)
    here = load_bundle(npz.data)
    assert sent.classes == here.classes and torch.equal(sent.train.images, here.train.images)

    payload, note = data_for_nodes(npz, ship_mb=0)  # over the limit: the node must have the file
    assert payload is None and "EXPLORE_RAY_SHIP_MB" in note
    missing = RunConfig(model="lab4_gap", data=DataSpec(source="folder:/no/such/xray", image_size=64))
    payload, note = data_for_nodes(missing, ship_mb=256)
    assert payload is None and "not on the server" in note
    message = missing_on_node(missing, {"node": "gpu-box-2", "node_ip": "10.0.0.7"}, note)
    assert "folder:/no/such/xray" in message and "gpu-box-2" in message and "same path" in message
    assert missing_on_node(npz, {"node": "n", "node_ip": "ip"}, None) is None  # present here


def test_settings_choose_the_backend(monkeypatch):
    assert load_settings({}).ray_address is None
    settings = load_settings({"EXPLORE_RAY_ADDRESS": " 10.0.0.1:6379 ", "EXPLORE_RAY_SHIP_MB": "64"})
    assert settings.ray_address == "10.0.0.1:6379" and settings.ray_ship_mb == 64
    monkeypatch.delenv("EXPLORE_EXECUTOR", raising=False)
    local = JobManager(max_concurrent=0, settings=AppSettings())  # no address: local worker processes
    assert local.executor == "process"
    local.close()


def test_without_ray_a_ray_address_is_a_clear_error(monkeypatch):
    from explore.training.ray_backend import ClusterError

    monkeypatch.setitem(__import__("sys").modules, "ray", None)  # as if ray were not installed
    with pytest.raises(ClusterError, match=r"explore\[cluster\]"):
        JobManager(max_concurrent=0, settings=AppSettings(ray_address="auto"))


def test_the_train_page_says_plainly_when_the_cluster_cannot_be_reached(tmp_path, monkeypatch):
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    with socket.socket() as probe:  # a free port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("EXPLORE_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("EXPLORE_RAY_ADDRESS", f"127.0.0.1:{port}")
    monkeypatch.delenv("EXPLORE_EXECUTOR", raising=False)
    if ray is not None and ray.is_initialized():
        pytest.skip("this process is connected to a Ray instance already")
    page = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "pages/train.py"), default_timeout=60)
    page.run()
    assert not page.exception, [e.value for e in page.exception]
    assert any(f"no Ray cluster answers at 127.0.0.1:{port}" in error.value for error in page.error)


# ----- a local Ray instance ------------------------------------------------------------------

@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    if ray is None:
        pytest.skip('ray is not installed: pip install "explore[cluster]" to run the Ray backend tests')
    with pytest.MonkeyPatch.context() as patch:
        # The Ray workers start as children of this process: they inherit the node's data cache folder.
        patch.setenv("EXPLORE_CACHE_DIR", str(tmp_path_factory.mktemp("node-cache")))
        patch.setenv("RAY_AUTH_MODE", "disabled")
        # address="local": always a fresh instance of our own, never a cluster already running here
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
        try:
            yield ray
        finally:
            ray.shutdown()


@pytest.fixture(scope="module")
def manager(cluster):
    jobs = JobManager(settings=AppSettings(ray_address="auto"))  # the backend chosen by the setting
    yield jobs
    jobs.close()


@needs_ray
def test_two_runs_train_on_ray_workers_and_their_curves_reach_the_store(tmp_path, manager):
    assert manager.executor == "ray" and manager.max_concurrent == 2  # one slot per cluster CPU
    store = RunStore(tmp_path / "runs")
    run_ids = manager.submit(store, [cfg(epochs=2), cfg(epochs=2, seed=1)])
    assert manager.wait_idle(timeout=240)
    for run_id in run_ids:
        record = store.load(run_id)
        assert record.state == "finished", record.summary
        assert [m["epoch"] for m in record.metrics] == [1, 2]
        assert record.summary["executor"] == "ray" and record.summary["node"] == socket.gethostname()
        assert record.summary["device"].startswith("CPU") and "node_ip" in record.summary
        assert record.status["executor"] == "ray" and record.status["pid"] != os.getpid()
        assert store.load_weights(run_id) and "test" in store.load_predictions(run_id)
    workers = manager.overview()["workers"]
    assert len(workers) == 2 and all("node" in worker for worker in workers)


@needs_ray
def test_stop_reaches_the_ray_task_and_the_run_keeps_its_curves(tmp_path, manager):
    store = RunStore(tmp_path / "runs")
    [run_id] = manager.submit(store, [cfg(epochs=500)])
    wait_for(lambda: store.load(run_id).metrics, timeout=180)  # an epoch done: curves on the server
    overview = manager.overview()
    [busy] = [w for w in overview["workers"] if w["run_id"] == run_id]
    assert busy["node"] == socket.gethostname() and busy["device"] == "CPU"
    assert busy["pid"] == store.load(run_id).status["pid"]
    assert manager.stop(run_id)
    assert manager.wait_idle(timeout=60)
    record = store.load(run_id)
    assert record.state == "stopped", record.summary
    assert 1 <= len(record.metrics) < 500 and record.summary["executor"] == "ray"


@needs_ray
def test_a_killed_ray_worker_fails_its_run_naming_the_node_and_the_next_run_finishes(tmp_path, manager):
    store = RunStore(tmp_path / "runs")
    [doomed] = manager.submit(store, [cfg(epochs=500)])
    pid = wait_for(lambda: store.load(doomed, with_metrics=False).status.get("batch")
                   and store.load(doomed, with_metrics=False).status["pid"], timeout=180)  # mid-epoch
    [after] = manager.submit(store, [cfg(epochs=1)])
    os.kill(pid, signal.SIGKILL)  # as a lost node or the out-of-memory killer would
    assert manager.wait_idle(timeout=180)
    record = store.load(doomed)
    assert record.state == "failed"
    assert socket.gethostname() in record.summary["message"] and "died" in record.summary["message"]
    assert record.summary["node"] == socket.gethostname()
    assert store.load(after).state == "finished"
    [again] = manager.submit(store, [cfg(epochs=1)])  # the slot goes on with new runs
    assert manager.wait_idle(timeout=120) and store.load(again).state == "finished"


@needs_ray
def test_the_train_command_uses_the_cluster_when_an_address_is_set(tmp_path, cluster, monkeypatch, capsys,
                                                                   make_npz_dataset):
    """A small npz travels to the worker through Ray's object store (decoded here, sent once)."""
    import json

    from explore.cli.train import cli_main

    monkeypatch.setenv("EXPLORE_RAY_ADDRESS", "auto")  # this process is already connected to the cluster
    code = cli_main(["--model", "lab4_gap", "--epochs", "1", "--size", "64", "--batch-size", "8",
                     "--source", f"medmnist:{make_npz_dataset}", "--runs-dir", str(tmp_path / "runs"), "--json"])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert code == 0 and [line["kind"] for line in lines] == ["epoch", "end"]
    final = lines[-1]
    assert final["status"] == "finished" and final["executor"] == "ray" and final["node"] == socket.gethostname()
    assert RunStore(tmp_path / "runs").load(final["run_id"]).metrics  # the curves in this machine's store


@needs_ray
def test_a_run_queued_from_the_train_page_trains_on_the_cluster_shows_its_node_and_stops(
        tmp_path, manager, monkeypatch):
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    import pages.common

    monkeypatch.setenv("EXPLORE_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("EXPLORE_DEMO_SMALL", "1")  # the small default set: quick to make on the worker
    monkeypatch.setattr(pages.common, "job_manager", lambda: manager)  # the app's manager, on Ray
    page = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "pages/train.py"), default_timeout=60)
    page.run()
    page.number_input(key="epochs").set_value(300)
    page.button(key="train_custom").click()
    page.run()
    assert not page.exception, [e.value for e in page.exception]
    store = RunStore(tmp_path / "runs")
    [run_id] = store.run_ids()
    wait_for(lambda: store.load(run_id).metrics and store.load(run_id, with_metrics=False).status.get("batch"),
             timeout=180)  # live curves and progress arrived from the worker
    page.run()
    progress = [element.proto.text for element in page.get("progress")]
    assert any(f"on {socket.gethostname()}" in text for text in progress), progress
    page.button(key=f"stop-{run_id}").click()
    page.run()
    assert manager.wait_idle(timeout=60)
    record = store.load(run_id)
    assert record.state == "stopped" and record.metrics and record.summary["executor"] == "ray"
    page.run()
    assert any("stopped" in alert.value for alert in page.info), [alert.value for alert in page.info]


def test_an_address_nothing_answers_on_is_a_clear_error_at_once():
    from explore.training.ray_backend import ClusterError, check_reachable

    with socket.socket() as probe:  # a free port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    started = time.monotonic()
    with pytest.raises(ClusterError, match=f"no Ray cluster answers at 127.0.0.1:{port}"):
        check_reachable(f"127.0.0.1:{port}")
    assert time.monotonic() - started < 5


@needs_ray
def test_stop_cancels_a_run_still_waiting_for_a_free_worker_on_the_cluster(tmp_path, cluster):
    from explore.training.ray_backend import execute_remote

    hog = cluster.remote(num_cpus=2)(lambda: time.sleep(120)).remote()  # every CPU of the cluster taken
    store = RunStore(tmp_path / "runs")
    run_id = store.create(cfg())
    asked = time.monotonic()
    try:
        records = list(execute_remote(store, run_id, slots=2, stop_requested=lambda: time.monotonic() - asked > 1))
    finally:
        cluster.cancel(hog, force=True)
    assert records[-1]["status"] == "stopped"
    record = store.load(run_id)
    assert record.state == "stopped" and "waiting for a free worker" in record.summary["message"]
    assert record.status.get("pid") is None  # it never ran anywhere


def test_each_run_asks_for_one_gpu_or_a_fair_share_of_the_cluster():
    from explore.training.ray_backend import task_resources

    assert task_resources({"GPU": 4.0, "CPU": 64.0}, slots=4) == ({"num_gpus": 1.0, "num_cpus": 1}, 1)
    assert task_resources({"GPU": 2.0, "CPU": 32.0}, slots=4) == ({"num_gpus": 0.5, "num_cpus": 1}, 1)  # shared
    assert task_resources({"CPU": 2.0}, slots=2) == ({"num_cpus": 1}, 1)  # no GPU: one CPU per run
    assert task_resources({"CPU": 16.0}, slots=4) == ({"num_cpus": 4}, 4)


def test_a_run_on_another_machine_is_not_taken_for_dead_by_its_pid(runs_dir):
    """A pid on a Ray node means nothing on the server: only the server's own pids are checked."""
    store = RunStore(runs_dir)
    run_id = store.create(cfg())
    no_such_pid = 2 ** 22 + 12345
    store.set_status(run_id, status="running", pid=no_such_pid, executor="ray", node="gpu-box-2")
    assert store.load(run_id).state == "running"
    store.set_status(run_id, node=socket.gethostname())  # on this machine the same pid means it died
    assert store.load(run_id).state == "damaged"


@needs_ray
def test_when_the_server_side_gives_up_the_task_is_ended_too(tmp_path, cluster):
    """E.g. Ctrl-C in `python -m explore train`: no orphan run keeps a worker (a GPU) busy."""
    from explore.training.ray_backend import execute_remote

    store = RunStore(tmp_path / "runs")
    run_id = store.create(cfg(epochs=500))
    records = execute_remote(store, run_id, slots=2)
    assert next(records)["kind"] == "epoch"
    pid = store.load(run_id, with_metrics=False).status["pid"]
    records.close()  # the consumer stops listening

    def gone():
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return False

    wait_for(gone, timeout=60)

