"""Remove and retrain (ROAR): the removal is exact, and a tiny group of runs trains and is read back."""
from __future__ import annotations

import pytest
import torch

from explore.insight import roar
from explore.training.config import RunConfig
from explore.data import DataSpec

SIZE = 16


def test_removal_masks_exactly_t_percent_top_attributed_first():
    torch.manual_seed(0)
    images = torch.randint(0, 256, (3, 1, SIZE, SIZE), dtype=torch.uint8)
    # A known attribution: pixel value = its rank from the bottom, different per image (rolled).
    maps = torch.stack([torch.arange(SIZE * SIZE).roll(37 * i).float().view(SIZE, SIZE) for i in range(3)])
    orders = roar.attribution_orders(maps, seed=0)
    for fraction in roar.ROAR_FRACTIONS:
        out = roar.remove_pixels(images, orders, fraction)
        count = round(fraction * SIZE * SIZE)
        for i in range(3):
            top = maps[i].flatten().argsort(descending=True)[:count]  # the most-attributed pixels
            removed = torch.zeros(SIZE * SIZE, dtype=torch.bool)
            removed[top] = True
            fill = images[i].float().mean().round()
            flat_out, flat_in = out[i].flatten(), images[i].flatten()
            assert torch.all(flat_out[removed] == fill)  # exactly these became the image's mean grey
            assert torch.equal(flat_out[~removed], flat_in[~removed])  # and nothing else changed
            assert int(removed.sum()) == count
    assert out.dtype == torch.uint8 and out.shape == images.shape


def test_ties_and_random_order_are_seeded_permutations():
    flat = torch.zeros(2, SIZE, SIZE)
    a, b = roar.attribution_orders(flat, seed=3), roar.attribution_orders(flat, seed=3)
    assert torch.equal(a, b) and torch.equal(a[0].sort().values, torch.arange(SIZE * SIZE))
    r = roar.random_orders(4, SIZE * SIZE, seed=1)
    assert torch.equal(r, roar.random_orders(4, SIZE * SIZE, seed=1))
    assert all(torch.equal(row.sort().values, torch.arange(SIZE * SIZE)) for row in r)
    assert not torch.equal(r[0], r[1])


def test_config_fields_are_validated(tmp_path):
    base = RunConfig(data=DataSpec(image_size=SIZE), model="lab4_gap", epochs=1, name="tiny")
    with pytest.raises(ValueError, match="roar_method"):  # checked when the run is made
        roar.validate_roar(base.replace(roar_from_run=str(tmp_path), roar_method="nope", roar_fraction=0.1))
    with pytest.raises(ValueError, match="roar_fraction"):
        base.replace(roar_from_run=str(tmp_path), roar_method="saliency", roar_fraction=1.5)
    with pytest.raises(ValueError, match="need roar_from_run"):
        base.replace(roar_method="saliency", roar_fraction=0.1)
    group = roar.roar_configs(base, tmp_path)
    assert len(group) == 9  # (saliency, Grad-CAM, random) × (10, 30, 50 %)
    assert [(c.roar_method, c.roar_fraction) for c in group[-3:]] == [("random", 0.1), ("random", 0.3), ("random", 0.5)]
    assert all(set(base.differences(c)) == {"roar_from_run", "roar_method", "roar_fraction", "name", "group"}
               for c in group)
    assert RunConfig.from_json(group[0].to_json()) == group[0]  # stored beside the run and read back
    with pytest.raises(ValueError, match="itself"):
        roar.roar_configs(group[0], tmp_path)


def test_a_tiny_roar_group_trains_and_the_report_reads_it_back(tmp_path, register_data):
    from conftest import make_bundle
    from explore.training.jobs import execute_run
    from explore.training.store import RunStore
    from explore.training.runs import make_run

    bundle = make_bundle(size=SIZE, n_train=32, n_val=16, n_test=16)
    store = RunStore(tmp_path)
    config = RunConfig(data=register_data(bundle), model="lab4_gap", epochs=1, batch_size=16, name="tiny")
    source = store.create(config)
    assert list(execute_run(store, source))[-1]["status"] == "finished"
    assert roar.roar_results(store, store.path(source)) is None  # no ROAR runs yet

    group = roar.roar_configs(config, store.path(source), methods=("saliency",), fractions=(0.1, 0.5))
    assert roar.missing_configs(store, store.path(source), group) == group
    ids = [store.create(c) for c in group[:3]]
    assert roar.missing_configs(store, store.path(source), group) == group[3:]  # only the point not yet queued
    ids.append(store.create(group[3]))
    pending = roar.roar_results(store, store.path(source))
    assert pending["pending"] == 4 and pending["methods"] == {}

    # What the loop trains on: half of every image's pixels are gone, ranked by the source's saliency.
    run = make_run(group[1], bundle)
    placed = run.data["train"][0].cpu()
    changed = (placed != bundle.train.images).flatten(1).float().mean(1)
    assert torch.all(changed <= 0.5) and changed.mean() > 0.3  # (a pixel already at the mean grey stays)
    assert torch.equal(run.data["val"][1].cpu(), bundle.val.labels)  # labels untouched

    for run_id in ids:
        assert list(execute_run(store, run_id))[-1]["status"] == "finished"
    results = roar.roar_results(store, store.path(source))
    assert results["pending"] == 0 and results["fractions"] == [0.0, 0.1, 0.5]
    assert set(results["methods"]) == {"saliency", "random"}
    source_acc = store.load(source).summary["test_acc"]
    for entry in results["methods"].values():
        assert entry["accuracy"][0] == source_acc and all(0 <= a <= 1 for a in entry["accuracy"])
    saliency = results["methods"]["saliency"]
    assert isinstance(saliency["faithful"], bool) and saliency["drop_vs_random"] is not None
    rows = roar.roar_rows(results)
    assert [r["method"] for r in rows] == ["saliency", "random"] and "t = 50%" in rows[0]
    assert rows[1]["verdict"] == "reference"
    assert roar.roar_sentence(results)


def test_the_cli_trains_the_group_and_prints_accuracy_vs_t(tmp_path, register_data, capsys):
    import json

    from conftest import make_bundle
    from explore.cli.main import main
    from explore.training.jobs import execute_run
    from explore.training.store import RunStore

    bundle = make_bundle(size=SIZE, n_train=32, n_val=16, n_test=16)
    store = RunStore(tmp_path)
    source = store.create(RunConfig(data=register_data(bundle), model="lab4_gap", epochs=1, batch_size=16))
    assert main(["roar", "--run", str(store.path(source))]) == 2  # not finished yet: a clear error
    assert "not a finished run" in capsys.readouterr().err
    assert list(execute_run(store, source))[-1]["status"] == "finished"
    assert main(["roar", "--run", str(store.path(source)), "--methods", "gradcam", "--fractions", "0.5", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["fractions"] == [0.0, 0.5] and list(out["methods"]) == ["gradcam", "random"]
    assert len(roar.roar_runs(store, store.path(source))) == 2
