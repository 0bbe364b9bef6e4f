"""`python -m explore mismatch`: internal vs external metrics and the error decomposition of a finished run."""
from __future__ import annotations

import argparse
import json
import sys

from explore.insight.finished_run import load_run_dir
from explore.data import DataError
from explore.training.store import StoreError
from explore.insight.mismatch import mismatch_report


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m explore mismatch",
                                description="Internal vs external metrics, the error decomposition and the "
                                            "source-classifier AUC for a finished run.")
    p.add_argument("--run", required=True, metavar="RUN_DIR", help="a run folder, e.g. runs/20250101-120000-hw3-cnn-abc123")
    p.add_argument("--threshold", type=float, default=0.5, help="call disease when P(disease) ≥ this")
    p.add_argument("--human-error", type=float, default=0.0, help="human / Bayes error for the avoidable bias")
    p.add_argument("--no-source-classifier", action="store_true", help="skip training the source classifier")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    return p


def cli_main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not (0.0 <= args.threshold <= 1.0) or not (0.0 <= args.human_error <= 1.0):
        print("error: --threshold and --human-error must be between 0 and 1", file=sys.stderr)
        return 2
    try:
        loaded = load_run_dir(args.run)
        report = mismatch_report(loaded, args.threshold, args.human_error, not args.no_source_classifier)
    except (StoreError, DataError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report, indent=2, default=float))
        return 0
    for name, r in report["internal_external"].items():
        if name != "gap":
            print(f"{r['title']:<45} acc {r['acc']:.3f}  auc {r['auc'] if r['auc'] is None else round(r['auc'], 3)}")
    for level in report["decomposition"]["levels"]:
        print(f"  {level['name']:<22} {level['error']:.3f}")
    for component in report["decomposition"]["components"]:
        print(f"  {component['name']:<22} {component['value']:+.3f}")
    if "source_classifier" in report:
        print(f"source classifier AUC: {report['source_classifier']['auc']:.3f}")
    return 0
