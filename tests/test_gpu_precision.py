"""GPU precision without a GPU: the CUDA queries are mocked, the fp16 + GradScaler path runs on the CPU.

What precision="auto" must pick: bf16 only where it is native (compute capability >= 8.0), fp16 with
a gradient scaler on 7.x (the course's T4), fp32 below. `is_bf16_supported()` must not decide: it is
true on a T4 too, where bf16 is emulated.
"""
from __future__ import annotations

import math

import pytest
import torch

from explore.training.config import PRECISIONS, RunConfig
from explore.data import DataSpec
from explore.device import Placement, pick_dtype, tune_cuda
from explore.training.train import TrainingRun


@pytest.fixture
def fake_gpu(monkeypatch):
    """Pretend a CUDA GPU of a given compute capability (and name) is present."""
    def install(capability: tuple[int, int], name: str = "Fake GPU"):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)
        monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
        # If anything still asked this, a T4 would say yes: the test would catch it picking bf16 on 7.5.
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    return install


@pytest.mark.parametrize("capability, expected", [
    ((6, 1), torch.float32),   # GTX 1080 / P40: no tensor cores
    ((7, 0), torch.float16),   # V100
    ((7, 5), torch.float16),   # T4, the course's Colab GPU
    ((8, 0), torch.bfloat16),  # A100
    ((9, 0), torch.bfloat16),  # H100
])
def test_auto_precision_follows_compute_capability(fake_gpu, capability, expected):
    fake_gpu(capability)
    placement = Placement.choose("cuda", "auto")
    assert placement.device.type == "cuda"
    assert placement.dtype == expected
    assert placement.needs_grad_scaler == (expected == torch.float16)


@pytest.mark.parametrize("precision, expected", [("fp32", torch.float32), ("bf16", torch.bfloat16),
                                                 ("fp16", torch.float16)])
def test_forced_precision_wins_over_the_hardware(fake_gpu, precision, expected):
    fake_gpu((7, 5))
    assert pick_dtype(torch.device("cuda:0"), precision) == expected
    assert pick_dtype(torch.device("cpu"), precision) == expected


def test_cpu_keeps_its_rule(monkeypatch):
    """CPU auto: bf16 only with AMX/AVX-512-BF16 (read from /proc/cpuinfo), never because of a GPU query."""
    from explore import device

    monkeypatch.setattr(device, "cpu_has_fast_bf16", lambda: False)
    assert pick_dtype(torch.device("cpu")) == torch.float32
    monkeypatch.setattr(device, "cpu_has_fast_bf16", lambda: True)
    assert pick_dtype(torch.device("cpu")) == torch.bfloat16


def test_fp16_is_a_config_choice():
    assert "fp16" in PRECISIONS
    assert RunConfig(precision="fp16").precision == "fp16"
    with pytest.raises(ValueError, match="precision"):
        RunConfig(precision="fp8")


def test_record_names_the_gpu_its_index_and_precision(fake_gpu):
    fake_gpu((7, 5), name="Tesla T4")
    placement = Placement(torch.device("cuda:1"), torch.float16)
    assert placement.record() == {"device_name": "Tesla T4", "device_index": 1, "precision": "fp16",
                                  "grad_scaler": True}
    assert placement.describe() == "Tesla T4 (cuda:1, fp16)"
    cpu = Placement(torch.device("cpu"), torch.float32)
    assert cpu.record() == {"device_name": "CPU", "device_index": None, "precision": "fp32", "grad_scaler": False}


def test_grad_scaler_only_for_fp16():
    assert Placement(torch.device("cpu"), torch.float16).grad_scaler().is_enabled()
    assert not Placement(torch.device("cpu"), torch.float32).grad_scaler().is_enabled()
    assert not Placement(torch.device("cpu"), torch.bfloat16).grad_scaler().is_enabled()


def test_tune_cuda_turns_on_tf32_and_cudnn_benchmark():
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark)
    try:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
        torch.backends.cudnn.benchmark = False
        tune_cuda()
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
        assert torch.backends.cudnn.benchmark
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark = saved


def _config(precision: str, epochs: int = 2) -> RunConfig:
    return RunConfig(data=DataSpec(image_size=32), model="hw3_cnn", epochs=epochs, batch_size=16, lr=1e-3,
                     device="cpu", precision=precision, eval_test=False)


def test_fp16_run_trains_through_the_scaler_and_records_it(tiny_bundle):
    """The fp16 path end to end (CPU autocast supports fp16): the scaler is live, the run learns,
    and the summary says fp16 with a gradient scaler."""
    run = TrainingRun(_config("fp16"), bundle=tiny_bundle)
    assert run.scaler.is_enabled()
    records = list(run.fit())
    assert records[-1]["status"] == "finished", records[-1]
    summary = run.summary()
    assert summary["precision"] == "fp16" and summary["grad_scaler"] is True
    assert summary["device_name"] == "CPU" and summary["device_index"] is None
    assert summary["val_acc"] > 0.6  # the blob task is learnable in two epochs


def test_overflowing_fp16_steps_are_skipped_not_applied(tiny_bundle):
    """A huge loss scale makes fp16 gradients overflow: the scaler must skip those steps (weights stay
    finite) and lower the scale until steps go through, without the loop calling it divergence."""
    run = TrainingRun(_config("fp16", epochs=1).replace(batch_size=2), bundle=tiny_bundle)  # 32 steps
    huge = 2.0 ** 30  # the scaled gradients of the fp16 logits are far above fp16's maximum, 65504
    run.scaler = torch.amp.GradScaler("cpu", init_scale=huge)
    before = [p.detach().clone() for p in run.model.parameters()]
    records = list(run.fit())
    assert records[-1]["status"] == "finished"
    assert run.scaler.get_scale() <= huge / 2 ** 10  # many overflows seen, each halved the scale
    after = list(run.model.parameters())
    assert all(torch.isfinite(p).all() for p in after)
    # some steps went through once the scale had come down
    assert any(not torch.equal(b, a) for b, a in zip(before, after))


def test_fp32_run_has_a_pass_through_scaler(tiny_bundle):
    run = TrainingRun(_config("fp32", epochs=1), bundle=tiny_bundle)
    assert not run.scaler.is_enabled()
    records = list(run.fit())
    assert records[-1]["status"] == "finished"
    assert run.summary()["precision"] == "fp32"
    assert math.isfinite(records[-2]["train_loss"])
