"""The command line of the explanation checks: `explain-report` (the report card, with the run's
remove-and-retrain results when there are some) and `roar` (train a run's ROAR group in this process).

Above both explore.insight.explain_report and explore.insight.roar, which the card's CLI joins: roar ranks pixels with
the report card's pixel order, so the report card module cannot import roar itself.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from explore.insight import explain_report
from explore.training.execute import execute_run
from explore.insight.roar import (RANDOM, ROAR_DEFAULT_METHODS, ROAR_FRACTIONS, report_lines, roar_configs, roar_methods,
                          roar_results, roar_rows, roar_sentence)
from explore.training.store import RunStore, StoreError


def roar_of(run_dir: str | Path) -> tuple[dict | None, list[str]]:
    """The finished remove-and-retrain runs of a run (from the same runs folder), and their text."""
    path = Path(run_dir)
    results = roar_results(RunStore(path.parent), path)
    return results, report_lines(results)


def explain_report_main(argv: list[str] | None = None) -> int:
    return explain_report.cli_main(argv, roar_of=roar_of)


def roar_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m explore roar",
                                description="Remove and retrain: train the ROAR group of a finished run in this "
                                            "process (each method × t, and random), then print test accuracy vs t.")
    p.add_argument("--run", required=True, metavar="RUN_DIR", help="the finished run whose maps decide")
    p.add_argument("--methods", nargs="+", choices=[m for m in roar_methods() if m != RANDOM],
                   default=list(ROAR_DEFAULT_METHODS), help="methods to remove by (random is always added)")
    p.add_argument("--fractions", nargs="+", type=float, default=list(ROAR_FRACTIONS), help="shares of pixels removed")
    p.add_argument("--json", action="store_true", help="print the results as one JSON object")
    return p


def roar_main(argv: list[str] | None = None) -> int:
    args = roar_parser().parse_args(argv)
    path = Path(args.run)
    store = RunStore(path.parent)
    try:
        if not (path / "weights.pt").exists():
            raise StoreError(f"{path} is not a finished run (no weights.pt)")
        source = store.load(path.name, with_metrics=False).config
        configs = roar_configs(source, path, args.methods, args.fractions)
    except (StoreError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for config in configs:
        run_id = store.create(config)
        end = list(execute_run(store, run_id))[-1]
        print(f"{config.name}: {end['status']} {end.get('message', '')}".rstrip(), file=sys.stderr)
    results = roar_results(store, path)
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    for row in roar_rows(results):
        print("  ".join(f"{key}: {value}" for key, value in row.items()))
    print(f"- {roar_sentence(results)}")
    return 0
