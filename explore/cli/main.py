"""`python -m explore COMMAND ...`: one subcommand per capability.

Each command lives beside the code it drives, as `cli_main(argv) -> int` in its module (or a named
function, "module:function", where one module serves several commands), so
this file only dispatches (and importing it stays cheap: torch loads only when needed).
"""
from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "data": ("explore.cli.data", "summarise a data source (counts, skipped files, sizes)"),
    "models": ("explore.cli.models", "list registered models with parameters and MACs"),
    "train": ("explore.cli.train", "train a model or a homework preset; JSON lines per epoch"),
    "presets": ("explore.cli.presets", "list the homework presets"),
    "lr-find": ("explore.cli.lr_find", "learning-rate range test: loss against a rising rate, a suggested rate"),
    "fetch-weights": ("explore.cli.fetch_weights", "download pretrained weights (ImageNet, chest X-ray)"),
    "attribute": ("explore.cli.attribute", "write saliency overlays for a finished run"),
    "explain-report": ("explore.cli.explain:explain_report_main", "report card per attribution method: faithfulness, stability…"),
    "roar": ("explore.cli.explain:roar_main", "remove and retrain: train a run's ROAR group (methods × t, and random) and compare"),
    "mismatch": ("explore.cli.mismatch", "internal vs external metrics and the error decomposition"),
    "adapt": ("explore.cli.adapt", "adapt a finished run to its test hospital (AdaBN, few-shot, histogram matching)"),
    "bench": ("benchmarks.bench", "measure speed: fast path vs the course's loop, and more"),
    "sweep": ("explore.cli.runs:sweep_main", "train one setting over several values (from a run or a model)"),
    "repeat": ("explore.cli.runs:repeat_main", "train the same config with several seeds; mean ± std"),
    "compare": ("explore.cli.runs:compare_main", "runs → the differing-settings table and curves (CSV/PNG)"),
    "export": ("explore.cli.runs:export_main", "write a run bundle (.zip) to replay a run elsewhere"),
    "import": ("explore.cli.runs:import_main", "open a run bundle into the runs folder"),
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
    module_name, _, function = COMMANDS[name][0].partition(":")  # "module" or "module:function"
    module = importlib.import_module(module_name)
    return int(getattr(module, function or "cli_main")(rest) or 0)
