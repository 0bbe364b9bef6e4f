"""ANN vs CNN: what each architecture costs (parameters, multiply-accumulates, time, memory)
and what it does with a shifted image.

Every number comes from the real modules, never from formulas typed by hand:
- `model_profile` runs one 1×1×size×size image through the model with a forward hook on
  every leaf layer (output shape, parameters) inside `torch.utils.flop_counter.FlopCounterMode`
  (PyTorch's own count of the arithmetic each operation did). One multiply-accumulate (MAC)
  is one multiplication plus one addition, so MACs = FLOPs / 2. A conv layer does
  H_out·W_out·C_out·C_in·k·k MACs, a linear layer in·out; biases, ReLU, pooling and batch
  norm add no MACs (they are cheap element-wise work).
- `measure_architectures` and `time_batch_sizes` time the real training loop
  (`explore.training.train.TrainingRun`, the same one the Train page uses) on this machine.
- `translation_sensitivity` shifts one image a few pixels and asks each model again.
"""
from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from explore.training.config import RunConfig
from explore.data import DataBundle, DataSpec, Split
from explore.device import Placement
from explore.training.metrics import positive_score
from explore.models.registry import MODELS, build_model, count_parameters, family_of
from explore.training.train import TrainingRun, pipeline_for_run, probabilities

COURSE_ARCHITECTURES = ("hw3_ann", "hw3_cnn", "lab4_gap", "hw3_gap_wide")
LECTURE_BATCH_SIZES = (24, 32, 48, 64, 96, 128)  # powers of two and the sizes between them
BATCH_SIZE_CHOICES = (8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)
IMAGE_SIZE_CHOICES = (32, 64, 128, 224, 256)


# ----- parameters and multiply-accumulates -----------------------------------------------
def _leaf_modules(model: nn.Module) -> dict[nn.Module, str]:
    """Every module with no children (the layers that do the work), by name."""
    return {module: name or type(module).__name__ for name, module in model.named_modules()
            if not any(True for _ in module.children())}


def _shape_of(output) -> list[int]:
    """Per-image output shape (batch dimension dropped); the first tensor of a tuple output."""
    if isinstance(output, torch.Tensor):
        return list(output.shape[1:])
    if isinstance(output, (tuple, list)):
        for item in output:
            if isinstance(item, torch.Tensor):
                return list(item.shape[1:])
    return []


def model_profile(model: nn.Module, size: int) -> dict:
    """Layers, output shapes, parameters and MACs for ONE size×size grey image.

    Returns {"macs": int, "params": int, "layers": [{"name", "type", "output_shape", "params",
    "macs"}]} with layers in the order they run. Totals equal the sums over the layers: work
    done outside any layer (e.g. a matmul written in a forward()) and parameters no layer used
    for this input get one extra row each, so nothing is hidden.
    """
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    image = torch.zeros(1, 1, size, size, device=device)  # transfer wrappers take N×1×H×W too
    leaves = _leaf_modules(model)
    rows: dict[nn.Module, dict] = {}  # first call order; a module used twice adds up its MACs
    counter = FlopCounterMode(display=False)
    flops_before: dict[nn.Module, int] = {}

    def before(module, inputs):
        flops_before[module] = counter.get_total_flops()

    def after(module, inputs, output):
        macs = (counter.get_total_flops() - flops_before.pop(module)) // 2
        if module not in rows:
            rows[module] = {"name": leaves[module], "type": type(module).__name__, "output_shape": _shape_of(output),
                            "params": sum(p.numel() for p in module.parameters(recurse=False)), "macs": 0}
        rows[module]["macs"] += int(macs)

    handles = [h for module in leaves for h in (module.register_forward_pre_hook(before),
                                                module.register_forward_hook(after))]
    was_training = model.training
    try:
        model.eval()  # eval: batch norm must not update its statistics, dropout is off
        with torch.no_grad(), counter:
            model(image)
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()

    layers = list(rows.values())
    total_macs = int(counter.get_total_flops()) // 2
    total_params, _ = count_parameters(model)
    outside_macs = total_macs - sum(r["macs"] for r in layers)
    unused_params = total_params - sum(r["params"] for r in layers)
    if outside_macs:
        layers.append({"name": "(outside layers)", "type": "functional ops", "output_shape": [], "params": 0,
                       "macs": outside_macs})
    if unused_params:
        layers.append({"name": "(not used for this input)", "type": "parameters", "output_shape": [],
                       "params": unused_params, "macs": 0})
    return {"macs": total_macs, "params": total_params, "layers": layers}


