"""Nothing heavy lives in st.session_state: on a classroom server every open browser tab keeps its
session state in the server's memory, so it must hold ids, paths and settings, never tensors,
models, arrays or datasets (those are cached once for everyone by st.cache_resource)."""
from __future__ import annotations

import dataclasses
import sys

import numpy as np
import pytest
import torch

from test_pages_saliency import app_env, bundle, one_thread, page, runs_root  # noqa: F401 (fixtures)

PAGES = ["data.py", "train.py", "compare.py", "architectures.py", "transfer.py", "saliency.py", "mismatch.py"]
LIGHT = (str, int, float, bool, type(None), bytes)
MAX_BYTES_PER_SESSION = 64 * 1024  # generous: a few hundred keys of settings and ids


def heavy_values(value, where: str, found: list[str], seen: set[int]) -> int:
    """Walk a session-state value; collect anything heavy in `found`, return its rough size in bytes."""
    if id(value) in seen:
        return 0
    seen.add(id(value))
    if isinstance(value, (torch.Tensor, torch.nn.Module, np.ndarray)) or type(value).__name__ in (
            "DataBundle", "Split", "LoadedRun", "FinishedRun", "TrainingRun"):
        found.append(f"{where}: {type(value).__name__}")
        return 0
    if isinstance(value, LIGHT):
        return sys.getsizeof(value)
    if isinstance(value, dict):
        return sum(heavy_values(k, where, found, seen) + heavy_values(v, f"{where}[{k!r}]", found, seen)
                   for k, v in value.items())
    if isinstance(value, (list, tuple, set, frozenset)):
        return sum(heavy_values(v, f"{where}[{i}]", found, seen) for i, v in enumerate(value))
    if dataclasses.is_dataclass(value):  # DataSpec, RunConfig: frozen settings
        return sum(heavy_values(getattr(value, f.name), f"{where}.{f.name}", found, seen)
                   for f in dataclasses.fields(value))
    found.append(f"{where}: unexpected {type(value).__name__}")
    return 0


@pytest.mark.parametrize("name", PAGES)
def test_a_page_leaves_only_ids_paths_and_settings_in_session_state(app_env, name):  # noqa: F811
    at = page(name)
    found: list[str] = []
    size = sum(heavy_values(v, k, found, set()) for k, v in at.session_state.items())
    assert not found, found
    if name != "architectures.py":  # the one page without keyed widgets or a run store
        assert at.session_state.keys(), "the page keeps its widgets and ids in session state"
    assert size < MAX_BYTES_PER_SESSION


def test_the_check_finds_heavy_values():
    found: list[str] = []
    heavy_values({"run": "abc", "cache": {"model": torch.nn.Linear(2, 2), "x": [np.zeros(3)]}}, "state", found, set())
    assert found == ["state['cache']['model']: Linear", "state['cache']['x'][0]: ndarray"]
