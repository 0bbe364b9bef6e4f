"""Demo-mode limits, shareable links and run bundles."""
import io
import os
import zipfile

import pytest
import torch

from explore.training.config import RunConfig
from explore.data import DataSpec
from explore.training.jobs import execute_run
from explore.settings import (NotAllowed, apply_limits, check_source_allowed, check_sweep_allowed,
                              check_upload_allowed, load_settings)
from explore.training.share import decode_config, encode_config, export_run_bundle, import_run_bundle
from explore.training.store import RunStore, StoreError

from conftest import make_bundle


def test_settings_from_env_and_secrets(tmp_path):
    s = load_settings(env={"EXPLORE_DEMO_MODE": "1", "EXPLORE_MAX_EPOCHS": "5"},
                      secrets={"explore_data_root": str(tmp_path)})
    assert s.demo_mode and s.per_session_runs and s.max_epochs == 5 and s.data_root == tmp_path.resolve()
    assert not load_settings(env={}).demo_mode
    assert any("uploaded weights" in line for line in s.limits_text())


def test_demo_mode_refuses_paths_outside_the_data_root(tmp_path):
    root = tmp_path / "data"
    (root / "xray").mkdir(parents=True)
    s = load_settings(env={"EXPLORE_DEMO_MODE": "1", "EXPLORE_DATA_ROOT": str(root)})
    check_source_allowed(s, f"folder:{root / 'xray'}")
    check_source_allowed(s, "synthetic")
    for outside in ("folder:/etc", f"folder:{root}/../../", "medmnist:/root/x.npz"):
        with pytest.raises(NotAllowed, match="outside the allowed data folder"):
            check_source_allowed(s, outside)
    os.symlink("/etc", root / "sneaky")
    with pytest.raises(NotAllowed):
        check_source_allowed(s, f"folder:{root / 'sneaky'}")
    check_source_allowed(load_settings(env={}), "folder:/etc")  # not in demo mode: allowed


def test_demo_mode_caps_runs_uploads_and_sweeps():
    s = load_settings(env={"EXPLORE_DEMO_MODE": "1", "EXPLORE_MAX_EPOCHS": "4", "EXPLORE_MAX_IMAGE_SIZE": "64"})
    capped, notes = apply_limits(s, RunConfig(epochs=30, data=DataSpec(image_size=256)))
    assert capped.epochs == 4 and capped.data.image_size == 64 and len(notes) == 2
    with pytest.raises(NotAllowed, match="MB"):
        check_upload_allowed(s, 10 ** 9)
    with pytest.raises(NotAllowed, match="sweep"):
        check_sweep_allowed(s, 100)
    same, none = apply_limits(load_settings(env={}), RunConfig(epochs=30))
    assert same.epochs == 30 and none == []


def test_config_link_round_trip_and_garbage():
    config = RunConfig(model="hw3_gap_wide", lr=3e-4, augment=("intensity",), data=DataSpec(image_size=64))
    token = encode_config(config)
    assert decode_config(token) == config
    assert "=" not in token and "/" not in token
    for bad in ("", "abc", encode_config(config)[:-5]):
        with pytest.raises(ValueError, match="cannot be read"):
            decode_config(bad)


def test_run_bundle_replays_elsewhere(tmp_path, register_data):
    here, there = RunStore(tmp_path / "here"), RunStore(tmp_path / "there")
    run_id = here.create(RunConfig(model="hw3_cnn", epochs=2, data=register_data(make_bundle(size=32)), name="shared"))
    list(execute_run(here, run_id))
    data = export_run_bundle(here, run_id)
    new_id = import_run_bundle(data, there)
    record = there.load(new_id)
    assert record.state == "finished" and len(record.metrics) == 2 and "imported" in record.config.name
    model, _ = there.load_model(new_id)
    original, _ = here.load_model(run_id)
    assert torch.equal(model.fc2.weight, original.fc2.weight)
    # demo mode: weights are never accepted
    no_weights = import_run_bundle(data, there, accept_weights=False)
    assert not (there.path(no_weights) / "weights.pt").exists()
    assert (there.path(no_weights) / "predictions.pt").exists()


def test_hostile_bundles_are_refused(tmp_path):
    store = RunStore(tmp_path)
    with pytest.raises(StoreError, match="not a zip"):
        import_run_bundle(b"hello", store)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        z.writestr("run/config.json", RunConfig().to_json())
        z.writestr("run/weights.pt", b"\x80\x04cos\nsystem\n(S'touch /tmp/pwned-bundle'\ntR.")
    with pytest.raises(StoreError, match="cannot be loaded safely"):
        import_run_bundle(buffer.getvalue(), store)
    assert not os.path.exists("/tmp/pwned-bundle")
    assert store.run_ids() == []  # nothing written for a refused bundle