def build_for_profile(name: str, size: int, num_outputs: int = 1, batch_norm: bool = False) -> nn.Module:
    """A freshly built registry model (transfer backbones without downloading weights); `batch_norm`
    switches BatchNorm on in the models that take it (mlp, cnn, cnn_gap)."""
    options = family_of(name).offline_options()
    if batch_norm and "batch_norm" in MODELS[name].options:
        options["batch_norm"] = True
    return build_model(name, size, num_outputs, **options)


def profile_label(name: str, batch_norm: bool) -> str:
    """'cnn + batch norm' when batch norm was switched on for a model that takes it."""
    return f"{name} + batch norm" if batch_norm and "batch_norm" in MODELS[name].options else name


def first_layer_weights(profile: dict, model: nn.Module) -> dict:
    """How many weights the first layer with weights needs, and the formula behind the count."""
    modules = dict(model.named_modules())
    for row in profile["layers"]:
        module = modules.get(row["name"])
        if isinstance(module, nn.Linear):
            w, b = module.weight.numel(), (module.bias.numel() if module.bias is not None else 0)
            formula = f"{module.in_features:,} inputs × {module.out_features:,} units"
        elif isinstance(module, nn.Conv2d):
            w, b = module.weight.numel(), (module.bias.numel() if module.bias is not None else 0)
            kh, kw = module.kernel_size
            formula = f"{kh}×{kw} kernel × {module.in_channels} in-channel × {module.out_channels} filters"
        else:
            continue
        return {"layer": row["name"], "type": row["type"], "weights": w, "biases": b, "total": w + b,
                "formula": f"{formula} = {w:,} weights + {b:,} biases"}
    return {"layer": None, "type": None, "weights": 0, "biases": 0, "total": 0, "formula": "no Linear/Conv2d layer"}


