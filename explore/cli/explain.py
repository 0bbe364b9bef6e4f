"""The command line of the explanation checks: `explain-report` (the report card, with the run's
remove-and-retrain results when there are some) and `roar` (train a run's ROAR group in this process).

`explain-report` computes the card (explore.insight.explain_report) for a run folder. This module sits above
both explore.insight.explain_report and explore.insight.roar, which the card's CLI joins: roar ranks pixels with
the report card's pixel order, so the report card module cannot import roar itself.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from explore.training.execute import execute_run
from explore.insight.roar import (RANDOM, ROAR_DEFAULT_METHODS, ROAR_FRACTIONS, report_lines, roar_configs, roar_methods,
                          roar_results, roar_rows, roar_sentence)
from explore.training.store import RunStore, StoreError
from explore.data import DataError
from explore.insight import attribution as attr
from explore.insight.attribution import Explainer
from explore.insight.explain_report import (CARD_COLUMNS, CARD_METHODS, LEGEND, METRIC_KEYS, REPLACEMENTS, ReportSettings,
                                           card_rows, card_sentences, compute_report, find_data_randomisation_run,
                                           save_report, verdicts)


def roar_of(run_dir: str | Path) -> tuple[dict | None, list[str]]:
    """The finished remove-and-retrain runs of a run (from the same runs folder), and their text."""
    path = Path(run_dir)
    results = roar_results(RunStore(path.parent), path)
    return results, report_lines(results)


def explain_report_main(argv: list[str] | None = None) -> int:
    return cli_main(argv, roar_of=roar_of)


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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m explore explain-report",
                                description="The report card of the attribution methods for a finished run: "
                                            "deletion/insertion curves, stability, randomisation, ground truth.")
    p.add_argument("--run", required=True, metavar="RUN_DIR", help="a run folder, e.g. runs/20250101-120000-hw3-cnn-abc123")
    p.add_argument("--n", type=int, default=16, help="images tested (balanced by class)")
    p.add_argument("--methods", nargs="+", choices=list(CARD_METHODS), default=list(CARD_METHODS),
                   help="methods to test (default: all five)")
    p.add_argument("--split", choices=["val", "test"], default="val",
                   help="val (site A, the training hospital) or test (site B)")
    p.add_argument("--replacement", choices=list(REPLACEMENTS), default="blur",
                   help="what removed pixels become in the deletion/insertion curves")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    return p


def cli_report(report: dict, split_name: str) -> dict:
    """The CLI's JSON: the nine figures per method (null where a test does not apply), split and image count."""
    entry = report["splits"].get(split_name, {"methods": {}, "n_images": 0})
    methods = {name: {key: m.get(key) for key in METRIC_KEYS} | {"data_randomisation_spearman":
                                                                  m.get("data_randomisation_spearman")}
               for name, m in entry["methods"].items()}
    return {"methods": methods, "split": split_name, "n_images": entry["n_images"],
            "replacement": report["replacement"], "noise": report["noise"], "target": report["target"],
            "verdicts": {name: {c: v["verdict"] for c, v in verdicts(m).items()} for name, m in entry["methods"].items()},
            "seconds": report["seconds"]}


def permuted_explainer(loaded: attr.LoadedRun) -> tuple[str | None, Explainer | None]:
    """The finished shuffled-label copy of a run, beside it in the same runs folder, if there is one."""
    if loaded.config.permute_labels:
        return None, None
    store = RunStore(loaded.record.path.parent)
    permuted_id, state = find_data_randomisation_run(store, loaded.config)
    if state != "finished":
        return None, None
    return permuted_id, attr.load_run(store, permuted_id, bundle=loaded.bundle).explainer()


def cli_main(argv: list[str] | None = None, roar_of=None) -> int:
    """`explain-report`. `roar_of(run_dir) -> (results, lines)` adds the run's remove-and-retrain results
    (explore.cli.explain passes it: this module sits below explore.insight.roar, which uses its pixel order)."""
    args = build_parser().parse_args(argv)
    try:
        settings = ReportSettings(methods=tuple(dict.fromkeys(args.methods)), n_images=args.n, splits=(args.split,),
                                  replacement=args.replacement)
        loaded = attr.load_run_dir(args.run)
        split = loaded.split(args.split)
        if len(split) == 0:
            raise DataError(f"this dataset has no {args.split} images")
        permuted_id, permuted = permuted_explainer(loaded)
        report = compute_report(loaded.explainer(), {args.split: split}, settings, permuted, on_progress=lambda p: print(
            f"[{p.done}/{p.total}] {p.message}", file=sys.stderr))
    except (StoreError, DataError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    report["permuted_run"] = permuted_id
    save_report(args.run, settings, report, permuted_id)
    out = cli_report(report, args.split)
    out["roar"], roar_lines = roar_of(args.run) if roar_of else (None, [])
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    print(f"{LEGEND}")
    print(f"{args.split}: {out['n_images']} images; removed pixels become {out['replacement']}; {out['noise']}")
    for row in card_rows(report):
        print(f"  {row['method']:<24} " + "  ".join(f"{CARD_COLUMNS[c]}: {row[c]}" for c in CARD_COLUMNS))
    for sentence in card_sentences(report):
        print(f"- {sentence}")
    for line in roar_lines:
        print(line)
    return 0
