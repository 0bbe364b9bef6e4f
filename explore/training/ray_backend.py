"""Runs on a Ray cluster: when one server is not enough, each run becomes a Ray task on a GPU machine.

Chosen by configuration: with `EXPLORE_RAY_ADDRESS` set (`auto`, or `HOST:PORT` of a running
cluster; see explore.settings) the job manager's slots are `RayExecutor`s instead of local worker
processes (explore.training.workers). Everything in front of them stays the same: the gate, the fair queue,
Stop, the pages. `python -m explore train` uses `execute_remote` the same way.

How one run travels:
- The server submits a Ray task asking for one GPU (one CPU share where the cluster has no GPU).
  The task trains with the same `execute_run` as every other backend, but against a
  `ForwardingStore`: each write to the run store becomes a record streamed back to the server
  (a Ray streaming generator, `num_returns="streaming"`), which writes it to its own run store.
  So worker machines need no shared filesystem, and live curves and progress arrive as they happen.
- Stop: each slot owns a tiny `StopFlag` actor on the server's node. The training loop asks it
  before every batch without waiting for the answer (`StopPoll`), so a Stop is seen within a batch
  (plus one network round trip) and the run ends `stopped` with its curves, as on one machine.
- A worker process or node lost mid-run: Ray raises an error on the server's side of the stream;
  the run ends `failed` with a message naming the node. Tasks are never retried (a retry would
  train the run twice into one folder); the slot simply takes the next run.
- Data: the synthetic set is regenerated on the node from its spec (deterministic) and cached on
  that node's disk (explore.data.disk_cache). A folder or npz source whose files total at most
  `EXPLORE_RAY_SHIP_MB` (default 256 MB) is decoded on the server and sent through Ray's object
  store; a larger one must exist at the same path on every worker node, and a run whose node lacks
  it fails before training starts with a message saying so.

Worker nodes need the same `explore` installed (`pip install "explore[cluster]"`). Ray is imported
only here and only when the Ray backend is used, so the default install does not need it.
"""
from __future__ import annotations

import functools
import io
import os
import socket
import time
from pathlib import Path
from typing import Callable, Iterator

from explore.training.config import RunConfig
from explore.data import load_bundle, parse_source
from explore.data.disk_cache import bundle_from_payload, bundle_to_payload
from explore.device import reuse_freed_memory
from explore.training.execute import execute_run, record_worker_death
from explore.settings import AppSettings, load_settings, set_in_this_process
from explore.training.store import RunRecord, RunStore, StoreError


class ClusterError(RuntimeError):
    """The Ray backend cannot be used: ray missing, or the cluster unreachable. The message says what to do."""


# ----- connecting ------------------------------------------------------------------------------

def import_ray():
    try:
        import ray
    except ImportError as error:
        raise ClusterError('EXPLORE_RAY_ADDRESS is set but Ray is not installed: pip install "explore[cluster]" '
                           "(or unset EXPLORE_RAY_ADDRESS to train in local worker processes)") from error
    return ray


def connect(address: str | None) -> None:
    """Join the cluster at `address` ('auto' or HOST:PORT) unless this process is already connected
    (the tests start a local instance themselves)."""
    ray = import_ray()
    if ray.is_initialized():
        return
    check_reachable(address)
    try:
        ray.init(address=address or "auto")
    except Exception as error:  # ConnectionError, timeouts, a bad address: say which cluster and how to start one
        raise ClusterError(f"cannot reach the Ray cluster at {address!r} ({type(error).__name__}: "
                           f"{str(error).splitlines()[0][:200]}); start one with `ray start --head`, and where "
                           "the cluster uses token authentication set RAY_AUTH_MODE=token here with its token "
                           "(RAY_AUTH_TOKEN, or the file ~/.ray/auth_token)") from error


def check_reachable(address: str | None, timeout_s: float = 5.0) -> None:
    """Fail at once on a HOST:PORT nothing answers on: Ray itself keeps retrying for minutes."""
    host, _, port = (address or "").rpartition(":")
    if not host or not port.isdigit():
        return  # 'auto' (Ray finds the local cluster itself, or says there is none)
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as error:
        raise ClusterError(f"no Ray cluster answers at {address} ({error.strerror or error}); start one with "
                           "`ray start --head --port=PORT` and check EXPLORE_RAY_ADDRESS") from error


