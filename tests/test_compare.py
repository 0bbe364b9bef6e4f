"""explore.insight.compare: the differing-settings table, curves, sweeps, repeats, exports, deletion."""
from __future__ import annotations

import datetime as dt
import io
import json
import time
import zipfile

import pandas as pd
import pytest

from conftest import make_bundle
from explore import charts
from explore.insight import compare
from explore.training.config import RunConfig
from explore.data import DataSpec
from explore.training.jobs import JobManager
from explore.training.store import RunStore


def write_run(store: RunStore, config: RunConfig, val_accs=(0.6, 0.7, 0.65), test_acc=0.6,
              status: str = "finished", created: float | None = None) -> str:
    """A run folder as a finished job leaves it, without training (fake but consistent numbers)."""
    run_id = store.create(config)
    metrics = []
    for epoch, val_acc in enumerate(val_accs, start=1):
        record = {"kind": "epoch", "epoch": epoch, "train_loss": 1.0 / epoch, "train_acc": 0.5 + 0.1 * epoch,
                  "val_loss": 1.0 - val_acc, "val_acc": val_acc, "test_loss": 1.2 - test_acc,
                  "test_acc": test_acc, "lr": config.lr, "seconds": 0.5 + 0.1 * epoch}
        store.append_metrics(run_id, record)
        metrics.append(record)
    if created is not None:
        store.set_status(run_id, created=created)
    if status in ("queued", "running"):
        store.set_status(run_id, status=status)
        return run_id
    best = max(metrics, key=lambda m: m["val_acc"])
    summary = {"status": status, "message": "", "epochs_completed": len(metrics), "best_epoch": best["epoch"],
               "best_val_acc": best["val_acc"], "last_val_acc": metrics[-1]["val_acc"], "val_acc": val_accs[-1],
               "test_acc": test_acc, "seconds_per_epoch": 0.6, "params_total": 1000, "run_id": run_id,
               "input_pipeline": {"norm": "dataset", "mean": 0.4, "std": 0.2}}
    store.save_results(run_id, summary, None, None)
    store.set_status(run_id, status=status)
    return run_id


@pytest.fixture
def store(runs_dir) -> RunStore:
    return RunStore(runs_dir)


BASE = RunConfig(data=DataSpec(image_size=32), model="hw3_cnn", epochs=3, name="base", group="g")


def test_table_shows_only_differing_settings(store):
    a = write_run(store, BASE.replace(lr=1e-3, name="a"))
    b = write_run(store, BASE.replace(lr=1e-4, batch_size=64, name="b"))
    table = compare.comparison_table([store.load(a), store.load(b)])
    settings = [c for c in table.columns if c not in ("run", "run_id", "best_epoch", "val_acc_best_epoch",
                                                       "val_acc_last_epoch", "test_acc", "epochs",
                                                       "seconds_per_epoch", "status")]
    assert settings == ["batch_size", "lr"]  # model, epochs, image size, optimizer ... are equal: hidden
    assert "name" not in table.columns and "group" not in table.columns
    row = table.set_index("run_id").loc[b]
    assert row["lr"] == 1e-4 and row["batch_size"] == 64
    # best epoch = lowest val loss = highest val acc (0.7, epoch 2) in the fake metrics
    assert row["best_epoch"] == 2 and row["val_acc_best_epoch"] == 0.7 and row["val_acc_last_epoch"] == 0.65
    assert row["test_acc"] == 0.6 and row["epochs"] == 3 and row["status"] == "finished"
    assert row["seconds_per_epoch"] == pytest.approx(0.7)  # median of 0.6, 0.7, 0.8


def test_differing_settings_sees_data_and_model_options():
    a = BASE.replace(model="hw3_cnn_dropout", model_options=(("dropout", 0.3),), data_image_size=64)
    b = BASE.replace(model="hw3_cnn_dropout", model_options=(("dropout", 0.6),), data_image_size=64, augment=("noise",))
    assert compare.differing_settings([a, b]) == ["augment", "model_options.dropout"]
    assert compare.differing_settings([a, a]) == []
    assert compare.differing_settings([BASE, BASE.replace(data_image_size=64)]) == ["data.image_size"]


def test_labels_name_the_differences_and_are_unique(store):
    a = write_run(store, BASE.replace(lr=1e-3))
    b = write_run(store, BASE.replace(lr=1e-2))
    c = write_run(store, BASE.replace(lr=1e-2))  # identical settings: told apart by run id
    labels = compare.run_labels([store.load(i) for i in (a, b, c)])
    assert labels[a] == "base · lr=0.001"
    assert labels[b] != labels[c] and labels[b].startswith("base · lr=0.01") and c[-6:] in labels[c]


