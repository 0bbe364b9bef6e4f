"""Comparing runs: their curves, a table of what differs, sweeps, repeats and exports.

Everything here reads `RunRecord`s from the run store and returns pandas DataFrames (or
Altair charts built from them), so the Compare page only arranges, and tests check the
numbers directly.

Words used below:
- best epoch: the epoch with the lowest validation loss (what early stopping keeps).
- a sweep: the same base config trained over a grid of one or two settings, queued as one group.
- repeats: the same config trained with different seeds (weight initialisation and batch order);
  the data stay the same, so the spread shows how much one run's result is luck.
"""
from __future__ import annotations

import datetime as dt
import io
import itertools
import json
import re
import zipfile
from typing import Iterable

import pandas as pd

from explore.training.config import RunConfig, flatten
from explore.models.registry import MODELS
from explore.insight.multilabel_report import auc_columns
from explore.insight.report import curves_frame
from explore.training.store import ACTIVE_STATUSES, RunRecord, RunStore

SPLITS = ("train", "val", "test", "train_dev")
# Settings that name or file a run rather than change what it learns: never "differences".
LABEL_SETTINGS = ("name", "group")

# setting -> (what the page calls it, type of its values)
SWEEP_SETTINGS: dict[str, tuple[str, type]] = {
    "lr": ("learning rate", float),
    "batch_size": ("batch size", int),
    "step_size": ("StepLR step size (epochs)", int),
    "gamma": ("learning-rate decay gamma", float),
    "weight_decay": ("weight decay", float),
    "dropout": ("dropout", float),
    "batch_norm": ("batch norm (on/off)", bool),
}
MODEL_OPTION_SETTINGS = ("dropout", "batch_norm")  # sweepable settings that live in RunConfig.model_options
BOOL_WORDS = {"on": True, "off": False, "true": True, "false": False, "yes": True, "no": False, "1": True,
              "0": False, "with": True, "without": False}
LOG_SCALE_SETTINGS = ("lr", "weight_decay")
RESULT_METRICS = ("val_acc_best_epoch", "val_acc_last_epoch", "test_acc")


# ----- picking runs -----------------------------------------------------------------------
def runs_frame(records: Iterable[RunRecord]) -> pd.DataFrame:
    """One row per run for pickers and filters: run_id, label, group, model, image_size, state, created."""
    rows = []
    for r in records:
        config = r.config
        rows.append({"run_id": r.run_id, "label": r.label, "group": (config.group if config else "") or "(none)",
                     "model": config.model if config else "?",
                     "image_size": config.data.image_size if config else None, "state": r.state,
                     "created": pd.Timestamp(r.created, unit="s") if r.created else pd.NaT})
    return pd.DataFrame(rows, columns=["run_id", "label", "group", "model", "image_size", "state", "created"])


def filter_runs(runs: pd.DataFrame, groups: Iterable[str] = (), models: Iterable[str] = (),
                since: dt.date | None = None, until: dt.date | None = None) -> pd.DataFrame:
    """Rows matching every filter given (an empty filter keeps everything); dates are inclusive."""
    keep = pd.Series(True, index=runs.index)
    groups, models = list(groups), list(models)
    if groups:
        keep &= runs["group"].isin(groups)
    if models:
        keep &= runs["model"].isin(models)
    day = runs["created"].dt.date
    unknown = runs["created"].isna()  # a folder without a creation time is never filtered out by date
    if since is not None:
        keep &= unknown | (day >= since)
    if until is not None:
        keep &= unknown | (day <= until)
    return runs[keep]


def date_range(runs: pd.DataFrame) -> tuple[dt.date, dt.date] | None:
    """The first and last day a run in `runs` was created (None when no run knows its creation time)."""
    known = runs["created"].dropna()
    return (known.min().date(), known.max().date()) if len(known) else None


