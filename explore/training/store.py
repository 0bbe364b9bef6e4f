"""The run store: one folder per run, plain files, safe to read while a run writes.

runs/<run_id>/
  config.json       the RunConfig (written first)
  status.json       live state: queued / running / finished / diverged / stopped / failed, progress
  metrics.jsonl     one JSON line per epoch (appended; a torn last line is ignored)
  summary.json      final metrics (written last)
  weights.pt        the model's state_dict (tensors only; loaded with weights_only=True)
  predictions.pt    probabilities and labels per split (tensors only)

Every JSON write is atomic (temp file + rename), so a reader never sees half a file. A
folder that cannot be read is listed as damaged with the reason, never a crash. Nothing in
a run folder is ever unpickled beyond plain tensors (`torch.load(weights_only=True)`).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import socket
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from explore.training.config import RunConfig
from explore.files import write_atomic  # noqa: F401 (re-exported: explore.training.store.write_atomic)
from explore.models.registry import family_of
from explore.settings import runs_dir

FINAL_STATUSES = ("finished", "diverged", "stopped", "failed")
ACTIVE_STATUSES = ("queued", "running")


class StoreError(Exception):
    """A run folder or the runs root cannot be used (missing, damaged, not writable)."""


def default_runs_root() -> Path:
    return runs_dir()


def write_json(path: Path, obj) -> None:
    write_atomic(path, json.dumps(obj, indent=2, sort_keys=True, default=str).encode())


def save_tensors(path: Path, obj) -> None:
    """torch.save of tensors/dicts/lists only, atomically."""
    import io

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    write_atomic(path, buffer.getvalue())


def load_tensors(path: Path):
    """Load a tensor file without executing anything in it (weights_only=True refuses pickled code)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as error:  # pickle errors, truncation, refused globals: all mean 'damaged'
        raise StoreError(f"{path.name} cannot be loaded safely: {str(error).splitlines()[0][:200]}") from error


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40] or "run"


@dataclass
class RunRecord:
    """What a page needs to know about one run folder."""

    run_id: str
    path: Path
    config: RunConfig | None = None
    status: dict = field(default_factory=dict)
    summary: dict | None = None
    metrics: list[dict] = field(default_factory=list)
    damaged: str | None = None  # why the folder could not be read; None when healthy

    @property
    def state(self) -> str:
        if self.damaged:
            return "damaged"
        if self.summary and self.summary.get("status"):
            return self.summary["status"]
        return self.status.get("status", "unknown")

    @property
    def label(self) -> str:
        name = self.config.name if self.config and self.config.name else self.run_id
        return name

    @property
    def created(self) -> float:
        return float(self.status.get("created", 0.0))


