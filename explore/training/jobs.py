"""Training outside the page script: `execute_run` (one run, store-backed) and `JobManager`
(the one gate for runs, a fair queue, and worker processes that train them).

Workers never touch Streamlit: they write to the run store, and pages poll the store. So
a widget change, a page switch or a browser refresh never stops or restarts a run, and the
same `execute_run` generator drives the CLI.

One `JobManager` per server process is shared by every browser session (the app keeps it in
`st.cache_resource`):
- `submit` is the single entrance: it applies the deployment settings (demo caps, a per-session
  limit on queued runs) through `settings.gate_request` and says what it changed;
- each session has its own FIFO and free workers serve the sessions round-robin (explore.training.fairqueue);
- each run trains in a worker process (explore.training.workers), one per GPU, pinned to its own `cuda:i`:
  a crash or an out-of-memory kill ends that run as failed, never the server. Unit tests that
  hand tiny data to the trainer in-process use `executor="thread"` instead.
"""
from __future__ import annotations

import os
import socket
import statistics
import threading
import time
import traceback
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

import torch

from explore.training import ray_backend  # imports ray only when a Ray executor is used
from explore.data import DataBundle, DataSpec
from explore.training.config import RunConfig
from explore.device import reuse_freed_memory
from explore.training.fairqueue import FairQueue
from explore.training.execute import STATUS_WRITE_INTERVAL_S, execute_run, record_worker_death  # noqa: F401 (re-exported)
from explore.settings import AppSettings, executor_name, gate_request, load_settings, max_jobs
from explore.training.store import RunStore
from explore.training.workers import WorkerProcess

# ----- the job manager -------------------------------------------------------------------------

EXECUTORS = ("process", "thread", "ray")
RECENT_RUNS_FOR_ESTIMATES = 20


class Submission(list):
    """What `submit` returns: the new run ids (a plain list of them), plus `notes`, the gate's
    changes to the request (e.g. 'epochs capped at 15 (asked 30)') for the page to show."""

    def __init__(self, run_ids: list[str], notes: list[str]):
        super().__init__(run_ids)
        self.notes = notes


@dataclass
class Job:
    store: RunStore
    run_id: str
    epochs: int = 1
    speed_key: tuple = ()  # (model, image size): runs alike train alike fast, for wait estimates
    stop: threading.Event = field(default_factory=threading.Event)

    @property
    def namespace(self) -> str:
        return self.store.namespace


@dataclass
class Worker:
    """One slot of the manager: a device, the run it trains, and (process executor) its process."""

    index: int
    device: str | None  # "cuda:i" pins its runs to that GPU; None lets each config choose (CPU servers)
    job: Job | None = None
    process: object | None = None  # explore.training.workers.WorkerProcess


def worker_devices(count: int) -> list[str | None]:
    """One device per worker: round-robin over the GPUs (cuda:0, cuda:1, ...), or None without one."""
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return [f"cuda:{index % gpus}" if gpus else None for index in range(count)]


def default_worker_count(executor: str = "process") -> int:
    """EXPLORE_MAX_JOBS, else one worker per GPU (one on a CPU server); on Ray, per cluster GPU (or CPU)."""
    if max_jobs() is not None:
        return max_jobs()
    if executor == "ray":
        return ray_backend.slot_count()
    return max(1, torch.cuda.device_count() if torch.cuda.is_available() else 0)


