"""The training loop: learning, determinism, divergence, stop, early stopping, schedules."""
import math

import pytest
import torch

from explore.training.config import RunConfig
from explore.data import DataSpec
from explore.training.runs import make_run
from explore.training.train import InputPipeline

from conftest import make_bundle


def cfg(**kw):
    kw.setdefault("data", DataSpec(image_size=64))
    kw.setdefault("epochs", 2)
    kw.setdefault("precision", "fp32")
    return RunConfig(**kw)


def records(run, **kw):
    return [r for r in run.fit(**kw) if r["kind"] != "progress"]


@pytest.fixture(scope="module")
def bundle():
    return make_bundle(size=32, n_train=96, n_val=32, n_test=32)


def test_learns_the_tiny_task(bundle):
    run = make_run(cfg(model="cnn", epochs=4, lr=3e-3), bundle=bundle)
    out = records(run)
    assert out[-1] == {"kind": "end", "status": "finished", "message": "trained 4 epochs"}
    epochs = [r for r in out if r["kind"] == "epoch"]
    assert [r["epoch"] for r in epochs] == [1, 2, 3, 4]
    assert epochs[-1]["val_acc"] >= 0.9
    assert epochs[-1]["train_loss"] < epochs[0]["train_loss"]
    summary = run.summary()
    assert summary["splits"]["val"]["confusion"] and summary["params_total"] > 0
    assert set(epochs[0]) >= {"train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc", "lr", "seconds"}


def test_same_seed_same_curves(bundle):
    a = records(make_run(cfg(model="hw3_cnn", augment=("geometry", "intensity", "noise")), bundle=bundle))
    b = records(make_run(cfg(model="hw3_cnn", augment=("geometry", "intensity", "noise")), bundle=bundle))
    strip = lambda rs: [{k: v for k, v in r.items() if k != "seconds"} for r in rs]
    assert strip(a) == strip(b)
    c = records(make_run(cfg(model="hw3_cnn", seed=1), bundle=bundle))
    assert strip(c) != strip(a)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_huge_learning_rate_diverges_cleanly(bundle, optimizer):
    run = make_run(cfg(model="hw3_cnn", lr=1e4, optimizer=optimizer, epochs=3), bundle=bundle)
    out = records(run)
    assert out[-1]["status"] == "diverged"
    assert "lower learning rate" in out[-1]["message"] and "epoch" in out[-1]["message"]
    for record in out:
        for value in record.values():
            if isinstance(value, float):
                assert math.isfinite(value)
    # the kept weights are the last good ones: finite
    assert all(torch.isfinite(p).all() for p in run.model.parameters())
    summary = run.summary()
    assert summary["status"] == "diverged"


def test_stop_within_one_batch_keeps_what_was_learned(bundle):
    run = make_run(cfg(model="hw3_cnn", epochs=5, batch_size=8), bundle=bundle)
    seen = []

    def should_stop():
        return len(seen) >= 3

    for record in run.fit(should_stop):
        if record["kind"] == "progress":
            seen.append(record)
    assert run.status == "stopped"
    assert "stopped by the user" in run.message
    assert len(run.history) == 0 or run.history[-1]["epoch"] < 5


def test_early_stopping_restores_best(bundle):
    # lr so small nothing improves after the first epochs: patience 1 must end early.
    run = make_run(cfg(model="hw2_mlp", epochs=20, lr=1e-2, early_stopping_patience=1), bundle=bundle)
    records(run)
    assert run.status == "finished"
    assert len(run.history) < 20 and "early stopping" in run.message
    assert run.best_epoch == min(run.history, key=lambda r: r["val_loss"])["epoch"]


@pytest.mark.parametrize("scheduler", ["step", "exponential", "cosine", "plateau", "onecycle"])
def test_schedules_change_the_learning_rate(bundle, scheduler):
    run = make_run(cfg(model="hw2_mlp", scheduler=scheduler, step_size=1, gamma=0.5, epochs=3, lr=0.01),
                   bundle=bundle)
    records(run)
    lrs = [r["lr"] for r in run.history]
    assert len(lrs) == 3
    if scheduler in ("step", "exponential", "cosine", "onecycle"):
        assert lrs[0] != lrs[-1]


