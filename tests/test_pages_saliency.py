"""AppTest for the Saliency and Mismatch pages, on a tiny run trained in a temporary runs folder."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from streamlit.testing.v1 import AppTest

import pages.common
from conftest import make_bundle
from explore.training.config import RunConfig
from explore.data import register_bundle
from explore.training.jobs import JobManager, execute_run
from explore.training.store import RunStore

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 120


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models run fastest on one thread on a busy 2-core machine."""
    threads, env = torch.get_num_threads(), os.environ.get("EXPLORE_THREADS")
    torch.set_num_threads(1)
    os.environ["EXPLORE_THREADS"] = "1"
    yield
    torch.set_num_threads(threads)
    if env is None:
        os.environ.pop("EXPLORE_THREADS", None)
    else:
        os.environ["EXPLORE_THREADS"] = env


@pytest.fixture(scope="module")
def bundle():
    return make_bundle(size=32)


@pytest.fixture(scope="module")
def runs_root(tmp_path_factory, bundle):
    """A runs folder holding one finished run (lab4_gap, 3 epochs on the tiny bundle)."""
    root = tmp_path_factory.mktemp("runs")
    store = RunStore(root)
    run_id = store.create(RunConfig(data=register_bundle("saliency-pages-tiny", bundle), model="lab4_gap", epochs=3,
                                    batch_size=16, lr=3e-3, name="tiny gap"))
    assert list(execute_run(store, run_id))[-1]["status"] == "finished"
    return root


@pytest.fixture
def app_env(runs_root, bundle, monkeypatch):
    monkeypatch.setenv("EXPLORE_RUNS_DIR", str(runs_root))
    monkeypatch.setattr(pages.common, "cached_bundle", lambda spec: bundle)
    return runs_root


def page(name: str) -> AppTest:
    at = AppTest.from_file(str(ROOT / "pages" / name), default_timeout=TIMEOUT)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def image_captions(at: AppTest) -> list[str]:
    return [c.value for c in at.caption if " · true " in c.value]


def test_saliency_page_without_runs_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("EXPLORE_RUNS_DIR", str(tmp_path))
    at = page("saliency.py")
    assert "No finished run" in at.info[0].value


def test_saliency_page_shows_val_and_test_maps(app_env):
    at = page("saliency.py")
    assert len(at.get("image")) == 2 * 4  # 4 images per split by default, each original | overlay
    captions = image_captions(at)
    assert len(captions) == 8 and all("P(disease)" in c for c in captions)
    assert any("lesion share" in c for c in captions)  # the tiny bundle has lesion masks
    assert [s.value for s in at.subheader][:2] == ["Val · site A (training hospital)", "Test · site B (other hospital)"]


def test_clicking_a_confusion_cell_shows_its_images(app_env):
    at = page("saliency.py")
    tp_val = next(b for b in at.button if b.key == "cell_val_1_1")
    tp_val.click()
    at.run()
    assert not at.exception
    assert at.radio(key="saliency_browse").value == "cell"
    captions = image_captions(at)
    assert captions and all("true PNEUMONIA" in c and "→ PNEUMONIA" in c for c in captions)


@pytest.mark.parametrize("method", ["integrated_gradients", "gradcam", "occlusion"])
def test_every_method_renders(app_env, method):
    at = page("saliency.py")
    at.radio(key="saliency_method").set_value(method)
    at.slider(key="saliency_n").set_value(2)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert len(at.get("image")) == 4
    if method == "gradcam":
        assert "layer `" in at.info[0].value and "Red" in at.info[0].value


def test_trust_sections(app_env):
    at = page("saliency.py")
    at.slider(key="saliency_n").set_value(2)
    at.select_slider(key="saliency_share_n").set_value(8)
    at.toggle(key="saliency_shares").set_value(True)
    at.toggle(key="saliency_sanity").set_value(True)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    regions = set(at.dataframe[0].value["region"])
    assert {"lesion", "lung", "centre", "corners"} <= regions
    assert any("layer(s) random" in str(image.proto) for image in at.get("image"))
    assert at.warning or at.success  # the randomisation verdict is always stated


def test_damaged_run_is_a_message_not_a_traceback(tmp_path, monkeypatch, runs_root, bundle):
    import shutil

    source = next(p for p in Path(runs_root).iterdir() if p.is_dir())
    broken = tmp_path / source.name
    shutil.copytree(source, broken)
    (broken / "weights.pt").write_bytes(b"not a tensor file")
    monkeypatch.setenv("EXPLORE_RUNS_DIR", str(tmp_path))
    monkeypatch.setattr(pages.common, "cached_bundle", lambda spec: bundle)
    for name in ("saliency.py", "mismatch.py"):
        at = page(name)
        assert at.error and "cannot" in at.error[0].value


def test_mismatch_page_measures_the_gap(app_env):
    at = page("mismatch.py")
    splits = list(at.dataframe[0].value["split"])
    assert splits == ["val (site A, same source as training)", "test (site B, the other hospital)"]
    levels = at.dataframe[1].value
    assert list(levels["level"]) == ["human / Bayes error", "train error", "val error", "test error"]
    assert any("train-dev" in i.value for i in at.info)  # no train-dev in this run: said so
    at.slider(key="mismatch_threshold").set_value(0.8)
    at.number_input(key="mismatch_human").set_value(0.02)
    at.toggle(key="mismatch_source").set_value(True)
    at.toggle(key="mismatch_pca").set_value(True)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.dataframe[1].value["error"].iloc[0] == pytest.approx(0.02)
    assert any(m.label.startswith("Held-out AUC") for m in at.metric)


def test_mismatch_page_queues_fixes_as_one_group(app_env, monkeypatch):
    manager = JobManager(max_concurrent=1, executor="thread")
    monkeypatch.setattr(pages.common, "job_manager", lambda: manager)
    at = page("mismatch.py")
    for box in at.checkbox:
        box.set_value(box.key in ("mismatch_fix_per_image", "mismatch_fix_histeq"))
    at.number_input(key="mismatch_epochs").set_value(1)
    at.run()
    queue = next(b for b in at.button if b.label.startswith("Queue"))
    assert queue.label == "Queue 2 run(s) as one group"
    queue.click()
    at.run()
    assert not at.exception and "Queued 2 run(s)" in at.success[0].value
    assert manager.wait_idle(timeout=300)
    at.run()
    table = at.dataframe[-1].value
    assert list(table["variant"]) == ["as trained (baseline)", "per-image standardisation", "histogram equalisation"]
    assert list(table["status"]) == ["finished"] * 3
