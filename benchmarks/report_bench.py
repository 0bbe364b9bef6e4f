"""How long the explanation report card takes (`python -m explore bench --only explain`)."""
from __future__ import annotations

import time

import torch

from explore.insight import attribution as attr
from explore.training.config import RunConfig
from explore.data import Split
from explore.models.registry import build_model
from explore.training.train import InputPipeline
from explore.insight.explain_report import FAST_METHODS, ReportSettings, compute_report


def benchmark_report(image_size: int = 128, n_images: int = 16, methods=FAST_METHODS, splits: int = 1,
                     model_name: str = "hw3_cnn", device: torch.device | str | None = None) -> dict:
    """Seconds for the whole card (every test) of `methods` on `n_images` per split, `splits` splits.

    A randomly initialised model on random X-ray-sized images with a lesion box: the cost of the
    tests depends on the image size, the model and the count, not on what the model learned.
    """
    torch.manual_seed(0)
    model = build_model(model_name, image_size, 1).eval()
    images = torch.randint(0, 256, (n_images, 1, image_size, image_size), dtype=torch.uint8)
    lesion = torch.zeros(n_images, 1, image_size, image_size, dtype=torch.bool)
    lesion[1::2, :, image_size // 4:image_size // 2, image_size // 4:image_size // 2] = True
    split = Split(images=images, labels=torch.arange(n_images) % 2, sites=("A",) * n_images,
                  ids=tuple(str(i) for i in range(n_images)), original_sizes=torch.full((n_images, 2), image_size),
                  masks={"lesion": lesion})
    explainer = attr.make_explainer(model, InputPipeline(RunConfig(), images), image_size, device)
    names = ("val", "test")[:splits]
    settings = ReportSettings(methods=tuple(methods), n_images=n_images, splits=names)
    started, cpu_started = time.perf_counter(), time.process_time()
    report = compute_report(explainer, {name: split for name in names}, settings)
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    per_method = {name: round(sum(report["splits"][s]["methods"][name]["seconds"] for s in names), 3)
                  for name in methods}
    return {"model": model_name, "image_size": image_size, "n_images": n_images, "splits": splits,
            "methods": list(methods), "seconds": round(seconds, 3), "seconds_per_method": per_method,
            # CPU seconds of this process (all threads): on a busy shared machine, a check on the wall time
            "cpu_seconds": round(cpu_seconds, 3),
            "threads": torch.get_num_threads(), "device": str(explainer.device)}
