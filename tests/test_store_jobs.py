"""Run store (atomic, damaged folders, safe loading) and the job queue."""
import json
import os
import pickle
import time

import pytest
import torch

from explore.training import jobs
from explore.training.config import RunConfig
from explore.data import DataSpec, register_bundle
from explore.training.jobs import JobManager, execute_run
from explore.training.store import RunStore, StoreError, read_metrics

from conftest import make_bundle


# Every run in these tests trains on this tiny bundle, named so its config says so (32 px, two classes).
TINY = register_bundle("store-jobs-tiny", make_bundle(size=32, n_train=64, n_val=32, n_test=32))


def cfg(**kw):
    return RunConfig(**({"model": "hw3_cnn", "epochs": 2, "data": TINY, "precision": "fp32"} | kw))


def test_execute_run_writes_a_complete_folder(runs_dir):
    store = RunStore(runs_dir)
    run_id = store.create(cfg(name="first"))
    out = list(execute_run(store, run_id))
    assert out[-1]["status"] == "finished"
    record = store.load(run_id)
    assert record.state == "finished" and not record.damaged
    assert [m["epoch"] for m in record.metrics] == [1, 2]
    assert record.summary["test_acc"] is not None
    model, config = store.load_model(run_id)
    assert config.name == "first"
    predictions = store.load_predictions(run_id)
    assert predictions["val"]["probs"].shape == (32,)
    assert not any(p.name.endswith(".tmp") for p in record.path.iterdir())


def test_damaged_and_torn_folders_are_listed_not_crashing(runs_dir):
    store = RunStore(runs_dir)
    good = store.create(cfg())
    list(execute_run(store, good))
    (runs_dir / "no-config").mkdir()
    bad_json = runs_dir / "bad-json"
    bad_json.mkdir()
    (bad_json / "config.json").write_text("{not json")
    # a torn last metrics line: the writer was killed mid-write
    with open(runs_dir / good / "metrics.jsonl", "a") as f:
        f.write('{"epoch": 3, "train_lo')
    records = {r.run_id: r for r in store.list(with_metrics=True)}
    assert records["no-config"].state == "damaged" and "missing" in records["no-config"].damaged
    assert records["bad-json"].state == "damaged"
    assert len(records[good].metrics) == 2 and records[good].state == "finished"


def test_killed_writer_is_reported(runs_dir):
    store = RunStore(runs_dir)
    run_id = store.create(cfg())
    store.set_status(run_id, status="running", pid=2 ** 22 + 12345)  # no such process
    assert "ended before it finished" in store.load(run_id).damaged


class Exploit:
    def __reduce__(self):
        return (os.system, ("echo pwned > /tmp/explore-pwned",))


def test_malicious_pickle_is_refused_without_running(runs_dir, tmp_path):
    store = RunStore(runs_dir)
    run_id = store.create(cfg())
    list(execute_run(store, run_id))
    marker = tmp_path / "pwned"
    Exploit.__reduce__ = lambda self: (os.system, (f"touch {marker}",))
    torch.save({"fc2.weight": Exploit()}, runs_dir / run_id / "weights.pt")
    with open(runs_dir / run_id / "predictions.pt", "wb") as f:
        pickle.dump(Exploit(), f)
    with pytest.raises(StoreError, match="cannot be loaded safely"):
        store.load_weights(run_id)
    with pytest.raises(StoreError):
        store.load_predictions(run_id)
    assert not marker.exists()


def test_unwritable_runs_folder_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StoreError, match="not writable"):
        RunStore(blocker / "runs").create(cfg())


def test_read_metrics_skips_garbage(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text('{"epoch": 1}\ngarbage\n[1,2]\n{"epoch": 2}\n')
    assert read_metrics(path) == [{"epoch": 1}, {"epoch": 2}]


def test_failed_run_keeps_the_worker_alive(runs_dir, tmp_path):
    store = RunStore(runs_dir)
    run_id = store.create(cfg(data=DataSpec(source=f"folder:{tmp_path / 'gone'}", image_size=64)))
    out = list(execute_run(store, run_id))
    assert out[-1]["status"] == "failed" and "DataError" in out[-1]["message"] and "gone" in out[-1]["message"]
    assert store.load(run_id).state == "failed"


def test_queue_limit_and_order(runs_dir):
    store = RunStore(runs_dir)
    manager = JobManager(max_concurrent=1, executor="thread")
    ids = manager.submit(store, [cfg(name=f"run{i}", epochs=1) for i in range(3)])
    positions = [manager.queue_position(i) for i in ids]
    assert positions[0] in (0, 1) and positions[1] is not None and positions[2] is not None
    assert manager.wait_idle(timeout=120)
    started = [store.load(i).status["started"] for i in ids]
    assert started == sorted(started)
    assert all(store.load(i).state == "finished" for i in ids)


def test_stop_a_running_job_and_a_queued_one(runs_dir):
    store = RunStore(runs_dir)
    manager = JobManager(max_concurrent=1, executor="thread")
    first, second = manager.submit(store, [cfg(epochs=500, batch_size=8), cfg(epochs=1)])
    deadline = time.monotonic() + 30
    while store.load(first).status.get("status") != "running" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert manager.stop(second)  # still queued: taken off the queue
    assert manager.stop(first)
    assert manager.wait_idle(timeout=60)
    assert store.load(first).state == "stopped"
    assert store.load(second).state == "stopped"
    assert store.load(first).path.joinpath("weights.pt").exists()


def test_namespaces_keep_sessions_apart(runs_dir):
    a, b = RunStore(runs_dir, namespace="student-a"), RunStore(runs_dir, namespace="student-b")
    run_id = a.create(cfg())
    assert run_id in a.run_ids() and run_id not in b.run_ids()
