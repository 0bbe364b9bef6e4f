"""`python -m explore data --source SOURCE [...]`: load a data source and summarise it.

    python -m explore data --source folder:~/chest_xray --size 128
    python -m explore data --source medmnist:~/.medmnist/pneumoniamnist_128.npz --json
    python -m explore data --source synthetic --test-source folder:./hospital_b --json
    python -m explore data --source synthetic --knob n_train=200 --knob noise=0
    python -m explore data --source xrv:nih:~/data/nih --json   (public sets: see data/xrv.py)

With --json it prints exactly one JSON object (`DataBundle.to_json()`); otherwise a short
readable summary. A source that cannot be used exits with status 1 and one line on stderr.
"""
from __future__ import annotations

import argparse
import json
import sys

from explore.data import IMAGE_SIZES, DataBundle, DataError, DataSpec, load_bundle
from explore.data.metadata import summary_lines

_SHOWN_SKIPPED = 10  # the readable summary lists this many skipped files, then a count


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m explore data", description=__doc__.splitlines()[0])
    parser.add_argument("--source", default="synthetic",
                        help="synthetic, folder:PATH, medmnist:FILE.npz or xrv:NAME:IMAGE_DIR (default: synthetic)")
    parser.add_argument("--test-source", default=None,
                        help="take the test split from this source instead (dataset mismatch)")
    parser.add_argument("--size", type=int, default=128, choices=IMAGE_SIZES, help="image size in pixels")
    parser.add_argument("--seed", type=int, default=0, help="seed for splitting and the synthetic set")
    parser.add_argument("--classes", type=int, default=2, choices=(2, 3),
                        help="synthetic only: 2 (NORMAL/PNEUMONIA) or 3 (NORMAL/BACTERIAL/VIRAL)")
    parser.add_argument("--knob", action="append", default=[], metavar="NAME=VALUE", type=_knob,
                        help="synthetic only: override a knob, e.g. --knob n_train=200 (repeatable)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    return parser


def _knob(text: str) -> tuple[str, float]:
    name, equals, value = text.partition("=")
    try:
        return name.strip(), float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected NAME=NUMBER, got {text!r}") from None


def cli_main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    spec = DataSpec(source=args.source, image_size=args.size, seed=args.seed,
                    test_source=args.test_source, num_classes=args.classes, synthetic=tuple(args.knob))
    try:
        bundle = load_bundle(spec)
    except (DataError, OSError, ValueError) as error:  # ValueError: e.g. an unknown synthetic knob
        print(f"error: {' '.join(str(error).split())}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(bundle.to_json(), ensure_ascii=False))
    else:
        print(summary_text(bundle))
    return 0


def summary_text(bundle: DataBundle) -> str:
    """The readable summary: classes, counts per split, original sizes, skipped files."""
    lines = [f"source:  {bundle.source}", f"size:    {bundle.image_size}×{bundle.image_size}",
             f"classes: {', '.join(bundle.classes)}"]
    if bundle.description:
        lines.append(f"about:   {bundle.description}")
    lines += ["", f"{'split':<7}" + "".join(f"{cls:>12}" for cls in bundle.classes) + f"{'total':>10}"]
    for split, per_class in bundle.counts().items():
        lines.append(f"{split:<7}" + "".join(f"{n:>12}" for n in per_class.values()) + f"{sum(per_class.values()):>10}")
    lines += ["", "original sizes (width × height, median [min..max]):"]
    for cls, s in bundle.original_size_summary().items():
        lines.append(f"  {cls:<12} {s['width_median']:.0f} × {s['height_median']:.0f}  "
                     f"[{s['width_min']:.0f}..{s['width_max']:.0f} × {s['height_min']:.0f}..{s['height_max']:.0f}]")
    lines += summary_lines(bundle)  # public sets only: missing files, label vs view / age / sex
    lines += ["", f"skipped files: {len(bundle.skipped)}"]
    for skipped in bundle.skipped[:_SHOWN_SKIPPED]:
        lines.append(f"  {skipped.path}: {skipped.reason}")
    if len(bundle.skipped) > _SHOWN_SKIPPED:
        lines.append(f"  ... and {len(bundle.skipped) - _SHOWN_SKIPPED} more (use --json for all)")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(cli_main())
