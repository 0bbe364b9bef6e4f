"""Adapt a trained model to the new hospital, and measure whether it helped.

The Mismatch page shows a model that scores well on its own hospital (val) and worse on
another (test). Retraining with a fix (explore/insight/mismatch.py) needs the whole training run
again; these three fixes start from the finished model and need little or nothing more:

  bn         AdaBN (Li et al. 2016): recompute every BatchNorm layer's running mean and
             variance on the new hospital's images. No labels, no gradient step: the layers
             then normalise the new images the way they normalised the old ones in training.
             Only for models with BatchNorm layers (hw3_ann, the CNNs' BN option, the
             pretrained backbones).
  finetune   few-shot fine-tuning: k labelled images of the new hospital (k = 8, 32, 128)
             train the whole network for a few passes at a tenth of the run's learning rate.
             Those k images are then left out of the test score — before AND after — so
             both numbers are measured on the same images the model never trained on.
  histmatch  histogram matching: each new image's grey levels are remapped so their
             distribution matches the training images' (no change to the model).

`adapt(loaded, method, k)` returns {"method", "before": {...}, "after": {...}} with accuracy,
AUC, sensitivity and specificity on the same test images, plus the val score and the val−test
gap before and after. `python -m explore adapt --run RUN --method bn --json` prints it.
"""
from __future__ import annotations

import copy
from dataclasses import replace

import torch
from torch import nn

from explore.insight.finished_run import FinishedRun, predict
from explore.data import Split
from explore.insight.mismatch import internal_external, threshold_report
from explore.training.train import make_loss, make_optimizer

SHOT_COUNTS = (8, 32, 128)  # the few-shot sizes the page offers
FINETUNE_EPOCHS = 20        # passes over the k images
FINETUNE_LR_FACTOR = 0.1    # fine-tune at a tenth of the run's learning rate: nudge, do not retrain
BATCH_SIZE = 256


class AdaptError(ValueError):
    """An adaptation that cannot run on this model or data (the message says why)."""


# ----------------------------------------------------------------------------- AdaBN
def batchnorm_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@torch.no_grad()
def recompute_batchnorm(model: nn.Module, pipeline, images: torch.Tensor, device: torch.device | str = "cpu") -> nn.Module:
    """A copy of `model` whose BatchNorm running statistics come from `images` alone
    (as torch.optim.swa_utils.update_bn does it).

    momentum=None makes BatchNorm keep an exact average over all batches instead of an
    exponential one, so the result does not depend on the batch order. Only the BN layers
    are in train mode: dropout stays off, so the statistics see the activations the model
    will see at test time.
    """
    layers = batchnorm_layers(model)
    if not layers:
        raise AdaptError("this model has no BatchNorm layers, so there are no statistics to recompute "
                         "(AdaBN needs e.g. hw3_ann, a CNN with batch norm or a pretrained backbone)")
    adapted = copy.deepcopy(model).to(device).eval()
    for layer in batchnorm_layers(adapted):
        layer.reset_running_stats()
        layer.momentum = None
        layer.train()
    for start in range(0, len(images), BATCH_SIZE):
        chunk = images[start:start + BATCH_SIZE]
        if len(chunk) < 2:  # BatchNorm cannot take the variance of one image
            continue
        adapted(pipeline(pipeline.stored(chunk), train=False).to(device))
    return adapted.eval()


# ----------------------------------------------------------------------------- histogram matching
def grey_histogram(images: torch.Tensor) -> torch.Tensor:
    """Share of pixels at each of the 256 grey levels, over all images (uint8 N×1×H×W)."""
    counts = torch.bincount(images.flatten().long(), minlength=256).double()
    return counts / counts.sum().clamp_min(1)


