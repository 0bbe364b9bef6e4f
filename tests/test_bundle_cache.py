"""The disk cache of decoded bundles that lets a fresh worker process skip the decoding."""
from __future__ import annotations

import pytest
import torch

from conftest import make_bundle
from explore.data import DataError, DataSpec, _decode, load_bundle
from explore.data import disk_cache

SMALL = DataSpec(image_size=64, synthetic=(("n_train", 24), ("n_val", 10), ("n_test", 10)))


def same_bundle(a, b) -> bool:
    if (a.source, a.image_size, a.classes, a.description, a.skipped) != (b.source, b.image_size, b.classes,
                                                                         b.description, b.skipped):
        return False
    for name, split in a.splits.items():
        other = b.splits[name]
        if not (torch.equal(split.images, other.images) and torch.equal(split.labels, other.labels)
                and split.sites == other.sites and split.ids == other.ids
                and torch.equal(split.original_sizes, other.original_sizes)
                and split.masks.keys() == other.masks.keys()
                and all(torch.equal(split.masks[k], other.masks[k]) for k in split.masks)):
            return False
    return True


def test_a_second_process_reads_back_exactly_what_the_first_decoded(tmp_path, monkeypatch):
    monkeypatch.setenv("EXPLORE_CACHE_DIR", str(tmp_path))
    decoded = []
    first = disk_cache.load_through_disk(SMALL, lambda: decoded.append(1) or _decode(SMALL))
    assert disk_cache.cache_file(SMALL).exists()
    again = disk_cache.load_through_disk(SMALL, lambda: decoded.append(2) or first)
    assert decoded == [1] and same_bundle(first, again)


def test_a_damaged_file_is_rebuilt_and_folders_are_never_cached_here(tmp_path, monkeypatch, make_npz_dataset):
    monkeypatch.setenv("EXPLORE_CACHE_DIR", str(tmp_path))
    path = disk_cache.cache_file(SMALL)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"not a tensor file")
    rebuilt = disk_cache.load_through_disk(SMALL, lambda: _decode(SMALL))
    assert same_bundle(rebuilt, disk_cache.read_bundle(path))
    assert not disk_cache.cacheable(DataSpec(source=f"medmnist:{make_npz_dataset}"))
    assert not disk_cache.cacheable(DataSpec(test_source="folder:/data/site-b"))
    monkeypatch.setenv("EXPLORE_BUNDLE_CACHE", "0")
    assert not disk_cache.cacheable(SMALL)


def test_a_registered_bundle_loads_by_name_at_its_own_size(register_data):
    bundle = make_bundle(size=32, num_classes=3)
    spec = register_data(bundle, name="tiny-three")
    assert (spec.source, spec.image_size, spec.num_classes) == ("memory:tiny-three", 32, 3)
    assert load_bundle(spec) is bundle  # the very tensors: nothing decoded or copied
    with pytest.raises(DataError, match="32 px"):
        load_bundle(DataSpec(source="memory:tiny-three", image_size=64))  # a spec that disagrees with its data
    with pytest.raises(DataError, match="no bundle is registered"):
        load_bundle(DataSpec(source="memory:never-registered", image_size=32))