def test_curves_are_one_row_per_run_epoch_split_metric(store):
    a = write_run(store, BASE.replace(lr=1e-3), val_accs=(0.5, 0.8))
    rows = compare.curves([store.load(a)])
    assert len(rows) == 2 * 3 * 2 + 2  # epochs × (train, val, test) × (loss, accuracy), + lr per epoch
    assert rows[rows.metric == "learning rate"].value.tolist() == [1e-3, 1e-3]
    val = rows[(rows.split == "val") & (rows.metric == "accuracy")]
    assert val.value.tolist() == [0.5, 0.8] and val.epoch.tolist() == [1, 2]
    chart = charts.curves(rows, "accuracy", ["val"], by_run=True)
    assert len(chart.data) == 2


def test_filters_by_group_model_and_date(store):
    old = write_run(store, BASE.replace(group="old", model="hw3_ann"), created=time.mktime((2024, 1, 5, 12, 0, 0, 0, 0, -1)))
    new = write_run(store, BASE.replace(group="new"))
    runs = compare.runs_frame(store.list())
    assert set(compare.filter_runs(runs, groups=["old"]).run_id) == {old}
    assert set(compare.filter_runs(runs, models=["hw3_cnn"]).run_id) == {new}
    assert set(compare.filter_runs(runs, until=dt.date(2024, 1, 5)).run_id) == {old}
    assert set(compare.filter_runs(runs, since=dt.date(2024, 1, 6)).run_id) == {new}
    assert len(compare.filter_runs(runs)) == 2


def test_parse_values_types_and_errors():
    assert compare.parse_values("lr", "1e-4, 3e-4 1e-3,1e-3") == [1e-4, 3e-4, 1e-3]
    assert compare.parse_values("batch_size", "32, 64.0") == [32, 64]
    with pytest.raises(ValueError, match="integer"):
        compare.parse_values("batch_size", "32.5")
    with pytest.raises(ValueError, match="not a number"):
        compare.parse_values("lr", "fast")
    with pytest.raises(ValueError, match="at least one"):
        compare.parse_values("gamma", " ")


def test_sweep_configs_grid_and_clear_errors():
    configs = compare.sweep_configs(BASE, {"lr": [1e-3, 1e-2], "batch_size": [16, 32]}, "sweep-x", epochs=1)
    assert [(c.lr, c.batch_size) for c in configs] == [(1e-3, 16), (1e-3, 32), (1e-2, 16), (1e-2, 32)]
    assert {c.group for c in configs} == {"sweep-x"} and {c.epochs for c in configs} == {1}
    assert len({c.name for c in configs}) == 4
    dropout = compare.sweep_configs(BASE.replace(model="hw3_cnn_dropout"), {"dropout": [0.2, 0.5]}, "s")
    assert [compare.setting_value(c, "dropout") for c in dropout] == [0.2, 0.5]
    assert compare.setting_value(BASE.replace(model="hw3_cnn_dropout"), "dropout") == 0.6  # the builder's default
    with pytest.raises(ValueError, match="no dropout"):
        compare.sweep_configs(BASE, {"dropout": [0.2]}, "s")
    with pytest.raises(ValueError, match="step scheduler|'step' scheduler"):
        compare.sweep_configs(BASE, {"step_size": [2, 4]}, "s")
    with pytest.raises(ValueError, match="one or two"):
        compare.sweep_configs(BASE, {"lr": [1e-3], "gamma": [0.1], "batch_size": [8]}, "s")
    with pytest.raises(ValueError, match="positive"):
        compare.sweep_configs(BASE, {"lr": [-1.0]}, "s")


def test_sweep_2x2_trains_four_runs_in_one_group(store, register_data):
    tiny = register_data(make_bundle(size=32, n_train=32, n_val=16, n_test=16))
    base = BASE.replace(model="lab4_gap", epochs=1, device="cpu", precision="fp32", data=tiny)
    configs = compare.sweep_configs(base, {"lr": [1e-3, 1e-2], "batch_size": [8, 16]}, "sweep-test")
    manager = JobManager(max_concurrent=1, executor="thread")
    run_ids = manager.submit(store, configs)
    assert manager.wait_idle(timeout=120)
    members = [r for r in (store.load(i) for i in store.run_ids()) if r.config.group == "sweep-test"]
    assert sorted(r.run_id for r in members) == sorted(run_ids) and len(members) == 4
    results = compare.sweep_results(members, ["lr", "batch_size"])
    assert (results.status == "finished").all(), results
    assert set(zip(results.lr, results.batch_size)) == {(1e-3, 8), (1e-3, 16), (1e-2, 8), (1e-2, 16)}
    assert results.test_acc.between(0, 1).all() and (results.epochs == 1).all()
    table = compare.comparison_table(members)
    assert {"lr", "batch_size"} <= set(table.columns) and "model" not in table.columns
    chart = charts.sweep(results, ["lr", "batch_size"], "test_acc")
    assert chart.to_dict()["encoding"]["x"]["scale"]["type"] == "log"


