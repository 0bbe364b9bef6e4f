"""Runs in worker processes: a run trains in its own process, Stop works, and a worker killed
mid-run (SIGKILL, as the out-of-memory killer does) fails only that run; a fresh worker goes on."""
from __future__ import annotations

import os
import signal
import time

import pytest

from conftest import wait_for
from explore.training.config import RunConfig
from explore.data import DataSpec
from explore.training.jobs import JobManager
from explore.training.store import RunStore
from explore.training.workers import death_message

# Small enough to generate in the worker in well under a second (a spawned worker cannot see
# data monkeypatched in this process, so these tests use the real synthetic source).
SMALL = DataSpec(image_size=64, synthetic=(("n_train", 96), ("n_val", 32), ("n_test", 32)))


@pytest.fixture
def manager(tmp_path, monkeypatch):
    monkeypatch.setenv("EXPLORE_CACHE_DIR", str(tmp_path / "cache"))  # the workers inherit it at spawn
    monkeypatch.setenv("EXPLORE_THREADS", "1")
    jobs = JobManager(max_concurrent=1, executor="process")
    yield jobs
    jobs.close()


def cfg(**kw) -> RunConfig:
    return RunConfig(**(dict(data=SMALL, model="lab4_gap", epochs=1, batch_size=8) | kw))


def test_a_run_trains_in_a_worker_process_and_stops_within_a_batch(runs_dir, manager):
    store = RunStore(runs_dir)
    [done] = manager.submit(store, [cfg()])
    assert manager.wait_idle(timeout=180)
    record = store.load(done)
    assert record.state == "finished", record.summary
    assert record.status["pid"] != os.getpid() and record.status["pid"] == manager.overview()["workers"][0]["pid"]
    assert len(record.metrics) == 1 and record.summary["device_index"] is None  # CPU

    [long] = manager.submit(store, [cfg(epochs=500)])
    wait_for(lambda: store.load(long, with_metrics=False).status.get("batch"))  # training, mid-epoch
    assert manager.stop(long)
    assert manager.wait_idle(timeout=30)
    assert store.load(long).state == "stopped"


def test_a_killed_worker_fails_only_its_run_and_a_fresh_worker_takes_the_next(runs_dir, manager):
    store = RunStore(runs_dir)
    doomed, after = manager.submit(store, [cfg(epochs=500, name="doomed"), cfg(name="after")])
    status = wait_for(lambda: (s := store.load(doomed, with_metrics=False).status).get("batch") and s)
    os.kill(status["pid"], signal.SIGKILL)
    killed_at = time.monotonic()
    record = wait_for(lambda: (r := store.load(doomed, with_metrics=False)).state == "failed" and r, timeout=10)
    assert time.monotonic() - killed_at < 5
    assert "worker process" in record.summary["message"] and "SIGKILL" in record.summary["message"]
    assert manager.wait_idle(timeout=180)
    next_run = store.load(after)
    assert next_run.state == "finished"
    assert next_run.status["pid"] not in (status["pid"], os.getpid())  # a fresh worker trained it


def test_death_messages_name_the_signal_or_exit_code():
    assert "SIGSEGV" in death_message(-signal.SIGSEGV)
    assert "out-of-memory" in death_message(-signal.SIGKILL)
    assert "exited with code 3" in death_message(3)


def test_a_worker_whose_server_dies_stops_its_run_and_exits(runs_dir, tmp_path):
    """A server killed mid-run must not leave an orphan training on: the worker stops the run and exits."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    script = (f"import time\nfrom explore.training.jobs import JobManager\nfrom explore.training.store import RunStore\n"
              f"from explore.training.config import RunConfig\nfrom explore.data import DataSpec\n"
              f"if __name__ == '__main__':\n"
              f"    spec = DataSpec(image_size=64, synthetic=(('n_train', 96), ('n_val', 32), ('n_test', 32)))\n"
              f"    m = JobManager(max_concurrent=1, executor='process')\n"
              f"    m.submit(RunStore({str(runs_dir)!r}), [RunConfig(data=spec, model='lab4_gap', epochs=500, batch_size=8)])\n"
              f"    time.sleep(600)\n")
    env = os.environ | {"PYTHONPATH": str(root), "EXPLORE_CACHE_DIR": str(tmp_path / "cache"), "EXPLORE_THREADS": "1"}
    server = subprocess.Popen([sys.executable, "-c", script], cwd=root, env=env)
    try:
        store = RunStore(runs_dir)
        status = wait_for(lambda: store.run_ids() and (s := store.load(store.run_ids()[0], with_metrics=False)
                                                       .status).get("batch") and s)
        server.kill()
        server.wait(timeout=10)
        record = wait_for(lambda: (r := store.load(store.run_ids()[0], with_metrics=False)).state == "stopped" and r,
                          timeout=30)
        assert record.summary["status"] == "stopped"
        wait_for(lambda: not os.path.exists(f"/proc/{status['pid']}") or
                 open(f"/proc/{status['pid']}/stat").read().split()[2] == "Z", timeout=30)  # the worker exited
    finally:
        if server.poll() is None:
            server.kill()
