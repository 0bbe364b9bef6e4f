"""Training outside the page script: `execute_run` (one run, store-backed) and `JobManager`
(a queue with a global limit on concurrent runs, worked by background threads).

Workers never touch Streamlit: they write to the run store, and pages poll the store. So
a widget change, a page switch or a browser refresh never stops or restarts a run, and the
same `execute_run` generator drives the CLI.

One `JobManager` per server process is meant to be shared by every browser session (the
app keeps it in `st.cache_resource`), so a classroom shares one GPU through one queue.
"""
from __future__ import annotations

import os
import threading
import time
import traceback
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Iterator

import torch

from explore.config import RunConfig
from explore.device import reuse_freed_memory
from explore.store import RunStore, StoreError

STATUS_WRITE_INTERVAL_S = 0.5  # live progress is written at most this often (keeps polling cheap)


def execute_run(store: RunStore, run_id: str, should_stop: Callable[[], bool] = lambda: False) -> Iterator[dict]:
    """Train the run whose config is stored under `run_id`, writing everything to its folder.

    Yields the training records (for the CLI's JSON lines); the final 'end' record carries the
    summary. Any failure ends as status 'failed' with its message; the worker survives.
    """
    from explore.train import make_run

    record = store.load(run_id, with_metrics=False)
    if record.config is None:
        raise StoreError(f"run {run_id} cannot start: {record.damaged}")
    config = record.config
    store.set_status(run_id, status="running", started=time.time(), pid=os.getpid(), message="preparing data")
    run = None
    try:
        run = make_run(config)
        store.set_status(run_id, message="training", setup_seconds=run.setup_seconds, weights=run.weights_name)
        last_write = 0.0
        for item in run.fit(should_stop):
            if item["kind"] == "epoch":
                store.append_metrics(run_id, item)
                store.set_status(run_id, epoch=item["epoch"], batch=0, epochs=config.epochs)
                last_write = time.monotonic()
            elif item["kind"] == "progress" and time.monotonic() - last_write > STATUS_WRITE_INTERVAL_S:
                store.set_status(run_id, epoch=item["epoch"] - 1, batch=item["batch"], batches=item["batches"],
                                 epochs=config.epochs)
                last_write = time.monotonic()
            if item["kind"] != "end":
                yield item
        predictions = run.predictions() if run.data else None
        summary = run.summary(predictions)
        summary["run_id"] = run_id
        store.save_results(run_id, summary, run.model.state_dict() if run.status != "failed" else None,
                           predictions)
        store.set_status(run_id, status=run.status, message=run.message, finished=time.time())
        yield {"kind": "end", "status": run.status, "message": run.message, "run_id": run_id, "summary": summary}
    except Exception as error:  # a bad config or data must end this run, not the worker or the page
        message = f"{type(error).__name__}: {error}"
        summary = {"status": "failed", "message": message, "run_id": run_id,
                   "traceback": traceback.format_exc(limit=6)}
        if run is not None:
            summary["epochs_completed"] = len(run.history)
        try:
            store.save_results(run_id, summary, None, None)
            store.set_status(run_id, status="failed", message=message, finished=time.time())
        except OSError:
            pass
        yield {"kind": "end", "status": "failed", "message": message, "run_id": run_id, "summary": summary}
    finally:
        del run
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


@dataclass
class Job:
    store: RunStore
    run_id: str
    stop: threading.Event = field(default_factory=threading.Event)


class JobManager:
    """A FIFO queue of runs and `max_concurrent` worker threads (default: 1 per GPU, 1 on CPU)."""

    def __init__(self, max_concurrent: int | None = None):
        if max_concurrent is None:
            env = os.environ.get("EXPLORE_MAX_JOBS")
            max_concurrent = int(env) if env else max(1, torch.cuda.device_count())
        self.max_concurrent = max_concurrent
        # Before the workers start: a thread keeps the malloc arena of its first allocation, and only
        # threads started after this share the tuned heap (see reuse_freed_memory).
        reuse_freed_memory()
        self._lock = threading.Lock()
        self._queue: deque[Job] = deque()
        self._running: dict[str, Job] = {}
        self._threads: list[threading.Thread] = []
        self._worker_runs: list[str | None] = [None] * max_concurrent  # what each worker trains now
        self._wake = threading.Condition(self._lock)
        for index in range(max_concurrent):
            thread = threading.Thread(target=self._work, args=(index,), name=f"explore-trainer-{index}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def submit(self, store: RunStore, configs: list[RunConfig]) -> list[str]:
        """Queue runs (a preset or a sweep is one call: its runs start in order)."""
        run_ids = [store.create(config) for config in configs]
        with self._lock:
            for run_id in run_ids:
                self._queue.append(Job(store, run_id))
            self._wake.notify_all()
        return run_ids

    def stop(self, run_id: str) -> bool:
        """Stop a running run within one batch, or take a queued one off the queue."""
        with self._lock:
            if run_id in self._running:
                self._running[run_id].stop.set()
                return True
            for job in list(self._queue):
                if job.run_id == run_id:
                    self._queue.remove(job)
                    job.store.set_status(run_id, status="stopped", message="removed from the queue before it started")
                    job.store.save_results(run_id, {"status": "stopped", "run_id": run_id,
                                                    "message": "removed from the queue before it started",
                                                    "epochs_completed": 0}, None, None)
                    return True
        return False

    def queue_position(self, run_id: str) -> int | None:
        """0 while running, 1.. while waiting, None when not known to this manager."""
        with self._lock:
            if run_id in self._running:
                return 0
            for position, job in enumerate(self._queue, start=1):
                if job.run_id == run_id:
                    return position
        return None

    def active(self) -> dict[str, list[str]]:
        with self._lock:
            return {"running": list(self._running), "queued": [job.run_id for job in self._queue]}

    def overview(self) -> dict:
        """Workers, queues by session and running runs, for the instructor's class view:
        {"workers": [{"index", "device", "pid", "run_id"}], "queues": {namespace: [run_id, ...]},
         "running": {run_id: namespace}}. Workers here are threads of this process (pid = ours)."""
        gpus = torch.cuda.device_count()
        with self._lock:
            workers = [{"index": index, "device": f"cuda:{index % gpus}" if gpus else "cpu", "pid": os.getpid(),
                        "run_id": run_id} for index, run_id in enumerate(self._worker_runs)]
            queues: dict[str, list[str]] = {}
            for job in self._queue:
                queues.setdefault(job.store.namespace, []).append(job.run_id)
            running = {run_id: job.store.namespace for run_id, job in self._running.items()}
        return {"workers": workers, "queues": queues, "running": running}

    def wait_idle(self, timeout: float = 60.0) -> bool:
        """Block until nothing is queued or running (for tests and the CLI)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if not self._queue and not self._running:
                    return True
            time.sleep(0.05)
        return False

    def _work(self, index: int) -> None:
        while True:
            with self._lock:
                while not self._queue:
                    self._wake.wait()
                job = self._queue.popleft()
                self._running[job.run_id] = job
                self._worker_runs[index] = job.run_id
            try:
                for _ in execute_run(job.store, job.run_id, job.stop.is_set):
                    pass
            except Exception:  # execute_run already records failures; never let the worker die
                traceback.print_exc()
            finally:
                with self._lock:
                    self._running.pop(job.run_id, None)
                    self._worker_runs[index] = None
