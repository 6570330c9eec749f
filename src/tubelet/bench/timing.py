"""Timing on CPU and CUDA, and the matrix-multiply peak that MFU is measured against.

CUDA work is asynchronous, so each repetition is bracketed by CUDA events and read after one
synchronisation; on the CPU ``time.perf_counter`` brackets it. Warm-up repetitions run first
(module loading, cuBLAS handles, autotuning and ``torch.compile`` stay out of the numbers).
"""

from __future__ import annotations

import statistics
import time
from typing import Callable

import torch

# Square matrix sizes for the peak: large enough to fill an H200 in bf16, a second or so on 2 CPU cores.
PEAK_SIZES = {"cuda": 8192, "cpu": 1024}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_repetitions(step: Callable[[], object], device: torch.device, *, warmup: int, reps: int) -> list[float]:
    """Seconds of each of ``reps`` calls of ``step`` after ``warmup`` untimed ones."""
    for _ in range(warmup):
        step()
    synchronize(device)
    if device.type == "cuda":
        events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(reps)]
        for start, end in events:
            start.record()
            step()
            end.record()
        torch.cuda.synchronize(device)
        return [start.elapsed_time(end) / 1e3 for start, end in events]
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return times


def matmul_peak(device: torch.device, dtype: torch.dtype, *, size: int | None = None, reps: int = 10) -> float:
    """Measured FLOP/s of an ``n x n x n`` matrix product on random data (median of ``reps``):
    the ceiling for model FLOPs utilisation (bf16 on CUDA, float32 on the CPU)."""
    n = size or PEAK_SIZES[device.type]
    generator = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(n, n, device=device, dtype=dtype, generator=generator)
    b = torch.randn(n, n, device=device, dtype=dtype, generator=generator)
    seconds = time_repetitions(lambda: a @ b, device, warmup=3, reps=reps)
    return 2 * n**3 / statistics.median(seconds)
