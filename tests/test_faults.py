"""Faults a classroom server meets: out of memory mid-run, a full disk, a killed writer."""
import pytest
import torch

from explore.training.config import RunConfig
from explore.data import register_bundle
from explore.training.jobs import JobManager, execute_run
from explore.training.store import RunStore, StoreError

from conftest import make_bundle


# The runs here train on this tiny bundle, named so their configs say so (32 px).
TINY = register_bundle("faults-tiny", make_bundle(size=32, n_train=64, n_val=32, n_test=32))


def cfg(**kw):
    return RunConfig(**({"model": "hw3_cnn", "epochs": 2, "data": TINY, "precision": "fp32"} | kw))


def test_out_of_memory_ends_that_run_and_the_next_one_works(runs_dir, monkeypatch):
    from explore.models.registry import HW3ConvModel

    original = HW3ConvModel.forward
    calls = {"n": 0}

    def forward_that_runs_out(self, x):
        calls["n"] += 1
        if calls["n"] == 3:  # mid-epoch, like a batch that does not fit
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return original(self, x)

    monkeypatch.setattr(HW3ConvModel, "forward", forward_that_runs_out)
    store = RunStore(runs_dir)
    manager = JobManager(max_concurrent=1, executor="thread")
    first, second = manager.submit(store, [cfg(name="too big"), cfg(name="after")])
    assert manager.wait_idle(timeout=120)
    failed = store.load(first)
    assert failed.state == "failed" and "out of memory" in failed.summary["message"]
    assert "smaller batch" in failed.summary["message"]
    assert store.load(second).state == "finished"


def test_full_disk_while_writing_is_a_clear_failure(runs_dir, monkeypatch):
    store = RunStore(runs_dir)
    run_id = store.create(cfg())

    def no_space(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(store, "append_metrics", no_space)
    out = list(execute_run(store, run_id))
    assert out[-1]["status"] == "failed" and "No space left" in out[-1]["message"]


def test_runs_folder_that_is_a_file(tmp_path):
    (tmp_path / "runs").write_text("not a folder")
    with pytest.raises(StoreError, match="not writable"):
        RunStore(tmp_path / "runs").ensure_writable()


def test_writer_killed_mid_write_leaves_a_listable_folder(runs_dir):
    store = RunStore(runs_dir)
    run_id = store.create(cfg())
    list(execute_run(store, run_id))
    path = store.path(run_id)
    (path / "summary.json").write_text('{"status": "fini')  # torn write (not via write_atomic)
    (path / "weights.pt").write_bytes(b"PK\x03\x04 truncated")
    record = store.load(run_id)
    assert record.state == "damaged" and "summary.json" in record.damaged
    with pytest.raises(StoreError):
        store.load_weights(run_id)
    assert [r.run_id for r in store.list()] == [run_id]
