"""Multi-label runs on the Saliency (one finding at a time), Mismatch and Compare pages."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from streamlit.testing.v1 import AppTest

import explore.training.train
import pages.common
from explore.insight import attribution as attr
from explore.training.config import RunConfig
from explore.data import DataSpec
from explore.training.jobs import execute_run
from explore.training.store import RunStore
from explore.insight import saliency_views
from test_page_multitask import bundle_with_findings

ROOT = Path(__file__).resolve().parents[1]
TASKS = ("pneumonia", "cardiomegaly", "effusion")
SPEC = DataSpec(image_size=64, findings=True)


@pytest.fixture(scope="module")
def bundle():
    return bundle_with_findings(SPEC)


@pytest.fixture(scope="module")
def runs_root(tmp_path_factory, bundle):
    root = tmp_path_factory.mktemp("runs")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(explore.training.train, "load_bundle", lambda spec: bundle)
        store = RunStore(root)
        run_id = store.create(RunConfig(data=SPEC, model="lab4_gap", epochs=2, batch_size=16, lr=3e-3,
                                        tasks=TASKS, name="tiny three findings"))
        assert list(execute_run(store, run_id))[-1]["status"] == "finished"
    return root


def test_each_finding_is_its_own_logit_and_target(runs_root, bundle):
    store = RunStore(runs_root)
    loaded = attr.load_run(store, store.run_ids()[0], bundle=bundle)
    assert loaded.warnings == []  # the stored N×3 targets match the data
    explainer = loaded.explainer()
    assert explainer.multilabel and explainer.classes == TASKS
    images = bundle.val.images[:3]
    x = explainer.inputs(images).requires_grad_(True)
    logits = explainer.model(x)
    for j in range(3):  # Saliency of finding j == |∂ logit_j / ∂ pixel| (captum against hand-computed gradients)
        grad, = torch.autograd.grad(logits[:, j].sum(), x, retain_graph=True)
        maps = attr.attribute(explainer, images, "saliency", j, with_probs=False)
        assert torch.allclose(maps.maps, grad.abs()[:, 0].cpu(), atol=1e-6)
        assert maps.target.tolist() == [j] * 3
    positive = attr.attribute(explainer, images, "saliency", "positive", with_probs=False)
    assert positive.target.tolist() == [0] * 3  # "positive" = pneumonia among the findings
    with pytest.raises(ValueError, match="target index 3"):
        attr.attribute(explainer, images, "saliency", 3)
    pictures = saliency_views.explain_images(loaded, "val", [0, 1], "saliency", 2)
    assert pictures["targets"] == ["effusion", "effusion"]
    outcome = loaded.outcomes("val", 2)
    assert torch.equal(outcome["labels"], bundle.val.findings[:, 1].long())
    assert loaded.outcome_classes(2) == ("no effusion", "effusion")


def test_saliency_page_explains_the_chosen_finding(runs_root, bundle, monkeypatch):
    monkeypatch.setenv("EXPLORE_RUNS_DIR", str(runs_root))
    monkeypatch.setattr(pages.common, "cached_bundle", lambda spec: bundle)
    at = AppTest.from_file(str(ROOT / "pages" / "saliency.py"), default_timeout=120)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    finding = at.selectbox(key="saliency_finding")
    assert finding.options == list(TASKS)
    finding.set_value(2)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    captions = [c.value for c in at.caption if " · true " in c.value]
    assert len(captions) == 8 and all("P(effusion)" in c for c in captions)
    assert any(b.key == "cell_val_1_1" and b.label.startswith("TP") for b in at.button)


def test_mismatch_page_says_it_analyses_single_task_runs(runs_root, bundle, monkeypatch):
    monkeypatch.setenv("EXPLORE_RUNS_DIR", str(runs_root))
    monkeypatch.setattr(pages.common, "cached_bundle", lambda spec: bundle)
    at = AppTest.from_file(str(ROOT / "pages" / "mismatch.py"), default_timeout=120)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("multi-label run" in i.value for i in at.info)


def test_compare_page_shows_per_finding_auc(runs_root, bundle, monkeypatch):
    monkeypatch.setenv("EXPLORE_RUNS_DIR", str(runs_root))
    at = AppTest.from_file(str(ROOT / "pages" / "compare.py"), default_timeout=120)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert "Per-finding AUC (multi-label runs)" in [s.value for s in at.subheader]
    table = next(df.value for df in at.dataframe if "val AUC · effusion" in df.value.columns)
    assert {f"test AUC · {t}" for t in TASKS} <= set(table.columns)
