"""`python -m explore train ...`: one JSON line per epoch, then a final line with the outcome."""
from __future__ import annotations

import argparse
import json
import sys

from explore.training import multilabel, ray_backend  # ray_backend imports ray only when EXPLORE_RAY_ADDRESS is set
from explore.training.config import (AUGMENTATIONS, INPUT_NORMS, OPTIMIZERS, PRECISIONS, SCHEDULERS, TRANSFER_HEADS,
                            TRANSFER_MODES, RunConfig)
from explore.data import DataError, DataSpec
from explore.data.synthetic import KNOBS, resolve_knobs
from explore.training.jobs import execute_run
from explore.settings import NotAllowed, gate_request, load_settings
from explore.models.registry import MODELS, family_of
from explore.training.presets import PRESETS
from explore.settings import load_settings
from explore.training.store import RunStore, StoreError
from explore.training.transfer import honest_configs


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m explore train", description="Train a model or a homework preset.")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--preset", choices=sorted(PRESETS))
    what.add_argument("--model", choices=list(MODELS))
    p.add_argument("--quick", action="store_true", help="the preset's quick variant (smaller, fewer epochs)")
    add_run_options(p)
    add_output_options(p)
    return p


def add_run_options(p: argparse.ArgumentParser) -> None:
    """Every RunConfig setting the pages set, as flags (shared by train, sweep and repeat)."""
    p.add_argument("--loss", choices=["bce", "ce"])
    p.add_argument("--class-weights", action="store_true", help="weight the loss by inverse class frequency")
    p.add_argument("--optimizer", choices=OPTIMIZERS)
    p.add_argument("--lr", type=float)
    p.add_argument("--momentum", type=float, help="for momentum and rmsprop")
    p.add_argument("--nesterov", action="store_true")
    p.add_argument("--weight-decay", type=float)
    p.add_argument("--scheduler", choices=SCHEDULERS)
    p.add_argument("--step-size", type=int)
    p.add_argument("--gamma", type=float)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--dropout", type=float, help="for models that take a dropout option")
    p.add_argument("--batch-norm", action="store_true", help="BatchNorm layers in mlp, cnn or cnn_gap")
    p.add_argument("--model-option", action="append", default=[], metavar="NAME=VALUE",
                   help="any option the model's builder takes, e.g. width=128 (repeatable; see `models`)")
    p.add_argument("--no-eval-test", action="store_true", help="skip the test split during training")
    p.add_argument("--early-stopping", type=int, metavar="PATIENCE")
    p.add_argument("--no-restore-best", action="store_true", help="with early stopping: keep the last weights")
    p.add_argument("--augment", nargs="*", choices=AUGMENTATIONS)
    p.add_argument("--input-norm", choices=INPUT_NORMS)
    p.add_argument("--train-dev", type=float, metavar="FRACTION",
                   help="hold out this share of train as a train-dev set (e.g. 0.1; the Mismatch analysis uses it)")
    p.add_argument("--transfer", choices=TRANSFER_MODES[1:], help="with a pretrained backbone model")
    p.add_argument("--transfer-head", choices=TRANSFER_HEADS)
    p.add_argument("--backbone-lr-scale", type=float, help="backbone lr = lr × this when fine-tuning")
    p.add_argument("--frozen-epochs", type=int, help="two-phase: epochs with the backbone frozen")
    p.add_argument("--no-pretrained", action="store_true", help="random initialisation (labelled as such)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--size", type=int, help="image size in pixels (64, 128, 224, 256)")
    p.add_argument("--source", help="synthetic | folder:PATH | medmnist:FILE.npz")
    p.add_argument("--test-source", help="take the test split from another source")
    p.add_argument("--classes", type=int, choices=[2, 3], help="synthetic: 2 (normal/pneumonia) or 3 "
                                                               "(normal/bacterial/viral; use --loss ce)")
    p.add_argument("--data-seed", type=int, help="seed of the generated or split data (not of training)")
    knobs = p.add_argument_group("synthetic data knobs (0..1 unless said; see the Data page)")
    for knob in KNOBS.values():
        knobs.add_argument(f"--{knob.name.replace('_', '-')}", type=float, dest=f"knob_{knob.name}",
                           metavar="VALUE", help=f"{knob.label} (default {knob.default:g})")
    knobs.add_argument("--knob", action="append", default=[], metavar="NAME=VALUE",
                       help="any synthetic knob by name, e.g. --knob noise=0.8 (repeatable)")
    multitask = p.add_argument_group("multi-task learning (one sigmoid output per finding)")
    multitask.add_argument("--tasks", metavar="NAMES", help="comma-separated findings, e.g. pneumonia,cardiomegaly,"
                           "effusion; 'all' = every finding of the data (turns --findings on when needed)")
    multitask.add_argument("--pneumonia-label-fraction", type=float, metavar="FRACTION",
                           help="only this share of train keeps its pneumonia label (e.g. 0.1)")
    multitask.add_argument("--findings", action="store_true", help="synthetic: draw cardiomegaly and effusion; "
                           "ChestMNIST / NIH: keep every film with its 14 findings")
    p.add_argument("--seed", type=int)
    p.add_argument("--device", choices=["auto", "cpu", "cuda"])
    p.add_argument("--precision", choices=list(PRECISIONS))
    p.add_argument("--name", help="the run's name (default: the preset's or the model's)")
    p.add_argument("--group", help="file the runs under this group (Compare page)")


