"""The job manager's gate, fair queue, overview and GPU pinning (in-process executor, tiny data)."""
from __future__ import annotations

import threading

import pytest
import torch

import explore.training.jobs
from conftest import make_bundle
from explore.training.config import RunConfig
from explore.data import DataSpec
from explore.training.fairqueue import FairQueue
from explore.training.jobs import JobManager, worker_devices
from explore.settings import AppSettings, NotAllowed
from explore.training.store import RunStore

DEMO = AppSettings(demo_mode=True, max_epochs=5, max_image_size=64, max_sweep_runs=3, max_queued_per_session=4)


@pytest.fixture
def tiny_data(register_data) -> DataSpec:
    """The spec of a tiny 32 px bundle the runs train on."""
    return register_data(make_bundle(size=32))


def cfg(**kw) -> RunConfig:
    base = dict(data=DataSpec(image_size=64), model="lab4_gap", epochs=1, batch_size=16)
    return RunConfig(**(base | kw))


def test_a_config_submitted_directly_is_capped_and_the_change_named(runs_dir):
    manager = JobManager(max_concurrent=0, settings=DEMO, executor="thread")
    store = RunStore(runs_dir, namespace="session-a")
    run_ids = manager.submit(store, [cfg(epochs=50, data=DataSpec(image_size=256))])
    assert run_ids.notes == ["epochs capped at 5 (asked 50)", "image size capped at 64 px (asked 256)"]
    config = store.load(run_ids[0]).config
    assert (config.epochs, config.data.image_size) == (5, 64)


def test_too_many_runs_are_refused_whole(runs_dir):
    manager = JobManager(max_concurrent=0, settings=DEMO, executor="thread")
    store = RunStore(runs_dir, namespace="session-a")
    with pytest.raises(NotAllowed, match="at most 3 runs"):
        manager.submit(store, [cfg(seed=s) for s in range(4)])
    assert store.run_ids() == []  # nothing of the request was queued


def test_each_session_may_hold_only_so_many_queued_runs(runs_dir):
    shared = AppSettings(shared_server=True, max_queued_per_session=4)
    manager = JobManager(max_concurrent=0, settings=shared, executor="thread")
    a, b = RunStore(runs_dir, namespace="session-a"), RunStore(runs_dir, namespace="session-b")
    manager.submit(a, [cfg(seed=s) for s in range(3)])
    with pytest.raises(NotAllowed, match="you have 3 and asked for 2 more"):
        manager.submit(a, [cfg(seed=s) for s in range(2)])
    assert len(manager.submit(b, [cfg(seed=s) for s in range(4)])) == 4  # another session has its own room
    manager.stop(a.run_ids()[0])  # a stopped run frees its place
    assert len(manager.submit(a, [cfg()])) == 1


def test_no_caps_on_a_laptop(runs_dir):
    manager = JobManager(max_concurrent=0, settings=AppSettings(), executor="thread")
    run_ids = manager.submit(RunStore(runs_dir), [cfg(epochs=200, seed=s) for s in range(20)])
    assert len(run_ids) == 20 and run_ids.notes == []


def test_fair_queue_serves_the_least_recently_served_session():
    class J:
        def __init__(self, namespace, run_id):
            self.namespace, self.run_id = namespace, run_id

    queue = FairQueue()
    for i in range(4):
        queue.push(J("a", f"a{i}"))
    assert queue.pop().run_id == "a0"
    queue.push(J("b", "b0"))
    queue.push(J("c", "c0"))
    planned = [job.run_id for job in queue.order()]
    assert planned == ["b0", "c0", "a1", "a2", "a3"]
    assert [queue.pop().run_id for _ in range(5)] == planned  # the announced order is the real one
    assert queue.pop() is None


def test_a_session_with_one_run_starts_second_after_a_classmate_queued_four(runs_dir, tiny_data):
    manager = JobManager(max_concurrent=1, executor="thread")
    a, b = RunStore(runs_dir, namespace="session-a"), RunStore(runs_dir, namespace="session-b")
    a_ids = manager.submit(a, [cfg(name=f"a{i}", seed=i, data=tiny_data) for i in range(4)])
    [b_id] = manager.submit(b, [cfg(name="b", data=tiny_data)])
    assert manager.queue_position(b_id) in (1, 2)  # 1 when a's first run already left the queue
    assert manager.wait_idle(timeout=300)
    started = sorted([(a.load(i).status["started"], i) for i in a_ids] + [(b.load(b_id).status["started"], b_id)])
    assert [run_id for _, run_id in started][:2] == [a_ids[0], b_id]


