"""Choose the device and precision once; everything else receives them as arguments.

bf16 autocast pays off on CUDA and on CPUs with native bf16 matrix instructions
(Intel AMX, AVX-512-BF16 on recent Intel/AMD). Elsewhere bf16 is emulated and slower, so
"auto" falls back to fp32.
"""
from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import sys
from dataclasses import dataclass

import torch


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


def pick_dtype(device: torch.device, precision: str = "auto") -> torch.dtype:
    """The autocast dtype: bf16 where the hardware has it (or when asked), else fp32."""
    if precision == "fp32":
        return torch.float32
    if precision == "bf16":
        return torch.bfloat16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    return torch.bfloat16 if cpu_has_fast_bf16() else torch.float32


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

    def describe(self) -> str:
        name = torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else "CPU"
        return f"{name} ({self.device.type}, {str(self.dtype).removeprefix('torch.')})"


def set_cpu_threads() -> int:
    """Use one thread per physical core: hyper-threads slow down conv kernels on small batches."""
    requested = os.environ.get("EXPLORE_THREADS")
    count = int(requested) if requested else max(1, (os.cpu_count() or 2))
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
    if os.environ.get("EXPLORE_REUSE_MEMORY") == "0" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        # No mmap for big blocks (they come from the heap and are reused), and only give memory back
        # to the OS when more than 1 GiB sits free at the top of the heap.
        applied = [libc.mallopt(M_MMAP_MAX, 0), libc.mallopt(M_TRIM_THRESHOLD, 1 << 30), libc.mallopt(M_ARENA_MAX, 1)]
        return all(applied)
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to tune
        return False
