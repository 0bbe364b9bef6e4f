"""The Transfer page: the offline weights message, the random-init checkbox, "Run both" queuing one group."""
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from explore.data import DataSpec
from explore.training.jobs import JobManager
from explore.training.store import RunStore

PAGE = str(Path(__file__).resolve().parents[1] / "pages" / "transfer.py")


class RecordingManager(JobManager):
    """The real gate and queue without workers: records each request (after the gate), trains nothing."""

    def __init__(self):
        super().__init__(max_concurrent=0, executor="thread")
        self.submitted = []

    def submit(self, store, configs):
        run_ids = super().submit(store, configs)
        self.submitted.append([store.load(run_id).config for run_id in run_ids])
        return run_ids


@pytest.fixture
def page_env(tmp_path, runs_dir, monkeypatch):
    monkeypatch.setenv("EXPLORE_RUNS_DIR", str(runs_dir))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # an empty hub cache
    monkeypatch.setenv("EXPLORE_OFFLINE", "1")
    manager = RecordingManager()
    monkeypatch.setattr("pages.common.job_manager", lambda: manager)
    return manager


def run_page(data_spec=None) -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=60)
    if data_spec is not None:
        at.session_state["data_spec"] = data_spec
    return at.run()


def test_offline_page_says_which_file_is_missing_and_blocks_silent_random_init(page_env):
    at = run_page()
    assert not at.exception
    warning = " ".join(w.value for w in at.warning)
    assert "mobilenet_v3_small-047dcff4.pth" in warning and "fetch-weights" in warning
    assert all(button.disabled for button in at.button)  # nothing trains until random init is chosen knowingly
    assert "frozen" in at.dataframe[0].value["mode"].tolist()


def test_run_both_queues_frozen_and_finetuned_as_one_group(page_env, runs_dir):
    at = run_page(DataSpec(image_size=64))
    at.checkbox(key="tl_random").check().run()
    run_both = next(b for b in at.button if b.label.startswith("Run both"))
    assert not run_both.disabled
    run_both.click().run()
    assert not at.exception
    (configs,) = page_env.submitted
    assert [c.transfer_mode for c in configs] == ["frozen", "finetune"]
    assert len({c.group for c in configs}) == 1
    assert all(c.input_norm == "none" and not c.pretrained and c.name.endswith("(random init)") for c in configs)
    assert all(c.data.image_size == 224 for c in configs)
    # the group's runs are listed (queued: nothing trains in this test) with the course's comparison table
    text = " ".join(m.value for m in at.markdown)
    assert "MobileNetV3-Small · frozen (random init)" in text and "queued" in text
    assert len(RunStore(runs_dir).list()) == 2
    assert "Approach" in at.dataframe[-1].value.index


def test_demo_mode_caps_the_transfer_runs_and_says_so(page_env, monkeypatch):
    monkeypatch.setenv("EXPLORE_DEMO_MODE", "1")
    at = run_page(DataSpec(image_size=64))
    at.checkbox(key="tl_random").check().run()
    next(b for b in at.button if b.label.startswith("Run both")).click().run()
    assert not at.exception
    assert any("image size capped at 128 px (asked 224)" in i.value for i in at.info)
    (configs,) = page_env.submitted
    assert [c.data.image_size for c in configs] == [128, 128]