def add_output_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--runs-dir", help="where run folders go (default: ./runs or $EXPLORE_RUNS_DIR)")
    p.add_argument("--json", action="store_true", help="JSON lines (default: readable lines)")


FLAG_TO_FIELD = {"loss": "loss", "optimizer": "optimizer", "lr": "lr", "weight_decay": "weight_decay",
                 "scheduler": "scheduler", "step_size": "step_size", "gamma": "gamma", "batch_size": "batch_size",
                 "epochs": "epochs", "seed": "seed", "device": "device", "precision": "precision",
                 "early_stopping": "early_stopping_patience", "input_norm": "input_norm", "transfer": "transfer_mode",
                 "momentum": "momentum", "train_dev": "train_dev_fraction", "transfer_head": "transfer_head",
                 "backbone_lr_scale": "backbone_lr_scale", "frozen_epochs": "frozen_epochs", "group": "group"}
SWITCHES = {"class_weights": ("class_weights", True), "nesterov": ("nesterov", True),
            "no_pretrained": ("pretrained", False), "no_restore_best": ("restore_best", False),
            "no_eval_test": ("eval_test", False)}


def configs_from_args(args) -> list[RunConfig]:
    base = PRESETS[args.preset].configs(quick=args.quick) if args.preset else [RunConfig(model=args.model)]
    configs = [apply_args(config, args) for config in base]
    if args.name and len(base) > 1:  # several preset runs: the given name leads, each keeps its own
        configs = [c.replace(name=f"{args.name} · {b.name}") for c, b in zip(configs, base)]
    return configs


def synthetic_knobs(args) -> dict[str, float]:
    """--noise 0.8 and --knob noise=0.8 alike → {"noise": 0.8}; an unknown name or a bad value is an error."""
    knobs = {name: getattr(args, f"knob_{name}") for name in KNOBS if getattr(args, f"knob_{name}", None) is not None}
    for item in args.knob or ():
        name, sep, value = item.partition("=")
        name = name.strip().replace("-", "_")
        if not sep or name not in KNOBS:
            raise ValueError(f"--knob {item!r}: write NAME=VALUE with NAME one of {', '.join(KNOBS)}")
        try:
            knobs[name] = float(value)
        except ValueError:
            raise ValueError(f"--knob {item!r}: {value!r} is not a number") from None
    resolve_knobs(**knobs)  # range checks with the generator's own message
    return knobs


def model_options(items: list[str]) -> dict:
    """['width=128', 'batch_norm=True'] → {'width': 128, 'batch_norm': True} (the builder checks the names)."""
    options = {}
    for item in items or ():
        name, sep, text = item.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"--model-option {item!r}: write NAME=VALUE, e.g. width=128")
        options[name.strip()] = _typed(text.strip())
    return options


def _typed(text: str):
    if text in ("True", "False", "true", "false"):
        return text.lower() == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def apply_args(config: RunConfig, args) -> RunConfig:
    """One base config (a preset run, a model's defaults, a stored run) changed by the given flags."""
    changes = {field: getattr(args, flag) for flag, field in FLAG_TO_FIELD.items() if getattr(args, flag) is not None}
    changes |= {field: value for flag, (field, value) in SWITCHES.items() if getattr(args, flag)}
    if args.augment is not None:
        changes["augment"] = tuple(args.augment)
    if args.name:
        changes["name"] = args.name
    data = {k: v for k, v in (("image_size", args.size), ("source", args.source), ("test_source", args.test_source),
                              ("num_classes", args.classes), ("seed", args.data_seed)) if v is not None}
    knobs = synthetic_knobs(args)
    if data or knobs:
        changes["data"] = DataSpec.from_dict(config.data.to_dict() | data).with_knobs(**knobs)
    if args.classes == 3 and args.loss is None:
        changes["loss"] = "ce"  # three classes need K outputs; say so by doing the only thing that works
    options = dict(config.model_options) | model_options(args.model_option)
    if args.dropout is not None:
        options["dropout"] = args.dropout
    if args.batch_norm:
        if "batch_norm" not in MODELS[config.model].options:
            takes = ", ".join(n for n, info in MODELS.items() if "batch_norm" in info.options)
            raise ValueError(f"model {config.model!r} has no batch-norm option; models that take one: {takes}")
        options["batch_norm"] = True
    if options != dict(config.model_options):
        changes["model_options"] = tuple(options.items())
    changes |= multilabel.run_changes(config.replace(**changes), args.tasks, args.pneumonia_label_fraction,
                                      args.findings)
    # (a pretrained backbone's 0..1 input and fine-tuning default come from config.resolve)
    return config.replace(**changes).resolve()