def profile_architectures(names: Iterable[str], size: int, batch_norm: bool = False) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(totals, layers) for several registry models at one input size (with `batch_norm`, the models
    that take it are built with BatchNorm layers, and their γ/β parameters are counted).

    totals: model, family, batch_norm (has BatchNorm layers), description, params, macs, first_layer, first_layer_weights, first_layer_formula, error
    layers: model, name, type, output_shape ("32×128×128"), params, macs
    """
    totals, layers = [], []
    for name in names:
        try:
            model = build_for_profile(name, size, batch_norm=batch_norm)
            profile = model_profile(model, size)
        except Exception as error:  # e.g. an image too small for three poolings, or a backbone missing
            totals.append({"model": name, "family": MODELS[name].family, "description": MODELS[name].description,
                           "error": str(error)[:300]})
            continue
        first = first_layer_weights(profile, model)
        has_bn = any(isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)) for m in model.modules())
        totals.append({"model": name, "family": MODELS[name].family, "batch_norm": has_bn,
                       "description": MODELS[name].description, "params": profile["params"],
                       "macs": profile["macs"], "first_layer": f"{first['layer']} ({first['type']})",
                       "first_layer_weights": first["total"], "first_layer_formula": first["formula"],
                       "error": None})
        for row in profile["layers"]:
            layers.append({"model": name, **row, "output_shape": "×".join(map(str, row["output_shape"]))})
    total_columns = ["model", "family", "batch_norm", "description", "params", "macs", "first_layer", "first_layer_weights",
                     "first_layer_formula", "error"]
    layer_columns = ["model", "name", "type", "output_shape", "params", "macs"]
    totals = pd.DataFrame(totals, columns=total_columns)
    for column in ("params", "macs", "first_layer_weights"):  # whole numbers even when a row failed
        totals[column] = totals[column].astype("Int64")
    return totals, pd.DataFrame(layers, columns=layer_columns)


# ----- time and memory on this machine ------------------------------------------------
def timing_bundle(size: int, n_images: int, seed: int = 0) -> DataBundle:
    """Random grey images with alternating labels: timing does not depend on what the pixels show,
    and every architecture gets exactly the same tensors."""
    def split(n: int, offset: int) -> Split:
        g = torch.Generator().manual_seed(seed + offset)
        return Split(images=torch.randint(0, 256, (n, 1, size, size), generator=g, dtype=torch.uint8),
                     labels=torch.arange(n) % 2, sites=("timing",) * n,
                     ids=tuple(f"timing/{offset}/{i}" for i in range(n)),
                     original_sizes=torch.full((n, 2), size, dtype=torch.long))
    return DataBundle(source="timing", image_size=size, classes=("NORMAL", "PNEUMONIA"),
                      splits={"train": split(n_images, 0), "val": split(2, 1), "test": split(0, 2)})


def _sync(placement: Placement) -> None:
    if placement.device.type == "cuda":
        torch.cuda.synchronize(placement.device)


def _rss_kib(field: str) -> int | None:
    try:
        match = re.search(rf"{field}:\s+(\d+) kB", Path("/proc/self/status").read_text())
    except OSError:
        return None
    return int(match.group(1)) if match else None


class PeakMemory:
    """Peak memory of the code inside `with`, above the level just before it.

    CUDA: `torch.cuda.max_memory_allocated` (tensors PyTorch allocated on the GPU: weights,
    optimizer state, activations, the data). CPU: the process's peak resident memory (Linux
    /proc/self/status VmHWM, reset through /proc/self/clear_refs) minus the resident memory
    before: everything the process touched, including Python objects and anything other threads
    of this process allocated meanwhile. `megabytes` stays None where neither can be measured.
    """

    def __init__(self, placement: Placement):
        self.placement = placement
        self.megabytes: float | None = None
        self.kind = ("CUDA peak allocated (torch.cuda.max_memory_allocated)" if placement.device.type == "cuda"
                     else "process peak RSS above start (Linux VmHWM)")

    def __enter__(self):
        if self.placement.device.type == "cuda":
            _sync(self.placement)
            self.baseline = torch.cuda.memory_allocated(self.placement.device)
            torch.cuda.reset_peak_memory_stats(self.placement.device)
            return self
        try:  # "5" resets the peak-RSS high-water mark of this process (Linux ≥ 4.0)
            Path("/proc/self/clear_refs").write_text("5")
            self.baseline = _rss_kib("VmRSS")
        except OSError:
            self.baseline = None
        return self

    def __exit__(self, *exc):
        if self.placement.device.type == "cuda":
            _sync(self.placement)
            peak = torch.cuda.max_memory_allocated(self.placement.device) - self.baseline
            self.megabytes = peak / 2**20
        elif self.baseline is not None:
            peak = _rss_kib("VmHWM")
            self.megabytes = None if peak is None else max(0, peak - self.baseline) / 1024
        else:
            self.kind = "not measurable on this system (no /proc/self/clear_refs)"
        return False


def _timing_config(name: str, size: int, batch_size: int, epochs: int) -> RunConfig:
    """The course's training settings (Adam, BCE), no schedule, no test split: only speed matters."""
    extra = family_of(name).offline_options()
    return RunConfig(model=name, data=DataSpec(image_size=size), batch_size=batch_size, epochs=epochs,
                     scheduler="none", eval_test=False, name=f"timing {name}", **extra)