def histogram_match(images: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Remap each image's grey levels so its cumulative histogram follows `reference`'s.

    For a pixel at level v whose image has a fraction F(v) of pixels at or below v, the new
    level is the lowest u with F_ref(u) ≥ F(v): quantile to quantile. Order is kept (darker
    stays darker); only the distribution of grey levels changes.
    """
    reference_cdf = torch.cumsum(reference.double(), 0)
    reference_cdf = reference_cdf / reference_cdf[-1]
    out = torch.empty_like(images)
    for i, image in enumerate(images):
        cdf = torch.cumsum(grey_histogram(image), 0)
        lookup = torch.searchsorted(reference_cdf, cdf - 1e-9).clamp(0, 255).to(torch.uint8)
        out[i] = lookup[image.long()]
    return out


# ----------------------------------------------------------------------------- few-shot fine-tuning
def pick_shots(labels: torch.Tensor, k: int, seed: int = 0) -> torch.Tensor:
    """k indices, as balanced over the classes as the data allows (seeded)."""
    if not 1 <= k < len(labels):
        raise AdaptError(f"k = {k} labelled images must be between 1 and {len(labels) - 1} "
                         f"(the test split has {len(labels)} images and some must remain to score)")
    g = torch.Generator().manual_seed(seed)
    per_class = [torch.nonzero(labels == c).flatten() for c in labels.unique().tolist()]
    queues = [idx[torch.randperm(len(idx), generator=g)].tolist() for idx in per_class]
    chosen = []
    while len(chosen) < k:  # one of each class in turn, until k (a class that runs out is skipped)
        for queue in queues:
            if queue and len(chosen) < k:
                chosen.append(queue.pop(0))
    return torch.tensor(sorted(chosen))


def finetune(loaded: FinishedRun, shots: Split, seed: int = 0, device: torch.device | str = "cpu",
             epochs: int = FINETUNE_EPOCHS) -> nn.Module:
    """A copy of the run's model trained on the k `shots` with the run's own loss and optimizer.

    BatchNorm layers stay in eval mode (their statistics are not re-estimated from 8 images).
    """
    torch.manual_seed(seed)
    config = loaded.config
    model = copy.deepcopy(loaded.model).to(device)
    loss_fn = make_loss(config, shots.labels, loaded.bundle.num_classes, torch.device(device))
    optimizer = make_optimizer(replace(config, lr=config.lr * FINETUNE_LR_FACTOR),
                               [p for p in model.parameters() if p.requires_grad])
    generator = torch.Generator().manual_seed(seed)
    batch = min(len(shots), config.batch_size)
    for _ in range(epochs):
        model.train()
        for layer in batchnorm_layers(model):
            layer.eval()
        order = torch.randperm(len(shots), generator=generator)
        for start in range(0, len(order), batch):
            pick = order[start:start + batch]
            x = loaded.pipeline(loaded.pipeline.stored(shots.images[pick]), train=True, generator=generator)
            loss = loss_fn(model(x.to(device)), shots.labels[pick].to(device)) / len(pick)  # the loss sums
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return model.eval()


# ----------------------------------------------------------------------------- before and after
METHODS = {
    "bn": "AdaBN: BatchNorm statistics recomputed on the new hospital's images (no labels, no training)",
    "finetune": "few-shot fine-tuning on k labelled images of the new hospital (left out of the score)",
    "histmatch": "histogram matching: the new images' grey levels remapped to the training images' distribution",
}


def _metrics(report: dict) -> dict:
    keep = ("n", "acc", "auc", "sensitivity", "specificity", "confusion")
    return {key: report[key] for key in keep}


def adapt(loaded: FinishedRun, method: str, k: int = 32, seed: int = 0, threshold: float = 0.5,
          device: torch.device | str = "cpu") -> dict:
    """Test metrics before and after one adaptation, on the same test images."""
    if method not in METHODS:
        raise AdaptError(f"unknown method {method!r}: use one of {sorted(METHODS)}")
    test = loaded.split("test")
    if len(test) < 2:
        raise AdaptError("the run's test split has fewer than two images: nothing to adapt to")
    result = {"method": method, "run_id": loaded.run_id, "what": METHODS[method]}
    if method == "finetune":
        shots_index = pick_shots(test.labels, k, seed)
        keep = torch.ones(len(test), dtype=torch.bool)
        keep[shots_index] = False
        shots, test = test.subset(shots_index), test.subset(torch.nonzero(keep).flatten())
        result |= {"k": int(k), "shots_per_class": torch.bincount(shots.labels).tolist()}
    before = predict(loaded.model, loaded.pipeline, test.images, device)
    images = test.images
    if method == "bn":
        model = recompute_batchnorm(loaded.model, loaded.pipeline, test.images, device)
    elif method == "finetune":
        model = finetune(loaded, shots, seed, device)
    else:
        model = loaded.model
        images = histogram_match(test.images, grey_histogram(loaded.split("train").images))
    after = predict(model, loaded.pipeline, images, device)
    result["before"] = _metrics(threshold_report(test.labels, before, threshold))
    result["after"] = _metrics(threshold_report(test.labels, after, threshold))
    return result | _gaps(loaded, result, threshold)


def _gaps(loaded: FinishedRun, result: dict, threshold: float) -> dict:
    """The val score (the training hospital, unchanged) and the val − test gap before and after."""
    val = internal_external(loaded.predictions, threshold).get("val")
    if val is None:
        return {}
    gap = {when: {metric: (val[metric] - result[when][metric])
                  if val[metric] is not None and result[when][metric] is not None else None
                  for metric in ("acc", "auc")} for when in ("before", "after")}
    return {"val": {"acc": val["acc"], "auc": val["auc"]}, "gap": gap}
