"""Adapting a finished model to the test hospital: AdaBN, few-shot fine-tuning, histogram matching."""
from __future__ import annotations

import json
import os

import pytest
import torch
from torch import nn

import explore.insight.attribution
import explore.insight.mismatch
from conftest import make_bundle
from explore.insight import adapt as AD
from explore.training.config import RunConfig
from explore.data import DataSpec, register_bundle
from explore.training.jobs import execute_run
from explore.training.store import RunStore
from explore.training.train import InputPipeline
from explore.cli import adapt as adapt_cli


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def bundle():
    return make_bundle(size=32, n_train=64, n_val=32, n_test=64)  # test: brighter (another "site")


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, bundle):
    """hw3_ann (it has BatchNorm) trained for 2 epochs on the tiny bundle."""
    root = tmp_path_factory.mktemp("runs")
    store = RunStore(root)
    config = RunConfig(data=register_bundle("adapt-tiny", bundle), model="hw3_ann", epochs=2, batch_size=16, lr=1e-3,
                       name="tiny-ann")
    run_id = store.create(config)
    records = list(execute_run(store, run_id))
    assert records[-1]["status"] == "finished", records[-1]
    return store, run_id


@pytest.fixture(scope="module")
def loaded(finished_run, bundle):
    store, run_id = finished_run
    return explore.insight.attribution.load_run(store, run_id, bundle=bundle)


def test_histogram_match_is_quantile_to_quantile():
    g = torch.Generator().manual_seed(0)
    dark = (torch.rand(3, 1, 16, 16, generator=g) * 80).to(torch.uint8)
    bright = (torch.rand(5, 1, 16, 16, generator=g) * 80 + 150).to(torch.uint8)
    matched = AD.histogram_match(dark, AD.grey_histogram(bright))
    assert matched.dtype == torch.uint8 and matched.shape == dark.shape
    assert abs(matched.float().mean() - bright.float().mean()) < 3  # the bright distribution, closely
    for before, after in zip(dark.flatten(1), matched.flatten(1)):  # darker stays darker
        order = torch.argsort(before, stable=True)
        assert (torch.diff(after[order].long()) >= 0).all()
    # An image matched to its own histogram is unchanged.
    assert torch.equal(AD.histogram_match(dark[:1], AD.grey_histogram(dark[:1])), dark[:1])


def test_recomputed_batchnorm_statistics_are_those_of_the_new_images():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Dropout(0.5),
                          nn.Linear(4, 1))
    pipeline = InputPipeline(RunConfig(input_norm="none"), torch.zeros(0, 1, 8, 8, dtype=torch.uint8))
    images = torch.randint(0, 256, (512, 1, 8, 8), dtype=torch.uint8)  # two batches of 256
    adapted = AD.recompute_batchnorm(model, pipeline, images)
    features = model[1](images.float().div(255).flatten(1))
    bn = adapted[2]
    assert torch.allclose(bn.running_mean, features.mean(0), atol=1e-5)
    # Each batch adds its unbiased variance; the average of two halves is close to the whole set's.
    assert torch.allclose(bn.running_var, features.var(0), rtol=0.05)
    assert not adapted.training and model[2].running_mean.abs().sum() == 0  # the original is untouched
    with pytest.raises(AD.AdaptError, match="no BatchNorm"):
        AD.recompute_batchnorm(nn.Sequential(nn.Flatten(), nn.Linear(64, 1)), pipeline, images)


def test_pick_shots_is_balanced_and_seeded():
    labels = torch.tensor([0] * 30 + [1] * 5)
    picked = AD.pick_shots(labels, 8, seed=1)
    assert len(set(picked.tolist())) == 8 and torch.bincount(labels[picked]).tolist() == [4, 4]
    assert torch.equal(picked, AD.pick_shots(labels, 8, seed=1))
    assert torch.bincount(labels[AD.pick_shots(labels, 12)]).tolist() == [7, 5]  # only 5 of class 1
    with pytest.raises(AD.AdaptError, match="between 1 and 34"):
        AD.pick_shots(labels, 35)


@pytest.mark.parametrize("method", ["bn", "histmatch", "finetune"])
def test_before_and_after_on_the_same_test_images(loaded, method):
    result = AD.adapt(loaded, method, k=8)
    assert result["method"] == method
    n_test = len(loaded.split("test"))
    expected_n = n_test - 8 if method == "finetune" else n_test
    assert result["before"]["n"] == result["after"]["n"] == expected_n
    for when in ("before", "after"):
        assert 0 <= result[when]["acc"] <= 1 and 0 <= result[when]["auc"] <= 1
    assert result["gap"]["before"]["acc"] == pytest.approx(result["val"]["acc"] - result["before"]["acc"])
    if method == "finetune":
        assert result["shots_per_class"] == [4, 4]
    else:  # before = the run's own saved test predictions
        assert result["before"]["acc"] == pytest.approx(
            explore.insight.mismatch.internal_external(loaded.predictions)["test"]["acc"])


def test_cli_prints_before_and_after(finished_run, capsys):
    store, run_id = finished_run
    assert adapt_cli.cli_main(["--run", str(store.root / run_id), "--method", "bn", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) >= {"method", "before", "after"} and set(out["after"]) >= {"acc", "auc"}
    assert adapt_cli.cli_main(["--run", str(store.root / "nope"), "--method", "bn"]) == 2
    assert "not a run folder" in capsys.readouterr().err
    from explore.cli.main import main
    assert main(["adapt", "--run", str(store.root / run_id), "--method", "finetune", "--k", "128"]) == 2
    assert "between 1 and" in capsys.readouterr().err


def test_mismatch_page_adapts_and_shows_before_and_after(finished_run, bundle, monkeypatch):
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    import pages.common

    store, _run_id = finished_run
    monkeypatch.setenv("EXPLORE_RUNS_DIR", str(store.root))
    monkeypatch.setattr(pages.common, "cached_bundle", lambda spec: bundle)
    at = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "pages/mismatch.py"), default_timeout=120)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.checkbox(key="adapt_bn").value  # offered: hw3_ann has BatchNorm
    at.select_slider(key="adapt_k").set_value(8)
    at.button(key="adapt_go").click()
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    frame = at.dataframe[-1].value
    assert list(frame["when"]) == ["before", "after"] * 3
    assert frame[frame["fix"].str.startswith("Few-shot")]["test images"].tolist() == [56, 56]
    assert sum("gap" in m.value for m in at.markdown) == 3
