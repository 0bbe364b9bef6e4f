"""The public X-ray sets (xrv:NAME:IMAGE_DIR): tiny folders of made-up images named after REAL
ids in torchxrayvision's label files, laid out as the sets are downloaded."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

pytest.importorskip("torchxrayvision", reason="pip install torchxrayvision (the xrv extra) for these tests")

from explore.data import DataError, DataSpec, decoded_bundle, load_bundle  # noqa: E402
from explore.data import xrv  # noqa: E402
from explore.data.metadata import age_group, label_table  # noqa: E402

from test_folder import write_dicom  # noqa: E402


@pytest.fixture(autouse=True)
def _cache_in_tmp(tmp_path, monkeypatch):
    monkeypatch.setenv("EXPLORE_CACHE_DIR", str(tmp_path / "cache"))
    decoded_bundle.cache_clear()


def write_png(path, size=64, value=100):
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.full((size, size), value, dtype=np.uint8)
    pixels[size // 4: size // 2, size // 4: size // 2] = 200
    Image.fromarray(pixels).save(path)


def nih_table() -> pd.DataFrame:
    return pd.read_csv(xrv.package_csv("Data_Entry_2017_v2020.csv.gz"))


def pick_nih(table: pd.DataFrame):
    """Real NIH ids: patients with both pneumonia and no-finding frontal films, patients with
    only no-finding films, two 'other findings' films, and a pneumonia film with a box."""
    pneumonia = table["Finding Labels"].str.contains("Pneumonia")
    normal = table["Finding Labels"] == "No Finding"
    per_patient = table.assign(p=pneumonia, n=normal).groupby("Patient ID")[["p", "n"]].sum()
    mixed = per_patient[(per_patient.p >= 1) & (per_patient.n >= 2)].index[:8]
    healthy = per_patient[(per_patient.p == 0) & (per_patient.n >= 2)].index[:6]
    images = []
    for patient in mixed:
        rows = table[table["Patient ID"] == patient]
        images += rows[pneumonia[rows.index]]["Image Index"].head(1).tolist()
        images += rows[normal[rows.index]]["Image Index"].head(2).tolist()
    for patient in healthy:
        images += table[(table["Patient ID"] == patient) & normal]["Image Index"].head(2).tolist()
    other = table[~pneumonia & ~normal]["Image Index"].head(2).tolist()
    boxes = pd.read_csv(xrv.package_csv("BBox_List_2017.csv.gz"))
    boxed = boxes[boxes["Finding Label"] == "Pneumonia"].iloc[0]
    return images, other, boxed


@pytest.fixture
def nih_dir(tmp_path):
    """NIH as downloaded: images_001/images/*.png, images_002/images/*.png (a patient's films
    end up in both archives), one corrupt file, one PNG that is not in the CSV."""
    table = nih_table()
    images, other, boxed = pick_nih(table)
    root = tmp_path / "nih"
    for i, name in enumerate(images + other):
        write_png(root / f"images_00{1 + i % 2}" / "images" / name)
    write_png(root / "images_003" / "images" / boxed["Image Index"], size=1024)
    corrupt = images[1]  # a NORMAL film of the first patient
    (root / "images_002" / "images" / corrupt).unlink(missing_ok=True)
    (root / "images_001" / "images" / corrupt).unlink(missing_ok=True)
    (root / "images_001" / "images" / corrupt).write_bytes(b"\x89PNG\r\n\x1a\n broken")
    write_png(root / "images_001" / "images" / "my_notes.png")
    return root, table, images, other, boxed, corrupt


def test_nih_folder_loads_split_by_patient_with_metadata(nih_dir):
    root, table, images, other, boxed, corrupt = nih_dir
    bundle = load_bundle(DataSpec(source=f"xrv:nih:{root}", image_size=64))
    assert bundle.classes == ("NORMAL", "PNEUMONIA")
    total = sum(len(s) for s in bundle.splits.values())
    assert total == len(images) + 1 - 1  # + the boxed film, - the corrupt one

    # No patient has films in two splits.
    patients = {name: set(split.metadata["patient"]) for name, split in bundle.splits.items()}
    assert not patients["train"] & patients["val"]
    assert not patients["train"] & patients["test"]
    assert not patients["val"] & patients["test"]
    assert all(len(split) for split in bundle.splits.values())

    # Labels follow the CSV: pneumonia present -> PNEUMONIA, "No Finding" -> NORMAL.
    labels_by_name = dict(zip(table["Image Index"], table["Finding Labels"]))
    for split in bundle.splits.values():
        for path, label, view in zip(split.ids, split.labels.tolist(), split.metadata["view"]):
            findings = labels_by_name[path.rsplit("/", 1)[-1]]
            assert label == (1 if "Pneumonia" in findings else 0)
            assert findings == "No Finding" or "Pneumonia" in findings
            assert view in ("PA", "AP")

    selection = bundle.selection[f"xrv:nih:{root}"]
    assert selection["groups"][xrv.OTHER_FINDINGS] == len(other)
    assert selection["csv_rows"] == len(table)
    assert selection["missing_files"] == len(table) - (len(images) + len(other) + 1)
    assert len(selection["missing_examples"]) == xrv.SHOWN_MISSING
    assert selection["files_not_in_csv"] == 1
    assert [s.path.rsplit("/", 1)[-1] for s in bundle.skipped] == [corrupt]


def test_nih_pneumonia_box_becomes_lesion_mask(nih_dir):
    root, _table, _images, _other, boxed, _corrupt = nih_dir
    bundle = load_bundle(DataSpec(source=f"xrv:nih:{root}", image_size=64))
    for split in bundle.splits.values():
        for i, path in enumerate(split.ids):
            mask = split.masks["lesion"][i, 0]
            if path.endswith(boxed["Image Index"]):
                x, y, w, h = (boxed[c] for c in ("Bbox [x", "y", "w", "h]"))
                scale = 64 / 1024  # the film is 1024 px, the bundle 64 px
                assert mask[int((y + h / 2) * scale), int((x + w / 2) * scale)]
                assert abs(mask.sum().item() - w * h * scale**2) < (w + h) * scale * 2 + 4
                return_found = True
            else:
                assert not mask.any()
    assert return_found


def test_cli_reports_counts_missing_skipped_and_metadata(nih_dir, capsys):
    from explore.cli.data import cli_main

    root, table, images, _other, boxed, _corrupt = nih_dir
    films = set(images) | {boxed["Image Index"]}
    patients = table[table["Image Index"].isin(films)]["Patient ID"].nunique()
    assert cli_main(["--source", f"xrv:nih:{root}", "--size", "64", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report["splits"]) == {"train", "val", "test"}
    assert report["selection"][f"xrv:nih:{root}"]["missing_files"] > 100_000
    assert len(report["skipped"]) == 1
    views = {row["value"]: row for row in report["metadata"]["view"]}
    assert set(views) <= {"AP", "PA"}
    shares = sum(row["share_of_PNEUMONIA"] for row in views.values())
    assert shares == pytest.approx(1.0)
    assert sum(report["metadata"]["patients"].values()) == patients

    assert cli_main(["--source", f"xrv:nih:{root}", "--size", "64"]) == 0
    text = capsys.readouterr().out
    assert "missing" in text and "view" in text


def test_labels_csv_with_an_unexpected_column_names_it(nih_dir, tmp_path):
    root, table = nih_dir[0], nih_dir[1]
    bad = tmp_path / "labels.csv"
    table.head(50).rename(columns={"Finding Labels": "Findings"}).to_csv(bad, index=False)
    with pytest.raises(DataError, match="'Finding Labels'.*'Findings'"):
        load_bundle(DataSpec(source=f"xrv:nih:{root};labels={bad}", image_size=64))


def test_user_labels_csv_is_used(nih_dir, tmp_path):
    root, table, images = nih_dir[0], nih_dir[1], nih_dir[2]
    mine = tmp_path / "mine.csv"
    table[table["Image Index"].isin(images)].to_csv(mine, index=False)
    bundle = load_bundle(DataSpec(source=f"xrv:nih:{root};labels={mine}", image_size=64))
    selection = next(iter(bundle.selection.values()))
    assert selection["csv_rows"] == len(images) and selection["missing_files"] == 0


def test_bad_sources_give_clear_messages(tmp_path):
    with pytest.raises(DataError, match="unknown public dataset 'mimic'"):
        load_bundle(DataSpec(source=f"xrv:mimic:{tmp_path}"))
    with pytest.raises(DataError, match="image folder not found"):
        load_bundle(DataSpec(source=f"xrv:nih:{tmp_path}/nope"))
    with pytest.raises(DataError, match="no image files"):
        load_bundle(DataSpec(source=f"xrv:nih:{tmp_path}"))
    write_png(tmp_path / "x" / "holiday.png")
    with pytest.raises(DataError, match="none of the 1 image files"):
        load_bundle(DataSpec(source=f"xrv:nih:{tmp_path / 'x'}"))


def test_rsna_dicoms_with_boxes(tmp_path):
    labels = pd.read_csv(xrv.package_csv("kaggle_stage_2_train_labels.csv.zip"))
    sick = labels[labels.Target == 1].drop_duplicates("patientId").head(6)
    healthy = labels[labels.Target == 0].head(6)["patientId"].tolist()
    root = tmp_path / "stage_2_train_images"
    root.mkdir()
    for i, patient in enumerate(sick["patientId"].tolist() + healthy):
        size = 1024 if i == 0 else 96  # the first: full size, so its boxes land where they should
        write_dicom(root / f"{patient}.dcm", np.full((size, size), 1000 + i * 10))
    bundle = load_bundle(DataSpec(source=f"xrv:rsna:{root}", image_size=64))
    assert sum(bundle.counts()["train"].values()) + sum(bundle.counts()["test"].values()) \
        + sum(bundle.counts()["val"].values()) == 12
    first = sick.iloc[0]
    for split in bundle.splits.values():
        assert set(split.metadata["view"]) <= {"AP", "PA"}
        for i, path in enumerate(split.ids):
            if first["patientId"] in path:
                y, x = int((first.y + first.height / 2) / 16), int((first.x + first.width / 2) / 16)
                assert split.masks["lesion"][i, 0, y, x]
            elif split.labels[i] == 0:
                assert not split.masks["lesion"][i].any()


def test_chexpert_paths_and_uncertain_labels(tmp_path):
    table = pd.read_csv(xrv.package_csv("chexpert_train.csv.gz"))
    frontal = table[table["Frontal/Lateral"] == "Frontal"]
    chosen = pd.concat([frontal[frontal.Pneumonia == 1].head(4), frontal[frontal["No Finding"] == 1].head(4),
                        frontal[frontal.Pneumonia == -1].head(1), table[table["Frontal/Lateral"] == "Lateral"].head(1)])
    root = tmp_path / "CheXpert-v1.0-small"
    for path in chosen["Path"]:
        write_png(root / path.split("/", 1)[1])
    bundle = load_bundle(DataSpec(source=f"xrv:chexpert:{root}", image_size=64))
    groups = next(iter(bundle.selection.values()))["groups"]
    assert groups == {"PNEUMONIA": 4, "NORMAL": 4, xrv.UNCERTAIN: 1, xrv.NOT_FRONTAL: 1}
    assert all(p.startswith("chexpert:patient") for s in bundle.splits.values() for p in s.metadata["patient"])


def test_padchest_labels(tmp_path):
    table = pd.read_csv(xrv.package_csv(xrv.XRV_DATASETS["padchest"].csv_file),
                        usecols=["ImageID", "ImageDir", "Labels", "Projection"])
    pa = table[table.Projection == "PA"]
    sick = pa[pa.Labels.str.contains("pneumonia", na=False)].head(4)
    normal = pa[pa.Labels == "['normal']"].head(4)
    for row in pd.concat([sick, normal]).itertuples():
        write_png(tmp_path / "padchest" / str(row.ImageDir) / row.ImageID)
    bundle = load_bundle(DataSpec(source=f"xrv:padchest:{tmp_path / 'padchest'}", image_size=64))
    assert next(iter(bundle.selection.values()))["groups"] == {"PNEUMONIA": 4, "NORMAL": 4}


def test_split_by_patient_keeps_each_patient_in_one_split():
    patients = [f"p{i // 5}" for i in range(200)]  # 40 patients, 5 films each
    table = pd.DataFrame({"patient": patients, "group": ["PNEUMONIA" if i % 7 == 0 else "NORMAL"
                                                          for i in range(200)]})
    parts = xrv.split_by_patient(table, seed=3, val_fraction=0.2, test_fraction=0.2)
    seen = [set(part["patient"]) for part in parts.values()]
    assert sum(len(s) for s in seen) == 40 and not (seen[0] & seen[1] or seen[0] & seen[2] or seen[1] & seen[2])
    assert all((part["group"] == "PNEUMONIA").any() for part in parts.values())


def test_lesion_mask_scales_boxes_and_metadata_tables(tiny_bundle):
    mask = xrv.lesion_mask([(512, 0, 512, 256)], (1024, 512), 8)  # right half, top half
    assert mask[0, :4, 4:].all() and not mask[0, 4:, :].any() and not mask[0, :, :4].any()
    assert age_group(5) == "0–17" and age_group(float("nan")) == "unknown" and age_group(85) == "80+"
    assert label_table(tiny_bundle, "view") == []


def test_demo_mode_checks_both_xrv_paths(tmp_path):
    from explore.settings import NotAllowed, check_source_allowed, load_settings

    root = tmp_path / "data"
    (root / "nih").mkdir(parents=True)
    settings = load_settings(env={"EXPLORE_DEMO_MODE": "1", "EXPLORE_DATA_ROOT": str(root)})
    check_source_allowed(settings, f"xrv:nih:{root / 'nih'}")
    check_source_allowed(settings, f"xrv:nih:{root / 'nih'};labels={root / 'labels.csv'}")
    for outside in (f"xrv:nih:/etc", f"xrv:nih:{root / 'nih'};labels=/etc/passwd"):
        with pytest.raises(NotAllowed, match="outside the allowed data folder"):
            check_source_allowed(settings, outside)


def test_data_page_shows_label_vs_view_for_a_public_set(nih_dir, monkeypatch, tmp_path):
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("EXPLORE_RUNS_DIR", str(tmp_path / "runs"))
    root = nih_dir[0]
    page = str(Path(__file__).resolve().parents[1] / "pages/data.py")
    at = AppTest.from_file(page, default_timeout=120)
    at.session_state["data_spec"] = DataSpec(source=f"xrv:nih:{root}", image_size=64)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    assert any("Label vs view" in h.value for h in at.subheader)
    assert at.selectbox(key="source_xrv_name").value == "nih"
    assert at.text_input(key="source_xrv_dir").value == str(root)
    text = " ".join(m.value for m in at.markdown) + " ".join(c.value for c in at.caption)
    assert "rows have no image in the folder" in text and "split **by patient**" in text
    tables = [t.value for t in at.dataframe]
    assert any("view position" in t.columns for t in tables)


def test_lesion_box_outline_on_a_zoomed_picture():
    from explore.insight.report import MASK_COLOURS, outline_mask

    mask = xrv.lesion_mask([(2, 2, 4, 3)], (8, 8), 8)[0]  # rows 2..4, columns 2..5
    rgb = np.zeros((16, 16, 3), dtype=np.uint8)  # the picture at zoom 2
    out = outline_mask(rgb, mask)
    red = (out == MASK_COLOURS["lesion"]).all(axis=2)
    assert red[4, 4] and red[9, 11] and not red[6, 6] and not red[0, 0]  # border drawn, inside and outside not
    assert red.sum() == 2 * (6 + 8) - 4 and not rgb.any()  # a 1-px frame around the 6×8 (zoomed) box; input untouched


def test_saliency_scores_attributions_against_the_real_boxes(nih_dir):
    """The Saliency page's 'where the attribution falls' gets a lesion region from the NIH box."""
    from explore.insight.regions import attribution_shares, region_masks

    root, boxed = nih_dir[0], nih_dir[4]
    bundle = load_bundle(DataSpec(source=f"xrv:nih:{root}", image_size=64))
    split_name, split = next((n, s) for n, s in bundle.splits.items()
                             if any(i.endswith(boxed["Image Index"]) for i in s.ids))
    i = next(k for k, path in enumerate(split.ids) if path.endswith(boxed["Image Index"]))
    masks = region_masks(split, [i])
    assert masks["lesion"].any()
    inside = masks["lesion"].float()  # a map that is all inside the box: lesion share 100%
    assert attribution_shares(inside, masks)["lesion"][0] == pytest.approx(1.0)
