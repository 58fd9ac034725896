"""Shared benchmark plumbing: timing with medians and 20/80 percentiles, result rows, context.

A benchmark section is a module with ``run(ctx: Context) -> list[Row]``; ``bench/run.py`` calls the
sections, prints the table and stores the rows. Every section checks a kernel's output against the
reference before timing it.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from typing import Callable, List, Optional


@dataclasses.dataclass
class Context:
    device: str = "cpu"
    quick: bool = False
    threads: int = 2
    only: Optional[List[str]] = None

    def wants(self, name: str) -> bool:
        return not self.only or any(key in name for key in self.only)


@dataclasses.dataclass
class Row:
    """One measurement: ``provider`` ran ``kernel`` at ``shape``; times in milliseconds."""

    section: str
    kernel: str
    shape: str
    provider: str
    median_ms: float
    p20_ms: float
    p80_ms: float
    baseline: Optional[str] = None  # provider this row is compared with in the table
    work: Optional[float] = None  # operations (GEMM) or bytes (memory-bound) per call
    work_unit: Optional[str] = None  # "op" or "B"
    note: str = ""


def time_cpu(fn: Callable[[], object], warmup: int = 2, reps: int = 10, max_seconds: float = 5.0):
    """(median, p20, p80) wall time in ms of ``fn()`` on the CPU."""
    for _ in range(warmup):
        fn()
    samples = []
    start = time.perf_counter()
    while len(samples) < reps and (len(samples) < 3 or time.perf_counter() - start < max_seconds):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1e3)
    return _summary(samples)


def time_cuda(fn: Callable[[], object], warmup_ms: float = 25, rep_ms: float = 100):
    """(median, p20, p80) in ms of ``fn()`` on the current CUDA device (triton.testing.do_bench)."""
    import triton.testing

    q = triton.testing.do_bench(fn, warmup=warmup_ms, rep=rep_ms, quantiles=[0.5, 0.2, 0.8])
    return tuple(float(v) for v in q)


def time_fn(ctx: Context, fn: Callable[[], object]):
    if ctx.device == "cuda":
        return time_cuda(fn, rep_ms=40 if ctx.quick else 100)
    return time_cpu(fn, reps=3 if ctx.quick else 10)


def _summary(samples):
    samples = sorted(samples)
    q = statistics.quantiles(samples, n=10, method="inclusive") if len(samples) > 1 else [samples[0]] * 9
    return statistics.median(samples), q[1], q[7]
