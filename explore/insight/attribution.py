"""Where does the model look? Captum attribution maps for any trained run, and checks on them.

Four methods (Captum), each a pure function of (model, images, target):
  saliency              |∂score/∂pixel|: which pixels the score is most sensitive to (always ≥ 0)
  integrated_gradients  gradients summed along the straight path from a black image to the
                        X-ray, times the difference: signed, and the pixels add up to
                        score(image) − score(black)
  gradcam               Grad-CAM on the last conv layer (Captum LayerGradCam), upsampled to the
                        image: coarse (one value per feature-map cell) but class-specific.
                        Signed: red = features there push the score up, blue = down; classic
                        Grad-CAM keeps only the red part (ReLU).
  occlusion             grey out a patch, see how much the score drops: signed, model-agnostic,
                        slow (one forward pass per patch position, batched)
Saliency, Integrated Gradients and Grad-CAM can be smoothed with NoiseTunnel (SmoothGrad:
the average map over noisy copies of the image).

What every map explains: the log-odds of one class, log p/(1−p). For a BCE model the
PNEUMONIA log-odds is the model's single logit (so target "positive" is exactly the logit);
for a cross-entropy model it is computed from the logits with the softmax. Target
"positive" explains PNEUMONIA (with three classes: the more likely of the two disease
classes); target "predicted" explains whichever class the model predicted. A multi-label run
(RunConfig.tasks, explore/training/multilabel.py) has one sigmoid per finding: each logit is that finding's
log-odds, and the target is a finding's index (an int), so the Saliency page explains any finding.

Looking never changes the model: attribution runs on an eval-mode deep copy with in-place
activations turned off and gradients enabled (also for frozen backbones), and images go
through the run's own InputPipeline, so the maps explain what the model actually saw.

Can the maps be trusted? `attribution_shares` measures where the positive attribution
falls (lungs, lesion, burned-in markers on synthetic data; centre vs borders and corners
anywhere), and `randomisation_check` is Adebayo et al. 2018's model-randomisation test: a
map that barely changes when the weights are randomised explains the image, not the model.
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch
from captum.attr import IntegratedGradients, LayerAttribution, LayerGradCam, NoiseTunnel, Occlusion, Saliency
from torch import nn

from explore.training.config import RunConfig
from explore.data import DataBundle, DataError, Split
from explore.insight.browse import BROWSE_MODES, CELL_MEANING, CELLS_BINARY, cell_name, outcomes, select  # noqa: F401 (re-exported)
from explore.insight import finished_run
from explore.insight.finished_run import FinishedRun, predict  # noqa: F401 (predict re-exported)
from explore.training.metrics import positive_score
from explore.models.registry import build_model, forward_order
from explore.insight.report import outline_mask
from explore.training.store import RunRecord, RunStore, StoreError
from explore.training.train import InputPipeline, eval_batches, pipeline_for_run, probabilities  # noqa: F401 (re-exported)


@dataclass(frozen=True)
class MethodInfo:
    name: str
    title: str
    signed: bool  # False: the map is ≥ 0 everywhere (saliency)
    smoothable: bool  # NoiseTunnel applies
    description: str


METHODS: dict[str, MethodInfo] = {
    m.name: m
    for m in [
        MethodInfo("saliency", "Saliency", False, True,
                   "|∂ log-odds / ∂ pixel|: how strongly each pixel changes the score. Fast and noisy; never negative."),
        MethodInfo("integrated_gradients", "Integrated Gradients", True, True,
                   "Gradients averaged along the path from a black image to this X-ray, times the pixel difference. "
                   "Red pixels raise the target's log-odds, blue ones lower it; together they add up to "
                   "score(X-ray) − score(black image)."),
        MethodInfo("gradcam", "Grad-CAM", True, True,
                   "The last conv layer's feature maps weighted by their average gradient, upsampled to the image. "
                   "Coarse (one value per feature-map cell). Red: features there push the target's log-odds up; "
                   "blue: they push it down. Classic Grad-CAM shows only the red part (a ReLU); here you see both."),
        MethodInfo("occlusion", "Occlusion", True, False,
                   "Cover one square patch at a time with a black patch and measure the drop in log-odds. Red: "
                   "covering it lowers the score (the model used it); blue: covering it raises the score."),
    ]
}
TARGETS = ("positive", "predicted")
# The split's own masks that attribution shares are measured in (the findings' only with findings on).
REGION_MASKS = ("lung", "lesion", "marker", "cardiomegaly", "effusion")
# Above this rank correlation with the trained model's map after randomising every layer, a
# method's maps mostly reflect the image (edges, brightness), not what the model learned.
SANITY_WARN_SPEARMAN = 0.5
# Images per forward pass for the batched methods (IG steps, occlusion patches), at 128 px.
PIXELS_PER_PASS = 256 * 128 * 128


# ----------------------------------------------------------------------------- the model copy
class ClassLogOdds(nn.Module):
    """Wraps a classifier: N×K log-odds log p_c/(1−p_c), the score every map explains.

    One logit z (BCE) gives [−z, z] (NORMAL, PNEUMONIA): target 1 is the logit itself.
    K logits (CE) give z_c − logsumexp(z_j, j≠c), the stable form of log p_c/(1−p_c).
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.from_logits(self.model(x))

    @staticmethod
    def from_logits(logits: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        if logits.shape[1] == 1:
            return torch.cat([-logits, logits], dim=1)
        k = logits.shape[1]
        others = logits.unsqueeze(1).expand(-1, k, k)
        diagonal = torch.eye(k, dtype=torch.bool, device=logits.device)
        others = others.masked_fill(diagonal, float("-inf"))
        return logits - torch.logsumexp(others, dim=2)


class LabelLogOdds(nn.Module):
    """Wraps a multi-label classifier: its K logits are already the K findings' log-odds log p/(1−p)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x).float()


def parameter_layers(model: nn.Module, example: torch.Tensor) -> list[tuple[str, nn.Module]]:
    """Every module that owns weights (conv, linear, batch norm…), in forward order."""
    return forward_order(model, example, kinds=())


@dataclass
class Explainer:
    """An attribution-ready copy of a trained model, with the pipeline that feeds it."""

    model: nn.Module  # eval-mode copy: no in-place activations, gradients enabled
    scorer: ClassLogOdds  # the copy wrapped to output class log-odds
    pipeline: InputPipeline
    device: torch.device
    image_size: int
    gradcam_layer: nn.Module | None = None
    gradcam_layer_name: str | None = None
    classes: tuple[str, ...] = ("NORMAL", "PNEUMONIA")  # a multi-label run: its tasks (findings)
    channels_last: bool = False
    multilabel: bool = False

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def inputs(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 N×1×H×W → exactly what the model saw at evaluation (stored transform + normalisation)."""
        x = self.pipeline(self.pipeline.stored(images.cpu()), train=False).to(self.device)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def baseline(self, images: torch.Tensor) -> torch.Tensor:
        """A black image through the same pipeline: the 'no signal' reference for IG and occlusion."""
        return self.inputs(torch.zeros_like(images, dtype=torch.uint8))


def attribution_copy(model: nn.Module, device: torch.device | str | None = None) -> nn.Module:
    """Deep copy in eval mode, in-place ops off, every parameter requiring grad (frozen backbones too).

    The trained model is never touched: not its weights, not its batch-norm statistics, not its
    requires_grad flags. In-place ReLUs would overwrite the activations Captum's hooks hold.
    """
    clone = copy.deepcopy(model).to(device or "cpu").eval()
    for module in clone.modules():
        if isinstance(getattr(module, "inplace", None), bool):
            module.inplace = False
    for param in clone.parameters():
        param.requires_grad_(True)
    return clone


def make_explainer(model: nn.Module, pipeline: InputPipeline, image_size: int,
                   device: torch.device | str | None = None, classes: tuple[str, ...] = ("NORMAL", "PNEUMONIA"),
                   multilabel: bool = False) -> Explainer:
    device = torch.device(device or "cpu")
    clone = attribution_copy(model, device)
    example = torch.zeros(1, 1, image_size, image_size, device=device)
    convs = [(name, m) for name, m in forward_order(clone, example) if isinstance(m, nn.Conv2d)]
    name, layer = convs[-1] if convs else (None, None)
    if convs:  # conv nets run faster channels-last on CPUs and GPUs (as in training)
        clone = clone.to(memory_format=torch.channels_last)
    scorer = LabelLogOdds(clone) if multilabel else ClassLogOdds(clone)
    return Explainer(model=clone, scorer=scorer, pipeline=pipeline, device=device,
                     image_size=image_size, gradcam_layer=layer, gradcam_layer_name=name, classes=tuple(classes),
                     channels_last=bool(convs), multilabel=multilabel)


# ----------------------------------------------------------------------------- the methods
def resolve_target(explainer: Explainer, x: torch.Tensor, target, log_odds: torch.Tensor | None = None) -> torch.Tensor:
    """Class index per image whose log-odds the map explains ("positive", "predicted" or explicit indices)."""
    if isinstance(target, torch.Tensor):
        return target.to(x.device).long()
    if isinstance(target, int) and not isinstance(target, bool):  # one class or finding for every image
        if not 0 <= target < explainer.num_classes:
            raise ValueError(f"target index {target} is not one of the {explainer.num_classes} outputs "
                             f"{explainer.classes}")
        return torch.full((len(x),), target, dtype=torch.long, device=x.device)
    if target not in TARGETS:
        raise ValueError(f"target must be one of {TARGETS} or a tensor of class indices; got {target!r}")
    if target == "positive" and explainer.multilabel:  # pneumonia among the findings (else the first finding)
        index = explainer.classes.index("pneumonia") if "pneumonia" in explainer.classes else 0
        return torch.full((len(x),), index, dtype=torch.long, device=x.device)
    if target == "positive" and explainer.num_classes == 2:
        return torch.ones(len(x), dtype=torch.long, device=x.device)  # PNEUMONIA: no forward pass needed
    if log_odds is None:
        with torch.no_grad():
            log_odds = explainer.scorer(x)
    if target == "predicted":
        return log_odds.argmax(dim=1)
    return log_odds[:, 1:].argmax(dim=1) + 1  # three classes: the more likely disease


def _steps_per_pass(n_images: int, image_size: int) -> int:
    """How many copies of a batch of n images fit in one forward pass (keeps memory flat)."""
    per_pass = PIXELS_PER_PASS // max(1, image_size * image_size)
    return max(1, per_pass // max(1, n_images))


def occlusion_window(image_size: int, window: int | None = None) -> tuple[int, int]:
    """Patch size and stride: by default 1/8 of the image, half-overlapping (16 px, stride 8 at 128 px).

    The stride divides (size − window) when sizes are powers of two, so every pixel is covered.
    """
    window = window or max(2, image_size // 8)
    return window, max(1, window // 2)


def _attribute_batch(explainer: Explainer, x: torch.Tensor, method: str, target: torch.Tensor, smooth: bool,
                     n_steps: int, nt_samples: int, window: int | None) -> torch.Tensor:
    f, size = explainer.scorer, x.shape[-1]
    x = x.detach().requires_grad_(True)
    if method == "occlusion":
        window, stride = occlusion_window(size, window)
        return Occlusion(f).attribute(x, sliding_window_shapes=(1, window, window), strides=(1, stride, stride),
                                      baselines=explainer.baseline(torch.zeros(x.shape, dtype=torch.uint8)),
                                      target=target, perturbations_per_eval=_steps_per_pass(len(x), size))
    if method == "saliency":
        algorithm, kwargs = Saliency(f), {"abs": True}
    elif method == "integrated_gradients":
        steps_per_pass = min(n_steps, _steps_per_pass(len(x), size))
        algorithm = IntegratedGradients(f)
        kwargs = {"baselines": explainer.baseline(torch.zeros(x.shape, dtype=torch.uint8)), "n_steps": n_steps,
                  "internal_batch_size": len(x) * steps_per_pass}
        if smooth:  # NoiseTunnel repeats the images nt_samples times; keep the batch the same size
            kwargs["internal_batch_size"] = len(x) * nt_samples * max(1, steps_per_pass // nt_samples)
    elif method == "gradcam":
        if explainer.gradcam_layer is None:
            raise ValueError("Grad-CAM needs a convolutional layer; this model has none (an MLP). "
                             "Use saliency, integrated gradients or occlusion.")
        algorithm, kwargs = LayerGradCam(f, explainer.gradcam_layer), {"relu_attributions": False}
    else:
        raise ValueError(f"unknown attribution method {method!r}; choose from {', '.join(METHODS)}")
    if smooth:
        # SmoothGrad: noise of 15% of the input's range (Smilkov et al. 2017 found 10-20% works best).
        sigma = 0.15 * float(x.detach().max() - x.detach().min()) or 0.15
        attributions = NoiseTunnel(algorithm).attribute(x, nt_type="smoothgrad", nt_samples=nt_samples,
                                                        nt_samples_batch_size=nt_samples, stdevs=sigma,
                                                        target=target, **kwargs)
    else:
        attributions = algorithm.attribute(x, target=target, **kwargs)
    if method == "gradcam":  # one value per feature-map cell → one per pixel
        attributions = LayerAttribution.interpolate(attributions, (size, size), interpolate_mode="bilinear")
    return attributions


def attribute_inputs(explainer: Explainer, x: torch.Tensor, method: str, target: torch.Tensor,
                     smooth: bool = False, n_steps: int = 16, nt_samples: int = 8) -> torch.Tensor:
    """Maps N×C×H×W for inputs already through the pipeline (what Captum's metrics perturb and pass in)."""
    with torch.enable_grad():
        return _attribute_batch(explainer, x, method, target.to(x.device), smooth, n_steps, nt_samples, None)


@dataclass
class Maps:
    """Attribution maps for a batch of images."""

    method: str
    maps: torch.Tensor  # N×H×W float on the CPU; ≥ 0 for saliency, signed otherwise
    target: torch.Tensor  # N: class index whose log-odds each map explains
    probs: torch.Tensor  # N or N×K: the model's probabilities for these images
    smooth: bool = False
    seconds: float = 0.0


def attribute(explainer: Explainer, images: torch.Tensor, method: str, target="positive", smooth: bool = False,
              n_steps: int = 16, nt_samples: int = 8, batch_size: int = 16, with_probs: bool = True,
              window: int | None = None) -> Maps:
    """Attribution maps for uint8 images N×1×H×W (batched; the model is never changed).

    `with_probs=False` skips the extra forward pass that computes the model's probabilities
    (a page that already has them from predictions.pt does not need it).
    IG uses Gauss-Legendre quadrature, which converges in far fewer steps than a Riemann sum.
    `window` is the occlusion patch size in pixels (default 1/8 of the image).
    """
    if method not in METHODS:
        raise ValueError(f"unknown attribution method {method!r}; choose from {', '.join(METHODS)}")
    if smooth and not METHODS[method].smoothable:
        raise ValueError(f"NoiseTunnel smoothing is not offered for {METHODS[method].title} (it is not gradient-based)")
    started = time.perf_counter()
    maps, targets, probs = [], [], []
    for start in range(0, len(images), batch_size):
        x = explainer.inputs(images[start:start + batch_size])
        tgt = target[start:start + batch_size] if isinstance(target, torch.Tensor) else target
        logits = None
        if with_probs:
            with torch.no_grad():
                logits = explainer.model(x)
            probs.append(probabilities(logits).cpu())
        tgt = resolve_target(explainer, x, tgt, ClassLogOdds.from_logits(logits) if logits is not None else None)
        with torch.enable_grad():
            a = _attribute_batch(explainer, x, method, tgt, smooth, n_steps, nt_samples, window)
        maps.append(a.detach().float().sum(dim=1).cpu())  # one channel: N×H×W
        targets.append(tgt.cpu())
    empty = torch.zeros(0, explainer.image_size, explainer.image_size)
    return Maps(method=method, maps=torch.cat(maps) if maps else empty,
                target=torch.cat(targets) if targets else torch.zeros(0, dtype=torch.long),
                probs=torch.cat(probs) if probs else torch.zeros(0), smooth=smooth,
                seconds=time.perf_counter() - started)


# ----------------------------------------------------------------------------- pictures
def overlay(image: torch.Tensor | np.ndarray, attribution: torch.Tensor | np.ndarray, signed: bool,
            zoom: int = 1, opacity: float = 0.75) -> np.ndarray:
    """The X-ray in grey with the map on top: H×W×3 uint8.

    Each map is scaled to its own 99th percentile of |value| (one hot pixel would otherwise
    wash out the rest). Signed maps: red = raises the target's log-odds, blue = lowers it.
    Unsigned maps (saliency): dark red → yellow as the value grows; the weakest values stay clear.
    """
    import matplotlib

    grey = np.asarray(image, dtype=np.float32).reshape(np.shape(image)[-2:]) / 255.0
    a = np.asarray(attribution, dtype=np.float32).reshape(grey.shape)
    scale = float(np.percentile(np.abs(a), 99)) or float(np.abs(a).max()) or 1.0
    v = np.clip(a / scale, -1.0, 1.0)
    if signed:
        colours = matplotlib.colormaps["RdBu_r"](0.5 + 0.5 * v)[..., :3]
        strength = np.abs(v)
    else:
        v = np.clip(v, 0.0, 1.0)
        colours = matplotlib.colormaps["hot"](0.25 + 0.75 * v)[..., :3]
        strength = np.clip((v - 0.15) / 0.85, 0.0, 1.0)  # the weakest 15% stay clear: no tint over the whole body
    alpha = (opacity * strength)[..., None]
    rgb = grey[..., None] * (1 - alpha) + colours * alpha
    out = (np.clip(rgb, 0, 1) * 255).round().astype(np.uint8)
    return out.repeat(zoom, axis=0).repeat(zoom, axis=1) if zoom > 1 else out


def grey_rgb(image: torch.Tensor | np.ndarray, zoom: int = 1) -> np.ndarray:
    grey = np.asarray(image, dtype=np.uint8).reshape(np.shape(image)[-2:])
    out = np.repeat(grey[..., None], 3, axis=2)
    return out.repeat(zoom, axis=0).repeat(zoom, axis=1) if zoom > 1 else out


def side_by_side(*pictures: np.ndarray, gap: int = 4) -> np.ndarray:
    """RGB pictures of equal height in one row, separated by a white gap."""
    white = np.full((pictures[0].shape[0], gap, 3), 255, dtype=np.uint8)
    parts = []
    for picture in pictures:
        parts += [picture, white]
    return np.concatenate(parts[:-1], axis=1)


def save_png(path: Path, rgb: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(path)


# ----------------------------------------------------------------------------- where the maps fall
REGIONS = {
    "lung": "inside the lungs",
    "lesion": "on the lesion (pneumonia images only)",
    "marker": "on burned-in markers and tags",
    "centre": "central 60% × 60% of the image (the chest)",
    "border": "outer band (everything outside the centre)",
    "corners": "the four corner squares (20% × 20%), where tags and text live",
}


def geometric_regions(image_size: int) -> dict[str, torch.Tensor]:
    """Masks H×W that need no annotation: the chest centre, the border band, the corners."""
    n, edge = image_size, round(0.2 * image_size)
    centre = torch.zeros(n, n, dtype=torch.bool)
    centre[edge:n - edge, edge:n - edge] = True
    corners = torch.zeros(n, n, dtype=torch.bool)
    for rows in (slice(0, edge), slice(n - edge, n)):
        for cols in (slice(0, edge), slice(n - edge, n)):
            corners[rows, cols] = True
    return {"centre": centre, "border": ~centre, "corners": corners}


def region_masks(split: Split, index: torch.Tensor | list[int]) -> dict[str, torch.Tensor]:
    """Per image N×H×W bool masks: the split's own (lung, lesion, marker) where known, plus the geometric ones."""
    index = torch.as_tensor(index, dtype=torch.long)
    size = split.images.shape[-1]
    masks = {name: split.masks[name][index, 0] for name in REGION_MASKS if name in split.masks}
    for name, mask in geometric_regions(size).items():
        masks[name] = mask.expand(len(index), size, size)
    return masks


def attribution_shares(maps: torch.Tensor, masks: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Share of each image's positive attribution inside each mask: N values per region, NaN where undefined.

    Undefined: the mask is empty for that image (a NORMAL image has no lesion), or the map has
    no positive part. Compare a share with the region's area share: attribution spread
    evenly would give share = area.
    """
    positive = maps.clamp_min(0).double()
    total = positive.flatten(1).sum(1)
    shares = {}
    for name, mask in masks.items():
        inside = (positive * mask.double()).flatten(1).sum(1)
        share = inside / total.clamp_min(1e-30)
        undefined = (mask.flatten(1).sum(1) == 0) | (total <= 0)
        shares[name] = torch.where(undefined, torch.full_like(share, float("nan")), share).float()
    return shares


def area_shares(masks: dict[str, torch.Tensor]) -> dict[str, float]:
    """Mean area fraction of each mask over the images where it is non-empty."""
    out = {}
    for name, mask in masks.items():
        area = mask.flatten(1).float().mean(1)
        present = area > 0
        out[name] = float(area[present].mean()) if bool(present.any()) else float("nan")
    return out


def nanmean(values: torch.Tensor) -> float | None:
    values = values[~torch.isnan(values)]
    return float(values.mean()) if len(values) else None


def where_attribution_falls(explainer: Explainer, splits: dict[str, Split], methods=tuple(METHODS),
                            n_images: int = 32, target="positive", seed: int = 0) -> list[dict]:
    """Per method × split × region: mean share of positive attribution, and the region's area.

    The same `n_images` (balanced by class where possible) from each split, e.g.
    {"val": bundle.val, "test": bundle.test}.
    """
    rows = []
    for split_name, split in splits.items():
        index = balanced_sample(split.labels, n_images, seed)
        if len(index) == 0:
            continue
        masks = region_masks(split, index)
        areas = area_shares(masks)
        for method in methods:
            if method == "gradcam" and explainer.gradcam_layer is None:
                continue
            maps = attribute(explainer, split.images[index], method, target).maps
            for region, share in attribution_shares(maps, masks).items():
                mean = nanmean(share)
                rows.append({"method": method, "split": split_name, "region": region,
                             "share": mean, "area": areas[region], "n": int((~torch.isnan(share)).sum()),
                             "enrichment": (mean / areas[region]) if mean is not None and areas[region] > 0 else None})
    return rows


def balanced_sample(labels: torch.Tensor, n: int, seed: int = 0) -> torch.Tensor:
    """Up to n indices, alternating between classes, in a seeded random order."""
    g = torch.Generator().manual_seed(seed)
    per_class = [torch.nonzero(labels == c).flatten() for c in torch.unique(labels).tolist()]
    per_class = [idx[torch.randperm(len(idx), generator=g)] for idx in per_class]
    picked = []
    for i in range(max((len(idx) for idx in per_class), default=0)):
        for idx in per_class:
            if i < len(idx) and len(picked) < n:
                picked.append(int(idx[i]))
    return torch.tensor(sorted(picked), dtype=torch.long)


# ----------------------------------------------------------------------------- sanity check
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


# ----------------------------------------------------------------------------- runs and outcomes
def explainable_runs(store: RunStore) -> list[RunRecord]:
    """Runs that can be explained: readable, with saved weights and predictions."""
    runs = []
    for record in store.list():
        if record.damaged or record.config is None:
            continue
        if (record.path / "weights.pt").exists() and (record.path / "predictions.pt").exists():
            runs.append(record)
    return runs


def run_label(record: RunRecord) -> str:
    summary = record.summary or {}
    val, test = summary.get("val_acc"), summary.get("test_acc")
    scores = f"val {val:.0%}" if isinstance(val, (int, float)) else "val ?"
    scores += f" · test {test:.0%}" if isinstance(test, (int, float)) else ""
    model = record.config.model if record.config else "?"
    return f"{record.label} · {model} · {scores} · {record.state}"


@dataclass
class LoadedRun(FinishedRun):
    """A finished run ready for analysis (explore.insight.finished_run) that can also be explained."""

    gradcam_layer_name: str | None = None  # the last conv layer the forward pass runs; None for MLPs

    def explainer(self, device: torch.device | str | None = None) -> Explainer:
        if self.config.tasks:  # multi-label: one output per finding
            return make_explainer(self.model, self.pipeline, self.bundle.image_size, device, self.config.tasks, True)
        return make_explainer(self.model, self.pipeline, self.bundle.image_size, device, self.bundle.classes)

    def outcomes(self, split: str, target=None) -> dict[str, torch.Tensor]:
        """Browse-by-outcome bookkeeping from the saved predictions; multi-label runs: of finding `target`."""
        stored = self.predictions[split]
        if not self.config.tasks:
            return outcomes(stored["probs"], stored["labels"])
        from explore.insight.multilabel_report import targets_at

        labels, probs = targets_at(self.predictions, split, target if isinstance(target, int) else 0)
        return outcomes(probs, labels)

    def outcome_classes(self, target=None) -> tuple[str, ...]:
        """Class names of the confusion matrix the page browses: a finding's absent / present in multi-label runs."""
        if not self.config.tasks:
            return self.bundle.classes
        task = self.config.tasks[target if isinstance(target, int) else 0]
        return (f"no {task}", task)


def load_run(store: RunStore, run_id: str, bundle: DataBundle | None = None) -> LoadedRun:
    """Model, predictions, data and input pipeline of one run (explore.insight.finished_run.load_run), explainable.
    Raises StoreError/DataError with a clear message."""
    finished = finished_run.load_run(store, run_id, bundle)
    loaded = LoadedRun(**{f.name: getattr(finished, f.name) for f in fields(FinishedRun)})
    loaded.gradcam_layer_name = loaded.explainer().gradcam_layer_name
    return loaded


def load_run_dir(run_dir: str | Path, bundle: DataBundle | None = None) -> LoadedRun:
    """`--run RUN_DIR` (a run folder path) → LoadedRun."""
    return load_run(RunStore(Path(run_dir).parent), finished_run.run_folder(run_dir).name, bundle)


# ----------------------------------------------------------------------------- for pages and the CLI
def explain_images(loaded: LoadedRun, split_name: str, index: list[int], method: str, target="positive",
                   smooth: bool = False, device: torch.device | str | None = None, zoom: int | None = None) -> dict:
    """Pictures and numbers for a grid of images: originals, overlays and region shares, per image.

    Probabilities come from the run's predictions.pt (what the model said when the run ended),
    so browsing needs no extra forward pass.
    """
    split = loaded.split(split_name)
    index = list(index)
    if not index:
        return {"originals": [], "overlays": [], "pairs": [], "shares": {}, "targets": [], "seconds": 0.0}
    explainer = loaded.explainer(device)
    result = attribute(explainer, split.images[index], method, target, smooth, with_probs=False)
    zoom = zoom or max(1, 192 // split.images.shape[-1])
    shares = attribution_shares(result.maps, region_masks(split, index))
    signed = METHODS[method].signed
    overlays = [overlay(split.images[i], m, signed, zoom) for i, m in zip(index, result.maps)]
    originals = [grey_rgb(split.images[i], zoom) for i in index]
    if "lesion" in split.masks:  # outline the known lesion (synthetic, or a radiologist's box on real X-rays)
        originals = [outline_mask(o, split.masks["lesion"][i]) for o, i in zip(originals, index)]
    return {
        "originals": originals,
        "overlays": overlays,
        "pairs": [side_by_side(a, b) for a, b in zip(originals, overlays)],
        "shares": {name: [None if bool(torch.isnan(v)) else float(v) for v in values] for name, values in shares.items()},
        "targets": [explainer.classes[int(t)] for t in result.target],
        "seconds": result.seconds,
    }


def describe_image(loaded: LoadedRun, split_name: str, i: int, outcome: dict[str, torch.Tensor],
                   classes: tuple[str, ...] | None = None) -> str:
    """One caption line: id, true class, P(pneumonia) from predictions.pt, the prediction, right or wrong."""
    score_name = classes[-1] if loaded.config.tasks and classes else "disease"  # multi-label: P(finding)
    classes = classes or loaded.bundle.classes
    ident = loaded.split(split_name).ids[i].rsplit("/", 1)[-1]
    mark = "✅" if bool(outcome["correct"][i]) else "❌"
    return (f"{ident} · true {classes[int(outcome['labels'][i])]} · "
            f"P({score_name}) {float(outcome['disease_prob'][i]):.2f} "
            f"→ {classes[int(outcome['predicted'][i])]} {mark}")


def explained_cards(loaded: LoadedRun, split_name: str, index: list[int], outcome: dict[str, torch.Tensor],
                    pictures: dict, method: str, classes: tuple[str, ...] | None = None) -> list[dict]:
    """One card per explained image (`explain_images`' pictures): the picture, its caption, and a line saying
    what the model said and how much attribution fell on the lesion and the markers."""
    cards = []
    for row, i in enumerate(index):
        extra = " · ".join(f"{name} share {values[row]:.0%}" for name, values in pictures["shares"].items()
                           if name in ("lesion", "marker", "cardiomegaly", "effusion") and values[row] is not None)
        cards.append({"picture": pictures["pairs"][row],
                      "caption": f"original | {METHODS[method].title} → {pictures['targets'][row]}",
                      "line": describe_image(loaded, split_name, i, outcome, classes) + (f" · {extra}" if extra else "")})
    return cards


def run_shares(loaded: LoadedRun, device, target="positive", n_images: int = 16) -> list[dict]:
    """`where_attribution_falls` for every method on the run's val and test images (the splits it has)."""
    splits = {name: loaded.split(name) for name in ("val", "test") if len(loaded.split(name))}
    return where_attribution_falls(loaded.explainer(device), splits, n_images=n_images, target=target)


def sanity_pictures(loaded: LoadedRun, device, method: str, target="positive", smooth: bool = False,
                    max_stages: int = 5) -> dict:
    """The randomisation check on two val images per class, with the pictures the Saliency page shows:
    per image, the trained model's map and then each stage's map; the stages' numbers without their maps."""
    val = loaded.split("val")
    index = balanced_sample(val.labels, 2, seed=1)
    check = randomisation_check(loaded.explainer(device), val.images[index], method, target, smooth,
                                max_stages=max_stages)
    images, signed = val.images[index], METHODS[method].signed
    zoom = max(1, 128 // images.shape[-1])
    pictures = [[overlay(images[i], check["original"][i], signed, zoom)]
                + [overlay(images[i], stage["maps"][i], signed, zoom) for stage in check["stages"]]
                for i in range(len(index))]
    stages = [{k: v for k, v in stage.items() if k != "maps"} for stage in check["stages"]]
    captions = [["trained model"] + [f"top {s['layers']} layer(s) random · ρ = {s['spearman'][image]:.2f}"
                                     for s in stages] for image in range(len(index))]
    return {"pictures": pictures, "captions": captions, "stages": stages, "warning": check["warning"],
            "final": check["final_spearman"]}


def shares_table(rows: list[dict]) -> list[dict]:
    """Rows of `where_attribution_falls` as one row per method × region, val and test side by side."""
    table: dict[tuple[str, str], dict] = {}
    for row in rows:
        key = (row["method"], row["region"])
        entry = table.setdefault(key, {"method": METHODS[row["method"]].title, "region": row["region"],
                                       "area": row["area"]})
        entry[f"{row['split']}_share"] = row["share"]
    return list(table.values())


def describe_shares(rows: list[dict], min_difference: float = 0.05, limit: int = 6) -> list[str]:
    """Plain sentences: attribution piling up on markers or corners, and the biggest val-vs-test differences."""
    by_key = {(r["method"], r["region"], r["split"]): r for r in rows}
    findings: list[tuple[float, str]] = []  # (how notable, sentence)
    for (method, region, split), row in by_key.items():
        if split != "val" or row["share"] is None:
            continue
        title, other = METHODS[method].title, by_key.get((method, region, "test"))
        if region in ("marker", "corners") and row["area"] and row["share"] > 3 * row["area"]:
            findings.append((row["share"] / row["area"], (
                f"{title}: {row['share']:.1%} of the positive attribution on val falls {REGIONS[region]}, which "
                f"cover only {row['area']:.1%} of the image ({row['share'] / row['area']:.0f}× their area): "
                f"the model may be reading them.")))
        if other and other["share"] is not None and region in ("lung", "lesion", "marker") \
                and abs(row["share"] - other["share"]) >= min_difference:
            findings.append((abs(row["share"] - other["share"]) * 10, (
                f"{title}: the share {REGIONS[region]} is {row['share']:.0%} on val (site A) but "
                f"{other['share']:.0%} on test (site B).")))
    return [sentence for _, sentence in sorted(findings, key=lambda f: -f[0])[:limit]]


# ----------------------------------------------------------------------------- benchmark
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


# ----------------------------------------------------------------------------- CLI
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
