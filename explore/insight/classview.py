"""The instructor's class view: every session's finished runs, anonymously, on one chart.

Each student trains on site A (train/val) and is tested on site B. One dot per finished run, val
accuracy (site A) against test accuracy (site B), with the diagonal y = x: a model that generalises
sits on it, and the whole class's cloud sitting below it is the dataset mismatch, found together.

Runs live in the run store, one folder per browser session on a shared server (runs/<session>/<run>)
and directly under the root for the CLI and a one-user app. Sessions are shown as "student 1",
"student 2", ... in the order they started training: a session id in the URL is the key to that
student's runs, so it never appears on the projector.

Plain functions (no Streamlit): `class_runs(root)`, `class_scatter(df)`, `class_summary(df)`,
`queue_rows(...)`, `worker_rows(...)`, `server_memory_mb()`; pages/instructor.py arranges them.
"""
from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from explore.training.presets import PRESETS
from explore.training.store import RunRecord, RunStore
from benchmarks.soak import tree_rss_mb

RUN_COLUMNS = ["session", "run_id", "name", "model", "preset", "image_size", "epochs", "val_acc", "test_acc",
               "drop", "finished"]
CUSTOM = "custom run"


def namespaces(root: str | Path) -> list[str]:
    """The run namespaces under `root`: "" for runs kept directly in it, else one per session folder."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = []
    for path in sorted(root.iterdir()):
        if not path.is_dir() or path.name.startswith("."):
            continue
        if (path / "config.json").exists():  # a run folder: the root itself holds runs
            if "" not in found:
                found.insert(0, "")
        else:
            found.append(path.name)
    return found


def _store(root: str | Path, namespace: str) -> RunStore:
    # "" (a folder listing) and "local" (the job manager) both mean the runs kept directly in the root
    return RunStore(root, namespace=None if namespace in ("", "local") else namespace)


def session_labels(root: str | Path) -> dict[str, str]:
    """namespace → "student N", numbered by each session's first run (run ids start with their time)."""
    first_run = {}
    for namespace in namespaces(root):
        ids = _store(root, namespace).run_ids()
        if ids:
            first_run[namespace] = min(ids)
    ordered = sorted(first_run, key=lambda ns: (first_run[ns], ns))
    return {ns: ("this server (no session)" if ns == "" else f"student {i}") for i, ns in enumerate(ordered, start=1)}


def _folder(namespace: str) -> str:
    """The job manager calls the runs kept directly in the root "local"; the folder listing calls them ""."""
    return "" if namespace == "local" else namespace


def _preset(record: RunRecord) -> str:
    """The preset (or sweep) group the run was queued in; custom runs have none."""
    group = record.config.group if record.config else ""
    if group in PRESETS:
        return PRESETS[group].title
    return group or CUSTOM


def _row(record: RunRecord, session: str) -> dict | None:
    """One finished run's dot, or None when it has no val and test accuracy to plot."""
    summary = record.summary or {}
    if record.damaged or record.state != "finished" or record.config is None:
        return None
    val_acc, test_acc = summary.get("val_acc"), summary.get("test_acc")
    if val_acc is None or test_acc is None:  # eval_test off, or no site-B split
        return None
    finished = record.status.get("finished")
    return {"session": session, "run_id": record.run_id, "name": record.label, "model": record.config.model,
            "preset": _preset(record), "image_size": record.config.data.image_size,
            "epochs": summary.get("epochs_completed"), "val_acc": float(val_acc), "test_acc": float(test_acc),
            "drop": float(val_acc) - float(test_acc),
            "finished": pd.Timestamp(finished, unit="s") if finished else pd.NaT}


def class_runs(root: str | Path) -> pd.DataFrame:
    """Every session's finished runs with val (site A) and test (site B) accuracy, sessions anonymised."""
    rows = []
    for namespace, label in session_labels(root).items():
        for record in _store(root, namespace).list(with_metrics=False):
            row = _row(record, label)
            if row is not None:
                rows.append(row)
    frame = pd.DataFrame(rows, columns=RUN_COLUMNS)
    return frame.sort_values("finished", kind="stable").reset_index(drop=True) if len(frame) else frame


def class_summary(runs: pd.DataFrame) -> dict:
    """The numbers to say out loud: how many runs and students, mean accuracy at each site, the drop."""
    if runs.empty:
        return {"runs": 0, "sessions": 0, "val_acc": None, "test_acc": None, "drop": None, "below_diagonal": 0}
    return {"runs": len(runs), "sessions": runs.session.nunique(), "val_acc": float(runs.val_acc.mean()),
            "test_acc": float(runs.test_acc.mean()), "drop": float(runs["drop"].mean()),
            "below_diagonal": int((runs.test_acc < runs.val_acc).sum())}


def _axis_floor(runs: pd.DataFrame) -> float:
    """Both axes start at the same value (so the diagonal is at 45°): 0.4, or lower if a run scored lower."""
    lowest = min(runs.val_acc.min(), runs.test_acc.min()) if len(runs) else 0.4
    return max(0.0, min(0.4, float(lowest) - 0.05))


def _run_name(root: str | Path, namespace: str, run_id: str) -> str:
    record = _store(root, namespace).load(run_id, with_metrics=False)
    return record.label if not record.damaged else f"{run_id} (damaged)"


def _progress(root: str | Path, namespace: str, run_id: str) -> str:
    status = _store(root, namespace).load(run_id, with_metrics=False).status
    if "epochs" in status:
        return f"epoch {status.get('epoch', 0) + (1 if status.get('batch') else 0)} of {status['epochs']}"
    return status.get("message", "")


def queue_rows(overview: dict, root: str | Path, labels: dict[str, str] | None = None) -> pd.DataFrame:
    """The job manager's `overview()` as one row per run: session, state (running / queued #k), name."""
    labels = labels if labels is not None else session_labels(root)
    rows = []
    for run_id, namespace in overview.get("running", {}).items():
        rows.append({"session": labels.get(_folder(namespace), "new session"), "state": "running", "run_id": run_id,
                     "name": _run_name(root, namespace, run_id), "progress": _progress(root, namespace, run_id)})
    for namespace, run_ids in overview.get("queues", {}).items():
        for position, run_id in enumerate(run_ids, start=1):
            rows.append({"session": labels.get(_folder(namespace), "new session"), "state": f"queued #{position}",
                         "run_id": run_id, "name": _run_name(root, namespace, run_id), "progress": ""})
    return pd.DataFrame(rows, columns=["session", "state", "run_id", "name", "progress"])


def worker_rows(overview: dict, root: str | Path, labels: dict[str, str] | None = None) -> pd.DataFrame:
    """One row per worker: its device and process, and the run (and session) it trains now."""
    labels = labels if labels is not None else session_labels(root)
    running = overview.get("running", {})
    rows = []
    for worker in overview.get("workers", []):
        run_id = worker.get("run_id")
        namespace = running.get(run_id)
        rows.append({"worker": worker["index"], "node": worker.get("node") or "", "device": worker["device"],
                     "pid": worker.get("pid"),
                     "session": labels.get(_folder(namespace), "") if run_id else "",
                     "run": _run_name(root, namespace or "", run_id) if run_id and namespace is not None else "idle"})
    return pd.DataFrame(rows, columns=["worker", "node", "device", "pid", "session", "run"])


def server_memory_mb(pid: int | None = None) -> dict:
    """Resident memory of the server process and its children (worker processes), in MB."""
    return tree_rss_mb(pid if pid is not None else os.getpid())
