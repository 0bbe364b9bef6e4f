"""`python -m explore train ...`: one JSON line per epoch, then a final line with the outcome."""
from __future__ import annotations

import argparse
import json
import sys

from explore.config import AUGMENTATIONS, INPUT_NORMS, OPTIMIZERS, SCHEDULERS, TRANSFER_MODES, RunConfig
from explore.data import DataError, DataSpec
from explore.jobs import execute_run
from explore.settings import NotAllowed, gate_request, load_settings
from explore.models import MODELS
from explore.presets import PRESETS
from explore.settings import load_settings
from explore.store import RunStore, StoreError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m explore train", description="Train a model or a homework preset.")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--preset", choices=sorted(PRESETS))
    what.add_argument("--model", choices=list(MODELS))
    p.add_argument("--quick", action="store_true", help="the preset's quick variant (smaller, fewer epochs)")
    p.add_argument("--loss", choices=["bce", "ce"])
    p.add_argument("--optimizer", choices=OPTIMIZERS)
    p.add_argument("--lr", type=float)
    p.add_argument("--weight-decay", type=float)
    p.add_argument("--scheduler", choices=SCHEDULERS)
    p.add_argument("--step-size", type=int)
    p.add_argument("--gamma", type=float)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--dropout", type=float, help="for models that take a dropout option")
    p.add_argument("--early-stopping", type=int, metavar="PATIENCE")
    p.add_argument("--augment", nargs="*", choices=AUGMENTATIONS)
    p.add_argument("--input-norm", choices=INPUT_NORMS)
    p.add_argument("--transfer", choices=TRANSFER_MODES[1:], help="with a pretrained backbone model")
    p.add_argument("--no-pretrained", action="store_true", help="random initialisation (labelled as such)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--size", type=int, help="image size in pixels (64, 128, 224, 256)")
    p.add_argument("--source", help="synthetic | folder:PATH | medmnist:FILE.npz")
    p.add_argument("--test-source", help="take the test split from another source")
    p.add_argument("--seed", type=int)
    p.add_argument("--device", choices=["auto", "cpu", "cuda"])
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"])
    p.add_argument("--runs-dir", help="where run folders go (default: ./runs or $EXPLORE_RUNS_DIR)")
    p.add_argument("--json", action="store_true", help="JSON lines (default: readable lines)")
    return p


FLAG_TO_FIELD = {"loss": "loss", "optimizer": "optimizer", "lr": "lr", "weight_decay": "weight_decay",
                 "scheduler": "scheduler", "step_size": "step_size", "gamma": "gamma", "batch_size": "batch_size",
                 "epochs": "epochs", "seed": "seed", "device": "device", "precision": "precision",
                 "early_stopping": "early_stopping_patience", "input_norm": "input_norm", "transfer": "transfer_mode"}


def configs_from_args(args) -> list[RunConfig]:
    base = PRESETS[args.preset].configs(quick=args.quick) if args.preset else [RunConfig(model=args.model)]
    changes = {field: getattr(args, flag) for flag, field in FLAG_TO_FIELD.items() if getattr(args, flag) is not None}
    if args.augment is not None:
        changes["augment"] = tuple(args.augment)
    if args.no_pretrained:
        changes["pretrained"] = False
    data_changes = {k: v for k, v in (("image_size", args.size), ("source", args.source),
                                      ("test_source", args.test_source)) if v is not None}
    out = []
    for config in base:
        run_changes = dict(changes)
        if args.dropout is not None:
            run_changes["model_options"] = tuple((dict(config.model_options) | {"dropout": args.dropout}).items())
        if data_changes:
            run_changes["data"] = DataSpec.from_dict(config.data.to_dict() | data_changes)
        if MODELS[config.model].family == "transfer" and args.input_norm is None:
            run_changes["input_norm"] = "none"  # 0..1 input: the model applies its ImageNet mean/std itself
        out.append(config.replace(**run_changes))
    return out


def honest_weights(config: RunConfig) -> RunConfig:
    """A transfer run whose ImageNet weights cannot be had is named '(random init)', and the user is told why."""
    if MODELS[config.model].family != "transfer":
        return config
    from explore.transfer import resolve_pretrained

    config, message = resolve_pretrained(config)
    if message:
        print(f"note: {message}", file=sys.stderr)
    return config


def cli_main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    try:
        configs = [honest_weights(config) for config in configs_from_args(args)]
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
            print(json.dumps(record) if args.json else readable(record), flush=True)
    return worst


def trainer():
    """How the CLI trains a stored run: in this process, or on the Ray cluster at EXPLORE_RAY_ADDRESS
    (the same backend as the app's, explore.ray_backend); both yield the same records."""
    settings = load_settings()
    if not settings.ray_address:
        return execute_run
    from explore.ray_backend import connect, execute_remote

    connect(settings.ray_address)
    return lambda store, run_id: execute_remote(store, run_id, settings=settings)


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
    }


def readable(record: dict) -> str:
    if record["kind"] == "epoch":
        test = f"  test {record['test_acc']:.3f}" if record.get("test_acc") is not None else ""
        return (f"epoch {record['epoch']:>3}  train loss {record['train_loss']:.4f} acc {record['train_acc']:.3f}  "
                f"val loss {record['val_loss']:.4f} acc {record['val_acc']:.3f}{test}  {record['seconds']:.2f}s")
    return f"{record['status']}: {record.get('message', '')}  → {record.get('run_dir', '')}"
