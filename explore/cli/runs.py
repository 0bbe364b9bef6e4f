"""The Compare page's commands for the terminal: `sweep`, `repeat`, `compare`, `export`, `import`.

    python -m explore sweep --model hw3_cnn --vary lr=1e-4,1e-3,1e-2 --epochs 3 --json
    python -m explore sweep --run RUN_ID --vary dropout=0.2,0.5 --vary lr=1e-4,1e-3
    python -m explore repeat --model hw3_cnn --seeds 0 1 2 --json
    python -m explore compare RUN_ID RUN_ID ... [--group G] --out results/ --json
    python -m explore export RUN_ID --out run.zip
    python -m explore import run.zip --json

Each builds its runs with the library functions the page uses (compare.sweep_configs,
compare.repeat_configs, compare.comparison_table, share.export_run_bundle ...), trains them
through the same loop as `train`, and ends with one JSON object (`--json`) or readable lines.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from explore import charts
from explore.insight import compare, report
from explore.training.config import RunConfig
from explore.data import DataError
from explore.models.registry import MODELS
from explore.training.share import export_run_bundle, import_run_bundle
from explore.training.store import RunStore, StoreError
from explore.cli.train import add_output_options, add_run_options, apply_args, honest_weights, train_all


# ----- shared pieces ------------------------------------------------------------------------
def _base_parser(prog: str, description: str) -> argparse.ArgumentParser:
    """--run RUN_ID or --model M as the base, every run option, --runs-dir and --json."""
    p = argparse.ArgumentParser(prog=f"python -m explore {prog}", description=description)
    base = p.add_mutually_exclusive_group(required=True)
    base.add_argument("--run", metavar="RUN_ID", help="start from a stored run's settings")
    base.add_argument("--model", choices=list(MODELS), help="start from a model's default settings")
    add_run_options(p)
    add_output_options(p)
    return p


def _base_config(args, store: RunStore) -> RunConfig:
    if args.run:
        record = store.load(args.run, with_metrics=False)
        if record.config is None:
            raise StoreError(f"run {args.run} cannot be used as a base: {record.damaged}")
        config = record.config
    else:
        config = RunConfig(model=args.model)
    return apply_args(config, args)


def _print(obj: dict, as_json: bool, text: str) -> None:
    print(json.dumps(obj, default=_plain) if as_json else text, flush=True)


def _plain(value):
    """pandas/numpy scalars and NaN → JSON-ready values."""
    try:
        import math

        number = float(value)
        return None if math.isnan(number) else number
    except (TypeError, ValueError):
        return str(value)


def _records(table) -> list[dict]:
    """A DataFrame as JSON-ready rows (NaN → None)."""
    return json.loads(table.to_json(orient="records"))


def _train_group(store: RunStore, configs: list[RunConfig], as_json: bool) -> tuple[int, list]:
    """Train the configs as one group; returns (exit status, their stored records, in order)."""
    configs = honest_weights(configs)
    before = set(store.run_ids())
    status = train_all(store, configs, as_json)
    new_ids = [i for i in store.run_ids() if i not in before]
    records = sorted((store.load(i) for i in new_ids), key=lambda r: r.created)
    return status, records


# ----- sweep --------------------------------------------------------------------------------
def sweep_main(argv: list[str]) -> int:
    p = _base_parser("sweep", "Train one or two settings over several values, as one group.")
    p.add_argument("--vary", action="append", required=True, metavar="SETTING=V1,V2,...",
                   help=f"a setting and its values (once or twice); settings: {', '.join(compare.SWEEP_SETTINGS)}")
    args = p.parse_args(argv)
    try:
        store = RunStore(args.runs_dir)
        store.ensure_writable()
        base = _base_config(args, store)
        grid = {}
        for item in args.vary:
            setting, sep, values = item.partition("=")
            if not sep:
                raise ValueError(f"--vary {item!r}: write SETTING=V1,V2 (e.g. lr=1e-4,1e-3)")
            grid[setting.strip()] = compare.parse_values(setting.strip(), values)
        group = args.group or f"sweep-{time.strftime('%Y%m%d-%H%M%S')}"
        configs = compare.sweep_configs(base, grid, group)
    except (ValueError, DataError, StoreError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    status, records = _train_group(store, configs, args.json)
    results = compare.sweep_results(records, list(grid))
    _print({"kind": "sweep", "group": group, "settings": list(grid), "results": _records(results)}, args.json,
           f"sweep {group}:\n{results.drop(columns=['run_id']).to_string(index=False)}")
    return status


# ----- repeat -------------------------------------------------------------------------------
def repeat_main(argv: list[str]) -> int:
    p = _base_parser("repeat", "Train the same settings with several seeds; report mean ± std.")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds (default 0 1 2)")
    args = p.parse_args(argv)
    try:
        store = RunStore(args.runs_dir)
        store.ensure_writable()
        base = _base_config(args, store)
        group = args.group or f"repeat-{time.strftime('%Y%m%d-%H%M%S')}"
        configs = compare.repeat_configs(base, args.seeds, group=group)
    except (ValueError, DataError, StoreError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    status, records = _train_group(store, configs, args.json)
    table = compare.comparison_table(records)
    summary = compare.aggregate_repeats(table)
    _print({"kind": "repeat", "group": group, "seeds": args.seeds, "summary": _records(summary),
            "runs": _records(table)}, args.json,
           f"repeat {group}: {compare.describe_repeats(summary)}")
    return status


# ----- compare ------------------------------------------------------------------------------
def compare_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m explore compare",
                                description="The table of settings that differ between runs and their results, "
                                            "and their curves, written as CSV (and PNG charts).")
    p.add_argument("run_ids", nargs="*", metavar="RUN_ID")
    p.add_argument("--group", help="every run of this group (a preset, a sweep, repeats)")
    p.add_argument("--out", help="folder for comparison.csv, curves.csv and the charts (default: print only)")
    p.add_argument("--format", choices=["png", "svg", "html", "json"], default="png", help="chart format")
    add_output_options(p)
    args = p.parse_args(argv)
    try:
        store = RunStore(args.runs_dir)
        records = runs_to_compare(store, args.run_ids, args.group)
        table = compare.comparison_table(records)
        files = write_comparison(records, table, Path(args.out), args.format) if args.out else []
    except (ValueError, StoreError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    _print({"kind": "compare", "runs": [r.run_id for r in records], "table": _records(table), "files": files},
           args.json, table.drop(columns=["run_id"]).to_string(index=False)
           + "".join(f"\nwrote {f}" for f in files))
    return 0


def runs_to_compare(store: RunStore, run_ids: list[str], group: str | None) -> list:
    ids = list(run_ids)
    if group:
        newest_first = reversed(store.group_runs(group, with_metrics=False))
        ids += [r.run_id for r in newest_first if r.run_id not in ids]
    if not ids:
        raise ValueError("name the runs to compare (RUN_ID ...) or a --group")
    records = [store.load(run_id) for run_id in ids]
    missing = [r.run_id for r in records if r.damaged and r.config is None]
    if missing:
        raise StoreError(f"cannot read run(s) {', '.join(missing)}: {records[0].damaged}")
    return records


def write_comparison(records: list, table, out: Path, fmt: str) -> list[str]:
    """comparison.csv, curves.csv, and one chart per metric (accuracy, loss, learning rate)."""

    out.mkdir(parents=True, exist_ok=True)
    curve_rows = compare.curves(records)
    files = {out / "comparison.csv": compare.table_csv(table), out / "curves.csv": compare.table_csv(curve_rows)}
    if not curve_rows.empty:
        if fmt not in charts.chart_formats():
            raise ValueError(f"cannot write {fmt} charts here; available: {', '.join(charts.chart_formats())}")
        drawn = {f"curves-{m}": charts.curves(curve_rows, m, by_run=True) for m in ("accuracy", "loss")}
        if (curve_rows.metric == report.LR_METRIC).any():
            drawn["learning-rate"] = charts.learning_rate(curve_rows)
        files |= {out / f"{name}.{fmt}": charts.chart_bytes(chart, fmt) for name, chart in drawn.items()}
    for path, data in files.items():
        path.write_bytes(data)
    return [str(path) for path in files]


# ----- export / import ----------------------------------------------------------------------
def export_main(argv: list[str]) -> int:

    p = argparse.ArgumentParser(prog="python -m explore export",
                                description="Write a run bundle: config, curves, summary, weights and predictions.")
    p.add_argument("run_id", metavar="RUN_ID")
    p.add_argument("--out", help="the .zip to write (default: RUN_ID.zip here)")
    p.add_argument("--no-weights", action="store_true", help="leave weights and predictions out (small bundle)")
    add_output_options(p)
    args = p.parse_args(argv)
    out = Path(args.out or f"{args.run_id}.zip")
    try:
        data = export_run_bundle(RunStore(args.runs_dir), args.run_id, include_tensors=not args.no_weights)
        out.write_bytes(data)
    except (StoreError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    _print({"kind": "export", "run_id": args.run_id, "file": str(out), "bytes": len(data),
            "weights": not args.no_weights}, args.json, f"wrote {out} ({len(data):,} bytes)")
    return 0


def import_main(argv: list[str]) -> int:

    p = argparse.ArgumentParser(prog="python -m explore import",
                                description="Open a run bundle (from export or the Train page) into the runs folder.")
    p.add_argument("bundle", metavar="FILE.zip")
    p.add_argument("--no-weights", action="store_true", help="import curves and metrics only, never weights")
    add_output_options(p)
    args = p.parse_args(argv)
    try:
        store = RunStore(args.runs_dir)
        store.ensure_writable()
        run_id = import_run_bundle(Path(args.bundle).read_bytes(), store, accept_weights=not args.no_weights)
    except (StoreError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    record = store.load(run_id, with_metrics=False)
    _print({"kind": "import", "run_id": run_id, "run_dir": str(store.path(run_id)), "name": record.label,
            "state": record.state}, args.json, f"imported as {run_id} → {store.path(run_id)}")
    return 0
