"""Frozen transfer: cached features vs recomputing the backbone every epoch (`python -m explore bench --only frozen`)."""
from __future__ import annotations

from explore.data import DataBundle, DataSpec
from explore.data.synthetic import generate_synthetic
from explore.training.train import TrainingRun
from explore.training.transfer import FeatureCache, FrozenFeatureRun, transfer_config


def benchmark_frozen_cache(backbone: str = "mobilenet_v3_small", image_size: int = 224, n_train: int = 300,
                           n_val: int = 50, n_test: int = 50, epochs: int = 5, batch_size: int = 32,
                           device: str = "auto", bundle: DataBundle | None = None) -> dict:
    """Frozen backbone, same head and data: cached features vs recomputing the backbone every epoch
    (what the course's loop does). Random backbone weights: the timing does not depend on their values."""
    if bundle is None:
        bundle = generate_synthetic(image_size=image_size, seed=0, n_train=n_train, n_val=n_val, n_test=n_test)
    config = transfer_config(backbone, "frozen", data=DataSpec(image_size=bundle.image_size), epochs=epochs,
                             image_size=bundle.image_size, pretrained=False, batch_size=batch_size, device=device)
    cached = FrozenFeatureRun(config, bundle, cache=FeatureCache(disk_dir=None))
    recompute = TrainingRun(config, bundle)  # the same frozen model, backbone run in every batch

    def epoch_seconds(run):
        return (r["seconds"] for r in run.fit() if r["kind"] == "epoch")

    # Alternate one epoch of each, so a busy machine slows both alike.
    cached_s, recompute_s = zip(*zip(epoch_seconds(cached), epoch_seconds(recompute)))
    median = lambda xs: sorted(xs)[len(xs) // 2]  # noqa: E731
    return {
        "backbone": backbone, "image_size": bundle.image_size, "train_images": len(bundle.train),
        "eval_images": len(bundle.val) + len(bundle.test), "epochs": epochs, "batch_size": batch_size,
        "device": cached.placement.describe(), "feature_pass_seconds": cached.feature_seconds,
        "cached_seconds_per_epoch": median(cached_s), "recompute_seconds_per_epoch": median(recompute_s),
        "speedup": median(recompute_s) / max(median(cached_s), 1e-9),
        # On a shared, busy machine the fastest epoch of each is the least disturbed measurement.
        "speedup_best_epochs": min(recompute_s) / max(min(cached_s), 1e-9),
        "note": "epoch time includes evaluating val and test; the feature pass happens once, before epoch 1",
    }
