"""Bench section `workers`: what training in a worker process costs a run's start, compared with a thread.

Runs train in worker processes (explore.training.jobs, explore.training.workers) so that a crash cannot take the
server down. The price is paid at a run's start: a fresh process has none of the server's decoded
datasets in memory. This section times, for hw3_cnn on the default data, the start-up of a run:
from `submit` to the run's status saying "training" (data loaded and placed, model built), after
which the run is stopped (training speed itself is the same in a thread and a process, see 'live'):

  thread          the old way (and `executor="thread"`): a thread of this process, dataset in memory
  process, first  a started worker's first run on this dataset: it reads the decoded bundle from
                  the disk cache (what a student's first run on a fresh server pays)
  process, warm   later runs in the same worker: the dataset is in the worker's memory
  process, cold   a worker spawned by the same call (interpreter + torch import + data), for reference

Goal (issue 13): process first − thread ≤ 2 s.
"""
from __future__ import annotations

import tempfile
import time

from explore.training.config import RunConfig
from benchmarks.bench_stats import fmt, spread
from explore.data import DataSpec, load_bundle
from explore.training.jobs import JobManager
from explore.training.store import RunStore

GOAL_EXTRA_SECONDS = 2.0
WARM_UP_SPEC = DataSpec(image_size=64, synthetic=(("n_train", 64), ("n_val", 32), ("n_test", 32)))


def _start_up_seconds(manager, store, config) -> float:
    """Seconds from `submit` until the run trains; the run is then stopped (within one batch)."""
    started = time.perf_counter()
    [run_id] = manager.submit(store, [config])
    while True:
        record = store.load(run_id, with_metrics=False)
        if record.status.get("message") == "training":
            seconds = time.perf_counter() - started
            break
        if record.state not in ("queued", "running"):
            raise RuntimeError(f"the benchmark run ended as {record.state!r} before training: "
                               f"{(record.summary or {}).get('message')}")
        time.sleep(0.01)
    manager.stop(run_id)
    if not manager.wait_idle(timeout=600):
        raise RuntimeError("the benchmark run did not stop within 10 minutes")
    return seconds


def peak_rss_mb(pid: int) -> float | None:
    """The peak resident memory of a process (Linux: VmHWM), or None where /proc cannot tell."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def bench_workers(settings) -> dict:
    spec = DataSpec(image_size=64 if settings.quick else 128, synthetic=settings.knobs)
    config = RunConfig(data=spec, model="hw3_cnn", epochs=1, device=settings.device, name="bench")
    warm_up = config.replace(data=WARM_UP_SPEC, name="warm-up")
    load_bundle(spec)  # decoded here once (as the Data page does), which also fills the disk cache
    load_bundle(WARM_UP_SPEC)
    result = {"model": "hw3_cnn", "image_size": spec.image_size}
    with tempfile.TemporaryDirectory(prefix="explore-bench-runs-") as tmp:
        store = RunStore(tmp)
        threads = JobManager(max_concurrent=1, executor="thread")
        _start_up_seconds(threads, store, config)  # first-call costs (model code, allocator) off the record
        result["thread_seconds"] = spread([_start_up_seconds(threads, store, config) for _ in range(settings.repeats)])
        threads.close()

        cold = JobManager(max_concurrent=1, executor="process")
        result["process_cold_seconds"] = spread([_start_up_seconds(cold, store, config)])
        cold.close()

        first, warm = [], []
        for _ in range(settings.repeats):  # a new worker each time: its first run on the dataset, then one more
            started = JobManager(max_concurrent=1, executor="process")
            _start_up_seconds(started, store, warm_up)  # the worker is up and has started a run on other data
            first.append(_start_up_seconds(started, store, config))
            warm.append(_start_up_seconds(started, store, config))
            result["worker_peak_rss_mb"] = peak_rss_mb(started.workers[0].process.pid)
            started.close()
        result["process_first_seconds"], result["process_warm_seconds"] = spread(first), spread(warm)
    thread = result["thread_seconds"]["median"]
    result["extra_first_seconds"] = result["process_first_seconds"]["median"] - thread
    result["extra_warm_seconds"] = result["process_warm_seconds"]["median"] - thread
    result["goal_extra_seconds"] = GOAL_EXTRA_SECONDS
    result["goal_met"] = result["extra_first_seconds"] <= GOAL_EXTRA_SECONDS
    return result


def format_workers(r: dict) -> list[str]:
    met = "goal met" if r["goal_met"] else "goal MISSED"
    rss = f"{r['worker_peak_rss_mb']:.0f} MB" if r.get("worker_peak_rss_mb") else "n/a"
    return [f"  {r['model']}, {r['image_size']} px; a run's start-up, submit → training (data placed, model built):",
            f"  thread (dataset in memory) {fmt(r['thread_seconds'], 's', 2)}",
            f"  worker process, first run on this dataset (bundle from the disk cache) {fmt(r['process_first_seconds'], 's', 2)}"
            f" → {r['extra_first_seconds']:+.2f} s (goal ≤ +{r['goal_extra_seconds']:g} s: {met})",
            f"  worker process, later runs {fmt(r['process_warm_seconds'], 's', 2)} → {r['extra_warm_seconds']:+.2f} s",
            f"  worker spawned by the same call (interpreter, torch, data) {fmt(r['process_cold_seconds'], 's', 2)}",
            f"  peak RSS of a worker process after two run starts: {rss}"]