def test_the_wait_estimate_comes_from_recent_runs(runs_dir, tiny_data):
    manager = JobManager(max_concurrent=1, executor="thread")
    store = RunStore(runs_dir)
    [first] = manager.submit(store, [cfg(epochs=2, data=tiny_data)])
    assert manager.wait_idle(timeout=120)
    seconds_per_epoch = store.load(first).summary["seconds_per_epoch"]
    waiting = JobManager(max_concurrent=0, executor="thread")
    waiting._recent_speeds.extend(manager._recent_speeds)  # what the first manager learned
    ids = waiting.submit(store, [cfg(epochs=3, data=tiny_data), cfg(epochs=4, data=tiny_data),
                                 cfg(epochs=1, data=tiny_data)])
    assert waiting.estimated_wait(ids[0]) == pytest.approx(0.0)  # next, and nothing is running
    assert waiting.estimated_wait(ids[2]) == pytest.approx(7 * seconds_per_epoch)
    assert JobManager(max_concurrent=0, executor="thread").estimated_wait("unknown") is None


def test_overview_and_cancelling_any_sessions_queued_run(runs_dir):
    manager = JobManager(max_concurrent=0, executor="thread")
    a, b = RunStore(runs_dir, namespace="session-a"), RunStore(runs_dir, namespace="session-b")
    a_ids, b_ids = manager.submit(a, [cfg(), cfg(seed=1)]), manager.submit(b, [cfg()])
    assert manager.overview() == {"workers": [], "queues": {"session-a": a_ids, "session-b": b_ids}, "running": {}}
    assert manager.stop(a_ids[1])  # the instructor cancels a student's queued run
    assert a.load(a_ids[1]).state == "stopped"
    assert manager.overview()["queues"] == {"session-a": a_ids[:1], "session-b": b_ids}


def test_one_worker_per_gpu_each_run_pinned_to_its_own(runs_dir, monkeypatch):
    """Two GPUs (mocked): two workers, on cuda:0 and cuda:1, and each run is trained with its worker's device."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.delenv("EXPLORE_MAX_JOBS", raising=False)
    assert worker_devices(3) == ["cuda:0", "cuda:1", "cuda:0"]
    both_started, release, seen = threading.Barrier(3), threading.Event(), {}

    def fake_execute_run(store, run_id, should_stop, device=None, bundle=None):  # stands in for training on that GPU
        seen[run_id] = device
        both_started.wait(timeout=30)
        release.wait(timeout=30)
        yield {"kind": "end"}

    monkeypatch.setattr(explore.training.jobs, "execute_run", fake_execute_run)
    manager = JobManager(executor="thread")
    assert [(w["index"], w["device"]) for w in manager.overview()["workers"]] == [(0, "cuda:0"), (1, "cuda:1")]
    store = RunStore(runs_dir, namespace="session-a")
    ids = manager.submit(store, [cfg(device="auto"), cfg(seed=1)])
    both_started.wait(timeout=30)
    workers = manager.overview()["workers"]
    assert {w["run_id"]: w["device"] for w in workers} == {run_id: seen[run_id] for run_id in ids}
    assert sorted(seen.values()) == ["cuda:0", "cuda:1"]
    assert manager.overview()["running"] == {ids[0]: "session-a", ids[1]: "session-a"}
    release.set()
    assert manager.wait_idle(timeout=30)
    manager.close()


def test_a_bundle_provider_hands_each_queued_run_its_data(runs_dir):
    """The seam page tests use: the manager asks `bundles` for the data of each run's DataSpec (in this
    process only), so a run trains on exactly the bundle the test means."""
    asked = []

    def tiny(spec):
        asked.append(spec)
        return make_bundle(16, 16, 16, 16, spec.num_classes)

    store = RunStore(runs_dir)
    manager = JobManager(max_concurrent=1, executor="thread", bundles=tiny)
    spec = DataSpec(image_size=32, seed=77)
    [run_id] = manager.submit(store, [RunConfig(data=spec, model="cnn", epochs=1, name="seam")])
    assert manager.wait_idle(120)
    manager.close()
    record = store.load(run_id)
    assert record.state == "finished" and asked == [spec]
    assert record.summary["image_size"] == 16  # the provider's bundle, not a 32 px synthetic set


def test_a_bundle_provider_cannot_reach_worker_processes():
    with pytest.raises(ValueError, match="executor='thread'"):
        JobManager(max_concurrent=0, executor="process", bundles=lambda spec: None)