def newest_group_runs(runs: pd.DataFrame, limit: int = 6) -> list[str]:
    """The run ids of the most recently created run's group (at most `limit`): what Compare shows first."""
    if runs.empty:
        return []
    newest = runs.sort_values("created").group.iloc[-1]
    return runs[runs.group == newest].run_id.tolist()[:limit]


def group_records(store: RunStore, group: str) -> list[RunRecord]:
    """Every run of one group (a preset's, a sweep's, a repeat's), with its metrics, newest first."""
    return list(reversed(store.group_runs(group)))


def finished_count(table: pd.DataFrame) -> int:
    """How many rows of a results table (`sweep_results`, `comparison_table`) have finished."""
    return int((table["status"] == "finished").sum()) if len(table) else 0


def watchable_groups(found: Iterable[str], just_queued: str | None = None) -> list[str]:
    """Groups to offer for watching, newest name first: those in the store, plus one this session just queued."""
    return sorted(set(found) | ({just_queued} if just_queued else set()), reverse=True)


# ----- what differs between runs ---------------------------------------------------------
def _settings(config: RunConfig) -> dict:
    """Flat settings with hashable values (lists become text), labels left out."""
    flat = flatten(config.to_dict())
    return {k: (", ".join(map(str, v)) if isinstance(v, list) else v) for k, v in flat.items()
            if k not in LABEL_SETTINGS}


def differing_settings(configs: Iterable[RunConfig]) -> list[str]:
    """The settings whose value is not the same in every config (data.* keys flattened)."""
    flats = [_settings(c) for c in configs]
    keys = sorted(set().union(*flats)) if flats else []
    return [k for k in keys if len({repr(f.get(k)) for f in flats}) > 1]


def _short(key: str) -> str:
    return key.removeprefix("data.").removeprefix("model_options.")


def _format(value) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return "—" if value is None else str(value)


def run_labels(records: list[RunRecord], max_settings: int = 3) -> dict[str, str]:
    """A legend label per run: its name plus the settings that set it apart from the others.

    Labels are unique: runs that differ in nothing shown get their run id appended."""
    healthy = [r for r in records if r.config is not None]
    keys = differing_settings(r.config for r in healthy)
    labels = {}
    for r in records:
        name = (r.config.name or r.config.model) if r.config else r.run_id
        if r.config is not None and keys:
            flat = _settings(r.config)
            shown = ", ".join(f"{_short(k)}={_format(flat.get(k))}" for k in keys[:max_settings]
                              if not (k == "model" and r.config.model in name))
            if shown:
                name = f"{name} · {shown}"
        labels[r.run_id] = name
    counts = pd.Series(list(labels.values())).value_counts()
    return {rid: (f"{label} · {rid[-6:]}" if counts[label] > 1 else label) for rid, label in labels.items()}


def _best_epoch(record: RunRecord) -> int | None:
    if record.summary and record.summary.get("best_epoch"):
        return int(record.summary["best_epoch"])
    losses = [(m["val_loss"], m["epoch"]) for m in record.metrics if "val_loss" in m]
    return min(losses)[1] if losses else None


