"""`python -m explore fetch-weights`: download pretrained weights (ImageNet, chest X-ray), or check which are cached."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from explore.models.backbones import BACKBONES, WeightsUnavailable, backbone_spec, weights_path, weights_status


def cli_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m explore fetch-weights",
                                     description="Download pretrained weights: ImageNet ones into the torch hub "
                                                 f"cache ({Path(torch.hub.get_dir()) / 'checkpoints'}), chest "
                                                 "X-ray ones (xrv_*) into torchxrayvision's folder.")
    parser.add_argument("names", nargs="*", help=f"backbones (default: all of {', '.join(BACKBONES)})")
    parser.add_argument("--check", action="store_true", help="only report what is cached; download nothing")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in BACKBONES]
    if unknown:
        print(f"error: unknown backbone(s) {unknown}; choose from {', '.join(BACKBONES)}", file=sys.stderr)
        return 2
    results = [_fetch_one(name, download=not args.check) for name in (args.names or list(BACKBONES))]
    for result in results:
        print(json.dumps(result) if args.json else f"{result['backbone']}: {result['message']}", flush=True)
    return 0 if all(r["available"] for r in results) else 1


def _fetch_one(name: str, download: bool) -> dict:
    status = weights_status(name)
    if status["available"] or not download:
        return status
    try:
        backbone_spec(name).load_pretrained()
    except WeightsUnavailable as error:
        return status | {"message": str(error)}
    return weights_status(name) | {"message": f"downloaded to {weights_path(name)}"}
