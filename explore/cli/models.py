"""`python -m explore models [--size N] --json`: every registered model with its size."""
from __future__ import annotations

import argparse
import json

from explore.insight.analysis import model_profile
from explore.models.registry import MODELS, build_model, count_parameters, family_of


def describe(name: str, size: int, num_outputs: int = 1, with_layers: bool = True) -> dict:
    info = MODELS[name]
    row = {"name": name, "family": info.family, "description": info.description}
    try:
        model = build_model(name, size, num_outputs, **family_of(name).offline_options())
    except Exception as error:  # e.g. a transfer backbone that cannot be built here
        row["error"] = str(error)
        return row
    total, trainable = count_parameters(model)
    row |= {"params_total": total, "params_trainable": trainable}
    profile = model_profile(model, size)
    row["macs"] = profile["macs"]
    if with_layers:
        row["layers"] = profile["layers"]
    return row


def cli_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m explore models", description="List registered models.")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--outputs", type=int, default=1)
    p.add_argument("--no-layers", action="store_true")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    rows = [describe(name, args.size, args.outputs, not args.no_layers) for name in MODELS]
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for r in rows:
            extra = f"  MACs {r['macs']:,}" if "macs" in r else ""
            print(f"{r['name']:<20} params {r.get('params_total', 0):>12,}{extra}  {r.get('error', '')}")
    return 0
