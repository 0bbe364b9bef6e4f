"""`python -m explore COMMAND ...`: one subcommand per capability.

Each command lives beside the code it drives, as `cli_main(argv) -> int` in its module, so
this file only dispatches (and importing it stays cheap: torch loads only when needed).
"""
from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "data": ("explore.data.cli", "summarise a data source (counts, skipped files, sizes)"),
    "models": ("explore.models_cli", "list registered models with parameters and MACs"),
    "train": ("explore.train_cli", "train a model or a homework preset; JSON lines per epoch"),
    "presets": ("explore.presets", "list the homework presets"),
    "fetch-weights": ("explore.transfer", "download ImageNet weights into the torch hub cache"),
    "attribute": ("explore.attribution", "write saliency overlays for a finished run"),
    "explain-report": ("explore.explain_report", "report card per attribution method: faithfulness, stability…"),
    "mismatch": ("explore.mismatch", "internal vs external metrics and the error decomposition"),
    "bench": ("explore.bench", "measure speed: fast path vs the course's loop, and more"),
}


def usage() -> str:
    lines = ["usage: python -m explore COMMAND [options]   (COMMAND --help for its options)", "", "commands:"]
    lines += [f"  {name:<14} {help_}" for name, (_, help_) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    return int(module.cli_main(rest) or 0)