class RunStore:
    """Runs under one root folder. `namespace` keeps one browser session's runs apart on a shared server."""

    def __init__(self, root: str | Path | None = None, namespace: str | None = None):
        self.root = Path(root) if root is not None else default_runs_root()
        # Whose runs these are: one browser session on a shared server (its own queue in the job
        # manager), or "local" for a single user.
        self.namespace = slug(namespace) if namespace else "local"
        if namespace:
            self.root = self.root / self.namespace

    def ensure_writable(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            probe = self.root / f".write-test-{os.getpid()}"
            probe.write_bytes(b"ok")
            probe.unlink()
        except OSError as error:
            raise StoreError(f"the runs folder {self.root} is not writable ({error.strerror or error}); "
                             f"set EXPLORE_RUNS_DIR to a writable folder") from error

    # ----- writing ---------------------------------------------------------------------
    def create(self, config: RunConfig) -> str:
        """Make a new run folder with its config (model-dependent defaults resolved, so config.json says
        what will train) and a 'queued' status; returns the run id."""
        self.ensure_writable()
        config = config.resolve()
        digest = hashlib.sha1(f"{config.to_json()}{time.time_ns()}{os.getpid()}".encode()).hexdigest()[:6]
        run_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{slug(config.name or config.model)}-{digest}"
        path = self.root / run_id
        path.mkdir(parents=True)
        write_atomic(path / "config.json", config.to_json().encode())
        write_json(path / "status.json", {"status": "queued", "created": time.time(), "group": config.group})
        return run_id

    def path(self, run_id: str) -> Path:
        if "/" in run_id or "\\" in run_id or run_id.startswith("."):
            raise StoreError(f"invalid run id {run_id!r}")
        return self.root / run_id

    def replace_config(self, run_id: str, config: RunConfig) -> None:
        """Rewrite a run's config.json (e.g. a transfer run found to train from random weights is relabelled)."""
        write_atomic(self.path(run_id) / "config.json", config.to_json().encode())

    def set_status(self, run_id: str, **fields) -> None:
        path = self.path(run_id) / "status.json"
        current = _read_json(path) or {}
        current.update(fields)
        current["updated"] = time.time()
        write_json(path, current)

    def append_metrics(self, run_id: str, record: dict) -> None:
        """Append one epoch line; each line is one write, so a crash can only tear the last line."""
        line = json.dumps(record, sort_keys=True) + "\n"
        with open(self.path(run_id) / "metrics.jsonl", "a") as f:
            f.write(line)
            f.flush()

    def save_results(self, run_id: str, summary: dict, state_dict: dict | None, predictions: dict | None) -> None:
        path = self.path(run_id)
        if state_dict is not None:
            save_tensors(path / "weights.pt", {k: v.detach().cpu() for k, v in state_dict.items()})
        if predictions is not None:
            save_tensors(path / "predictions.pt", predictions)
        write_json(path / "summary.json", summary)  # last: its presence means the run is complete

    def delete(self, run_id: str) -> None:
        shutil.rmtree(self.path(run_id), ignore_errors=True)

    # ----- reading ---------------------------------------------------------------------
    def run_ids(self) -> list[str]:
        if not self.root.exists():
            return []
        return sorted((p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")),
                      reverse=True)

    def load(self, run_id: str, with_metrics: bool = True) -> RunRecord:
        """Read a run folder; problems become `record.damaged`, never an exception."""
        path = self.path(run_id)
        record = RunRecord(run_id=run_id, path=path)
        try:
            text = (path / "config.json").read_text()
            record.config = RunConfig.from_json(text)
        except FileNotFoundError:
            record.damaged = "config.json is missing"
        except (ValueError, TypeError, json.JSONDecodeError) as error:
            record.damaged = f"config.json is unreadable: {str(error)[:200]}"
        record.status = _read_json(path / "status.json") or {}
        summary_path = path / "summary.json"
        if summary_path.exists():
            record.summary = _read_json(summary_path)
            if record.summary is None and not record.damaged:
                record.damaged = "summary.json is unreadable"
        if with_metrics:
            record.metrics = read_metrics(path / "metrics.jsonl")
        if not record.damaged and record.status.get("status") == "running" and _writer_gone(record.status):
            record.damaged = "the process that was training this run ended before it finished"
        return record

    def list(self, with_metrics: bool = False) -> list[RunRecord]:
        return [self.load(run_id, with_metrics) for run_id in self.run_ids()]

    def group_runs(self, group: str, with_metrics: bool = True) -> list[RunRecord]:
        """The readable runs of one group (a sweep, a repeat, a 'Run both', a set of fixes), oldest first."""
        records = [r for r in self.list(with_metrics) if r.config is not None and r.config.group == group]
        return sorted(records, key=lambda r: r.created)

    def load_weights(self, run_id: str) -> dict:
        path = self.path(run_id) / "weights.pt"
        if not path.exists():
            raise StoreError(f"run {run_id} has no saved weights (it may still be running, or it failed)")
        state = load_tensors(path)
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise StoreError(f"weights.pt of run {run_id} is not a state_dict of tensors")
        return state

    def load_predictions(self, run_id: str) -> dict:
        path = self.path(run_id) / "predictions.pt"
        if not path.exists():
            raise StoreError(f"run {run_id} has no saved predictions")
        return load_tensors(path)

    def load_model(self, run_id: str):
        """Rebuild the trained model from config.json + weights.pt, in eval mode on the CPU."""
        record = self.load(run_id, with_metrics=False)
        if record.damaged or record.config is None:
            raise StoreError(f"run {run_id} is damaged: {record.damaged}")
        config = record.config
        size = (record.summary or {}).get("image_size") or config.data.image_size  # the size it trained at
        model = family_of(config.model).restore(config, size)
        try:
            model.load_state_dict(self.load_weights(run_id))
        except RuntimeError as error:
            raise StoreError(f"weights.pt of run {run_id} does not fit its model: {str(error)[:200]}") from error
        return model.eval(), config


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def read_metrics(path: Path) -> list[dict]:
    """Epoch records; a torn or garbled line (writer killed mid-write) is skipped."""
    records = []
    try:
        text = path.read_text()
    except OSError:
        return records
    for line in text.splitlines():
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            records.append(value)
    return records


def _writer_gone(status: dict) -> bool:
    """A 'running' run whose writer process no longer exists was killed mid-run."""
    pid = status.get("pid")
    if not isinstance(pid, int):
        return False
    if status.get("node") not in (None, socket.gethostname()):
        return False  # trained on another machine (a Ray node): its pid means nothing here
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False
