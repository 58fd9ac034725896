"""Helpers shared by the kernel families: interpreter detection, device guard, tile sizes."""

from __future__ import annotations

import contextlib
import os

import torch
import triton


#: Environment switch: ``FQVIT_TRITON_FALLBACK=1`` makes every kernel take its general int64 path
#: instead of the int32 fast paths (both are exact; the switch exists to time and test them).
FALLBACK_ENV = "FQVIT_TRITON_FALLBACK"
_forced = None  # set by force_paths() in tests


def fast_paths_allowed() -> bool:
    """Whether kernels may take a fast path whose preconditions hold (see :data:`FALLBACK_ENV`)."""
    if _forced is not None:
        return _forced
    return os.environ.get(FALLBACK_ENV, "0") in ("", "0")


@contextlib.contextmanager
def force_paths(fast: bool):
    """Within the block, allow the fast paths (``True``) or force the general ones (``False``)."""
    global _forced
    previous, _forced = _forced, bool(fast)
    try:
        yield
    finally:
        _forced = previous


def interpreting() -> bool:
    """True when Triton runs kernels on CPU tensors under ``TRITON_INTERPRET=1``."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def device_guard(t: torch.Tensor):
    """Make ``t``'s GPU the current one while launching (no-op for CPU tensors)."""
    if t.device.type == "cuda":
        return torch.cuda.device(t.device)
    return contextlib.nullcontext()


def pow2_at_least(n: int, minimum: int = 16) -> int:
    """Smallest power of two ``>= max(n, minimum)`` (int8 tl.dot needs M, N >= 16 and K >= 32)."""
    return max(minimum, triton.next_power_of_2(max(int(n), 1)))


def configs(gpu_configs, interpreter_config):
    """Autotune candidates: several on a GPU, exactly one under the interpreter (no driver to time).

    ``FQVIT_TRITON_SINGLE_CONFIG=1`` keeps only the first GPU config (no autotuning), for runs
    under compute-sanitizer where timing candidates would only cost time.
    """
    if interpreting():
        return [interpreter_config]
    if os.environ.get("FQVIT_TRITON_SINGLE_CONFIG", "0") not in ("", "0"):
        return [gpu_configs[0]]
    return list(gpu_configs)


def epilogue_operands(out, bias, multiplier, shift, gelu_table, residual, branch_multiplier,
                      residual_multiplier, residual_shift):
    """The GEMM epilogue's tensor operands as both GEMM kernels (Triton and Gluon) take them, in
    their argument order: the per-channel vectors and the GELU table made dense (the kernels index
    them as ``ptr + i``), and ``out`` in place of each operand the epilogue does not read (a valid
    pointer that is never dereferenced)."""
    dense = [t.contiguous() if t is not None else out
             for t in (bias, multiplier, shift, gelu_table)]
    rest = [t.contiguous() if t is not None else out
            for t in (branch_multiplier, residual_multiplier, residual_shift)]
    return (*dense, residual if residual is not None else out, *rest)
