"""AppTest for remove and retrain on the Saliency page, and the CLI report that reads the group back."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

import pages.common
from conftest import make_bundle
from explore.insight import roar
from explore.training.config import RunConfig
from explore.training.jobs import execute_run
from explore.training.store import RunStore

ROOT = Path(__file__).resolve().parents[1]
SIZE = 32


def test_the_button_queues_the_group_and_the_page_and_cli_show_accuracy_vs_t(tmp_path, monkeypatch, capsys,
                                                                               register_data):
    bundle = make_bundle(size=SIZE, n_train=32, n_val=16, n_test=16)
    monkeypatch.setattr(pages.common, "cached_bundle", lambda spec: bundle)
    monkeypatch.setenv("EXPLORE_RUNS_DIR", str(tmp_path))
    store = RunStore(tmp_path)
    source = store.create(RunConfig(data=register_data(bundle), model="lab4_gap", epochs=1, batch_size=16,
                                    name="roar source"))
    assert list(execute_run(store, source))[-1]["status"] == "finished"
    queued = []

    def queue_without_workers(store_, configs):  # the job manager's gate, minus the worker processes
        queued.extend(store_.create(c) for c in configs)
        return list(queued)

    monkeypatch.setattr(pages.common, "queue_runs", queue_without_workers)
    at = AppTest.from_file(str(ROOT / "pages" / "saliency.py"), default_timeout=120)
    at.session_state["saliency_n"] = 2
    at.session_state["card_methods"] = ["saliency"]
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    button = at.button(key="roar_queue")
    assert button.label == "Remove and retrain (queues 9 runs)"  # (saliency, Grad-CAM, random) × 3
    button.click()
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert len(queued) == 9 and all(store.load(r).config.roar_from_run for r in queued)
    assert any("Queued 9 runs" in s.value for s in at.success)

    for run_id in queued:  # what the workers would do
        assert list(execute_run(store, run_id))[-1]["status"] == "finished"
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert not [b for b in at.button if b.key == "roar_queue"]  # every point has its run: nothing left to queue
    table = next(df.value for df in at.dataframe if "verdict" in df.value.columns)
    assert list(table["method"]) == ["saliency", "gradcam", "random"]
    assert list(table.columns[1:5]) == ["t = 0%", "t = 10%", "t = 30%", "t = 50%"]

    from explore.cli.main import main

    code = main(["explain-report", "--run", str(tmp_path / source), "--n", "4", "--methods", "saliency",
                 "--json"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert out["roar"]["fractions"] == [0.0, 0.1, 0.3, 0.5]
    assert set(out["roar"]["methods"]) == {"saliency", "gradcam", "random"}
    assert out["roar"] == roar.roar_results(store, store.path(source))
