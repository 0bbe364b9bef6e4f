"""AppTest for the Data page: the default synthetic set (small, patched in), folders good and bad,
the synthetic knobs, and the DataSpec every other page reads."""
from __future__ import annotations

import functools
import io
import os
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

import explore.data as data_module
import pages.common
from explore.data import DataSpec, load_bundle
from explore.data.synthetic import generate_synthetic

DATA_PAGE = str(Path(__file__).resolve().parents[1] / "pages/data.py")
SMALL = {"n_train": 24, "n_val": 12, "n_test": 12}  # balanced: 12/12 train, 6/6 val, 6/6 test


@functools.lru_cache(maxsize=8)
def small_synthetic(spec: DataSpec):
    """The synthetic set the spec asks for, with few images (the real 2,400 take many seconds)."""
    knobs = dict(spec.synthetic) | SMALL
    return generate_synthetic(spec.image_size, seed=spec.seed, num_classes=spec.num_classes, **knobs)


def fast_bundle(spec: DataSpec):
    """load_bundle, except that the synthetic part is the small set above."""
    if spec.source != "synthetic":
        return load_bundle(spec)
    bundle = small_synthetic(replace(spec, test_source=None))
    if spec.test_source:
        bundle = data_module._mix(bundle, data_module._load_one(spec.test_source, spec, for_test=True))
    return bundle