def _train_and_time(name: str, bundle: DataBundle, batch_size: int, placement: Placement, timed_epochs: int = 2):
    """Train one warm-up epoch plus `timed_epochs` and return (run, seconds of the fastest timed epoch).

    The warm-up pays for allocations and kernel selection. The fastest epoch, not the mean, is the
    one least disturbed by other work on the machine (the usual rule for benchmarks)."""
    run = TrainingRun(_timing_config(name, bundle.image_size, batch_size, 1 + timed_epochs), bundle, placement)
    for record in run.fit():
        if record["kind"] == "end" and record["status"] != "finished":
            raise RuntimeError(f"{name}: {record['message']}")
    return run, min(r["seconds"] for r in run.history[1:])


@torch.no_grad()
def _images_per_second(run, batch_size: int) -> float:
    """Inference speed through the run's own input pipeline and precision (eval mode, no gradients)."""
    images, _ = run.data["train"]
    run.model.eval()
    run.forward(images[:batch_size], train=False)  # warm-up batch
    _sync(run.placement)
    started = time.perf_counter()
    for start in range(0, len(images), batch_size):
        run.forward(images[start:start + batch_size], train=False)
    _sync(run.placement)
    return len(images) / max(time.perf_counter() - started, 1e-9)


def measure_architectures(names: Iterable[str], size: int, batch_size: int, n_images: int,
                          placement: Placement | None = None) -> pd.DataFrame:
    """Training seconds per epoch, inference images per second and peak memory, measured here.

    Every model trains on the same `n_images` random size×size images at the same batch size,
    through the same loop as real runs (a warm-up epoch, then the fastest of two timed epochs). One row per model:
    model, params, macs, seconds_per_epoch, images_per_second, peak_memory_mb, memory_measure,
    device, image_size, batch_size, n_images, error.
    """
    placement = placement or Placement.choose()
    bundle = timing_bundle(size, n_images)
    rows = []
    for name in names:
        row = {"model": name, "device": placement.describe(), "image_size": size, "batch_size": batch_size,
               "n_images": n_images}
        try:
            memory = PeakMemory(placement)
            with memory:
                run, seconds = _train_and_time(name, bundle, batch_size, placement)
            total, _ = count_parameters(run.model)
            row |= {"params": total, "seconds_per_epoch": seconds,
                    "images_per_second": _images_per_second(run, batch_size),
                    "peak_memory_mb": memory.megabytes, "memory_measure": memory.kind, "error": None}
            del run
        except Exception as error:  # out of memory, a model that cannot take this size: one row says so
            row |= {"error": f"{type(error).__name__}: {str(error)[:300]}"}
        finally:
            if placement.device.type == "cuda":
                torch.cuda.empty_cache()
        rows.append(row)
    columns = ["model", "params", "seconds_per_epoch", "images_per_second", "peak_memory_mb", "memory_measure",
               "device", "image_size", "batch_size", "n_images", "error"]
    return pd.DataFrame(rows, columns=columns)


def time_batch_sizes(name: str, size: int, batch_sizes: Iterable[int] = LECTURE_BATCH_SIZES, n_images: int = 192,
                     placement: Placement | None = None) -> pd.DataFrame:
    """Seconds per training epoch at each batch size (same model, same images).

    The lecture's point: the time falls as batches grow until the hardware is saturated, with no
    jump at powers of two. Columns: batch_size, power_of_two, batches, seconds_per_epoch,
    images_per_second, device.
    """
    placement = placement or Placement.choose()
    bundle = timing_bundle(size, n_images)
    rows = []
    for batch_size in batch_sizes:
        _, seconds = _train_and_time(name, bundle, int(batch_size), placement)
        rows.append({"batch_size": int(batch_size), "power_of_two": batch_size & (batch_size - 1) == 0,
                     "batches": math.ceil(n_images / batch_size), "seconds_per_epoch": seconds,
                     "images_per_second": n_images / max(seconds, 1e-9), "device": placement.describe()})
    return pd.DataFrame(rows)