@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "rmsprop", "adam", "adamw"])
def test_every_optimizer_runs(bundle, optimizer):
    run = make_run(cfg(model="hw2_mlp", optimizer=optimizer, lr=1e-3, epochs=1, nesterov=optimizer == "momentum"),
                   bundle=bundle)
    assert records(run)[-1]["status"] == "finished"


def test_cross_entropy_three_classes():
    bundle = make_bundle(size=32, n_train=90, n_val=30, n_test=30, num_classes=3)
    config = cfg(model="cnn_gap", loss="ce", data=DataSpec(image_size=64, num_classes=3), epochs=1,
                 class_weights=True)
    run = make_run(config, bundle=bundle)
    records(run)
    assert run.model(torch.zeros(2, 1, 32, 32)).shape == (2, 3)
    assert len(run.summary()["splits"]["test"]["confusion"]) == 3


def test_bce_and_ce_have_the_right_outputs(bundle):
    assert make_run(cfg(model="hw3_cnn", loss="bce"), bundle=bundle).model.fc2.out_features == 1
    assert make_run(cfg(model="hw3_cnn", loss="ce"), bundle=bundle).model.fc2.out_features == 2


def test_split_train_dev_holds_out_a_seeded_share_of_each_class(bundle):
    from explore.training.train import split_train_dev

    kept, held = split_train_dev(bundle.train, 0.25, 3, 2)
    for cls in (0, 1):
        n = int((bundle.train.labels == cls).sum())
        assert int((held.labels == cls).sum()) == round(n * 0.25)
    assert len(kept) + len(held) == len(bundle.train)
    both = torch.cat([kept.images, held.images]).flatten(1)
    assert len(torch.unique(both, dim=0)) == len(torch.unique(bundle.train.images.flatten(1), dim=0))
    again, _ = split_train_dev(bundle.train, 0.25, 3, 2)
    assert torch.equal(again.images, kept.images)  # seeded: mismatch re-measures on the very images trained on
    everything, none = split_train_dev(bundle.train, 0.0, 3, 2)
    assert everything is bundle.train and none is None


def test_train_dev_split_is_held_out(bundle):
    run = make_run(cfg(model="hw2_mlp", train_dev_fraction=0.25, epochs=1), bundle=bundle)
    records(run)
    assert len(run.data["train_dev"][0]) == 24 and len(run.data["train"][0]) == 72
    assert "train_dev_acc" in run.history[0]


def test_input_pipeline_norms(bundle):
    images = bundle.train.images[:4]
    for norm in ("dataset", "per_image", "histeq", "none"):
        pipeline = InputPipeline(cfg(input_norm=norm), bundle.train.images)
        x = pipeline(pipeline.stored(images), train=False)
        assert x.shape == images.shape and torch.isfinite(x).all()
    per_image = InputPipeline(cfg(input_norm="per_image"), bundle.train.images)(images, train=False)
    assert torch.allclose(per_image.mean(dim=(1, 2, 3)), torch.zeros(4), atol=1e-4)


def test_no_horizontal_flip_unless_asked(bundle):
    from explore.training import augment

    x = torch.zeros(64, 1, 8, 8)
    x[..., :4] = 1.0  # left half bright
    g = torch.Generator().manual_seed(0)
    out = augment.apply(x, ("intensity",), g)
    assert (out[..., :4].mean() > out[..., 4:].mean())
    flipped = augment.apply(x, ("hflip",), g)
    assert (flipped[..., 4:].sum(dim=(1, 2, 3)) > 0).any()


def test_histogram_equalisation_spreads_grey_levels():
    from explore.training.augment import equalize_histogram

    images = torch.randint(100, 120, (2, 1, 16, 16), dtype=torch.uint8)
    out = equalize_histogram(images)
    assert out.dtype == torch.uint8 and int(out.max()) == 255 and int(out.min()) == 0
