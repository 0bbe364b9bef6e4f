"""`python -m explore attribute`: write saliency overlays for a finished run."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from explore.data import DataError
from explore.insight.attribution import (METHODS, TARGETS, LoadedRun, attribute, grey_rgb, load_run_dir, overlay,
                                        save_png, side_by_side)
from explore.insight.browse import CELLS_BINARY, outcomes, select
from explore.insight.regions import attribution_shares, region_masks
from explore.training.metrics import positive_score
from explore.training.store import StoreError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m explore attribute",
                                description="Write attribution overlays (PNG) for images of a finished run.")
    p.add_argument("--run", required=True, metavar="RUN_DIR", help="a run folder, e.g. runs/20250101-120000-hw3-cnn-abc123")
    p.add_argument("--method", choices=list(METHODS), default="saliency")
    p.add_argument("--split", choices=["val", "test"], default="val")
    p.add_argument("--n", type=int, default=8, help="how many images")
    p.add_argument("--which", default="all",
                   help="all | correct | wrong | top_losses | a confusion cell TP, FP, FN, TN (from the run's predictions)")
    p.add_argument("--target", choices=TARGETS, default="positive",
                   help="explain the PNEUMONIA log-odds (positive) or the predicted class's")
    p.add_argument("--smooth", action="store_true", help="NoiseTunnel (SmoothGrad) smoothing")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for the PNG files")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    return p


def _indices_for(loaded: LoadedRun, split: str, which: str, n: int) -> list[int]:
    stored = loaded.predictions.get(split)
    if which == "all" or stored is None:
        return list(range(min(n, len(loaded.split(split)))))
    outcome = outcomes(stored["probs"], stored["labels"])
    cells = {v: k for k, v in CELLS_BINARY.items()}
    if which.upper() in cells:
        return select(outcome, "cell", cells[which.upper()], n)
    return select(outcome, which, None, n)


def cli_main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        loaded = load_run_dir(args.run)
        if args.split not in loaded.predictions and args.split == "test" and len(loaded.split("test")) == 0:
            raise DataError("this dataset has no test images")
        index = _indices_for(loaded, args.split, args.which, args.n)
        split = loaded.split(args.split)
        explainer = loaded.explainer()
        result = attribute(explainer, split.images[index], args.method, args.target, args.smooth)
    except (StoreError, DataError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    masks = region_masks(split, index) if index else {}
    shares = attribution_shares(result.maps, masks) if index else {}
    out = Path(args.out)
    zoom = max(1, 256 // split.images.shape[-1])
    images = []
    for row, i in enumerate(index):
        picture = side_by_side(grey_rgb(split.images[i], zoom),
                               overlay(split.images[i], result.maps[row], METHODS[args.method].signed, zoom))
        png = out / f"{args.split}_{i:04d}_{args.method}.png"
        save_png(png, picture)
        probs = result.probs[row]
        item = {"path_or_id": split.ids[i], "index": i, "label": loaded.bundle.classes[int(split.labels[i])],
                "pred": loaded.bundle.classes[int(probs.argmax()) if probs.ndim else int(probs >= 0.5)],
                "prob": round(float(positive_score(probs.unsqueeze(0))[0]), 4),
                "target": loaded.bundle.classes[int(result.target[row])], "png": str(png)}
        for region in ("lung", "lesion", "marker"):
            if region in split.masks:
                value = float(shares[region][row])
                item[f"{region}_share"] = None if np.isnan(value) else round(value, 4)
        images.append(item)
    report = {"run": str(args.run), "method": args.method, "split": args.split, "smooth": args.smooth,
              "target": args.target, "seconds": round(result.seconds, 3), "images": images}
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for item in images:
            print(f"{item['png']}  {item['label']:>10} → {item['pred']:<10} p(pneumonia)={item['prob']:.2f}")
    return 0
