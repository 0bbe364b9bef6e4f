"""AppTest for the Compare and ANN vs CNN pages, on run folders written in a temporary runs dir."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest
from streamlit.testing.v1 import AppTest

import pages.common
from conftest import make_bundle
from explore.training.config import RunConfig
from explore.data import DataSpec
from explore.training.jobs import JobManager
from explore.training.store import RunStore
from test_compare import write_run

ROOT = Path(__file__).resolve().parents[1]
COMPARE, ARCHITECTURES = str(ROOT / "pages/compare.py"), str(ROOT / "pages/architectures.py")
BASE = RunConfig(data=DataSpec(image_size=32), model="hw3_cnn", epochs=3, name="cnn", group="demo")


class FakeJobs(JobManager):
    """The real gate and queue without workers: records what the page queued (after the gate), trains nothing."""

    def __init__(self):
        super().__init__(max_concurrent=0, executor="thread")
        self.submitted = []

    def submit(self, store, configs):
        run_ids = super().submit(store, configs)
        self.submitted += [store.load(run_id).config for run_id in run_ids]
        return run_ids


@pytest.fixture
def store(runs_dir, monkeypatch) -> RunStore:
    monkeypatch.setenv("EXPLORE_RUNS_DIR", str(runs_dir))
    return RunStore(runs_dir)


@pytest.fixture
def jobs(monkeypatch) -> FakeJobs:
    fake = FakeJobs()
    monkeypatch.setattr(pages.common, "job_manager", lambda: fake)
    monkeypatch.setattr(pages.common, "cached_bundle", lambda spec: make_bundle(size=spec.image_size))
    return fake


def charts(at: AppTest) -> list:
    return at.get("vega_lite_chart")


def chart_data(chart) -> pd.DataFrame:
    """The rows an Altair chart was sent with (Streamlit ships them as Arrow beside the spec)."""
    frames = [pa.ipc.open_stream(d.data.data).read_pandas() for d in chart.proto.datasets]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def test_compare_without_runs_says_what_to_do(store, jobs):
    at = AppTest.from_file(COMPARE).run(timeout=30)
    assert not at.exception
    assert "No runs yet" in at.info[0].value


def test_compare_overlays_curves_and_tables_the_differences(store, jobs):
    a = write_run(store, BASE.replace(lr=1e-3, name="slow"), val_accs=(0.6, 0.7, 0.75))
    b = write_run(store, BASE.replace(lr=1e-2, name="fast"), val_accs=(0.7, 0.8, 0.6))
    at = AppTest.from_file(COMPARE).run(timeout=60)
    assert not at.exception, at.exception
    assert set(at.multiselect(key="compare_runs").value) == {a, b}  # the newest group is preselected
    curve_charts = [c for c in charts(at) if "per epoch" in c.proto.spec and "learning rate per" not in c.proto.spec]
    assert len(curve_charts) == 2  # accuracy and loss
    (lr_chart,) = [c for c in charts(at) if "learning rate per epoch" in c.proto.spec]  # under the loss
    lr = chart_data(lr_chart)
    assert sorted(set(lr.value)) == [1e-3, 1e-2] and set(lr.metric) == {"learning rate"}
    accuracy = chart_data(curve_charts[0])
    assert set(accuracy.run) == {"slow · lr=0.001", "fast · lr=0.01"}  # both runs' curves, one colour each
    # the split names as on every chart of the app (charts.curves: the Train page draws the same curves)
    assert set(accuracy.split) == {"train", "val (site A)", "test (site B)"} and set(accuracy.metric) == {"accuracy"}
    slow_val = accuracy[(accuracy.run_id == a) & (accuracy.split == "val (site A)")].sort_values("epoch")
    assert slow_val.value.tolist() == [0.6, 0.7, 0.75]
    table = at.dataframe[0].value
    assert set(table.columns) >= {"run", "lr", "best_epoch", "val_acc_best_epoch", "test_acc", "status"}
    assert "model" not in table.columns and len(table) == 2

    at.multiselect(key="compare_runs").unselect(b).run(timeout=60)
    assert not at.exception
    assert len(at.dataframe[0].value) == 1


def test_compare_queues_a_sweep_and_repeats_as_groups(store, jobs):
    write_run(store, BASE)
    at = AppTest.from_file(COMPARE).run(timeout=60)
    at.text_input(key="sweep_values_lr").input("1e-3, 1e-2").run(timeout=60)
    assert not at.exception, at.exception
    queue = next(b for b in at.button if b.label.startswith("Queue 2 runs"))
    queue.click().run(timeout=60)
    assert not at.exception, at.exception
    assert [c.lr for c in jobs.submitted] == [1e-3, 1e-2]
    sweep_group = jobs.submitted[0].group
    assert sweep_group.startswith("sweep-") and {c.group for c in jobs.submitted} == {sweep_group}
    assert any("0 of 2 runs finished" in p.proto.text for p in at.get("progress"))

    jobs.submitted.clear()
    next(b for b in at.button if b.label.startswith("Queue 3 runs")).click().run(timeout=60)
    assert not at.exception, at.exception
    assert [c.seed for c in jobs.submitted] == [0, 1, 2] and jobs.submitted[0].group.startswith("repeat-")


def test_compare_shows_a_finished_sweep_and_repeats(store, jobs):
    for lr, acc in ((1e-3, 0.7), (1e-2, 0.8)):
        write_run(store, BASE.replace(lr=lr, group="sweep-20250101-000000"), test_acc=acc)
    for seed, acc in ((0, 0.8), (1, 0.9), (2, 1.0)):
        write_run(store, BASE.replace(seed=seed, group="repeat-20250101-000000"), test_acc=acc)
    at = AppTest.from_file(COMPARE).run(timeout=60)
    assert not at.exception, at.exception
    assert any("2 of 2 runs finished" in p.proto.text for p in at.get("progress"))
    assert any("against the learning rate" in c.proto.spec for c in charts(at))
    assert any("test acc 90.0% ± 10.0% (n=3)" in m.value for m in at.markdown)


def test_compare_deletes_after_confirmation(store, jobs):
    a = write_run(store, BASE.replace(name="one"))
    b = write_run(store, BASE.replace(name="two", lr=0.1))
    at = AppTest.from_file(COMPARE).run(timeout=60)
    delete = next(b for b in at.button if b.label == "Delete")
    assert delete.disabled  # nothing happens without the confirmation box
    at.checkbox(key="confirm_delete").check().run(timeout=60)
    next(b for b in at.button if b.label == "Delete").click().run(timeout=60)
    assert not at.exception, at.exception
    assert store.run_ids() == []


def test_architectures_page_counts_measures_and_shifts(store, jobs):
    write_run(store, BASE.replace(model="hw3_ann", name="ann"), test_acc=0.7)
    write_run(store, BASE.replace(name="cnn"), test_acc=0.8)
    at = AppTest.from_file(ARCHITECTURES).run(timeout=120)
    assert not at.exception, at.exception
    totals = at.dataframe[0].value.set_index("model")
    assert list(totals.index) == ["hw3_ann", "hw3_cnn", "lab4_gap", "hw3_gap_wide"]
    assert totals.loc["hw3_cnn", "macs"] == 208_666_656
    assert any("65,536 inputs × 512 units" in m.value and "33,554,944" in m.value for m in at.markdown)
    assert any("parameters" in c.proto.spec for c in charts(at))
    results = next(d.value for d in at.dataframe if "test_acc" in d.value.columns)  # from the finished runs
    assert set(results.model) == {"hw3_ann", "hw3_cnn"}

    at.select_slider[0].set_value(32).run(timeout=120)
    at.number_input[0].set_value(16)
    at.number_input[1].set_value(16)
    next(b for b in at.button if b.label.startswith("Measure")).click().run(timeout=300)
    assert not at.exception, at.exception
    measured = next(d.value for d in at.dataframe if "seconds_per_epoch" in d.value.columns)
    assert len(measured) == 4 and (measured.seconds_per_epoch > 0).all()

    # the fake runs have no weights: the trained-model shift test must say so, not crash
    next(b for b in at.button if b.label == "Shift and predict").click().run(timeout=120)
    assert not at.exception and any("Cannot run the shift test" in e.value for e in at.error)
    at.radio[0].set_value("untrained (random weights)")
    next(b for b in at.button if b.label == "Shift and predict").click().run(timeout=120)
    assert not at.exception, at.exception
    assert any("as the image shifts" in c.proto.spec for c in charts(at))


def test_compare_survives_damaged_and_queued_runs(store, jobs):
    write_run(store, BASE.replace(name="ok"))
    write_run(store, BASE.replace(name="waiting", lr=0.1), val_accs=(), status="queued")
    broken = store.root / "zzzz-broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    at = AppTest.from_file(COMPARE).run(timeout=60)
    assert not at.exception, at.exception
    # the damaged folder sorts first, so it is the preselected 'newest group'; pick everything
    at.multiselect(key="compare_runs").set_value(store.run_ids()).run(timeout=60)
    assert not at.exception, at.exception
    assert any("config.json is unreadable" in w.value for w in at.warning)
    table = at.dataframe[0].value
    assert len(table) == 3 and set(table.status) == {"finished", "queued", "damaged"}


@pytest.mark.parametrize("tab", ["sweep", "repeat"])
def test_demo_mode_refuses_a_sweep_or_repeat_above_the_cap(store, jobs, monkeypatch, tab):
    monkeypatch.setenv("EXPLORE_DEMO_MODE", "1")
    monkeypatch.setenv("EXPLORE_MAX_SWEEP_RUNS", "2")
    at = AppTest.from_file(COMPARE)
    at.query_params["session"] = "demo-visitor"
    write_run(RunStore(store.root, namespace="session-demo-visitor"), BASE)  # demo mode: this session's runs
    at.run(timeout=60)
    if tab == "sweep":
        at.text_input(key="sweep_values_lr").input("1e-4, 1e-3, 1e-2").run(timeout=60)
    label = "Queue 3 runs" if tab == "sweep" else "Queue 3 runs (seeds"  # the repeat tab's default: 3 seeds
    next(b for b in at.button if b.label.startswith(label) and not b.disabled).click().run(timeout=60)
    assert not at.exception, at.exception
    assert any("may queue at most 2 runs (3 asked)" in e.value for e in at.error)
    assert jobs.submitted == []