# ----- trained results ------------------------------------------------------------------
def layer_table(layers: pd.DataFrame, model: str) -> pd.DataFrame:
    """One model's rows of `profile_architectures`' layers, and a TOTAL row (parameters and MACs summed)."""
    part = layers[layers.model == model].drop(columns=["model"])
    total = pd.DataFrame([{"name": "TOTAL", "type": "", "output_shape": "", "params": part.params.sum(),
                           "macs": part.macs.sum()}])
    return pd.concat([part, total], ignore_index=True)


def measurement_note(measured: pd.DataFrame) -> str:
    """How `measure_architectures` measured (device, size, batch, images, what 'memory' means here)."""
    first = measured.iloc[0]
    return (f"Measured on {first.device} at {first.image_size} px, batch {first.batch_size}, "
            f"{first.n_images} images. Seconds per epoch: the fastest of two epochs after a warm-up, through "
            f"the same training loop as real runs. Memory: {first.memory_measure}"
            + (" — on a CPU this is the whole process, so other work in it (the app, other sessions) "
               "can add to it." if "RSS" in str(first.memory_measure) else "."))


def trained_results(records, names: Iterable[str] | None = None) -> pd.DataFrame:
    """Finished runs side by side: model, run, image size, params, train / val / test accuracy.

    Train accuracy is the last epoch's running accuracy on the training set (with dropout and
    augmentation on, as the loop saw it); val and test come from the final weights.
    """
    names = set(names) if names is not None else None
    rows = []
    for record in records:
        if record.damaged or record.config is None or record.state != "finished" or not record.summary:
            continue
        if names is not None and record.config.model not in names:
            continue
        last = record.metrics[-1] if record.metrics else {}
        model = profile_label(record.config.model, bool(record.config.options().get("batch_norm")))
        rows.append({"model": model, "run": record.label, "run_id": record.run_id,
                     "image_size": record.config.data.image_size, "epochs": record.summary.get("epochs_completed"),
                     "params": record.summary.get("params_total"), "train_acc": last.get("train_acc"),
                     "val_acc": record.summary.get("val_acc"), "test_acc": record.summary.get("test_acc"),
                     "created": record.created})
    columns = ["model", "run", "run_id", "image_size", "epochs", "params", "train_acc", "val_acc", "test_acc",
               "created"]
    return pd.DataFrame(rows, columns=columns).sort_values("created", ascending=False, ignore_index=True)


# ----- translation sensitivity ------------------------------------------------------------
@dataclass
class Classifier:
    """A model ready to score uint8 images: `prepare` is the input pipeline it was trained with."""

    name: str
    model: nn.Module
    image_size: int
    prepare: Callable[[torch.Tensor], torch.Tensor]


def classifier_from_run(store, run_id: str) -> Classifier:
    """A finished run's model with its own input pipeline (the normalisation stats in summary.json)."""
    model, config = store.load_model(run_id)
    record = store.load(run_id, with_metrics=False)
    pipeline = pipeline_for_run(config, record.summary)
    return Classifier(f"{config.model} · {record.label}", model, config.data.image_size,
                      lambda images: pipeline(pipeline.stored(images), train=False))


def fresh_classifier(name: str, image_size: int, seed: int = 0) -> Classifier:
    """An untrained registry model (random weights, per-image standardisation): the architecture alone."""
    torch.manual_seed(seed)
    model = build_for_profile(name, image_size).eval()

    def prepare(images: torch.Tensor) -> torch.Tensor:
        x = images.float() / 255.0
        return (x - x.mean(dim=(1, 2, 3), keepdim=True)) / x.std(dim=(1, 2, 3), keepdim=True).clamp_min(1e-3)

    return Classifier(f"{name} (untrained)", model, image_size, prepare)


