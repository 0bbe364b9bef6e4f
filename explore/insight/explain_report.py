"""Saliency you can trust: a report card per attribution method.

A map can look convincing and still mean nothing. Each test below asks one question of one
method, on one model and one set of images, and every one is a pure function of
(explainer, images, targets):

  faithfulness   deletion curve: replace the most-attributed pixels first, step by step, and
                 watch the model's probability for the explained class fall. A faithful map
                 makes it fall faster than a random pixel order (lower area under the curve).
                 Steps of 10% of the pixels by default.
                 Insertion curve: start from the replaced image and reveal the most-attributed
                 pixels first; a faithful map makes the probability rise faster (higher area).
                 Removed pixels become a BLURRED COPY of the image by default (Gaussian,
                 σ = 1/16 of the image side), or the image's mean value (`replacement="mean"`):
                 the report says which.
  stability      Captum's `sensitivity_max`: the largest relative change of the map, ‖Δmap‖/‖map‖,
                 over 10 copies of the image with uniform noise in ±radius (model-input units,
                 i.e. standard deviations of the training images). Captum's `infidelity`
                 (normalised): how badly map·noise predicts the change in log-odds under
                 Gaussian noise; reported with the infidelity of an empty map, so the ratio
                 (1 = explains none of the change) can be read without knowing the scale.
  randomisation  Adebayo et al. 2018. Model: Spearman rank correlation of |map| with the map of
                 a copy whose every layer is re-initialised (high = the map shows the image, not
                 the model). Data: the same against a model trained on permuted labels, when such
                 a run exists.
  ground truth   where the data has lesion masks (the simulation): the share of positive
                 attribution on the lesion next to the lesion's share of the image, and the
                 pointing game (is the map's maximum inside the lesion?). Marker share too.

`report_steps` is a generator (progress records, then the report), as training is; the CLI,
the page's background thread and the tests all drain the same generator.
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from captum.metrics import infidelity, sensitivity_max

from explore.insight import attribution as attr
from explore.insight.attribution import Explainer
from explore.training.config import RunConfig
from explore.data import Split
from explore.training.store import RunStore, write_json
from explore.insight import regions, sanity

# The five rows of the card: (attribution method, SmoothGrad on?).
CARD_METHODS: dict[str, tuple[str, bool]] = {
    "saliency": ("saliency", False),
    "integrated_gradients": ("integrated_gradients", False),
    "gradcam": ("gradcam", False),
    "occlusion": ("occlusion", False),
    "smoothgrad": ("saliency", True),
}
CARD_TITLES = {"saliency": "Saliency", "integrated_gradients": "Integrated Gradients", "gradcam": "Grad-CAM",
               "occlusion": "Occlusion", "smoothgrad": "SmoothGrad (saliency)"}
# The fast pair: under 10 s for 16 images at 128 px on a 2-core CPU (BENCHMARKS.md).
FAST_METHODS = ("saliency", "gradcam")
REPLACEMENTS = {
    "blur": "a blurred copy of the image (Gaussian, σ = 1/16 of the image side)",
    "mean": "the image's mean value (a flat grey)",
}
METRIC_KEYS = ("deletion_auc", "insertion_auc", "random_deletion_auc", "random_insertion_auc", "sensitivity_max",
               "infidelity", "model_randomisation_spearman", "lesion_share", "pointing_game")
REPORT_VERSION = 1  # bump when the numbers a cached report holds would change

# Verdict thresholds, and why.
# AUCs are areas under a probability curve (0..1); a map must beat random order by at least this much.
AUC_MARGIN = 0.02
# ‖Δmap‖/‖map‖ under noise of ±0.02 std (about one grey level): above this the map is noise-driven.
SENSITIVITY_LIMIT = 0.5
# Infidelity relative to an empty map: above this the map predicts less than half of the score change.
INFIDELITY_RATIO_LIMIT = 0.5
# Model/data randomisation: attribution.py's threshold (a map that survives randomisation shows the image).
SPEARMAN_LIMIT = attr.SANITY_WARN_SPEARMAN
# Ground truth: the lesion must receive at least twice its area share; the pointing game must hit half the time.
LESION_ENRICHMENT = 2.0
POINTING_LIMIT = 0.5


@dataclass(frozen=True)
class ReportSettings:
    """Everything a report depends on besides the run; its hash names the cached JSON."""

    methods: tuple[str, ...] = tuple(CARD_METHODS)
    n_images: int = 16
    splits: tuple[str, ...] = ("val", "test")
    target: str = "predicted"  # explain the class the model predicted (deletion needs a score to fall)
    replacement: str = "blur"
    n_steps: int = 10  # deletion/insertion steps: 0%, 10%, … 100% of the pixels moved
    sensitivity_radius: float = 0.02  # uniform noise ±radius, model-input units (Captum's default)
    infidelity_sigma: float = 0.1  # Gaussian noise σ, model-input units
    n_perturb: int = 10  # noisy copies per image for sensitivity and infidelity
    seed: int = 0

    def __post_init__(self):
        unknown = [m for m in self.methods if m not in CARD_METHODS]
        if unknown:
            raise ValueError(f"unknown method(s) {unknown}; choose from {', '.join(CARD_METHODS)}")
        if self.replacement not in REPLACEMENTS:
            raise ValueError(f"replacement must be one of {tuple(REPLACEMENTS)}")
        if self.n_images < 1 or self.n_steps < 2:
            raise ValueError("need at least one image and two deletion steps")

    def key(self) -> str:
        text = json.dumps({**asdict(self), "version": REPORT_VERSION}, sort_keys=True)
        return hashlib.sha1(text.encode()).hexdigest()[:12]


# ----------------------------------------------------------------------------- scores and replacements
# Forward passes run in chunks of this many pixels (8 images at 128 px). The course CNN's first conv
# layer writes 32 full-size channels (2 MiB per 128 px image); 8 images' worth stays in the CPU's
# 32 MiB L3 cache, where a batch of 64 or 144 images ran 2–3× slower per image (BENCHMARKS.md §11).
CHUNK_PIXELS = 8 * 128 * 128


def chunk_size(explainer: Explainer) -> int:
    """Images per forward pass for this explainer's image size."""
    return max(1, CHUNK_PIXELS // (explainer.image_size * explainer.image_size))


def forward_only_model(explainer: Explainer) -> torch.nn.Module:
    """Class log-odds from a copy of the model with in-place activations, for passes without gradients.

    The attribution copy turns in-place activations off (Captum's hooks hold the tensors they would
    overwrite); a forward-only pass has no hooks, and in place halves the memory traffic of the course
    CNN's largest layers. The copy is used only if it scores a probe batch exactly as the attribution
    copy does and leaves its input untouched (a model that reuses an activation's input would not).
    """
    model = copy.deepcopy(explainer.model)
    for module in model.modules():
        if isinstance(getattr(module, "inplace", None), bool):
            module.inplace = True
    fast = attr.ClassLogOdds(model)
    probe_images = torch.randint(0, 256, (2, 1, explainer.image_size, explainer.image_size), dtype=torch.uint8,
                                 generator=torch.Generator().manual_seed(0))
    probe = explainer.inputs(probe_images)
    untouched = probe.clone()
    with torch.inference_mode():
        same = torch.equal(fast(probe), explainer.scorer(untouched)) and torch.equal(probe, untouched)
    return fast if same else explainer.scorer


class Scorer:
    """The model's class log-odds N×K for passes without gradients (the curves, infidelity): in
    cache-sized chunks, under inference mode, with in-place activations where that is safe."""

    def __init__(self, explainer: Explainer):
        self.chunk, self.channels_last = chunk_size(explainer), explainer.channels_last
        self.model = forward_only_model(explainer)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        out = []
        with torch.inference_mode():
            for start in range(0, len(x), self.chunk):
                chunk = x[start:start + self.chunk]
                if self.channels_last:
                    chunk = chunk.contiguous(memory_format=torch.channels_last)
                out.append(self.model(chunk))
        return torch.cat(out)


def class_probability(scorer: Scorer, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The model's probability for each image's target class: sigmoid of its log-odds (p = σ(log p/(1−p)))."""
    return torch.sigmoid(scorer(x).gather(1, target.view(-1, 1)).squeeze(1)).cpu()


class RememberedScorer:
    """A Scorer that remembers what it computed: the empty map's infidelity and every method's are
    computed under the same noise (same seed), so their noisy copies are scored once, not once per map."""

    def __init__(self, scorer: Scorer):
        self.scorer, self.memory = scorer, []

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        for seen, scores in self.memory:
            if seen.shape == x.shape and torch.equal(seen, x):
                return scores
        scores = self.scorer(x)
        self.memory.append((x, scores))
        return scores


def replaced_images(x: torch.Tensor, replacement: str) -> torch.Tensor:
    """What removed pixels become (model-input space, N×C×H×W)."""
    if replacement == "mean":
        return x.mean(dim=(1, 2, 3), keepdim=True).expand_as(x).clone()
    sigma = max(1.0, x.shape[-1] / 16)
    kernel = int(2 * round(3 * sigma) + 1)  # ±3σ
    kernel = min(kernel, 2 * ((x.shape[-1] - 1) // 2) + 1)  # reflect padding needs kernel < 2 × side
    return separable_blur(x, kernel, sigma)


def separable_blur(x: torch.Tensor, kernel: int, sigma: float) -> torch.Tensor:
    """torchvision's `gaussian_blur` (reflect padding), as two 1-D passes instead of one k×k kernel:
    the same image (to rounding) with about k/2 times fewer multiply-adds (k = 49 at 128 px)."""
    offsets = torch.arange(kernel, dtype=x.dtype, device=x.device) - kernel // 2
    weights = torch.exp(-offsets ** 2 / (2 * sigma ** 2))
    weights = weights / weights.sum()
    channels, half = x.shape[1], kernel // 2
    padded = torch.nn.functional.pad(x.contiguous(), [half, half, half, half], mode="reflect")
    rows = torch.nn.functional.conv2d(padded, weights.view(1, 1, 1, -1).expand(channels, 1, 1, kernel), groups=channels)
    return torch.nn.functional.conv2d(rows, weights.view(1, 1, -1, 1).expand(channels, 1, kernel, 1), groups=channels)


def pixel_order(attribution: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Pixel indices, most-attributed first; ties in a random order (so a flat map gives the random curve)."""
    flat = attribution.flatten()
    shuffle = torch.randperm(len(flat), generator=generator)
    return shuffle[torch.argsort(-flat[shuffle], stable=True)]


def perturbation_curves(scorer: Scorer, x: torch.Tensor, target: torch.Tensor, orders: torch.Tensor,
                        fill: torch.Tensor, ends: tuple[torch.Tensor, torch.Tensor], n_steps: int) -> dict[str, torch.Tensor]:
    """Deletion and insertion curves, N×(n_steps+1) probabilities, for pixel orders N×P (first = first moved).

    Step k moves the first k/n_steps of each image's pixels: deletion replaces them with `fill`,
    insertion reveals them on top of `fill`. `ends` = (p(image), p(fill)), the same for every
    order, so only the steps in between cost forward passes.
    """
    n, channels, height, width = x.shape
    pixels = height * width
    counts = torch.round(torch.linspace(0, 1, n_steps + 1)[1:-1] * pixels).long()
    ranks = torch.empty(n, pixels, dtype=torch.long)
    ranks.scatter_(1, orders, torch.arange(pixels).expand(n, pixels).contiguous())
    # moved[i, k, p]: pixel p of image i has been moved by step k
    moved = (ranks.unsqueeze(1) < counts.view(1, -1, 1)).view(n, n_steps - 1, 1, height, width).to(x.device)
    original, filled = x.unsqueeze(1), fill.unsqueeze(1)
    repeated = target.repeat_interleave(n_steps - 1)
    deleted = class_probability(scorer, torch.where(moved, filled, original).flatten(0, 1), repeated)
    inserted = class_probability(scorer, torch.where(moved, original, filled).flatten(0, 1), repeated)
    p_image, p_fill = (e.view(n, 1) for e in ends)
    return {"deletion": torch.cat([p_image, deleted.view(n, -1), p_fill], dim=1),
            "insertion": torch.cat([p_fill, inserted.view(n, -1), p_image], dim=1)}


def curve_auc(curves: torch.Tensor) -> torch.Tensor:
    """Area under each curve over the fraction moved (0..1), trapezoid rule: N values."""
    steps = curves.shape[1] - 1
    return ((curves[:, 1:] + curves[:, :-1]) / 2).sum(dim=1) / steps


# ----------------------------------------------------------------------------- stability
def _noise_generator(seed: int, device) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


def map_function(explainer: Explainer, method: str, smooth: bool):
    """(model inputs, target) → attribution N×C×H×W, the form Captum's metrics call."""
    size = chunk_size(explainer)

    def explain(inputs, target):
        x = inputs[0] if isinstance(inputs, tuple) else inputs
        target = torch.as_tensor(target, device=x.device).reshape(-1).expand(len(x))
        maps = torch.cat([attr.attribute_inputs(explainer, x[s:s + size], method, target[s:s + size], smooth).detach()
                          for s in range(0, len(x), size)])  # cache-sized chunks, as `log_odds`
        return (maps,) if isinstance(inputs, tuple) else maps  # Captum iterates over what it passed in
    return explain


def map_sensitivity(explainer: Explainer, x: torch.Tensor, method: str, smooth: bool, target: torch.Tensor,
                    radius: float, n_perturb: int, seed: int) -> torch.Tensor:
    """Captum's sensitivity_max per image: max over noisy copies of ‖map(x+δ) − map(x)‖ / ‖map(x)‖."""
    generator = _noise_generator(seed, x.device)

    def uniform_noise(inputs, perturb_radius):
        x_ = inputs[0] if isinstance(inputs, tuple) else inputs
        noise = torch.rand(x_.shape, generator=generator, device=x_.device) * 2 - 1
        return (x_ + perturb_radius * noise,)

    return sensitivity_max(map_function(explainer, method, smooth), x, perturb_func=uniform_noise,
                           perturb_radius=radius, n_perturb_samples=n_perturb,
                           max_examples_per_batch=max(len(x), min(len(x) * n_perturb, 128)),
                           target=target).cpu()


def _gaussian_perturbation(sigma: float, seed: int, device):
    """Infidelity's perturbation: Gaussian noise I, and the input x − I. Restarts from `seed` on every call
    of this factory, so two infidelity calls see the same noise."""
    generator = _noise_generator(seed, device)

    def perturb(inputs):
        x = inputs[0] if isinstance(inputs, tuple) else inputs
        noise = torch.randn(x.shape, generator=generator, device=x.device) * sigma
        return noise, x - noise
    return perturb


def map_infidelity(explainer: Explainer, x: torch.Tensor, maps: torch.Tensor, target: torch.Tensor, sigma: float,
                   n_perturb: int, seed: int, scorer: Scorer | RememberedScorer | None = None) -> torch.Tensor:
    """Captum's infidelity per image, normalised (the map's scale fitted): E[(β·map·I − Δlog-odds)²].

    `scorer`: a RememberedScorer shared with the other maps of the same images (same noise, scored once)."""
    attributions = maps.to(x.device).view_as(x).float()
    return infidelity(scorer or Scorer(explainer), _gaussian_perturbation(sigma, seed, x.device), x,
                      attributions, target=target, n_perturb_samples=n_perturb, normalize=True).cpu()


def empty_map_infidelity(explainer: Explainer, x: torch.Tensor, target: torch.Tensor, sigma: float, n_perturb: int,
                         seed: int, scorer: Scorer | RememberedScorer | None = None) -> torch.Tensor:
    """Infidelity of an all-zero map under the same noise: E[Δlog-odds²], the worst a map can do.

    A map's infidelity divided by this is the share of the score's change it fails to predict.
    """
    return infidelity(scorer or Scorer(explainer), _gaussian_perturbation(sigma, seed, x.device), x,
                      torch.zeros_like(x), target=target, n_perturb_samples=n_perturb, normalize=False).cpu()


# ----------------------------------------------------------------------------- ground truth
def pointing_game(maps: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Per image: 1.0 if the map's maximum lies inside the mask, NaN where the mask is empty."""
    flat = maps.flatten(1)
    peak = flat.argmax(dim=1)
    hits = masks.flatten(1).gather(1, peak.view(-1, 1)).squeeze(1).float()
    return torch.where(masks.flatten(1).any(dim=1), hits, torch.full_like(hits, float("nan")))


def ground_truth(maps: torch.Tensor, split: Split, index: torch.Tensor) -> dict:
    """Lesion share vs lesion area, pointing-game hit rate, marker share; None where the split has no masks."""
    out = {"lesion_share": None, "lesion_area": None, "pointing_game": None, "marker_share": None, "marker_area": None}
    masks = regions.region_masks(split, index)
    shares = regions.attribution_shares(maps, masks)
    areas = regions.area_shares(masks)
    for region in ("lesion", "marker"):
        if region in split.masks and bool(masks[region].any()):
            out[f"{region}_share"] = regions.nanmean(shares[region])
            out[f"{region}_area"] = areas[region]
    if "lesion" in split.masks and bool(masks["lesion"].any()):
        out["pointing_game"] = regions.nanmean(pointing_game(maps, masks["lesion"]))
    return out


def disease_maps(explainer: Explainer, images: torch.Tensor, maps: torch.Tensor, target: torch.Tensor,
                 lesion: torch.Tensor, method: str, smooth: bool) -> torch.Tensor:
    """Maps that explain the disease score on every image with a lesion.

    Images whose map explains NORMAL (the model missed the lesion) get their disease map computed
    here, so the pointing game asks the same question of every lesion image.
    """
    redo = torch.nonzero(lesion.flatten(1).any(dim=1) & (target == 0)).flatten()
    if len(redo) == 0:
        return maps
    maps = maps.clone()
    maps[redo] = attr.attribute(explainer, images[redo], method, "positive", smooth, batch_size=chunk_size(explainer),
                                with_probs=False).maps
    return maps


# ----------------------------------------------------------------------------- one method on one split
def model_randomisation_spearman(explainer: Explainer, images: torch.Tensor, maps: torch.Tensor,
                                 target: torch.Tensor, method: str, smooth: bool, seed: int) -> float:
    """Mean Spearman of |map| against the map of a copy with every weight layer re-initialised."""
    example = torch.zeros(1, 1, explainer.image_size, explainer.image_size, device=explainer.device)
    layers = [name for name, _ in attr.parameter_layers(explainer.model, example)]
    # seed + 1: a model built from the same seed as the training run would otherwise get its initial weights back
    random_maps = attr.attribute(sanity.randomised_copy(explainer, layers, seed + 1), images, method, target, smooth,
                                 batch_size=chunk_size(explainer), with_probs=False).maps
    return float(np.mean([sanity.spearman(a.abs(), b.abs()) for a, b in zip(maps, random_maps)]))


def data_randomisation_spearman(permuted: Explainer | None, images: torch.Tensor, maps: torch.Tensor,
                                target: torch.Tensor, method: str, smooth: bool) -> float | None:
    """Mean Spearman of |map| against the map of the same architecture trained on permuted labels."""
    if permuted is None or (method == "gradcam" and permuted.gradcam_layer is None):
        return None
    other = attr.attribute(permuted, images, method, target, smooth, batch_size=chunk_size(permuted),
                           with_probs=False).maps
    return float(np.mean([sanity.spearman(a.abs(), b.abs()) for a, b in zip(maps, other)]))


def _mean(values: torch.Tensor) -> float | None:
    return regions.nanmean(values.float())


def _rounded(values, digits: int = 4) -> list:
    return [None if v is None or (isinstance(v, float) and np.isnan(v)) else round(float(v), digits)
            for v in (values.tolist() if isinstance(values, torch.Tensor) else values)]


# ----------------------------------------------------------------------------- the whole report
@dataclass
class Progress:
    done: int
    total: int
    message: str
    report: dict | None = None  # set on the last record only


@dataclass
class SplitSample:
    """The images of one split that every method is tested on, and what all methods share."""

    split: Split
    index: torch.Tensor
    images: torch.Tensor  # uint8 N×1×H×W
    x: torch.Tensor  # model inputs
    target: torch.Tensor  # class explained per image
    fill: torch.Tensor  # what removed pixels become
    ends: tuple[torch.Tensor, torch.Tensor]  # p(image), p(fill)
    random_curves: dict[str, torch.Tensor]
    empty_infidelity: torch.Tensor
    scorer: Scorer  # forward passes without gradients
    remembered: RememberedScorer  # the noisy copies' scores, shared by every method's infidelity


def sample_split(explainer: Explainer, split: Split, settings: ReportSettings, scorer: Scorer) -> SplitSample:
    index = regions.balanced_sample(split.labels, settings.n_images, settings.seed)
    images = split.images[index]
    x = explainer.inputs(images)
    target = attr.resolve_target(explainer, x, settings.target)
    fill = replaced_images(x, settings.replacement)
    ends = (class_probability(scorer, x, target), class_probability(scorer, fill, target))
    generator = torch.Generator().manual_seed(settings.seed)
    random_orders = torch.stack([torch.randperm(x.shape[-1] * x.shape[-2], generator=generator) for _ in x])
    random_curves = perturbation_curves(scorer, x, target, random_orders, fill, ends, settings.n_steps)
    remembered = RememberedScorer(scorer)
    empty = empty_map_infidelity(explainer, x, target, settings.infidelity_sigma, settings.n_perturb, settings.seed,
                                 remembered)
    return SplitSample(split, index, images, x, target, fill, ends, random_curves, empty, scorer, remembered)


def report_steps(explainer: Explainer, splits: dict[str, Split], settings: ReportSettings = ReportSettings(),
                 permuted: Explainer | None = None) -> Iterator[Progress]:
    """Progress records while computing the report card; the last one carries the report.

    `splits`: e.g. {"val": bundle.val, "test": bundle.test}. `permuted`: an explainer for the
    same architecture trained on permuted labels (the data-randomisation test), or None.
    """
    methods = [m for m in settings.methods if not (m == "gradcam" and explainer.gradcam_layer is None)]
    splits = {name: split for name, split in splits.items() if name in settings.splits and len(split)}
    total, done = len(splits) * (1 + 4 * len(methods)), 0
    started = time.perf_counter()
    report = {"settings": asdict(settings), "key": settings.key(), "replacement": REPLACEMENTS[settings.replacement],
              "noise": noise_statement(settings), "target": settings.target, "splits": {},
              "data_randomisation": permuted is not None}
    scorer = Scorer(explainer)
    for split_name, split in splits.items():
        sample = sample_split(explainer, split, settings, scorer)
        done += 1
        yield Progress(done, total, f"{split_name}: random-order curves")
        entry = {"n_images": len(sample.index), "index": sample.index.tolist(),
                 "fractions": _rounded(torch.linspace(0, 1, settings.n_steps + 1)),
                 "random_deletion_curve": _rounded(sample.random_curves["deletion"].mean(0)),
                 "random_insertion_curve": _rounded(sample.random_curves["insertion"].mean(0)), "methods": {}}
        for name in methods:
            result = {}
            for message in _method_steps(explainer, sample, name, settings, result, permuted):
                done += 1
                yield Progress(done, total, f"{split_name}: {CARD_TITLES[name]} — {message}")
            entry["methods"][name] = result
        report["splits"][split_name] = entry
    report["seconds"] = round(time.perf_counter() - started, 2)
    yield Progress(total, total, "done", report)


def _method_steps(explainer: Explainer, sample: SplitSample, name: str, settings: ReportSettings, result: dict,
                  permuted: Explainer | None) -> Iterator[str]:
    """The four tests of one method on one split, filling `result`; yields after each (for progress)."""
    started = time.perf_counter()
    method, smooth = CARD_METHODS[name]
    images, x, target = sample.images, sample.x, sample.target
    maps = attr.attribute(explainer, images, method, target, smooth, batch_size=chunk_size(explainer),
                          with_probs=False).maps
    generator = torch.Generator().manual_seed(settings.seed + 1)
    orders = torch.stack([pixel_order(m, generator) for m in maps])
    curves = perturbation_curves(sample.scorer, x, target, orders, sample.fill, sample.ends, settings.n_steps)
    deletion, insertion = curve_auc(curves["deletion"]), curve_auc(curves["insertion"])
    random_deletion = curve_auc(sample.random_curves["deletion"])
    random_insertion = curve_auc(sample.random_curves["insertion"])
    result.update({
        "deletion_auc": _mean(deletion), "insertion_auc": _mean(insertion),
        "random_deletion_auc": _mean(random_deletion), "random_insertion_auc": _mean(random_insertion),
        "deletion_curve": _rounded(curves["deletion"].mean(0)), "insertion_curve": _rounded(curves["insertion"].mean(0)),
        "per_image": {"deletion_auc": _rounded(deletion), "insertion_auc": _rounded(insertion),
                      "random_deletion_auc": _rounded(random_deletion),
                      "random_insertion_auc": _rounded(random_insertion)}})
    yield "deletion and insertion"
    sensitivity = map_sensitivity(explainer, x, method, smooth, target, settings.sensitivity_radius,
                                  settings.n_perturb, settings.seed)
    infidelity_ = map_infidelity(explainer, x, maps, target, settings.infidelity_sigma, settings.n_perturb,
                                 settings.seed, sample.remembered)
    result.update({"sensitivity_max": _mean(sensitivity), "infidelity": _mean(infidelity_),
                   "infidelity_empty_map": _mean(sample.empty_infidelity)})
    result["per_image"].update({"sensitivity_max": _rounded(sensitivity), "infidelity": _rounded(infidelity_)})
    yield "stability"
    result["model_randomisation_spearman"] = model_randomisation_spearman(explainer, images, maps, target, method,
                                                                          smooth, settings.seed)
    result["data_randomisation_spearman"] = data_randomisation_spearman(permuted, images, maps, target, method,
                                                                        smooth)
    yield "randomisation"
    split = sample.split
    if "lesion" in split.masks:
        maps = disease_maps(explainer, images, maps, target, split.masks["lesion"][sample.index], method, smooth)
    result.update(ground_truth(maps, split, sample.index))
    result["seconds"] = round(time.perf_counter() - started, 3)
    yield "ground truth"


def noise_statement(settings: ReportSettings) -> str:
    return (f"sensitivity_max: uniform noise in ±{settings.sensitivity_radius:g}, infidelity: Gaussian noise "
            f"σ = {settings.infidelity_sigma:g} (model-input units: standard deviations of the training images), "
            f"{settings.n_perturb} noisy copies per image")


def compute_report(explainer: Explainer, splits: dict[str, Split], settings: ReportSettings = ReportSettings(),
                   permuted: Explainer | None = None, on_progress=None) -> dict:
    """Drain `report_steps`; `on_progress(Progress)` sees every step."""
    for progress in report_steps(explainer, splits, settings, permuted):
        if on_progress is not None:
            on_progress(progress)
        if progress.report is not None:
            return progress.report
    raise RuntimeError("the report generator ended without a report")


# ----------------------------------------------------------------------------- verdicts and the card
PASS, FAIL, NOT_APPLICABLE = "pass", "fail", "n/a"
CARD_COLUMNS = {
    "deletion": "Deletion",
    "insertion": "Insertion",
    "sensitivity": "Stability",
    "infidelity": "Infidelity",
    "model_randomisation": "Model randomisation",
    "data_randomisation": "Data randomisation",
    "lesion": "Lesion share",
    "pointing_game": "Pointing game",
}
COLUMN_MEANING = {
    "deletion": "removing the top pixels first drops the score faster than a random order",
    "insertion": "revealing the top pixels first raises the score faster than a random order",
    "sensitivity": f"the map changes by less than {SENSITIVITY_LIMIT:.0%} under noise of about one grey level",
    "infidelity": f"map × noise predicts at least {1 - INFIDELITY_RATIO_LIMIT:.0%} of the score's change under noise",
    "model_randomisation": f"the map changes when the weights are randomised (Spearman ρ ≤ {SPEARMAN_LIMIT})",
    "data_randomisation": f"the map changes for a model trained on shuffled labels (ρ ≤ {SPEARMAN_LIMIT})",
    "lesion": f"the lesion gets at least {LESION_ENRICHMENT:g}× its share of the image",
    "pointing_game": f"the map's peak lies on the lesion in at least {POINTING_LIMIT:.0%} of pneumonia images",
}


def _verdict(ok: bool | None, text: str) -> dict:
    return {"verdict": NOT_APPLICABLE if ok is None else (PASS if ok else FAIL), "text": text}


def verdicts(m: dict) -> dict[str, dict]:
    """A plain pass / fail / n/a, with the numbers behind it, for each column of the card."""
    out = {}
    d, rd, i, ri = m.get("deletion_auc"), m.get("random_deletion_auc"), m.get("insertion_auc"), m.get("random_insertion_auc")
    out["deletion"] = _verdict(None if d is None else d <= rd - AUC_MARGIN, "" if d is None else f"AUC {d:.2f} vs random {rd:.2f}")
    out["insertion"] = _verdict(None if i is None else i >= ri + AUC_MARGIN, "" if i is None else f"AUC {i:.2f} vs random {ri:.2f}")
    sens = m.get("sensitivity_max")
    out["sensitivity"] = _verdict(None if sens is None else sens <= SENSITIVITY_LIMIT,
                                  "" if sens is None else f"max change {sens:.2f}")
    inf, empty = m.get("infidelity"), m.get("infidelity_empty_map")
    ratio = inf / empty if inf is not None and empty else None
    out["infidelity"] = _verdict(None if ratio is None else ratio <= INFIDELITY_RATIO_LIMIT,
                                 "" if ratio is None else f"{ratio:.0%} of the change unexplained")
    for key in ("model_randomisation", "data_randomisation"):
        rho = m.get(f"{key}_spearman")
        out[key] = _verdict(None if rho is None else rho <= SPEARMAN_LIMIT, "not trained yet" if rho is None and
                            key == "data_randomisation" else ("" if rho is None else f"ρ = {rho:.2f}"))
    share, area = m.get("lesion_share"), m.get("lesion_area")
    out["lesion"] = _verdict(None if share is None or not area else share >= LESION_ENRICHMENT * area,
                             "no lesion masks" if share is None else f"{share:.0%} on {area:.0%} of the image")
    hit = m.get("pointing_game")
    out["pointing_game"] = _verdict(None if hit is None else hit >= POINTING_LIMIT,
                                    "no lesion masks" if hit is None else f"{hit:.0%} hits")
    return out


# Plain words, not emoji: they read the same in every font and in the CLI.
SYMBOL = {PASS: "pass", FAIL: "FAIL", NOT_APPLICABLE: "n/a"}
LEGEND = "pass · FAIL · n/a: the test does not apply"


def method_items(entry: dict) -> list[tuple[str, dict]]:
    """(name, figures) of one split, in the card's row order."""
    return [(name, entry["methods"][name]) for name in CARD_METHODS if name in entry["methods"]]


def split_names(report: dict) -> list[str]:
    """val before test (the cached JSON is written with sorted keys)."""
    return sorted(report["splits"], key=lambda name: {"val": 0, "test": 1}.get(name, 2))


def card_rows(report: dict) -> list[dict]:
    """One row per method, one column per test; each cell holds the verdicts on val and test side by side
    (e.g. "pass | FAIL": passes on val, fails on test; in `split_names` order)."""
    splits = split_names(report)
    names = [n for n in CARD_METHODS if any(n in report["splits"][s]["methods"] for s in splits)]
    rows = []
    for name in names:
        row = {"method": CARD_TITLES[name]}
        per_split = {s: verdicts(report["splits"][s]["methods"][name]) for s in splits
                     if name in report["splits"][s]["methods"]}
        for column in CARD_COLUMNS:
            row[column] = " | ".join(SYMBOL[v[column]["verdict"]] for v in per_split.values())
        rows.append(row)
    return rows


def numbers_rows(report: dict) -> list[dict]:
    """The figures behind the verdicts: one row per split × method."""
    rows = []
    for split_name in split_names(report):
        for name, m in method_items(report["splits"][split_name]):
            row = {"split": split_name, "method": CARD_TITLES[name]}
            row.update({column: v["text"] for column, v in verdicts(m).items()})
            rows.append(row)
    return rows


def pass_counts(report: dict, split_name: str) -> dict[str, tuple[int, int]]:
    """Per method: (tests passed, tests that applied) on one split."""
    out = {}
    for name, m in report["splits"].get(split_name, {}).get("methods", {}).items():
        v = [x["verdict"] for x in verdicts(m).values()]
        out[name] = (v.count(PASS), v.count(PASS) + v.count(FAIL))
    return out


def card_sentences(report: dict) -> list[str]:
    """What the card means for this run, in plain sentences."""
    sentences = []
    for split_name in split_names(report):
        counts = pass_counts(report, split_name)
        if not counts:
            continue
        ranked = sorted(counts.items(), key=lambda kv: -(kv[1][0] / max(1, kv[1][1])))
        listing = ", ".join(f"{CARD_TITLES[n]} {p}/{t}" for n, (p, t) in ranked)
        sentences.append(f"On {split_name} ({'site A' if split_name == 'val' else 'site B'}), tests passed: {listing}.")
    first = report["splits"][split_names(report)[0]] if report["splits"] else {"methods": {}}
    for name, m in method_items(first):
        v = verdicts(m)
        if v["model_randomisation"]["verdict"] == FAIL:
            sentences.append(f"{CARD_TITLES[name]} barely changes when the model's weights are randomised "
                             f"({v['model_randomisation']['text']}): its maps show the image, not what this model learned.")
        if v["data_randomisation"]["verdict"] == FAIL:
            sentences.append(f"{CARD_TITLES[name]} looks the same for a model trained on shuffled labels "
                             f"({v['data_randomisation']['text']}): flagged, its maps do not reflect what the labels taught.")
        if v["deletion"]["verdict"] == FAIL and v["insertion"]["verdict"] == FAIL:
            sentences.append(f"{CARD_TITLES[name]}'s top pixels matter to the model no more than random pixels: "
                             f"its maps are not faithful here.")
    if "val" in report["splits"] and "test" in report["splits"]:
        val, test = report["splits"]["val"]["methods"], report["splits"]["test"]["methods"]
        for name in (n for n in CARD_METHODS if n in val):
            if name in test and verdicts(val[name])["deletion"]["verdict"] != verdicts(test[name])["deletion"]["verdict"]:
                good = "val" if verdicts(val[name])["deletion"]["verdict"] == PASS else "test"
                sentences.append(f"{CARD_TITLES[name]} is faithful on {good} but not on the other hospital's images: "
                                 f"trust its maps on one site only.")
    return sentences


def curve_rows(report: dict) -> list[dict]:
    """Long-form rows for the curves chart: split × curve × method (and random order) × fraction moved."""
    rows = []
    for split_name in split_names(report):
        entry = report["splits"][split_name]
        fractions = entry["fractions"]
        series = [("random order", entry["random_deletion_curve"], entry["random_insertion_curve"])]
        series += [(CARD_TITLES[n], m["deletion_curve"], m["insertion_curve"]) for n, m in method_items(entry)]
        for title, deletion, insertion in series:
            for curve, values in (("deletion", deletion), ("insertion", insertion)):
                rows += [{"split": split_name, "curve": curve, "method": title, "fraction": f, "score": v}
                         for f, v in zip(fractions, values)]
    return rows


# ----------------------------------------------------------------------------- the data-randomisation run
def data_randomisation_config(config: RunConfig) -> RunConfig:
    """The run's config with shuffled training labels: queued as a normal run, reused once trained."""
    if config.permute_labels:
        raise ValueError("this run was itself trained on shuffled labels")
    name = f"{config.name or config.model} · shuffled labels"
    return dataclasses.replace(config, permute_labels=True, name=name)


def find_data_randomisation_run(store: RunStore, config: RunConfig) -> tuple[str | None, str | None]:
    """(run id, state) of the newest run whose config is this one's with shuffled labels (name and group
    aside); a finished one with weights wins over a newer one still queued or running. (None, None) if none."""
    pending = (None, None)
    for record in store.list():  # newest first
        other = record.config
        if record.damaged or other is None or not other.permute_labels:
            continue
        if not set(config.differences(other)) <= {"permute_labels", "name", "group"}:
            continue
        if (record.path / "weights.pt").exists() and (record.path / "predictions.pt").exists():
            return record.run_id, "finished"
        if pending[0] is None and record.state in ("queued", "running"):
            pending = (record.run_id, record.state)
    return pending


# ----------------------------------------------------------------------------- cache in the run folder
def report_path(run_dir: str | Path, settings: ReportSettings, permuted_run: str | None = None) -> Path:
    """runs/RUN/explain_report/KEY.json: one file per settings (and data-randomisation run)."""
    suffix = f"-{permuted_run}" if permuted_run else ""
    return Path(run_dir) / "explain_report" / f"{settings.key()}{suffix}.json"


def load_cached_report(run_dir: str | Path, settings: ReportSettings, permuted_run: str | None = None) -> dict | None:
    """The cached report, or None (missing, or unreadable: it will simply be computed again)."""
    path = report_path(run_dir, settings, permuted_run)
    try:
        report = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return report if isinstance(report, dict) and report.get("key") == settings.key() else None


def save_report(run_dir: str | Path, settings: ReportSettings, report: dict, permuted_run: str | None = None) -> Path:
    path = report_path(run_dir, settings, permuted_run)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, report)
    return path


# ----------------------------------------------------------------------------- background computation
@dataclass
class ReportJob:
    """One report computed in a background thread; a page polls `progress` and reads `report` when done.

    The thread never touches Streamlit. It writes the report to the run folder when it finishes,
    so later visits (and other sessions) read it from disk.
    """

    run_dir: Path
    settings: ReportSettings
    progress: Progress | None = None
    report: dict | None = None
    error: str | None = None
    thread: threading.Thread | None = field(default=None, repr=False)

    @property
    def running(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    def start(self, explainer: Explainer, splits: dict[str, Split], permuted: Explainer | None = None,
              permuted_run: str | None = None) -> "ReportJob":
        def work():
            try:
                for progress in report_steps(explainer, splits, self.settings, permuted):
                    self.progress = progress
                    if progress.report is not None:
                        progress.report["permuted_run"] = permuted_run
                        save_report(self.run_dir, self.settings, progress.report, permuted_run)
                        self.report = progress.report
            except Exception as error:  # shown on the page; the thread must not die silently
                self.error = f"{type(error).__name__}: {error}"

        self.thread = threading.Thread(target=work, name="explain-report", daemon=True)
        self.thread.start()
        return self
