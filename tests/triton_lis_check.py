"""A test-only Triton kernel: the fused attention's LIS code rule (``triton_kernels.softmax``'s
per-row thresholds and ``_lis_code4``) applied to given row sums and exponents, so that tests can
check it exhaustively against the reference without building attention inputs that reach every
threshold. Imported by tests/ops/test_log_int_softmax.py after the interpreter switch is set."""

import torch
import triton
import triton.language as tl

from triton_kernels._common import device_guard
from triton_kernels.softmax import _lis_code4, _lis_thresholds, level_table


@triton.jit
def _lis_codes_check_kernel(total_ptr, exps_ptr, out_ptr, levels_ptr, R, L, BLOCK_R: tl.constexpr,
                            BLOCK_L: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    cols = tl.program_id(1) * BLOCK_L + tl.arange(0, BLOCK_L)
    mask = (rows < R)[:, None] & (cols < L)[None, :]
    total = tl.load(total_ptr + rows, mask=rows < R, other=1)
    offs = rows.to(tl.int64)[:, None] * L + cols[None, :]
    exps = tl.load(exps_ptr + offs, mask=mask, other=1)
    code = _lis_code4(exps, _lis_thresholds(total, levels_ptr))
    tl.store(out_ptr + offs, code, mask=mask)


def lis_codes_by_thresholds(total: torch.Tensor, exps: torch.Tensor) -> torch.Tensor:
    """The fused attention's code rule on int64 row sums ``total [R]`` and ``exps [R, L]``:
    int32 codes 0..16 (16 = masked)."""
    rows, length = exps.shape
    out = torch.empty((rows, length), dtype=torch.int32, device=exps.device)
    grid = (triton.cdiv(rows, 32), triton.cdiv(length, 256))
    with device_guard(exps):
        _lis_codes_check_kernel[grid](total.contiguous(), exps.contiguous(), out, level_table(exps.device), rows,
                                      length, BLOCK_R=32, BLOCK_L=256)
    return out