def test_repeats_aggregate_mean_and_sample_std(store):
    configs = compare.repeat_configs(BASE, seeds=(0, 1, 2), group="rep")
    assert [c.seed for c in configs] == [0, 1, 2] and {c.group for c in configs} == {"rep"}
    assert {c.data.seed for c in configs} == {BASE.data.seed}  # the images stay the same
    ids = [write_run(store, c, val_accs=(0.5, v), test_acc=t) for c, v, t in zip(configs, (0.7, 0.8, 0.9),
                                                                                   (0.80, 0.90, 1.00))]
    ids.append(write_run(store, BASE.replace(seed=3, group="rep"), status="running"))  # not counted yet
    table = compare.comparison_table([store.load(i) for i in ids])
    summary = compare.aggregate_repeats(table).set_index("metric")
    assert summary.loc["test_acc", "n"] == 3
    assert summary.loc["test_acc", "mean"] == pytest.approx(0.9)
    assert summary.loc["test_acc", "std"] == pytest.approx(0.1)  # sample std (n − 1) of .8, .9, 1.0
    assert summary.loc["val_acc_last_epoch", "mean"] == pytest.approx(0.8)
    assert summary.loc["test_acc", "min"] == 0.8 and summary.loc["test_acc", "max"] == 1.0
    assert "test acc 90.0% ± 10.0% (n=3)" in compare.describe_repeats(summary.reset_index())
    band = compare.repeat_curves(compare.curves([store.load(i) for i in ids[:3]]))
    last = band[(band.epoch == 2) & (band.split == "val") & (band.metric == "accuracy")].iloc[0]
    assert last["mean"] == pytest.approx(0.8) and last["std"] == pytest.approx(0.1) and last["n"] == 3


def test_zip_export_holds_config_metrics_and_summary(store):
    run_id = write_run(store, BASE)
    with zipfile.ZipFile(io.BytesIO(compare.run_zip(store, run_id))) as archive:
        names = set(archive.namelist())
        assert {f"{run_id}/{n}" for n in ("config.json", "metrics.jsonl", "metrics.csv", "summary.json")} <= names
        assert RunConfig.from_json(archive.read(f"{run_id}/config.json").decode()) == BASE
        assert json.loads(archive.read(f"{run_id}/summary.json"))["test_acc"] == 0.6
        metrics = pd.read_csv(io.BytesIO(archive.read(f"{run_id}/metrics.csv")))
        assert metrics.val_acc.tolist() == [0.6, 0.7, 0.65]


def test_table_csv_round_trips(store):
    table = compare.comparison_table([store.load(write_run(store, BASE))])
    again = pd.read_csv(io.BytesIO(compare.table_csv(table)))
    assert again.columns.tolist() == table.columns.tolist() and again.test_acc.tolist() == [0.6]


def test_chart_export_formats():
    rows = pd.DataFrame({"run": ["a", "a"], "epoch": [1, 2], "split": ["val"] * 2, "metric": ["accuracy"] * 2,
                         "value": [0.5, 0.7], "run_id": ["x", "x"]})
    chart = charts.curves(rows, "accuracy", by_run=True)
    spec = json.loads(charts.chart_bytes(chart, "json"))
    assert spec["$schema"].startswith("https://vega.github.io/schema/vega-lite")
    assert b"<html" in charts.chart_bytes(chart, "html").lower()
    if "svg" in charts.chart_formats():
        assert charts.chart_bytes(chart, "svg").lstrip().startswith(b"<svg")
        assert charts.chart_bytes(chart, "png").startswith(b"\x89PNG")
    with pytest.raises(ValueError, match="cannot save"):
        charts.chart_bytes(chart, "gif")


def test_delete_refuses_active_runs(store):
    done = write_run(store, BASE)
    busy = write_run(store, BASE, status="running")
    deleted, refused = compare.delete_runs(store, [done, busy], active=[busy])
    assert deleted == [done] and refused == [busy]
    assert store.run_ids() == [busy]
    # without the job manager's list, a status of 'running' alone is enough to refuse
    assert compare.delete_runs(store, [busy]) == ([], [busy])
    # a stale 'running' left by a stopped server is deletable when the manager knows nothing of it
    assert compare.delete_runs(store, [busy], active=[]) == ([busy], [])


def test_sweep_and_repeat_groups_are_recognised(store):
    from explore.training.presets import PRESETS

    for config in PRESETS["hw2_lr_sweep"].configs(quick=True):
        write_run(store, config.replace(data_image_size=32))
    for config in compare.repeat_configs(BASE, (0, 1), group="rep"):
        write_run(store, config)
    for config in PRESETS["hw3_overfitting"].configs(quick=True):  # model, optimizer ... differ: no sweep
        write_run(store, config)
    records = store.list()
    assert compare.sweep_groups(records) == {"hw2_lr_sweep": ["lr"]}
    assert compare.repeat_groups(records) == ["rep"]
    grid = compare.sweep_configs(BASE.replace(scheduler="step"), {"lr": [1e-3, 1e-2], "gamma": [0.1, 0.5]}, "s2")
    assert compare.swept_settings(grid) == ["lr", "gamma"]