def run_results(record: RunRecord) -> dict:
    """The numbers the table shows for one run; a run still training reads its metrics so far."""
    metrics, summary = record.metrics, record.summary or {}
    by_epoch = {m.get("epoch"): m for m in metrics}
    best = _best_epoch(record)
    seconds = sorted(m["seconds"] for m in metrics if "seconds" in m)
    test_acc = summary.get("test_acc")
    if test_acc is None and metrics:
        test_acc = metrics[-1].get("test_acc")
    return {
        "best_epoch": best,
        "val_acc_best_epoch": by_epoch.get(best, {}).get("val_acc"),
        "val_acc_last_epoch": metrics[-1].get("val_acc") if metrics else summary.get("last_val_acc"),
        "test_acc": test_acc,
        "epochs": len(metrics) if metrics else summary.get("epochs_completed", 0),
        "seconds_per_epoch": seconds[len(seconds) // 2] if seconds else summary.get("seconds_per_epoch"),
        "status": record.state,
    }


def comparison_table(records: list[RunRecord], settings: Iterable[str] | None = None) -> pd.DataFrame:
    """One row per run: run label, the settings that differ between the runs (or `settings`),
    then best epoch, val accuracy at the best and the last epoch, test accuracy, epochs, median
    seconds per epoch and status."""
    labels = run_labels(records)
    keys = list(settings) if settings is not None else differing_settings(r.config for r in records if r.config)
    rows = []
    for r in records:
        flat = _settings(r.config) if r.config else {}
        row = {"run": labels[r.run_id], "run_id": r.run_id}
        row |= {_short(k): flat.get(k) for k in keys}
        row |= run_results(r)
        row |= auc_columns(r)  # multi-label runs: val/test AUC per finding
        rows.append(row)
    per_label = [k for row in rows for k in row if " AUC · " in k]
    columns = ["run", "run_id", *[_short(k) for k in keys], "best_epoch", *RESULT_METRICS[:2], "test_acc", "epochs",
               "seconds_per_epoch", "status", *per_label]
    table = pd.DataFrame(rows, columns=list(dict.fromkeys(columns)))
    for column in ("best_epoch", "epochs"):
        table[column] = table[column].astype("Int64")
    return table


# ----- curves ---------------------------------------------------------------------------
def curves(records: list[RunRecord]) -> pd.DataFrame:
    """Long table of every epoch record: run_id, run (label), epoch, split, metric, value
    (the same rows as report.curves_frame, learning rate included, with the run id)."""
    labels = run_labels(records)
    frames = [curves_frame(r.metrics, labels[r.run_id]).assign(run_id=r.run_id) for r in records if r.metrics]
    columns = ["run_id", "run", "epoch", "split", "metric", "value"]
    if not frames:
        return pd.DataFrame(columns=columns)
    return pd.concat(frames, ignore_index=True)[columns]


# ----- sweeps -----------------------------------------------------------------------------
def parse_values(setting: str, text: str) -> list:
    """'1e-4, 3e-4 1e-3' → [0.0001, 0.0003, 0.001] (typed for the setting, duplicates dropped)."""
    if setting not in SWEEP_SETTINGS:
        raise ValueError(f"cannot sweep {setting!r}; choose from {', '.join(SWEEP_SETTINGS)}")
    kind = SWEEP_SETTINGS[setting][1]
    values = []
    for token in re.split(r"[,\s;]+", text.strip()):
        if not token:
            continue
        if kind is bool:
            if token.lower() not in BOOL_WORDS:
                raise ValueError(f"{SWEEP_SETTINGS[setting][0]}: {token!r} is not on or off")
            value = BOOL_WORDS[token.lower()]
            if value not in values:
                values.append(value)
            continue
        try:
            value = float(token)
            if kind is int:
                if value != int(value):
                    raise ValueError
                value = int(value)
        except ValueError:
            raise ValueError(f"{SWEEP_SETTINGS[setting][0]}: {token!r} is not a{'' if kind is float else 'n'} "
                             f"{'number' if kind is float else 'integer'}") from None
        if value not in values:
            values.append(value)
    if not values:
        raise ValueError(f"give at least one value for the {SWEEP_SETTINGS[setting][0]}")
    return values


def setting_value(config: RunConfig, setting: str):
    """A sweepable setting's value in a config (dropout lives in the model options)."""
    if setting in MODEL_OPTION_SETTINGS:
        return config.options().get(setting, _default_option(config.model, setting))
    return getattr(config, setting)


def _default_option(model: str, option: str):
    import inspect

    parameter = inspect.signature(MODELS[model].build).parameters.get(option)
    return parameter.default if parameter is not None else None


def _check_sweepable(base: RunConfig, setting: str) -> None:
    if setting in MODEL_OPTION_SETTINGS and setting not in MODELS[base.model].options:
        takes = ", ".join(n for n, info in MODELS.items() if setting in info.options)
        raise ValueError(f"model {base.model!r} has no {SWEEP_SETTINGS[setting][0]} setting; "
                         f"models that take one: {takes}")
    if setting == "step_size" and base.scheduler != "step":
        raise ValueError(f"the step size only matters with the 'step' scheduler; the base run uses "
                         f"{base.scheduler!r}")
    if setting == "gamma" and base.scheduler not in ("step", "exponential", "plateau"):
        raise ValueError(f"gamma only matters with the step, exponential or plateau scheduler; the base run uses "
                         f"{base.scheduler!r}")


def sweep_configs(base: RunConfig, grid: dict[str, list], group: str, epochs: int | None = None) -> list[RunConfig]:
    """Every combination of one or two settings' values, as configs in one group (first setting outer)."""
    if not 1 <= len(grid) <= 2:
        raise ValueError("a sweep varies one or two settings")
    for setting, values in grid.items():
        if setting not in SWEEP_SETTINGS:
            raise ValueError(f"cannot sweep {setting!r}; choose from {', '.join(SWEEP_SETTINGS)}")
        if not values:
            raise ValueError(f"give at least one value for the {SWEEP_SETTINGS[setting][0]}")
        _check_sweepable(base, setting)
    base_name = base.name or base.model
    configs = []
    for combination in itertools.product(*grid.values()):
        changes: dict = {"group": group}
        if epochs is not None:
            changes["epochs"] = int(epochs)
        shown = []
        for setting, value in zip(grid, combination):
            if setting in MODEL_OPTION_SETTINGS:
                options = dict(changes.get("model_options", base.model_options)) | {setting: value}
                changes["model_options"] = tuple(options.items())
            else:
                changes[setting] = value
            shown.append(f"{setting}={_format(value)}")
        changes["name"] = f"{base_name} · {' '.join(shown)}"
        configs.append(base.replace(**changes))
    return configs


def swept_settings(configs: Iterable[RunConfig]) -> list[str]:
    """The sweepable settings whose value differs between the configs (in SWEEP_SETTINGS order)."""
    configs = list(configs)
    return [s for s in SWEEP_SETTINGS if len({repr(setting_value(c, s)) for c in configs}) > 1]


def _by_group(records: Iterable[RunRecord]) -> dict[str, list[RunConfig]]:
    groups: dict[str, list[RunConfig]] = {}
    for r in records:
        if r.config is not None and r.config.group:
            groups.setdefault(r.config.group, []).append(r.config)
    return groups


def sweep_groups(records: Iterable[RunRecord]) -> dict[str, list[str]]:
    """Groups that are sweeps: their runs differ in one or two sweepable settings (and seeds aside, nothing
    else but names). Includes the homework presets that sweep a rate or a step size. {group: settings}."""
    out = {}
    for group, configs in _by_group(records).items():
        swept = swept_settings(configs)
        others = set(differing_settings(configs)) - set(swept) - {"model_options.dropout"}
        if 1 <= len(swept) <= 2 and not others:
            out[group] = swept
    return out


def repeat_groups(records: Iterable[RunRecord]) -> list[str]:
    """Groups whose runs differ only in the seed."""
    return [group for group, configs in _by_group(records).items()
            if len(configs) > 1 and differing_settings(configs) == ["seed"]]


def sweep_results(records: list[RunRecord], settings: list[str]) -> pd.DataFrame:
    """One row per run of a sweep: the swept settings' values, then run_results columns."""
    rows = []
    for r in records:
        if r.config is None:
            continue
        row = {"run_id": r.run_id, "run": r.label}
        row |= {s: setting_value(r.config, s) for s in settings}
        row |= run_results(r)
        rows.append(row)
    return pd.DataFrame(rows, columns=["run_id", "run", *settings, "best_epoch", *RESULT_METRICS, "epochs",
                                       "seconds_per_epoch", "status"])


# ----- repeats ----------------------------------------------------------------------------
def repeat_configs(base: RunConfig, seeds: Iterable[int] = (0, 1, 2), group: str = "") -> list[RunConfig]:
    """The same config once per training seed (the data stay fixed: `data.seed` is not changed)."""
    base_name = base.name or base.model
    return [base.replace(seed=int(seed), group=group or base.group, name=f"{base_name} · seed {seed}")
            for seed in seeds]


def aggregate_repeats(table: pd.DataFrame, metrics: Iterable[str] = RESULT_METRICS) -> pd.DataFrame:
    """Mean ± sample standard deviation (n−1), min and max of each metric over the finished runs."""
    done = table[table["status"] == "finished"] if "status" in table else table
    rows = []
    for metric in metrics:
        values = pd.to_numeric(done[metric], errors="coerce").dropna()
        rows.append({"metric": metric, "n": len(values), "mean": values.mean() if len(values) else None,
                     "std": values.std(ddof=1) if len(values) > 1 else None,
                     "min": values.min() if len(values) else None, "max": values.max() if len(values) else None})
    return pd.DataFrame(rows, columns=["metric", "n", "mean", "std", "min", "max"])


def describe_repeats(summary: pd.DataFrame) -> str:
    """'test acc 84.2% ± 2.1% (n=3) · ...' from `aggregate_repeats`."""
    parts = []
    for row in summary.itertuples():
        if not row.n:
            continue
        spread = f" ± {row.std:.1%}" if pd.notna(row.std) else ""
        parts.append(f"{row.metric.replace('_', ' ')} {row.mean:.1%}{spread} (n={row.n})")
    return " · ".join(parts)


def repeat_curves(curve_rows: pd.DataFrame) -> pd.DataFrame:
    """Per epoch, split and metric: mean and sample std over the runs (for a band chart)."""
    grouped = curve_rows.groupby(["epoch", "split", "metric"])["value"]
    out = grouped.agg(mean="mean", std=lambda v: v.std(ddof=1), n="count").reset_index()
    out["std"] = out["std"].fillna(0.0)
    out["low"], out["high"] = out["mean"] - out["std"], out["mean"] + out["std"]
    return out


# ----- export and delete ------------------------------------------------------------------
def table_csv(table: pd.DataFrame) -> bytes:
    return table.to_csv(index=False).encode()


def run_zip(store: RunStore, run_id: str) -> bytes:
    """config.json, status.json, metrics.jsonl (+ metrics.csv) and summary.json of one run, zipped.

    Weights and predictions stay out (large; the run folder has them)."""
    path = store.path(run_id)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name in ("config.json", "status.json", "metrics.jsonl", "summary.json"):
            if (path / name).is_file():
                archive.write(path / name, f"{run_id}/{name}")
        record = store.load(run_id)
        if record.metrics:
            archive.writestr(f"{run_id}/metrics.csv", pd.DataFrame(record.metrics).to_csv(index=False))
        if not (path / "summary.json").is_file():
            archive.writestr(f"{run_id}/README.txt", f"run state: {record.state}; no summary yet\n"
                             + json.dumps(record.status, indent=2, default=str))
    return buffer.getvalue()


def delete_runs(store: RunStore, run_ids: Iterable[str],
                active: Iterable[str] | None = None) -> tuple[list[str], list[str]]:
    """Delete run folders, refusing runs still queued or training. Returns (deleted, refused).

    `active`: the run ids the job manager is working on. Without it, a run whose status says
    queued/running is refused; with it, such a status left behind by a stopped server is not."""
    active_ids = set(active) if active is not None else None
    deleted, refused = [], []
    for run_id in run_ids:
        if active_ids is not None:
            busy = run_id in active_ids
        else:
            busy = store.load(run_id, with_metrics=False).state in ACTIVE_STATUSES
        if busy:
            refused.append(run_id)
            continue
        store.delete(run_id)
        deleted.append(run_id)
    return deleted, refused
