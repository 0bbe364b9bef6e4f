"""Adebayo et al. 2018's model-randomisation test: randomise the weights layer by layer from the top
(a cascade) and measure how much the map changes (Spearman rank correlation). A map that barely changes
explains the image, not the model."""
from __future__ import annotations

import copy

import numpy as np
import torch

from explore.insight.attribution import (METHODS, SANITY_WARN_SPEARMAN, ClassLogOdds, Explainer, attribute,
                                        parameter_layers, resolve_target)


def rank(values: torch.Tensor) -> torch.Tensor:
    """Ranks 0..n-1 with ties sharing their average rank (as Spearman needs)."""
    sorted_values, order = values.sort()
    _, inverse, counts = torch.unique_consecutive(sorted_values, return_inverse=True, return_counts=True)
    ends = counts.cumsum(0).double()
    average = ends - (counts.double() + 1) / 2
    ranks = torch.empty(len(values), dtype=torch.double)
    ranks[order] = average[inverse]
    return ranks


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    """Spearman rank correlation of two maps (flattened). 0 when either map is constant."""
    ra, rb = rank(a.flatten().double()), rank(b.flatten().double())
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denominator = float(ra.norm() * rb.norm())
    return float((ra * rb).sum()) / denominator if denominator > 0 else 0.0


def randomised_copy(explainer: Explainer, layer_names: list[str], seed: int = 0) -> Explainer:
    """The explainer with the named layers re-initialised (fresh random weights, batch-norm stats reset)."""
    clone = copy.copy(explainer)
    clone.model = copy.deepcopy(explainer.model)
    modules = dict(clone.model.named_modules())
    torch.manual_seed(seed)
    for name in layer_names:
        module = modules[name]
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()
        else:  # a custom layer without an initialiser: Gaussian noise of the same scale
            with torch.no_grad():
                for param in module.parameters(recurse=False):
                    param.normal_(0.0, float(param.std()) if param.numel() > 1 else 0.1)
    clone.scorer = ClassLogOdds(clone.model)
    if explainer.gradcam_layer_name is not None:
        clone.gradcam_layer = modules[explainer.gradcam_layer_name]
    return clone


def cascade_stages(layer_names: list[str], max_stages: int = 6) -> list[list[str]]:
    """Cascading randomisation from the top: stage k randomises the last layers up to a cut.

    With many layers (a ResNet has dozens) the cuts are spread so there are at most
    `max_stages` stages; the last stage always randomises every layer.
    """
    n = len(layer_names)
    if n == 0:
        return []
    counts = sorted({max(1, round(n * (i + 1) / min(n, max_stages))) for i in range(min(n, max_stages))})
    return [layer_names[n - c:] for c in counts]


def randomisation_check(explainer: Explainer, images: torch.Tensor, method: str, target="positive",
                        smooth: bool = False, max_stages: int = 6, seed: int = 0) -> dict:
    """Adebayo et al. 2018: maps of the trained model vs copies with weights randomised from the top.

    Returns the trained model's maps, one entry per stage (which layers are random, the maps, the
    Spearman rank correlation of |map| with the trained model's, per image and mean), and a
    warning when the map barely changes after every layer is random.
    """
    x = explainer.inputs(images)
    fixed_target = resolve_target(explainer, x, target)  # explain the same class in every copy
    original = attribute(explainer, images, method, fixed_target, smooth)
    example = torch.zeros(1, 1, explainer.image_size, explainer.image_size, device=explainer.device)
    layers = [name for name, _ in parameter_layers(explainer.model, example)]
    stages = []
    for randomised in cascade_stages(layers, max_stages):
        maps = attribute(randomised_copy(explainer, randomised, seed), images, method, fixed_target, smooth).maps
        correlations = [spearman(a.abs(), b.abs()) for a, b in zip(original.maps, maps)]
        stages.append({"randomised": randomised, "top_layer": randomised[0], "layers": len(randomised),
                       "maps": maps, "spearman": correlations,
                       "spearman_mean": float(np.mean(correlations)) if correlations else None})
    final = stages[-1]["spearman_mean"] if stages else None
    warning = None
    if final is not None and final > SANITY_WARN_SPEARMAN:
        warning = (f"{METHODS[method].title}: with every layer randomised the map still has a rank correlation of "
                   f"{final:.2f} with the trained model's map. This method's maps here mostly show the image "
                   f"(edges, bright structures), not what the model learned: do not read them as evidence.")
    return {"method": method, "layers": layers, "original": original.maps, "stages": stages,
            "final_spearman": final, "warning": warning}
