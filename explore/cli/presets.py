"""`python -m explore presets [--json]`: the homework presets, one line each or every run as RunConfig JSON."""
from __future__ import annotations

import argparse
import json

from explore.training.presets import PRESETS


def cli_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m explore presets", description="List the homework presets.")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    rows = [preset.to_dict() for preset in PRESETS.values()]
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for row in rows:
            print(f"{row['name']:<22} {row['title']}")
            for full, quick in zip(row["full"], row["quick"]):
                print(f"    {full['name']:<48} quick: {quick['name']}")
    return 0
