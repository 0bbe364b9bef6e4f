"""explore.insight.report against hand-computed answers: curves, progress, queue text, metrics, ROC, images."""
from __future__ import annotations

import pandas as pd
import pytest
import torch

from explore import charts
from explore.insight import report
from explore.training.config import RunConfig
from explore.data import DataSpec
from explore.training.metrics import auc
from explore.training.store import RunRecord, RunStore


def test_curves_frame_is_long_and_skips_what_cannot_be_drawn():
    records = [
        {"kind": "progress", "epoch": 1, "batch": 3, "batches": 10},  # not an epoch: ignored
        {"kind": "epoch", "epoch": 1, "train_loss": 0.7, "train_acc": 0.5, "val_loss": 0.6, "val_acc": 0.6,
         "test_loss": float("nan"), "test_acc": 0.4, "lr": 1e-3, "seconds": 2.0},
        {"kind": "epoch", "epoch": 2, "train_loss": 0.5, "train_acc": 0.75, "val_loss": 0.55, "val_acc": 0.7},
    ]
    frame = report.curves_frame(records, "run A")
    assert list(frame.columns) == ["epoch", "split", "metric", "value", "run"]
    rows = sorted(frame.itertuples(index=False, name=None))
    assert rows == sorted([
        (1, "train", "loss", 0.7, "run A"), (1, "train", "accuracy", 0.5, "run A"),
        (1, "train", "learning rate", 1e-3, "run A"),
        (1, "val", "loss", 0.6, "run A"), (1, "val", "accuracy", 0.6, "run A"),
        (1, "test", "accuracy", 0.4, "run A"),  # the NaN test loss is left out
        (2, "train", "loss", 0.5, "run A"), (2, "train", "accuracy", 0.75, "run A"),
        (2, "val", "loss", 0.55, "run A"), (2, "val", "accuracy", 0.7, "run A"),
    ])
    assert report.curves_frame([]).empty and list(report.curves_frame([]).columns) == report.CURVE_COLUMNS


@pytest.mark.parametrize("status, fraction, text", [
    ({"status": "running", "epochs": 4, "epoch": 0, "batch": 0, "batches": 10}, 0.0, "epoch 1 of 4"),
    ({"status": "running", "epochs": 4, "epoch": 1, "batch": 5, "batches": 10}, 0.375,
     "epoch 2 of 4 · batch 5 of 10"),
    ({"status": "running", "epochs": 4, "epoch": 4, "batch": 0}, 1.0, "epoch 4 of 4"),
    ({"status": "running", "message": "preparing data"}, 0.0, "preparing data"),
    ({"status": "running", "epochs": 4, "epoch": 1, "executor": "ray", "node": "gpu-box-2", "gpu": 1}, 0.25,
     "epoch 2 of 4 · on gpu-box-2, GPU 1"),  # a run on a Ray cluster says where it trains
    ({"status": "running", "epochs": 4, "epoch": 1, "executor": "process", "node": "server"}, 0.25, "epoch 2 of 4"),
])
def test_progress_within_and_across_epochs(status, fraction, text):
    assert report.progress(status) == (pytest.approx(fraction), text)


def test_queue_text():
    assert [report.queue_text(p) for p in (0, 1, 3, None)] == [
        "running", "next in the queue", "waiting: 2 runs ahead", "not in this server's queue"]
    assert report.queue_text(2, 150.0) == "waiting: 1 run ahead · starts in about 2 min"
    assert report.queue_text(1, 20.0) == "next in the queue · starts in less than a minute"


def test_metrics_table_and_confusion_frame():
    summary = {"splits": {
        "test": {"acc": 0.75, "auc": 0.8, "sensitivity": 1.0, "specificity": 0.5, "n": 4,
                 "confusion": [[1, 1], [0, 2]]},
        "val": {"acc": 1.0, "auc": 1.0, "sensitivity": 1.0, "specificity": 1.0, "n": 2,
                "confusion": [[1, 0], [0, 1]]},
    }}
    table = report.metrics_table(summary)
    assert table["split"].tolist() == ["val (site A)", "test (site B)"]  # fixed order, not dict order
    assert table.iloc[1][["accuracy", "AUC", "sensitivity", "specificity", "images"]].tolist() == [0.75, 0.8, 1.0,
                                                                                                   0.5, 4]
    assert report.metrics_table({"status": "failed"}).empty
    frame = report.confusion_frame([[1, 1], [0, 2]], ["NORMAL", "PNEUMONIA"])
    normal_row = frame[frame["true"] == "NORMAL"]
    assert normal_row["count"].tolist() == [1, 1] and normal_row["share of true class"].tolist() == [0.5, 0.5]
    assert frame[(frame["true"] == "PNEUMONIA") & (frame["predicted"] == "PNEUMONIA")]["count"].item() == 2