class JobManager:
    """The one gate for runs, a fair queue per session, and `max_concurrent` workers.

    settings: the deployment settings the gate applies: an `AppSettings`, or a function returning
              them (read at every submit); default `settings.load_settings` (the environment).
    executor: "process" (default; EXPLORE_EXECUTOR overrides) trains each run in a worker process;
              "thread" trains in a thread of this process (tests that hand the trainer data in-process);
              "ray" sends each run to a Ray cluster (the default when the settings' EXPLORE_RAY_ADDRESS
              is set; explore.training.ray_backend): the same gate, queue and Stop, one slot per cluster GPU.
    max_concurrent=0 makes a queue without workers: runs wait until stopped (page tests of the gate).
    bundles (executor "thread" only): the data each run trains on, given its config's DataSpec, instead of
              load_bundle; the seam through which page tests hand the runs a page queues tiny data.
    """

    def __init__(self, max_concurrent: int | None = None, settings: AppSettings | Callable[[], AppSettings] | None = None,
                 executor: str | None = None, bundles: Callable[[DataSpec], DataBundle] | None = None):
        self._settings = settings if callable(settings) else (lambda: settings) if settings else load_settings
        ray_address = self._settings().ray_address
        self.executor = executor or executor_name() or ("ray" if ray_address else "process")
        if self.executor not in EXECUTORS:
            raise ValueError(f"executor must be one of {EXECUTORS}, not {self.executor!r}")
        if self.executor == "ray":
            ray_backend.connect(ray_address)  # a clear ClusterError when ray is missing or the cluster unreachable
        self.max_concurrent = default_worker_count(self.executor) if max_concurrent is None else max_concurrent
        if bundles is not None and self.executor != "thread":
            raise ValueError("bundles= reaches runs only in this process: use executor='thread'")
        self._bundles = bundles
        if self.executor == "thread":
            reuse_freed_memory()  # training shares this process: tune malloc before the worker threads start
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._queue: FairQueue[Job] = FairQueue()
        self._running: dict[str, Job] = {}
        self._recent_speeds: deque[tuple[tuple, float]] = deque(maxlen=RECENT_RUNS_FOR_ESTIMATES)
        self._closed = False
        # On Ray each task gets its GPU on whichever node runs it; locally each worker is pinned here.
        devices = [None] * self.max_concurrent if self.executor == "ray" else worker_devices(self.max_concurrent)
        self.workers = [Worker(index, device) for index, device in enumerate(devices)]
        self._threads = [threading.Thread(target=self._work, args=(worker,), name=f"explore-trainer-{worker.index}",
                                          daemon=True) for worker in self.workers]
        for thread in self._threads:
            thread.start()

    # ----- the gate ----------------------------------------------------------------------------
    def submit(self, store: RunStore, configs: list[RunConfig]) -> Submission:
        """Queue runs (a preset or a sweep is one call: its runs start in order) after the gate:
        raises `settings.NotAllowed` (nothing queued) or returns the run ids with the gate's notes."""
        settings = self._settings()
        with self._lock:
            active = self._queue.count(store.namespace) + sum(
                job.namespace == store.namespace for job in self._running.values())
        configs, notes = gate_request(settings, list(configs), active)
        run_ids = [store.create(config) for config in configs]
        with self._lock:
            for run_id, config in zip(run_ids, configs):
                self._queue.push(Job(store, run_id, config.epochs, (config.model, config.data.image_size)))
            self._wake.notify_all()
        return Submission(run_ids, notes)

    # ----- stopping ----------------------------------------------------------------------------
    def stop(self, run_id: str) -> bool:
        """Stop a running run within one batch, or take a queued one off the queue (any session's:
        the instructor's class view cancels through this too)."""
        with self._lock:
            if run_id in self._running:
                job = self._running[run_id]
                job.stop.set()
                for worker in self.workers:
                    if worker.job is job and worker.process is not None:
                        worker.process.request_stop()
                return True
            job = self._queue.remove(run_id)
        if job is None:
            return False
        message = "removed from the queue before it started"
        job.store.set_status(run_id, status="stopped", message=message)
        job.store.save_results(run_id, {"status": "stopped", "run_id": run_id, "message": message,
                                        "epochs_completed": 0}, None, None)
        return True

    # ----- what the pages show ---------------------------------------------------------------
    def queue_position(self, run_id: str) -> int | None:
        """0 while running, 1.. while waiting (in the order the fair queue will start them), None when
        not known to this manager."""
        with self._lock:
            if run_id in self._running:
                return 0
            for position, job in enumerate(self._queue.order(), start=1):
                if job.run_id == run_id:
                    return position
        return None

    def estimated_wait(self, run_id: str) -> float | None:
        """About how many seconds until a queued run starts: the epochs still to train ahead of it
        (the rest of the running runs, then the runs the fair queue starts first) × the recent
        seconds per epoch of runs alike (same model and image size, else any), shared by the workers.
        0 while running; None when unknown (not queued here, or no run finished yet to time)."""
        with self._lock:
            if run_id in self._running:
                return 0.0
            order = self._queue.order()
            ahead = []
            for job in order:
                if job.run_id == run_id:
                    break
                ahead.append((job, job.epochs))
            else:
                return None
            ahead += [(job, max(0, job.epochs - _epochs_done(job))) for job in self._running.values()]
            speeds = list(self._recent_speeds)
        if not speeds:
            return None
        overall = statistics.median(seconds for _, seconds in speeds)
        work = 0.0
        for job, epochs in ahead:
            alike = [seconds for key, seconds in speeds if key == job.speed_key]
            work += epochs * (statistics.median(alike) if alike else overall)
        return work / max(1, self.max_concurrent)

    def active(self) -> dict[str, list[str]]:
        with self._lock:
            return {"running": list(self._running), "queued": [job.run_id for job in self._queue.order()]}

    def overview(self) -> dict:
        """Everything the instructor's class view shows, as plain data:
        {"workers": [{"index", "device", "node", "pid", "run_id"}], "queues": {namespace: [run_id, ...]},
         "running": {run_id: namespace}}. `node`: the machine training the worker's run (this server's
        name for local workers; on Ray the cluster node, None while the slot is idle)."""
        with self._lock:
            workers = [{"index": w.index, "device": w.device or "cpu",
                        "pid": w.process.pid if w.process is not None else (os.getpid() if w.job else None),
                        "run_id": w.job.run_id if w.job else None, "node": socket.gethostname()}
                       for w in self.workers]
            if self.executor == "ray":  # where each slot's current task landed
                for entry, worker in zip(workers, self.workers):
                    if worker.process is not None:
                        entry.update(node=worker.process.node, device=worker.process.device_label())
            return {"workers": workers, "queues": self._queue.by_namespace(),
                    "running": {run_id: job.namespace for run_id, job in self._running.items()}}

    def wait_idle(self, timeout: float = 60.0) -> bool:
        """Block until nothing is queued or running (for tests and the CLI)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if not len(self._queue) and not self._running:
                    return True
            time.sleep(0.05)
        return False

    def close(self) -> None:
        """End the workers once their current runs end (tests; the server just exits)."""
        with self._lock:
            self._closed = True
            self._wake.notify_all()
        for thread in self._threads:
            thread.join(timeout=10)
        for worker in self.workers:
            if worker.process is not None:
                worker.process.close()

    # ----- the workers -----------------------------------------------------------------------
    def _next_job(self, worker: Worker) -> Job | None:
        with self._lock:
            while not len(self._queue) and not self._closed:
                self._wake.wait()
            if self._closed:
                return None
            job = self._queue.pop()
            self._running[job.run_id] = job
            worker.job = job
            return job

    def _work(self, worker: Worker) -> None:
        if self.executor != "thread":
            try:
                self._start_process(worker)  # warm before the first run: the interpreter and torch load now
            except Exception:  # e.g. out of memory: the next run tries again
                traceback.print_exc()
        while (job := self._next_job(worker)) is not None:
            try:
                if self.executor != "ray":  # a Ray run reports its own node when its task starts
                    job.store.set_status(job.run_id, executor=self.executor, node=socket.gethostname())
                if self.executor != "thread":
                    self._train_in_process(worker, job)
                else:
                    self._train_in_thread(worker, job)
            except Exception as error:  # never let the worker thread die; never leave the run 'queued' forever
                traceback.print_exc()
                if job.store.load(job.run_id, with_metrics=False).state in ("queued", "running"):
                    record_worker_death(job.store, job.run_id, f"the run could not be trained: "
                                                               f"{type(error).__name__}: {error}")
            finally:
                self._finished(worker, job)

    def _train_in_thread(self, worker: Worker, job: Job) -> None:
        bundle = None
        if self._bundles is not None:
            config = job.store.load(job.run_id, with_metrics=False).config
            bundle = self._bundles(config.data) if config is not None else None
        for _ in execute_run(job.store, job.run_id, job.stop.is_set, device=worker.device, bundle=bundle):
            pass

    def _start_process(self, worker: Worker) -> None:
        if self.executor == "ray":
            worker.process = ray_backend.RayExecutor(self._settings, slots=self.max_concurrent)
            return
        worker.process = WorkerProcess(worker.device)

    def _train_in_process(self, worker: Worker, job: Job) -> None:
        if worker.process is None or not worker.process.alive():
            self._start_process(worker)
        death = worker.process.train(str(job.store.root.resolve()), job.run_id, stop_requested=job.stop.is_set())
        if death is not None:
            record_worker_death(job.store, job.run_id, death)
            self._start_process(worker)  # a fresh worker, ready for the next run

    def _finished(self, worker: Worker, job: Job) -> None:
        speed = _seconds_per_epoch(job)
        with self._lock:
            self._running.pop(job.run_id, None)
            worker.job = None
            if speed is not None:
                self._recent_speeds.append((job.speed_key, speed))


def _epochs_done(job: Job) -> int:
    status = job.store.load(job.run_id, with_metrics=False).status
    return int(status.get("epoch") or 0)


def _seconds_per_epoch(job: Job) -> float | None:
    summary = job.store.load(job.run_id, with_metrics=False).summary or {}
    value = summary.get("seconds_per_epoch")
    return float(value) if isinstance(value, (int, float)) else None