def slot_count(max_jobs: int | None = None) -> int:
    """How many runs train at once: EXPLORE_MAX_JOBS when set, else one per cluster GPU, else one per CPU."""
    if max_jobs:
        return max_jobs
    resources = import_ray().cluster_resources()
    gpus = int(resources.get("GPU", 0))
    return gpus if gpus else max(1, int(resources.get("CPU", 1)))


def task_resources(cluster: dict, slots: int) -> tuple[dict, int]:
    """What each run asks Ray for, and how many CPU threads it trains with, given the cluster's
    resources (`ray.cluster_resources()`): one GPU where the cluster has them (a share of one when
    EXPLORE_MAX_JOBS asks for more runs than there are GPUs: small course models leave most of a GPU
    idle); else an equal share of the cluster's CPUs (one CPU per run with one slot per CPU)."""
    slots = max(1, slots)
    gpus = cluster.get("GPU", 0)
    if gpus >= 1:
        return {"num_gpus": min(1.0, gpus / slots), "num_cpus": 1}, 1
    cpus = max(1, int(cluster.get("CPU", 1)) // slots)
    return {"num_cpus": cpus}, cpus


# ----- the task on the worker node -------------------------------------------------------------

class ForwardingStore:
    """The run store as a Ray task sees it: the run's config to read, and every write kept as a
    record for the server (which owns the real store). `take()` hands over the records so far."""

    def __init__(self, run_id: str, config: RunConfig):
        self.run_id, self.config = run_id, config
        self._pending: list[dict] = []

    def load(self, run_id: str, with_metrics: bool = True) -> RunRecord:
        return RunRecord(run_id=run_id, path=Path(run_id), config=self.config)

    def set_status(self, run_id: str, **fields) -> None:
        self._pending.append({"kind": "store", "call": "set_status", "fields": fields})

    def append_metrics(self, run_id: str, record: dict) -> None:
        self._pending.append({"kind": "store", "call": "append_metrics", "record": record})

    def save_results(self, run_id: str, summary: dict, state_dict: dict | None, predictions: dict | None) -> None:
        weights = {k: v.detach().cpu() for k, v in state_dict.items()} if state_dict is not None else None
        self._pending.append({"kind": "store", "call": "save_results", "summary": summary,
                              "weights": tensors_to_bytes(weights), "predictions": tensors_to_bytes(predictions)})

    def take(self) -> list[dict]:
        records, self._pending = self._pending, []
        return records


class StopPoll:
    """`should_stop` for the training loop on a worker node. It asks the slot's StopFlag actor without
    waiting for the answer, so no batch waits on the network; a Stop is seen at the first batch after
    the answer arrives."""

    def __init__(self, flag):
        import ray

        self._ray, self._flag, self.stopped = ray, flag, False
        self._pending = flag.is_set.remote() if flag is not None else None

    def __call__(self) -> bool:
        if self.stopped or self._pending is None:
            return self.stopped
        ready, _ = self._ray.wait([self._pending], timeout=0)
        if ready:
            try:
                self.stopped = bool(self._ray.get(self._pending))
            except self._ray.exceptions.RayError:  # the flag restarting: ask again, keep training meanwhile
                self.stopped = False
            self._pending = None if self.stopped else self._flag.is_set.remote()
        return self.stopped


def this_node() -> dict:
    """Where this task runs: host name, IP and Ray node id, and the GPU Ray gave it (if any)."""
    import ray

    where = {"node": socket.gethostname(), "node_ip": ray.util.get_node_ip_address(),
             "node_id": ray.get_runtime_context().get_node_id()[:12]}
    gpu_ids = ray.get_gpu_ids()
    if gpu_ids:
        import torch

        where["gpu"] = int(gpu_ids[0])  # the GPU's index on its machine (Ray makes it cuda:0 in the task)
        where["gpu_name"] = torch.cuda.get_device_name(0)
    return where


def train_task(config_json: str, run_id: str, stop_flag, data_payload: dict | None, data_note: str | None,
               cpu_threads: int) -> Iterator[dict]:
    """The Ray task (a streaming generator): train one run and yield its store writes as records."""
    reuse_freed_memory()  # the training-speed malloc settings belong where the training happens
    # Ray sets OMP_NUM_THREADS to the task's CPUs; the trainer's own thread rule reads EXPLORE_THREADS.
    set_in_this_process("EXPLORE_THREADS", str(cpu_threads))
    # Synthetic sets are cached per node; a worker's working folder may be temporary, the home is not.
    set_in_this_process("EXPLORE_CACHE_DIR", str(Path.home() / ".cache" / "explore"), keep_existing=True)
    where = this_node()
    yield {"kind": "started", "pid": os.getpid(), **where}
    config = RunConfig.from_json(config_json)
    store = ForwardingStore(run_id, config)
    bundle = None
    if data_payload is not None:
        bundle = bundle_from_payload(data_payload)
    elif missing := missing_on_node(config, where, data_note):
        store.save_results(run_id, {"status": "failed", "message": missing, "run_id": run_id,
                                    "epochs_completed": 0}, None, None)
        store.set_status(run_id, status="failed", message=missing, finished=time.time())
        yield from iter_records(store)
        yield {"kind": "end", "status": "failed", "message": missing, "run_id": run_id, "summary": {}}
        return
    device = "cuda:0" if "gpu" in where else None
    for item in execute_run(store, run_id, StopPoll(stop_flag), device=device, bundle=bundle):
        yield from iter_records(store)
        if item["kind"] != "progress":  # progress already travels as status writes (rate-limited)
            yield item
    yield from iter_records(store)


def iter_records(store: ForwardingStore) -> Iterator[dict]:
    """The store writes so far, one by one. (Ray drives a streaming task with `send()`, which a plain
    `yield from a_list` would forward to the list's iterator, which has no `send`.)"""
    for record in store.take():
        yield record


def missing_on_node(config: RunConfig, where: dict, data_note: str | None) -> str | None:
    """A clear message when a folder or npz the run needs is not at its path on this node, else None."""
    for source in _file_sources(config):
        if not Path(parse_source(source)[1]).exists():
            return (f"DataError: {source} does not exist on Ray node {where['node']} ({where['node_ip']}); "
                    f"{data_note or 'it could not be sent from the server'}. Put it at the same path on "
                    "every worker node (a shared or copied folder).")
    return None


def _file_sources(config: RunConfig) -> list[str]:
    sources = [config.data.source] + ([config.data.test_source] if config.data.test_source else [])
    return [source for source in sources if source != "synthetic"]


# ----- the server's side -----------------------------------------------------------------------

def data_for_nodes(config: RunConfig, ship_mb: int) -> tuple[dict | None, str | None]:
    """How the run's data reaches a worker node: (payload, None) when a small folder or npz is decoded
    here and sent through the object store; (None, None) for the synthetic set (each node makes it);
    (None, why not sent) when the node must have the files at the same path."""
    sources = _file_sources(config)
    if not sources:
        return None, None
    total = 0
    for source in sources:
        path = Path(parse_source(source)[1])
        if not path.exists():
            return None, f"it is not on the server ({path}) either, so it cannot be sent"
        total += files_size(path)
    if total > ship_mb * 1024 * 1024:
        return None, (f"at {total / 2**20:.0f} MB it is over the {ship_mb} MB that are sent through Ray's "
                      "object store (EXPLORE_RAY_SHIP_MB)")
    return bundle_to_payload(load_bundle(config.data)), None


def files_size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(entry.stat().st_size for entry in path.rglob("*") if entry.is_file())


def execute_remote(store: RunStore, run_id: str, stop_flag=None, settings: AppSettings | None = None,
                   on_start: Callable[[dict], None] | None = None, slots: int | None = None,
                   stop_requested: Callable[[], bool] = lambda: False) -> Iterator[dict]:
    """Train a stored run as a Ray task; write what it streams back into `store` and yield the
    training records (epochs, then 'end') like `execute_run`. Needs a connected Ray (`connect`).

    stop_flag: the slot's StopFlag actor (None: the run cannot be stopped, the CLI's case).
    on_start: called with where the run landed (node, node_ip, gpu, pid) once the task starts.
    slots: how many runs share the cluster (the job manager's slots; default one per GPU or CPU).
    stop_requested: a Stop pressed while the task still waits for a free GPU cancels it there.
    """
    ray = import_ray()
    settings = settings or load_settings()
    config = store.load(run_id, with_metrics=False).config
    if config is None:
        raise StoreError(f"run {run_id} cannot start: its config is unreadable")
    store.set_status(run_id, executor="ray", message="waiting for a Ray worker")
    try:
        payload, data_note = data_for_nodes(config, settings.ray_ship_mb)
    except Exception as error:  # a damaged folder: the run fails before it is sent, the slot goes on
        yield fail_run(store, run_id, f"{type(error).__name__}: {error}", {"executor": "ray"})
        return
    resources, threads = task_resources(ray.cluster_resources(), slots or slot_count())
    stream = _remote_train_task().options(**resources).remote(config.to_json(), run_id, stop_flag,
                                              ray.put(payload) if payload is not None else None, data_note, threads)
    where: dict = {"executor": "ray"}
    ended = False
    try:
        if not started_before_stop(ray, stream, stop_requested):
            ray.cancel(stream)
            ended = True
            yield stop_unstarted(store, run_id)
            return
        for ref in stream:
            item = ray.get(ref)
            if item["kind"] == "started":
                where |= {key: value for key, value in item.items() if key not in ("kind", "pid")}
                store.set_status(run_id, status="running", pid=item["pid"], message=f"starting on {where['node']}",
                                 **where)
                if on_start:
                    on_start(item)
            elif item["kind"] == "store":
                write_record(store, run_id, item, where)
            else:
                if item["kind"] == "end":
                    ended = True
                    item["summary"] = (item.get("summary") or {}) | where
                yield item
        ended = True
    except ray.exceptions.RayError as error:
        ended = True
        yield fail_run(store, run_id, lost_message(where, error, ray), where)
    finally:
        if not ended:  # this side gave up (its store failed, Ctrl-C in the CLI): end the task too
            ray.cancel(stream, force=True)


@functools.lru_cache(maxsize=1)
def _remote_train_task():
    """`train_task` as a Ray remote function (made once: Ray ships a function's code to the cluster once)."""
    return import_ray().remote(num_returns="streaming", max_retries=0)(train_task)


def started_before_stop(ray, stream, stop_requested: Callable[[], bool], poll_s: float = 0.5) -> bool:
    """Wait for the task's first record (it has a GPU and started); False when a Stop comes first. A
    cluster with fewer free GPUs than slots (a machine lost, another app's jobs) keeps tasks waiting."""
    while True:
        ready, _ = ray.wait([stream], timeout=poll_s)
        if ready:
            return True
        if stop_requested():
            return False


def stop_unstarted(store: RunStore, run_id: str) -> dict:
    message = "stopped before it started: it was waiting for a free worker on the Ray cluster"
    summary = {"status": "stopped", "message": message, "run_id": run_id, "epochs_completed": 0, "executor": "ray"}
    store.save_results(run_id, summary, None, None)
    store.set_status(run_id, status="stopped", message=message, finished=time.time())
    return {"kind": "end", "status": "stopped", "message": message, "run_id": run_id, "summary": summary}


def write_record(store: RunStore, run_id: str, item: dict, where: dict) -> None:
    """Apply one store write streamed back from a worker node to the server's run store."""
    if item["call"] == "set_status":
        store.set_status(run_id, **item["fields"])
    elif item["call"] == "append_metrics":
        store.append_metrics(run_id, item["record"])
    elif item["call"] == "save_results":
        store.save_results(run_id, item["summary"] | where, tensors_from_bytes(item["weights"]),
                           tensors_from_bytes(item["predictions"]))


def lost_message(where: dict, error: Exception, ray) -> str:
    """Why a run ended without its results, naming the node it was on."""
    cause = getattr(error, "cause", None) or error  # a RayTaskError wraps the task's own exception
    reason = str(cause).strip().splitlines()[-1][:300] if str(cause).strip() else type(cause).__name__
    if "node" not in where:
        return f"the Ray task for this run was lost before it started on a node ({type(error).__name__}: {reason})"
    node = f"node {where['node']} ({where['node_ip']})"
    if isinstance(error, ray.exceptions.RayTaskError):  # Python code failed outside execute_run's own guard
        return f"the run failed on Ray {node}: {type(cause).__name__}: {reason}"
    return (f"the Ray worker training this run on {node} died or the node was lost "
            f"({type(error).__name__}: {reason})")


def fail_run(store: RunStore, run_id: str, message: str, details: dict) -> dict:
    """End a run as failed in the server's store; returns the 'end' record for the caller."""

    record_worker_death(store, run_id, message, details)
    return {"kind": "end", "status": "failed", "message": message, "run_id": run_id,
            "summary": {"status": "failed", "message": message, "run_id": run_id} | details}


def tensors_to_bytes(tensors: dict | None) -> bytes | None:
    if tensors is None:
        return None
    import torch

    buffer = io.BytesIO()
    torch.save(tensors, buffer)
    return buffer.getvalue()


def tensors_from_bytes(data: bytes | None) -> dict | None:
    """Tensors only: weights_only=True refuses anything that would run code, as the run store does."""
    if data is None:
        return None
    import torch

    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


# ----- one slot of the job manager ------------------------------------------------------------

class StopFlag:
    """A one-bit actor per slot: the server sets it, the training task polls it before every batch."""

    def __init__(self):
        self._set = False

    def set(self) -> None:
        self._set = True

    def clear(self) -> None:
        self._set = False

    def is_set(self) -> bool:
        return self._set


@functools.lru_cache(maxsize=1)
def _remote_stop_flag():
    return import_ray().remote(num_cpus=0, max_restarts=1)(StopFlag)  # no CPU: flags never take a run's slot


class RemoteStopFlag:
    """The server's handle on a slot's StopFlag actor."""

    def __init__(self):
        ray = import_ray()
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        self._ray = ray
        self.requested = False  # this side's copy of the flag: a Stop pressed before the task started
        # On the server's own node, so losing a worker node never loses a flag.
        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=True)
        self.actor = _remote_stop_flag().options(scheduling_strategy=here).remote()

    def set(self) -> None:
        self.requested = True
        self.actor.set.remote()  # fire and forget: Stop must not block the page

    def clear(self) -> None:
        self.requested = False
        self._ray.get(self.actor.clear.remote())  # done before the next run is sent, so it never sees an old Stop


