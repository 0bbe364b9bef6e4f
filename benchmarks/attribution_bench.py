"""Attribution speed: milliseconds per image for each method (`python -m explore bench --only attribution`)."""
from __future__ import annotations

import time

import torch
from torch import nn

from explore.insight.attribution import METHODS, attribute, make_explainer
from explore.training.train import InputPipeline
from explore.models.registry import build_model
from explore.training.config import RunConfig


def benchmark_attribution(model_name: str = "hw3_cnn", image_size: int = 128, n_images: int = 16,
                          methods=tuple(METHODS), repeats: int = 3, device: torch.device | str | None = None,
                          model: nn.Module | None = None) -> dict:
    """Milliseconds per image per method for a batch of `n_images` (best of `repeats`), on a random model.

    Speed comes from batching: IG runs many path steps per forward pass (internal_batch_size),
    occlusion many patches per pass (perturbations_per_eval).
    """
    torch.manual_seed(0)
    if model is not None:
        model_name = type(model).__name__
    else:
        model = build_model(model_name, image_size, 1).eval()
    pipeline = InputPipeline(RunConfig(), torch.zeros(0, 1, 1, 1, dtype=torch.uint8))
    explainer = make_explainer(model, pipeline, image_size, device)
    images = torch.randint(0, 256, (n_images, 1, image_size, image_size), dtype=torch.uint8)
    result = {"model": model_name, "image_size": image_size,
              "n_images": n_images, "threads": torch.get_num_threads(), "device": str(explainer.device),
              "ms_per_image": {}, "seconds_per_batch": {}}
    for method in methods:
        if method == "gradcam" and explainer.gradcam_layer is None:
            continue
        attribute(explainer, images[:2], method, with_probs=False)  # warm-up: first calls allocate
        best = min(_timed(lambda: attribute(explainer, images, method, with_probs=False)) for _ in range(repeats))
        result["ms_per_image"][method] = round(1000 * best / n_images, 2)
        result["seconds_per_batch"][method] = round(best, 3)
    return result


def _timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started
