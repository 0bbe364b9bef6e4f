"""One run, start to end, against the run store: `execute_run`, the same generator every backend drives.

The job manager's threads (explore.training.jobs), its worker processes (explore.training.workers), a Ray task
(explore.training.ray_backend) and the CLI (explore.cli.train) all train a stored run with this one function;
it sits below all of them so none has to import another to reach it.
"""
from __future__ import annotations

import os
import time
import traceback
from typing import Callable, Iterator

import torch

from explore.device import Placement
from explore.training.runs import make_run
from explore.training.store import RunStore, StoreError
from explore.training.transfer import relabel_if_random
from explore.version import code_version

STATUS_WRITE_INTERVAL_S = 0.5  # live progress is written at most this often (keeps polling cheap)


def execute_run(store: RunStore, run_id: str, should_stop: Callable[[], bool] = lambda: False,
                device: str | None = None, bundle=None) -> Iterator[dict]:
    """Train the run whose config is stored under `run_id`, writing everything to its folder.

    Yields the training records (for the CLI's JSON lines); the final 'end' record carries the
    summary. Any failure ends as status 'failed' with its message; the worker survives.
    `device` pins the run to one GPU ("cuda:1": the job manager's worker for that GPU); a config
    that asks for the CPU keeps the CPU. `bundle`: the decoded data when the caller already has it
    (a Ray worker node given a small folder through the object store); else the config's source loads.
    """
    record = store.load(run_id, with_metrics=False)
    if record.config is None:
        raise StoreError(f"run {run_id} cannot start: {record.damaged}")
    config = record.config
    store.set_status(run_id, status="running", started=time.time(), pid=os.getpid(), message="preparing data")
    run = None
    try:
        placement = Placement.choose(device, config.precision) if device and config.device != "cpu" else None
        run = make_run(config, bundle=bundle, placement=placement)
        if run.weights_name is not None:  # a transfer run whose weights turned out random says so in its name
            honest = relabel_if_random(config, run.weights_name)
            if honest is not None:
                config = honest
                store.replace_config(run_id, config)
        store.set_status(run_id, message="training", setup_seconds=run.setup_seconds, weights=run.weights_name,
                         device=run.placement.describe(), device_index=run.placement.device.index)
        yield from _train_recording(store, run_id, run, should_stop)
        yield _save_results(store, run_id, run)
    except Exception as error:  # a bad config or data must end this run, not the worker or the page
        yield _save_failure(store, run_id, run, error)
    finally:
        del run
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def _train_recording(store: RunStore, run_id: str, run, should_stop) -> Iterator[dict]:
    """Drive the run's training, appending each epoch to metrics.jsonl and the progress to status.json
    (at most every STATUS_WRITE_INTERVAL_S); yields every record but the final 'end'."""
    epochs = run.config.epochs
    last_write = 0.0
    for item in run.fit(should_stop):
        if item["kind"] == "epoch":
            store.append_metrics(run_id, item)
            store.set_status(run_id, epoch=item["epoch"], batch=0, epochs=epochs)
            last_write = time.monotonic()
        elif item["kind"] == "progress" and time.monotonic() - last_write > STATUS_WRITE_INTERVAL_S:
            store.set_status(run_id, epoch=item["epoch"] - 1, batch=item["batch"], batches=item["batches"],
                             epochs=epochs)
            last_write = time.monotonic()
        if item["kind"] != "end":
            yield item


def _save_results(store: RunStore, run_id: str, run) -> dict:
    """summary.json, weights.pt and predictions.pt of a run that ended; returns its 'end' record."""
    predictions = run.predictions() if run.data else None
    summary = run.summary(predictions)
    summary["run_id"] = run_id
    summary["code_version"] = code_version()  # what a student hands in says which code produced it
    summary["device_index"] = run.placement.device.index  # which GPU of the server (None: the CPU)
    store.save_results(run_id, summary, run.model.state_dict() if run.status != "failed" else None, predictions)
    store.set_status(run_id, status=run.status, message=run.message, finished=time.time())
    return {"kind": "end", "status": run.status, "message": run.message, "run_id": run_id, "summary": summary}


def _save_failure(store: RunStore, run_id: str, run, error: Exception) -> dict:
    """A run that raised ends as 'failed' with the error and the epochs it completed; returns its 'end' record."""
    message = f"{type(error).__name__}: {error}"
    summary = {"status": "failed", "message": message, "run_id": run_id, "traceback": traceback.format_exc(limit=6)}
    if run is not None:
        summary["epochs_completed"] = len(run.history)
    try:
        store.save_results(run_id, summary, None, None)
        store.set_status(run_id, status="failed", message=message, finished=time.time())
    except OSError:
        pass
    return {"kind": "end", "status": "failed", "message": message, "run_id": run_id, "summary": summary}


def record_worker_death(store: RunStore, run_id: str, message: str, details: dict | None = None) -> None:
    """End a run whose worker died (or could not start): status 'failed', the epochs it completed, and why
    (`details` add to the summary, e.g. the Ray node it was on)."""
    try:
        epochs = len(store.load(run_id).metrics)
        store.save_results(run_id, {"status": "failed", "message": message, "run_id": run_id,
                                    "epochs_completed": epochs} | (details or {}), None, None)
        store.set_status(run_id, status="failed", message=message, finished=time.time())
    except OSError:
        traceback.print_exc()
