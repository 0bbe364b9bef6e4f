"""Choose the device and precision once; everything else receives them as arguments.

What precision="auto" picks, and why:

  hardware                                   autocast dtype   gradient scaler
  CUDA, compute capability >= 8.0 (A100, H100, RTX 30xx+)   bf16   no (bf16 has fp32's range)
  CUDA 7.x (T4, V100: tensor cores for fp16 only)           fp16   yes (small gradients underflow)
  CUDA below 7.0 (P100, GTX 10xx)                           fp32   no
  CPU with AMX or AVX-512-BF16                              bf16   no
  any other CPU                                             fp32   no

`torch.cuda.is_bf16_supported()` is not the test: it is also true where bf16 is only emulated
(a T4), which trains slower than fp32. "fp32", "bf16" and "fp16" force a dtype anywhere.
"""
from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import sys
from dataclasses import dataclass

import torch
from explore.settings import cpu_threads, reuse_memory


@functools.lru_cache(maxsize=1)
def cpu_has_fast_bf16() -> bool:
    """True when the CPU executes bf16 matrix math natively (AMX or AVX-512-BF16)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return any(flag in flags for flag in ("amx_bf16", "avx512_bf16"))


def pick_device(requested: str = "auto") -> torch.device:
    """'auto' → CUDA if present, else CPU. Asking for CUDA without a GPU is a clear error."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' was requested but no CUDA GPU is available; use 'auto' or 'cpu'")
    return torch.device(requested)


FORCED_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
# Tensor cores: fp16 from Volta/Turing (7.x), bf16 (and TF32) from Ampere (8.0).
NATIVE_BF16_CAPABILITY = (8, 0)
NATIVE_FP16_CAPABILITY = (7, 0)


def cuda_dtype_for_capability(capability: tuple[int, int]) -> torch.dtype:
    """The fastest safe autocast dtype for a GPU of this compute capability (see the table above)."""
    if tuple(capability) >= NATIVE_BF16_CAPABILITY:
        return torch.bfloat16
    if tuple(capability) >= NATIVE_FP16_CAPABILITY:
        return torch.float16
    return torch.float32


def pick_dtype(device: torch.device, precision: str = "auto") -> torch.dtype:
    """The autocast dtype: the one asked for, or on "auto" the table in this module's docstring."""
    if precision in FORCED_DTYPES:
        return FORCED_DTYPES[precision]
    if device.type == "cuda":
        return cuda_dtype_for_capability(torch.cuda.get_device_capability(device))
    return torch.bfloat16 if cpu_has_fast_bf16() else torch.float32


def tune_cuda() -> None:
    """Process-wide CUDA speed settings, for training and inference alike.

    TF32: fp32 matrix products (the parts autocast leaves in fp32, and every fp32 run) use the
    tensor cores on Ampere and newer at 10 mantissa bits, plenty for training; older GPUs ignore it.
    cuDNN benchmark: try the convolution algorithms once per input shape and keep the fastest; our
    shapes repeat every batch (fixed image size and batch size), so the search pays off at once.
    """
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cudnn.benchmark = True


@dataclass(frozen=True)
class Placement:
    """Where and how a run computes: the device and the autocast dtype."""

    device: torch.device
    dtype: torch.dtype

    @classmethod
    def choose(cls, device: str = "auto", precision: str = "auto") -> "Placement":
        dev = pick_device(device)
        return cls(dev, pick_dtype(dev, precision))

    def autocast(self):
        """Mixed precision for the forward pass; a no-op context in fp32."""
        if self.dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    @property
    def needs_grad_scaler(self) -> bool:
        """fp16 only: its smallest normal number is 6e-5, so small gradients would round to zero
        unless the loss is scaled up before backward (and the gradients down before the step)."""
        return self.dtype == torch.float16

    def grad_scaler(self) -> torch.amp.GradScaler:
        """A GradScaler for this placement. Disabled (every call passes straight through) unless fp16,
        so the training loop has one code path for every precision."""
        return torch.amp.GradScaler(self.device.type, enabled=self.needs_grad_scaler)

    @property
    def precision(self) -> str:
        """"fp32", "bf16" or "fp16": the precision this placement trains in."""
        return {dtype: name for name, dtype in FORCED_DTYPES.items()}[self.dtype]

    @property
    def device_name(self) -> str:
        return torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else "CPU"

    @property
    def device_index(self) -> int | None:
        """The GPU's index (cuda:i); None on the CPU."""
        if self.device.type != "cuda":
            return None
        return self.device.index if self.device.index is not None else torch.cuda.current_device()

    def record(self) -> dict:
        """What a run's summary says about where it ran: device name, index and precision."""
        return {"device_name": self.device_name, "device_index": self.device_index, "precision": self.precision,
                "grad_scaler": self.needs_grad_scaler}

    def describe(self) -> str:
        index = f":{self.device_index}" if self.device.type == "cuda" else ""
        return f"{self.device_name} ({self.device.type}{index}, {self.precision})"


def set_cpu_threads() -> int:
    """Use one thread per physical core: hyper-threads slow down conv kernels on small batches."""
    count = cpu_threads() or max(1, (os.cpu_count() or 2))
    if torch.get_num_threads() != count:
        torch.set_num_threads(count)
    return count


# glibc's mallopt() parameter numbers (malloc.h)
M_TRIM_THRESHOLD, M_MMAP_MAX, M_ARENA_MAX = -1, -4, -8


@functools.lru_cache(maxsize=1)
def reuse_freed_memory() -> bool:
    """Keep freed tensor memory in the process for the next batch instead of handing it back (Linux/glibc).

    glibc gives every block of 32 MiB or more its own fresh mmap and unmaps it when freed, so each
    training step page-faults its largest activations in again (hw3_cnn's first conv output is
    32×32×128×128 bf16 = exactly 32 MiB per batch). Measured on a 2-core AMD EPYC: hw3_cnn at
    128 px went from 5.0 to 2.0 s per epoch (BENCHMARKS.md). The cost: the process keeps its peak
    memory rather than returning it to the OS. Set EXPLORE_REUSE_MEMORY=0 to leave malloc alone.
    Returns True when the setting was applied (once per process).

    Threads other than the main one (the web app's job workers) allocate from glibc's per-thread
    arenas, which still hand big blocks back; so the arena count is limited to one as well, and
    every thread shares the tuned main heap (the same as starting with MALLOC_ARENA_MAX=1). hw3_cnn,
    128 px, one epoch in a worker thread: 3.3 s → 2.6 s (main thread: 2.4 s); the threads here
    allocate rarely (tensors are big and few), so one arena costs no measurable contention.
    """
    if not reuse_memory() or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        # No mmap for big blocks (they come from the heap and are reused), and only give memory back
        # to the OS when more than 1 GiB sits free at the top of the heap.
        applied = [libc.mallopt(M_MMAP_MAX, 0), libc.mallopt(M_TRIM_THRESHOLD, 1 << 30), libc.mallopt(M_ARENA_MAX, 1)]
        return all(applied)
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to tune
        return False
