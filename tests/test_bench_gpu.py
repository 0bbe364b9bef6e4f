"""`python -m explore bench --device cuda`: the course's 30-epoch CNN run next to its 70 s on a T4.

No GPU here: the section runs its quick form on the CPU (the same code path as on a GPU, the device
is an argument), and the default-section choice is checked with the CUDA queries mocked.
"""
from __future__ import annotations

import torch

from conftest import make_bundle
from benchmarks import bench


def test_a_gpu_adds_the_course_run_to_the_default_sections(monkeypatch):
    assert "course30" not in bench.default_sections("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert bench.default_sections("cuda") == bench.SECTIONS + ("course30",)
    assert bench.default_sections("auto") == bench.SECTIONS + ("course30",)


def test_device_cuda_without_a_gpu_is_a_clear_error(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert bench.cli_main(["--device", "cuda", "--only", "course30"]) == 2
    assert "no CUDA GPU" in capsys.readouterr().err


def test_course30_quick_runs_and_prints_next_to_the_course(monkeypatch):
    bundle = make_bundle(size=32, n_train=64, n_val=32, n_test=8)
    monkeypatch.setattr(bench, "load_bundle", lambda spec: bundle)
    result = bench.bench_course30(bench.Settings.make(quick=True, device="cpu"))
    assert result["epochs"] == 3 and result["extrapolated"] and result["run"]["epochs"] == 3
    assert result["seconds_30_epochs"] > 0
    assert abs(result["seconds_30_epochs"] - result["run"]["seconds_total"] * 10) < 1e-9
    # next to the homework's figure: 30 epochs of the CNN took 70 s on a Colab T4
    assert result["course_t4_seconds_30_epochs"] == 70
    assert result["speedup_vs_course_t4"] == 70 / result["seconds_30_epochs"]
    assert result["run"]["precision"] in ("fp32", "bf16")
    lines = bench.FORMATTERS["course30"](result)
    assert "vs the course's 70 s on a Colab T4" in lines[-1] and "extrapolated from 3 epochs" in lines[-1]
