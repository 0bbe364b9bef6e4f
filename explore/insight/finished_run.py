"""A finished run, loaded for analysis: its model, input pipeline, predictions and data, in one object.

Attribution (explore.insight.attribution, which adds the explainer), the mismatch analysis, domain adaptation and the
pages all start from here, so a run is rebuilt one way: the model from config.json + weights.pt
(`RunStore.load_model`, through the model's family), the pipeline from the statistics in summary.json
(`explore.training.train.pipeline_for_run`), the predictions from predictions.pt, and the data from the config's source
(or the bundle the caller already holds).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from explore.training import multilabel
from explore.training.config import RunConfig
from explore.data import DataBundle, Split, load_bundle
from explore.training.store import RunRecord, RunStore, StoreError
from explore.training.train import InputPipeline, eval_batches, pipeline_for_run, probabilities


@dataclass
class FinishedRun:
    """A finished run ready for analysis: model (eval, CPU), config, predictions, data and pipeline."""

    run_id: str
    record: RunRecord
    model: nn.Module
    config: RunConfig
    predictions: dict
    bundle: DataBundle
    pipeline: InputPipeline
    warnings: list[str] = field(default_factory=list)

    def split(self, name: str) -> Split:
        return self.bundle.splits[name]


def load_run(store: RunStore, run_id: str, bundle: DataBundle | None = None) -> FinishedRun:
    """Model, predictions, data and input pipeline of one run. Raises StoreError/DataError with a clear message."""
    record = store.load(run_id, with_metrics=True)
    if record.damaged or record.config is None:
        raise StoreError(f"run {run_id} cannot be read: {record.damaged}")
    model, config = store.load_model(run_id)
    predictions = store.load_predictions(run_id)
    bundle = bundle if bundle is not None else load_bundle(config.data)
    pipeline = pipeline_for_run(config, record.summary, bundle)
    return FinishedRun(run_id, record, model, config, predictions, bundle, pipeline,
                       _stale_prediction_warnings(predictions, bundle, config.tasks))


def _stale_prediction_warnings(predictions: dict, bundle: DataBundle, tasks: tuple[str, ...] = ()) -> list[str]:
    warnings = []
    for name in ("val", "test"):
        stored = predictions.get(name)
        if stored is None or name not in bundle.splits:
            continue
        expected = bundle.splits[name].labels
        if tasks:  # multi-label runs store N×K targets (NaN: unknown)
            expected = multilabel.split_targets(bundle.splits[name], bundle, tasks)
        if stored["labels"].shape != expected.shape or not torch.equal(
                stored["labels"].float().nan_to_num(-1), expected.float().nan_to_num(-1)):
            warnings.append(f"the {name} images no longer match the run's saved predictions (the dataset "
                            f"changed since training); browsing by outcome on {name} is unreliable")
    return warnings


def run_folder(run_dir: str | Path) -> Path:
    """`--run RUN_DIR` checked: a folder with a config.json."""
    path = Path(run_dir)
    if not (path / "config.json").exists():
        raise StoreError(f"{path} is not a run folder (no config.json)")
    return path


def load_run_dir(run_dir: str | Path, bundle: DataBundle | None = None) -> FinishedRun:
    """`--run RUN_DIR` (a run folder path) → FinishedRun."""
    path = run_folder(run_dir)
    return load_run(RunStore(path.parent), path.name, bundle)


def predict(model: nn.Module, pipeline: InputPipeline, images: torch.Tensor,
            device: torch.device | str | None = None, batch_size: int = 256) -> torch.Tensor:
    """Probabilities (N, or N×K) from the model in eval mode, fed through the run's pipeline."""
    device = torch.device(device or next(model.parameters()).device)

    def step(batch: slice) -> torch.Tensor:
        x = pipeline(pipeline.stored(images[batch]), train=False).to(device)
        return probabilities(model(x)).cpu()

    out = eval_batches(model, len(images), batch_size, step)
    return torch.cat(out) if out else torch.zeros(0)
