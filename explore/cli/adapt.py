"""`python -m explore adapt`: adapt a finished run to its test hospital (AdaBN, few-shot fine-tuning, histogram matching)."""
from __future__ import annotations

import argparse
import json
import sys

from explore.insight.finished_run import load_run_dir
from explore.data import DataError
from explore.training.store import StoreError
from explore.insight.adapt import AdaptError, METHODS, adapt


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m explore adapt",
                                description="Adapt a finished run to its test hospital; test metrics before and after.")
    p.add_argument("--run", required=True, metavar="RUN_DIR", help="a run folder, e.g. runs/20250101-…")
    p.add_argument("--method", required=True, choices=sorted(METHODS), help="bn (AdaBN), finetune, histmatch")
    p.add_argument("--k", type=int, default=32, help="finetune: labelled test images to train on (default 32)")
    p.add_argument("--seed", type=int, default=0, help="which k images, and the fine-tuning order")
    p.add_argument("--threshold", type=float, default=0.5, help="call disease when P(disease) ≥ this")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    return p


def cli_main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result = adapt(load_run_dir(args.run), args.method, args.k, args.seed, args.threshold)
    except (StoreError, DataError, AdaptError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"{result['method']}: {result['what']}")
    for when in ("before", "after"):
        r = result[when]
        auc = "–" if r["auc"] is None else f"{r['auc']:.3f}"
        print(f"  {when:<7} acc {r['acc']:.3f}  auc {auc}  on {r['n']} test images")
    if "gap" in result:
        print(f"  val−test accuracy gap: {result['gap']['before']['acc']:+.3f} → {result['gap']['after']['acc']:+.3f}")
    return 0
