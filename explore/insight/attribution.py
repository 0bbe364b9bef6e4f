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

Can the maps be trusted? `explore.insight.regions` measures where the positive attribution falls (lungs,
lesion, burned-in markers on synthetic data; centre vs borders and corners anywhere), `explore.insight.sanity`
is Adebayo et al. 2018's model-randomisation test, and `explore.insight.explain_report` is the report card.
`explore.insight.saliency_views` turns all of it into what the Saliency page shows.
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch
from captum.attr import IntegratedGradients, LayerAttribution, LayerGradCam, NoiseTunnel, Occlusion, Saliency
from torch import nn

from explore.data import DataBundle
from explore.insight.browse import BROWSE_MODES, CELL_MEANING, CELLS_BINARY, cell_name, outcomes, select  # noqa: F401 (re-exported)
from explore.insight import finished_run
from explore.insight.finished_run import FinishedRun, predict  # noqa: F401 (predict re-exported)
from explore.insight.multilabel_report import targets_at
from explore.models.registry import forward_order
from explore.training.store import RunRecord, RunStore
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