class RayExecutor:
    """One slot of the job manager on a Ray cluster: the counterpart of workers.WorkerProcess, with the
    same `train`, `request_stop`, `alive`, `pid` and `close`. Each run is a fresh Ray task; a lost task
    ends its run as failed (execute_remote records it) and the slot goes on with the next run."""

    executor = "ray"

    def __init__(self, settings: Callable[[], AppSettings] = load_settings, slots: int | None = None):
        self.settings, self.slots = settings, slots  # settings are read at every run (ray_ship_mb)
        self.stop_flag = RemoteStopFlag()
        self.where: dict = {}  # node, node_ip, gpu, pid of the run training now; {} while idle

    @property
    def pid(self) -> int | None:
        return self.where.get("pid")

    @property
    def node(self) -> str | None:
        return self.where.get("node")

    def device_label(self) -> str:
        """The current run's device, as the class view shows it ('GPU 1 (NVIDIA T4)', 'CPU'), or '-' idle."""
        if not self.where:
            return "-"
        return f"GPU {self.where['gpu']} ({self.where.get('gpu_name', '')})" if "gpu" in self.where else "CPU"

    def alive(self) -> bool:
        return True  # the slot is a promise of a Ray task, not a process: it cannot die

    def request_stop(self) -> None:
        """Stop the current run within one batch (or cancel it while it waits for a free worker)."""
        self.stop_flag.set()

    def train(self, runs_root: str, run_id: str, stop_requested: bool = False) -> None:
        """Train one run on the cluster and block until it ends; its outcome is in the store (a lost
        worker already recorded as failed there), so there is never a death for the caller to record."""
        self.stop_flag.clear()
        if stop_requested:  # Stop pressed between leaving the queue and now
            self.stop_flag.set()
        try:
            for _ in execute_remote(RunStore(runs_root), run_id, self.stop_flag.actor, self.settings(),
                                    on_start=self._started, slots=self.slots,
                                    stop_requested=lambda: self.stop_flag.requested):
                pass
        finally:
            self.where = {}
        return None

    def _started(self, item: dict) -> None:
        self.where = {key: value for key, value in item.items() if key != "kind"}

    def close(self, timeout: float = 5.0) -> None:
        try:
            import_ray().kill(self.stop_flag.actor)
        except Exception:  # the cluster already gone: nothing to clean up
            pass
