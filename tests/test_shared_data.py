"""On a classroom server one cached dataset serves every session (st.cache_resource, load_bundle's
cache): nothing a session does may change it. Training with every augmentation and histogram
equalisation, saliency, and the mismatch analyses all read the shared tensors and must leave them
bit-for-bit as they were."""
from __future__ import annotations

import torch

from conftest import make_bundle
from explore.insight import attribution, mismatch
from explore.training.config import RunConfig
from explore.training.jobs import execute_run
from explore.training.store import RunStore


def snapshot(bundle) -> dict[str, list[torch.Tensor]]:
    return {name: [split.images.clone(), split.labels.clone()] + ([m.clone() for m in split.masks.values()]
                                                                    if getattr(split, "masks", None) else [])
            for name, split in bundle.splits.items()}


def test_a_whole_session_leaves_the_shared_dataset_untouched(tmp_path, register_data):
    bundle = make_bundle(size=32, n_train=48, n_val=16, n_test=16)
    before = snapshot(bundle)
    data = register_data(bundle)
    store = RunStore(tmp_path / "runs")
    for norm in ("histeq", "per_image", "dataset"):
        config = RunConfig(data=data, model="lab4_gap", epochs=2, batch_size=16, input_norm=norm,
                           augment=("geometry", "intensity", "noise", "hflip"), train_dev_fraction=0.2)
        run_id = store.create(config)
        assert list(execute_run(store, run_id))[-1]["status"] == "finished"

    loaded = attribution.load_run(store, run_id, bundle)
    for method in ("saliency", "integrated_gradients", "gradcam", "occlusion"):
        attribution.attribute(loaded.explainer(), bundle.test.images[:4], method)
    mismatch.decompose_run(loaded)
    mismatch.run_source_classifier(loaded)
    mismatch.feature_pca(loaded)

    after = snapshot(bundle)
    for name in before:
        assert all(torch.equal(a, b) for a, b in zip(before[name], after[name])), f"the {name} split changed"