def test_roc_frame_matches_metrics_auc():
    labels = torch.tensor([0, 0, 1, 1, 1, 0])
    probs = torch.tensor([0.1, 0.4, 0.35, 0.8, 0.9, 0.2])
    frame, aucs = report.roc_frame({"val": {"labels": labels, "probs": probs},
                                    "test": {"labels": torch.zeros(3, dtype=torch.long), "probs": torch.rand(3)}})
    assert aucs["val"] == pytest.approx(auc(labels != 0, probs)) == pytest.approx(8 / 9)
    assert aucs["test"] is None  # one class only: no curve
    val = frame[frame["split"] == "val (site A)"]
    assert (val["fpr"].iloc[0], val["tpr"].iloc[0]) == (0, 0) and (val["fpr"].iloc[-1], val["tpr"].iloc[-1]) == (1, 1)
    # Three classes (softmax): the score is 1 − p(NORMAL).
    probs3 = torch.tensor([[0.8, 0.1, 0.1], [0.2, 0.5, 0.3], [0.1, 0.1, 0.8]])
    _, aucs3 = report.roc_frame({"val": {"labels": torch.tensor([0, 1, 2]), "probs": probs3}})
    assert aucs3["val"] == 1.0


def test_runs_table_shows_damaged_folders(tmp_path):
    store = RunStore(tmp_path)
    good = store.create(RunConfig(name="good", epochs=1))
    (tmp_path / "zzz-broken").mkdir()
    table = report.runs_table(store.list())
    broken = table[table["run"] == "zzz-broken"].iloc[0]
    assert broken["status"] == "damaged" and broken["note"] == "config.json is missing"
    assert table[table["run"] == good].iloc[0][["status", "name"]].tolist() == ["queued", "good"]


def test_run_exists_refuses_paths_outside_the_store(tmp_path):
    store = RunStore(tmp_path)
    run_id = store.create(RunConfig(epochs=1))
    assert report.run_exists(store, run_id)
    assert not report.run_exists(store, "../" + tmp_path.name)
    assert not report.run_exists(store, "nope")


def test_describe_data_and_configs_table():
    spec = DataSpec(image_size=64, num_classes=3, synthetic=(("noise", 0.8),), test_source="folder:/x")
    assert report.describe_data(spec) == "synthetic · 64 px · 3 classes · test from folder:/x · knobs: noise=0.8"
    table = report.configs_table([RunConfig(name="a", scheduler="step", step_size=4, gamma=0.4, lr=3e-6)])
    assert table.iloc[0][["run", "lr", "schedule"]].tolist() == ["a", "3e-06", "step(4, 0.4)"]


def test_overlay_and_diverging_colours():
    image = torch.full((1, 8, 8), 100, dtype=torch.uint8)
    lung = torch.zeros(1, 8, 8, dtype=torch.bool)
    lung[0, 2:6, 2:6] = True
    lesion = torch.zeros_like(lung)
    lesion[0, 3, 3] = True
    rgb = report.overlay_masks(image, {"lung": lung, "lesion": lesion})
    assert rgb.shape == (8, 8, 3)
    assert tuple(rgb[2, 2]) == report.MASK_COLOURS["lung"]  # boundary pixel of the lung
    assert tuple(rgb[4, 4]) == (100, 100, 100)  # inside the lung, no lesion: unchanged
    assert tuple(rgb[3, 3]) == tuple(round(0.55 * 100 + 0.45 * c) for c in report.MASK_COLOURS["lesion"])
    assert tuple(rgb[0, 0]) == (100, 100, 100)
    difference = torch.tensor([[0.5, -0.25], [0.0, 0.0]])
    colours, scale = report.diverging_rgb(difference)
    assert scale == 0.5
    assert tuple(colours[0, 0]) == (255, 0, 0) and tuple(colours[1, 0]) == (255, 255, 255)
    assert tuple(colours[0, 1]) == (128, 128, 255)  # half as negative: half-way to blue


def test_size_summary():
    sizes = pd.DataFrame({"split": ["train"] * 3, "class": ["A", "A", "B"], "width": [100, 200, 50],
                          "height": [100, 100, 100], "aspect": [1.0, 2.0, 0.5]})
    summary = report.size_summary(sizes)
    assert summary.values.tolist() == [["train", "A", 2, "150 × 100", "1.00 · 1.50 · 2.00"],
                                       ["train", "B", 1, "50 × 100", "0.50 · 0.50 · 0.50"]]
    assert report.size_summary(sizes.iloc[:0]).empty


def test_curves_for_labels_each_run():
    a = RunRecord("a", path=None, metrics=[{"epoch": 1, "train_loss": 1.0}])
    b = RunRecord("b", path=None, metrics=[])
    frame = report.curves_for([a, b])
    assert frame["run"].tolist() == ["a"]


def test_learning_rate_is_a_curve_of_the_train_split():
    records = [{"kind": "epoch", "epoch": e, "train_loss": 1.0 / e, "lr": lr}
               for e, lr in ((1, 1e-3), (2, 1e-3), (3, 1e-4))]
    frame = report.curves_frame(records, "step")
    lr = frame[frame.metric == report.LR_METRIC]
    assert lr.value.tolist() == [1e-3, 1e-3, 1e-4] and set(lr.split) == {"train"}