@pytest.fixture(autouse=True)
def small_data(monkeypatch, tmp_path):
    monkeypatch.setenv("EXPLORE_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("EXPLORE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("EXPLORE_DEMO_SMALL", raising=False)
    monkeypatch.setattr(pages.common, "cached_bundle", fast_bundle)


def run_page(at: AppTest | None = None, start: DataSpec | None = None) -> AppTest:
    """Run the page (a new session unless `at` is given), optionally starting from the spec `start`."""
    if at is None:
        at = AppTest.from_file(DATA_PAGE, default_timeout=120)
        if start is not None:
            at.session_state["data_spec"] = start
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def write_folder(root: Path, counts: dict[str, int], broken: int = 0) -> str:
    """root/CLASS/i.png (40×60 px, brightness by class) plus `broken` files that are not images."""
    for k, (class_name, count) in enumerate(counts.items()):
        os.makedirs(root / class_name, exist_ok=True)
        for i in range(count):
            pixels = np.full((60, 40), 60 + 90 * k, dtype=np.uint8)
            Image.fromarray(pixels).save(root / class_name / f"{i:02d}.png")
    for i in range(broken):
        (root / list(counts)[0] / f"broken{i}.png").write_bytes(b"not an image at all")
    return str(root)


def test_default_synthetic_set_renders_grid_counts_and_charts():
    at = run_page()
    assert not at.error
    assert at.session_state["data_spec"] == DataSpec()  # the default goes to every page
    # Sample grid: up to 8 per class and split (16 + 12 + 12), 2 preview views, 3 mean images.
    # + the val − test difference image + one example per combination of the multi-task findings
    assert len(at.get("image")) == 16 + 12 + 12 + 2 + 3 + 1 + 4
    counts = at.dataframe[0].value
    assert counts.loc["NORMAL"].tolist() == [12, 6, 6] and counts.loc["PNEUMONIA"].tolist() == [12, 6, 6]
    assert len(at.get("vega_lite_chart")) == 3  # counts, intensity histograms, original sizes
    assert any("No files skipped" in s.value for s in at.success)
    assert len(at.slider) == 10  # one per synthetic knob


def test_missing_folder_shows_an_error_and_the_page_keeps_working(tmp_path):
    at = run_page()
    at.radio(key="source").set_value("folder")
    run_page(at)
    at.text_input(key="source_folder").set_value(str(tmp_path / "no_such_folder"))
    run_page(at)
    assert "no_such_folder" in at.error[0].value
    assert at.title[0].value == "Data"
    assert at.session_state["data_spec"].source == "synthetic"  # the other pages keep the last good set
    at.radio(key="source").set_value("synthetic")  # and the page recovers
    run_page(at)
    assert not at.error and len(at.get("image")) > 10


def test_single_class_folder_is_refused_with_a_message(tmp_path):
    path = write_folder(tmp_path / "one_class", {"NORMAL": 4})
    at = run_page()
    at.radio(key="source").set_value("folder")
    run_page(at)
    at.text_input(key="source_folder").set_value(path)
    run_page(at)
    assert at.error and "class" in at.error[0].value.lower()


def test_folder_with_a_broken_file_lists_it_as_skipped(tmp_path):
    path = write_folder(tmp_path / "xray", {"NORMAL": 10, "PNEUMONIA": 10}, broken=1)
    at = run_page()
    at.radio(key="source").set_value("folder")
    run_page(at)
    at.text_input(key="source_folder").set_value(path)
    run_page(at)
    assert not at.error
    assert at.session_state["data_spec"] == DataSpec(source=f"folder:{path}", image_size=128)
    counts = at.dataframe[0].value
    assert counts.sum().sum() == 20  # the broken file is not an image
    skipped = at.dataframe[-1].value
    assert list(skipped["file"]) == [os.path.join("NORMAL", "broken0.png")]  # from the dataset folder
    assert any("could not be used" in w.value for w in at.warning)


def test_apply_sets_the_synthetic_knobs_and_three_classes():
    at = run_page(start=DataSpec(image_size=64))
    at.slider(key="knob_noise").set_value(0.9)
    run_page(at)
    assert at.session_state["data_spec"].synthetic == ()  # the preview moves; the dataset waits for Apply
    assert any("Apply to dataset" in c.value for c in at.caption)
    at.button(key="apply_knobs").click()
    run_page(at)
    assert dict(at.session_state["data_spec"].synthetic) == {"noise": 0.9}
    at.get("button_group")[1].set_value(3)  # classes
    run_page(at)
    spec = at.session_state["data_spec"]
    assert spec.num_classes == 3 and dict(spec.synthetic) == {"noise": 0.9}
    assert at.dataframe[0].value.index.tolist() == ["NORMAL", "BACTERIAL", "VIRAL"]


def test_sites_identical_button_zeroes_every_shift():
    at = run_page()
    at.button(key="no_shift").click()
    run_page(at)
    at.button(key="apply_knobs").click()
    run_page(at)
    knobs = dict(at.session_state["data_spec"].synthetic)
    assert knobs == {"exposure": 0.0, "noise": 0.0, "blur": 0.0, "patient_size": 0.0, "positioning": 0.0,
                     "text_markers": 0.0, "shortcut_fraction": 0.0}


def test_image_size_goes_into_the_spec():
    at = run_page()
    at.get("button_group")[0].set_value(64)
    run_page(at)
    assert at.session_state["data_spec"].image_size == 64


def test_demo_small_default(monkeypatch):
    monkeypatch.setenv("EXPLORE_DEMO_SMALL", "1")
    at = run_page()
    spec = at.session_state["data_spec"]
    assert spec == pages.common.DEMO_SMALL_SPEC and spec.image_size == 64


def png_bytes(value: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((48, 40), value, dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_uploading_a_zip_of_class_folders_makes_it_the_dataset(tmp_path):
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as z:
        for k, class_name in enumerate(("NORMAL", "PNEUMONIA")):
            for i in range(8):
                z.writestr(f"chest/{class_name}/{i}.png", png_bytes(60 + 90 * k))
        z.writestr("__MACOSX/chest/._0.png", b"junk")  # clutter is ignored, not reported
    at = run_page()
    at.radio(key="source").set_value("upload")
    run_page(at)
    assert any("limit" in u.label and "MB" in u.label for u in at.file_uploader)
    at.file_uploader(key="source_files").set_value(("chest.zip", archive.getvalue(), "application/zip"))
    run_page(at)
    at.button(key="source_save").click()
    run_page(at)
    spec = at.session_state["data_spec"]
    folder = spec.source.removeprefix("folder:")
    assert spec.source.startswith("folder:") and folder.startswith(str(tmp_path / "cache" / "uploads"))
    assert sorted(os.listdir(folder)) == ["NORMAL", "PNEUMONIA"]
    assert at.dataframe[0].value.sum().sum() == 16


def test_a_hostile_zip_is_refused_with_a_message(tmp_path):
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("../../evil.png", png_bytes(10))
    at = run_page()
    at.radio(key="source").set_value("upload")
    run_page(at)
    at.file_uploader(key="source_files").set_value(("evil.zip", archive.getvalue(), "application/zip"))
    run_page(at)
    at.button(key="source_save").click()
    run_page(at)
    assert "Upload refused" in at.error[0].value and "unsafe path" in at.error[0].value
    assert at.session_state["data_spec"].source == "synthetic"


def test_a_different_test_source_goes_into_the_spec(tmp_path):
    hospital_b = write_folder(tmp_path / "hospital_b", {"NORMAL": 5, "PNEUMONIA": 4})
    at = run_page(start=DataSpec(image_size=64))
    at.toggle(key="other_test").set_value(True)
    run_page(at)
    at.radio(key="test_source").set_value("folder")
    run_page(at)
    at.text_input(key="test_source_folder").set_value(hospital_b)
    run_page(at)
    spec = at.session_state["data_spec"]
    assert spec.source == "synthetic" and spec.test_source == f"folder:{hospital_b}"
    counts = at.dataframe[0].value
    assert counts["train"].tolist() == [12, 12] and counts["test"].tolist() == [5, 4]  # test: all of hospital B
    assert len(at.get("vega_lite_chart")) == 3 and not at.error  # every chart draws the two sources


def test_demo_mode_refuses_server_paths_and_caps_sizes(monkeypatch, tmp_path):
    monkeypatch.setenv("EXPLORE_DEMO_MODE", "1")
    monkeypatch.delenv("EXPLORE_DATA_ROOT", raising=False)
    path = write_folder(tmp_path / "xray", {"NORMAL": 4, "PNEUMONIA": 4})
    at = run_page(start=DataSpec(image_size=64))
    assert at.get("button_group")[0].options == ["64", "128"]  # demo mode: at most 128 px
    assert at.slider(key="knob_n_train").max == 1600  # and no giant generated sets
    at.radio(key="source").set_value("folder")
    run_page(at)
    at.text_input(key="source_folder").set_value(path)
    run_page(at)
    assert "demo mode" in at.error[0].value
    assert at.session_state["data_spec"].source == "synthetic"
