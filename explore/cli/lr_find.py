"""`python -m explore lr-find`: the learning-rate range test from the command line."""
from __future__ import annotations

import argparse
import json
import sys

from explore.training.config import LOSSES, OPTIMIZERS, RunConfig
from explore.data import DataError, DataSpec
from explore.models.registry import MODELS
from explore.training.lr_finder import RULE, RangeTest, find_lr


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m explore lr-find",
                                description=f"Learning-rate range test; suggests {RULE}.")
    p.add_argument("--model", required=True, choices=list(MODELS))
    p.add_argument("--size", type=int, help="image size in pixels (default: the data source's default)")
    p.add_argument("--source", help="synthetic | folder:PATH | medmnist:FILE.npz")
    p.add_argument("--loss", choices=LOSSES)
    p.add_argument("--optimizer", choices=OPTIMIZERS)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--batch-norm", action="store_true", help="BatchNorm layers in mlp, cnn or cnn_gap")
    p.add_argument("--start-lr", type=float, default=RangeTest.start_lr)
    p.add_argument("--end-lr", type=float, default=RangeTest.end_lr)
    p.add_argument("--steps", type=int, default=RangeTest.steps, help="batches in the test (default 100)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--json", action="store_true")
    return p


def config_from_args(args) -> RunConfig:
    data = {k: v for k, v in (("image_size", args.size), ("source", args.source)) if v is not None}
    changes = {k: v for k, v in (("loss", args.loss), ("optimizer", args.optimizer), ("batch_size", args.batch_size))
               if v is not None}
    options = (("batch_norm", True),) if args.batch_norm else ()
    return RunConfig(model=args.model, data=DataSpec.from_dict(DataSpec().to_dict() | data), model_options=options,
                     seed=args.seed, device=args.device, **changes)


def cli_main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = config_from_args(args)
        result = find_lr(config, test=RangeTest(args.start_lr, args.end_lr, args.steps))
    except (ValueError, DataError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result))
    else:
        print(f"suggested learning rate: {result['suggested_lr']:.2g}  ({RULE})")
        if result["steepest_lr"]:
            print(f"steepest descent at:     {result['steepest_lr']:.2g}")
        for point in result["points"][::max(1, len(result["points"]) // 20)]:
            print(f"  lr {point['lr']:.2e}  loss {point['loss']:.4f}")
    return 0