def honest_weights(configs: list[RunConfig]) -> list[RunConfig]:
    """Transfer runs whose ImageNet weights cannot be had are named '(random init)', and the user is told why."""
    if not any(family_of(c.model).pretrained_weights for c in configs):
        return configs  # nothing to check (and no ImageNet weights to look up) for the course models
    configs, messages = honest_configs(configs)
    for message in messages:
        print(f"note: {message}", file=sys.stderr)
    return configs


def cli_main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    try:
        configs = honest_weights(configs_from_args(args))
        # The same gate as the app's job queue (a demo server's caps apply here too); the CLI
        # then trains in its own process (or on the Ray cluster: trainer()), one run after another.
        configs, notes = gate_request(load_settings(), configs)
        for note in notes:
            print(f"note: {note}", file=sys.stderr)
        store = RunStore(args.runs_dir)
        store.ensure_writable()
    except (ValueError, DataError, StoreError, NotAllowed) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return train_all(store, configs, args.json)


def train_all(store: RunStore, configs: list[RunConfig], as_json: bool) -> int:
    """Train the configs one after another, printing epoch lines and a final line per run.
    Exit status 1 when any run failed or diverged, 2 when the Ray cluster cannot be reached."""
    try:
        train = trainer()
    except RuntimeError as error:  # ray_backend.ClusterError: ray missing or the cluster unreachable
        print(f"error: {error}", file=sys.stderr)
        return 2
    worst = 0
    for config in configs:
        run_id = store.create(config)
        for record in train(store, run_id):
            if record["kind"] == "progress":
                continue
            if record["kind"] == "end":
                record = final_line(store, run_id, record)
                worst = max(worst, 0 if record["status"] in ("finished", "stopped") else 1)
            print(json.dumps(record) if as_json else readable(record), flush=True)
    return worst


def trainer():
    """How the CLI trains a stored run: in this process, or on the Ray cluster at EXPLORE_RAY_ADDRESS
    (the same backend as the app's, explore.training.ray_backend); both yield the same records."""
    settings = load_settings()
    if not settings.ray_address:
        return execute_run
    ray_backend.connect(settings.ray_address)
    return lambda store, run_id: ray_backend.execute_remote(store, run_id, settings=settings)


def final_line(store: RunStore, run_id: str, end: dict) -> dict:
    summary = end.get("summary") or {}
    return {
        "kind": "end", "run_id": run_id, "run_dir": str(store.path(run_id)), "status": end["status"],
        "message": end.get("message", ""),
        "best_val_acc": summary.get("best_val_acc"), "last_val_acc": summary.get("last_val_acc"),
        "test_acc": summary.get("test_acc"), "seconds_per_epoch": summary.get("seconds_per_epoch"),
        "params_total": summary.get("params_total"), "params_trainable": summary.get("params_trainable"),
        "weights": summary.get("weights"),
        # where it trained: "ray" with the cluster node (and its GPU), else this machine
        "executor": summary.get("executor", "local"), "node": summary.get("node"), "device": summary.get("device"),
    } | multilabel.summary_json(summary)


def readable(record: dict) -> str:
    if record["kind"] == "epoch":
        test = f"  test {record['test_acc']:.3f}" if record.get("test_acc") is not None else ""
        return (f"epoch {record['epoch']:>3}  train loss {record['train_loss']:.4f} acc {record['train_acc']:.3f}  "
                f"val loss {record['val_loss']:.4f} acc {record['val_acc']:.3f}{test}  {record['seconds']:.2f}s"
                + multilabel.epoch_text(record))
    return f"{record['status']}: {record.get('message', '')}  → {record.get('run_dir', '')}"
