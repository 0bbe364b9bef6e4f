"""What the pages used to compute themselves, now library functions: each against a hand-made answer."""
from __future__ import annotations

import time

import pandas as pd
import pytest
import torch

from conftest import make_bundle
from explore.insight import analysis, compare, report, roar
from explore.insight import mismatch as mm
from explore.insight.browse import confusion, outcomes
from explore.training.config import RunConfig
from explore.data import DataSpec, stats
from explore.data.synthetic import KNOBS, SHIFT_KNOBS, changed_knobs, same_sites, slider_label
from explore.settings import FORM_MAX_EPOCHS, AppSettings
from explore.training.store import RunStore
from test_compare import write_run


def test_headline_formats_percentages_auc_and_missing_values():
    summary = {"splits": {"val": {"acc": 0.925}, "test": {"acc": 0.78, "auc": 0.9512, "sensitivity": None}}}
    assert report.headline(summary) == [("val accuracy", "92.5%"), ("test accuracy", "78.0%"),
                                        ("test AUC", "0.951"), ("test sensitivity", "—")]
    assert [text for _, text in report.headline(None)] == ["—"] * 4


def test_cell_thumbnails_show_the_cells_images_most_confident_mistake_first():
    split = make_bundle(size=32, n_train=8, n_val=8, n_test=8).val
    labels = split.labels.clone()
    probs = torch.where(labels == 1, torch.tensor(0.9), torch.tensor(0.1))
    normals = torch.nonzero(labels == 0).flatten()
    probs[normals[0]], probs[normals[1]] = 0.6, 0.95  # two NORMAL images called PNEUMONIA, the second more sure
    thumbnails = report.cell_thumbnails({"labels": labels, "probs": probs}, split, (0, 1))
    assert [caption.split(" · ")[0] for _, caption in thumbnails] == [
        split.ids[int(normals[1])].rsplit("/", 1)[-1], split.ids[int(normals[0])].rsplit("/", 1)[-1]]
    assert thumbnails[0][1].endswith("P(disease) 0.95") and thumbnails[0][0].shape == (32, 32)
    with pytest.raises(ValueError, match="dataset changed"):
        report.cell_thumbnails({"labels": labels[:-1], "probs": probs[:-1]}, split, (0, 1))


def test_the_saliency_pages_matrix_counts_what_a_hand_count_gives():
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 2])
    probs = torch.nn.functional.one_hot(torch.tensor([0, 1, 1, 2, 2, 2, 0]), 3).float()
    outcome = outcomes(probs, labels)
    hand = [[sum(1 for t, p in zip(labels.tolist(), probs.argmax(1).tolist()) if (t, p) == (i, j)) for j in range(3)]
            for i in range(3)]
    assert confusion(outcome, 3) == hand == [[1, 1, 0], [0, 1, 1], [1, 0, 2]]


def test_compare_starts_with_the_newest_group_and_finds_a_groups_runs(tmp_path):
    store = RunStore(tmp_path)
    base = RunConfig(data=DataSpec(image_size=32), model="hw3_cnn", epochs=1)
    old = write_run(store, base.replace(group="old"), created=time.time() - 86400)
    new = [write_run(store, base.replace(group="new", lr=lr)) for lr in (1e-3, 1e-2)]
    runs = compare.runs_frame(store.list())
    assert sorted(compare.newest_group_runs(runs)) == sorted(new) and compare.newest_group_runs(runs, 1) != [old]
    assert {r.run_id for r in compare.group_records(store, "old")} == {old}
    first, last = compare.date_range(runs)
    assert first < last and compare.date_range(runs.iloc[0:0]) is None
    assert compare.watchable_groups(["sweep-1"], "sweep-2") == ["sweep-2", "sweep-1"]
    assert compare.finished_count(compare.comparison_table(store.list())) == 3


def test_the_knob_buttons_keep_counts_and_store_only_changes():
    values = {name: knob.default for name, knob in KNOBS.items()} | {"noise": 0.9, "n_train": 500}
    same = same_sites(values)
    assert all(same[name] == 0 for name in SHIFT_KNOBS) and same["shortcut_fraction"] == 0 and same["n_train"] == 500
    assert changed_knobs(values) == {"noise": 0.9, "n_train": 500.0}
    assert slider_label("noise") == "Detector noise" and slider_label("n_train") == KNOBS["n_train"].label


def test_demo_mode_caps_what_the_forms_offer():
    demo, local = AppSettings(demo_mode=True, max_epochs=15, max_image_size=128, max_upload_mb=50), AppSettings()
    assert (demo.epoch_limit, local.epoch_limit) == (15, FORM_MAX_EPOCHS)
    assert demo.image_sizes([64, 128, 224]) == [64, 128] and local.image_sizes([64, 128, 224]) == [64, 128, 224]
    assert demo.upload_limits(200, 500 * 2**20, 5000) == (50, demo.max_upload_files)
    assert local.upload_limits(200, 500 * 2**20, 5000) == (200, 5000)
    assert demo.knob_upper(KNOBS["n_train"]) == KNOBS["n_train"].default and local.knob_upper(KNOBS["n_train"]) == 10000
    assert demo.knob_upper(KNOBS["noise"]) == 1.0


def test_sample_rows_group_the_grid_by_class_and_image_facts_read_the_split():
    bundle = make_bundle(size=32, n_train=12, n_val=8, n_test=8)
    rows = stats.sample_rows(bundle, "train", per_class=3, seed=1)
    assert list(rows) == list(bundle.classes) and all(len(r) == 3 and {p[1] for p in r} == {c} for c, r in rows.items())
    facts = stats.image_facts(bundle, "train", rows[bundle.classes[0]][0][0])
    assert facts["class"] == bundle.classes[0] and facts["shown"] == "32 × 32 px" and facts["split"] == "train"


def test_layer_table_adds_a_total_row():
    _, layers = analysis.profile_architectures(["hw3_cnn"], 32)
    table = analysis.layer_table(layers, "hw3_cnn")
    assert table.iloc[-1]["name"] == "TOTAL" and table.iloc[-1]["params"] == table.iloc[:-1]["params"].sum()


def test_mismatch_notes_and_polling():
    parts = {"test_error": 0.2, "train_error_how": "re-evaluated", "train_error_logged": 0.05,
             "levels": [{"name": "train", "error": 0.01}]}
    assert "0.05" not in mm.train_error_note(parts) and "5.0%" in mm.train_error_note(parts)
    assert mm.train_error_note(parts | {"train_error_logged": None}).endswith("re-evaluated.")
    assert mm.error_levels(parts) == [{"level": "train", "error": 0.01}]
    assert mm.fixes_active([{"status": "finished"}, {"status": "queued"}])
    assert not mm.fixes_active([{"status": "finished"}])


def test_roar_points_leave_out_runs_without_a_result():
    results = {"fractions": [0.1, 0.3], "methods": {"random": {"accuracy": [0.8, None]}, "saliency": {"accuracy": [0.7, 0.6]}}}
    points = pd.DataFrame(roar.roar_points(results))
    assert len(points) == 3 and points[points.method == "random"]["fraction removed"].tolist() == [0.1]
