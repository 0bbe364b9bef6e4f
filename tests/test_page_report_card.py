"""AppTest for the report card on the Saliency page: compute in the background, then show the cached card."""
from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch
from streamlit.testing.v1 import AppTest

import pages.common
import pages.saliency_card
from conftest import make_bundle
from explore.insight import explain_report as R
from explore.training.config import RunConfig
from explore.data import register_bundle
from explore.training.jobs import execute_run
from explore.training.store import RunStore

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 120


@pytest.fixture(scope="module")
def bundle():
    return make_bundle(size=32, n_train=48, n_val=16, n_test=16)


@pytest.fixture(scope="module")
def run(tmp_path_factory, bundle):
    root = tmp_path_factory.mktemp("runs")
    store = RunStore(root)
    run_id = store.create(RunConfig(data=register_bundle("report-card-tiny", bundle), model="lab4_gap", epochs=2,
                                    batch_size=16, lr=3e-3, name="card run"))
    assert list(execute_run(store, run_id))[-1]["status"] == "finished"
    return root, run_id


@pytest.fixture
def app(run, bundle, monkeypatch):
    root, run_id = run
    monkeypatch.setenv("EXPLORE_RUNS_DIR", str(root))
    monkeypatch.setattr(pages.common, "cached_bundle", lambda spec: bundle)
    at = AppTest.from_file(str(ROOT / "pages" / "saliency.py"), default_timeout=TIMEOUT)
    at.session_state["saliency_n"] = 2
    at.session_state["card_methods"] = ["saliency", "gradcam"]
    at.session_state["card_n"] = 8
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at, root / run_id


def wait_for_job(timeout_s: float = 120.0) -> R.ReportJob:
    deadline = time.monotonic() + timeout_s
    job = None
    while time.monotonic() < deadline:
        jobs = list(pages.saliency_card.report_jobs().values())
        job = jobs[-1] if jobs else None
        if job is not None and not job.running:
            return job
        time.sleep(0.2)
    pytest.fail(f"the report card was not computed within {timeout_s} s: {job}")


def test_card_is_computed_on_click_then_shown_from_the_run_folder(app):
    at, run_dir = app
    assert "Report card: which maps deserve trust?" in [h.value for h in at.header]
    assert not [c for c in at.caption if "Each cell: the verdict on val" in c.value]
    at.button(key="card_compute").click()
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    job = wait_for_job()
    assert job.error is None, job.error
    assert list((run_dir / "explain_report").glob("*.json"))  # cached with the run
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    tables = [df.value for df in at.dataframe]
    card = next(t for t in tables if "pointing_game" in t.columns and "method" in t.columns and "split" not in t.columns)
    assert list(card["method"]) == ["Saliency", "Grad-CAM"]
    assert all(len(cell.split(" | ")) == 2 for cell in card["deletion"]), card.to_dict("records")  # val | test
    assert any("tests passed" in m.value for m in at.markdown)
    assert len(at.get("vega_lite_chart")) + len(at.get("arrow_vega_lite_chart")) >= 1  # the curves

    # A later visit (a fresh session) reads the card from disk: no button, no computation.
    pages.saliency_card.report_jobs().clear()
    again = AppTest.from_file(str(ROOT / "pages" / "saliency.py"), default_timeout=TIMEOUT)
    again.session_state["saliency_n"] = 2
    again.session_state["card_methods"] = ["saliency", "gradcam"]
    again.session_state["card_n"] = 8
    again.run()
    assert not again.exception
    assert not [b for b in again.button if b.key == "card_compute"]
    assert not pages.saliency_card.report_jobs()


def test_no_method_picked_says_so(app):
    at, _ = app
    at.multiselect(key="card_methods").set_value([])
    at.run()
    assert not at.exception
    assert any("Pick at least one method" in i.value for i in at.info)