def shift_image(image: torch.Tensor, dx: int = 0, dy: int = 0) -> torch.Tensor:
    """Move a uint8 1×H×W image dx pixels right and dy down; the border row/column is repeated
    into the gap (no black edge that a model could react to instead of the shift)."""
    x = image.float()[None]
    x = F.pad(x, (max(dx, 0), max(-dx, 0), max(dy, 0), max(-dy, 0)), mode="replicate")
    h, w = image.shape[-2:]
    top, left = max(-dy, 0), max(-dx, 0)
    return x[0, :, top:top + h, left:left + w].round().to(torch.uint8)


def _as_single_image(image: torch.Tensor) -> torch.Tensor:
    image = torch.as_tensor(image)
    if image.dtype != torch.uint8:
        raise ValueError(f"the image must be uint8 (0..255), got {image.dtype}")
    while image.ndim > 3 and image.shape[0] == 1:
        image = image[0]
    if image.ndim == 2:
        image = image[None]
    if image.ndim != 3 or image.shape[0] != 1:
        raise ValueError(f"expected one grey image (H×W or 1×H×W), got shape {tuple(image.shape)}")
    return image


def _resize(image: torch.Tensor, size: int) -> torch.Tensor:
    if image.shape[-1] == size and image.shape[-2] == size:
        return image
    x = F.interpolate(image.float()[None], size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return x[0].round().clamp(0, 255).to(torch.uint8)


@torch.no_grad()
def shift_models(store, newest: pd.DataFrame, names: Iterable[str], image_size: int, trained: bool) -> list[Classifier]:
    """The models the shift test compares: the newest finished run of each architecture, or untrained copies."""
    if trained:
        return [classifier_from_run(store, run_id) for run_id in newest.run_id]
    return [fresh_classifier(name, image_size) for name in names]


def translation_sensitivity(classifiers: Iterable[Classifier], image: torch.Tensor,
                            shifts: Iterable[int] = range(-8, 9), axis: str = "x") -> pd.DataFrame:
    """p(disease) for the same image shifted by each number of pixels, per model.

    Returns DataFrame(model, shift_px, prob, change): `change` is prob minus the unshifted prob.
    The image is resized to each model's input size first (so every model sees the same content).
    """
    if axis not in ("x", "y"):
        raise ValueError("axis must be 'x' (left/right) or 'y' (up/down)")
    image = _as_single_image(image)
    shifts = [int(s) for s in shifts]
    rows = []
    for classifier in classifiers:
        base = _resize(image, classifier.image_size)
        batch = torch.stack([shift_image(base, *((s, 0) if axis == "x" else (0, s))) for s in [0] + shifts])
        device = next((p.device for p in classifier.model.parameters()), torch.device("cpu"))
        was_training = classifier.model.training
        classifier.model.eval()
        logits = classifier.model(classifier.prepare(batch).to(device)).float().cpu()
        classifier.model.train(was_training)
        probs = positive_score(probabilities(logits))
        reference = float(probs[0])
        rows += [{"model": classifier.name, "shift_px": s, "prob": float(p), "change": float(p) - reference}
                 for s, p in zip(shifts, probs[1:].tolist())]
    return pd.DataFrame(rows, columns=["model", "shift_px", "prob", "change"])


def translation_summary(sensitivity: pd.DataFrame) -> pd.DataFrame:
    """Per model: the unshifted probability and the largest swing the shifts caused."""
    if sensitivity.empty:
        return pd.DataFrame(columns=["model", "prob_unshifted", "largest_change", "prob_range"])
    rows = []
    for model, part in sensitivity.groupby("model", sort=False):
        unshifted = float((part["prob"] - part["change"]).iloc[0])
        rows.append({"model": model, "prob_unshifted": unshifted,
                     "largest_change": float(part["change"].abs().max()),
                     "prob_range": float(part["prob"].max() - part["prob"].min())})
    return pd.DataFrame(rows)


# ----- charts (Altair specs built from the tables above) -------------------------------------
