"""What a student hands in: every setting of a finished run, and the one command that reruns it.

`reproduce_command(config)` writes `python -m explore train ...` with a flag for every setting
that differs from the model's defaults; parsing that command gives back the same RunConfig
(a test checks the round trip). `code_version()` is stamped into summary.json when a run ends.
"""
from __future__ import annotations

import shlex

from explore.training import multilabel
from explore.training.config import RunConfig, flatten
from explore.cli.train import FLAG_TO_FIELD, SWITCHES, apply_args, build_parser
from explore.version import code_version  # noqa: F401 (re-exported: explore.training.reproduce.code_version)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _value(value) -> str:
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e6:
        return str(int(value))  # 80 images, not 80.0
    return str(value)  # Python's float repr is the shortest text that reads back as the same number


def reproduce_command(config: RunConfig) -> str:
    """`python -m explore train --model M ...`: every setting that differs from `--model M`'s defaults."""
    default = apply_args(RunConfig(model=config.model), build_parser().parse_args(["--model", config.model]))
    args = ["python", "-m", "explore", "train", "--model", config.model]
    field_to_flag = {field: flag for flag, field in FLAG_TO_FIELD.items()}
    for field, flag in field_to_flag.items():
        if getattr(config, field) != getattr(default, field):
            args += [_flag(flag), _value(getattr(config, field))]
    for flag, (field, value) in SWITCHES.items():
        if getattr(config, field) == value != getattr(default, field):
            args.append(_flag(flag))
    if config.augment != default.augment:
        args += ["--augment", *config.augment]
    for name, value in config.model_options:
        args += ["--model-option", f"{name}={value}"]
    args += _data_flags(config, default)
    args += multilabel.reproduce_flags(config)  # findings, tasks, scarce pneumonia labels
    if config.name:
        args += ["--name", config.name]
    return shlex.join(args)


def _data_flags(config: RunConfig, default: RunConfig) -> list[str]:
    data, base = config.data, default.data
    args = []
    for flag, field in (("--size", "image_size"), ("--source", "source"), ("--test-source", "test_source"),
                        ("--classes", "num_classes"), ("--data-seed", "seed")):
        if getattr(data, field) != getattr(base, field):
            args += [flag, _value(getattr(data, field))]
    for name, value in data.synthetic:
        args += ["--knob", f"{name}={value}"]
    return args


def settings_rows(config: RunConfig, summary: dict | None) -> list[dict]:
    """Every setting of a run (flattened: data.image_size, model_options.dropout ...) and what it ran on."""
    summary = summary or {}
    rows = [{"setting": key, "value": (f"{value:g}" if isinstance(value, float) else str(value))
             if value is not None else "—"}
            for key, value in flatten(config.to_dict()).items()]
    ran_on = {"device and precision used": summary.get("device"), "weights": summary.get("weights"),
              "classes": ", ".join(summary.get("classes") or []) or None, "code version": summary.get("code_version"),
              "input normalisation (train statistics)": _pipeline(summary.get("input_pipeline"))}
    rows += [{"setting": key, "value": str(value)} for key, value in ran_on.items() if value]
    return rows


def _pipeline(pipeline: dict | None) -> str | None:
    if not pipeline:
        return None
    return f"{pipeline.get('norm')} (mean {pipeline.get('mean', 0):.3f}, std {pipeline.get('std', 0):.3f})"
