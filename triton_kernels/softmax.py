"""``log_int_softmax``: FQ-ViT Log-Int-Softmax along the last dim, ``ROWS`` rows per program.

Three passes over ``BLOCK_L`` chunks of each row: the row max; the int64 exponent sum
``E = sum_j exp_table[max - s_j]`` (a 256-entry gather); then per element the round-half-even
ratio ``R = round(E / e_j)`` (int64 division, remainder test for ties), ``floor(log2 R)`` by
binary search and the next bit for the log2 rounding, and the mask (``e_j == 0`` or
``code >= 2**bits`` give 255).

Also here: :func:`_lis_code4`, the division-free 4-bit code used inside the fused attention
kernel. ``round(E / e) >= T`` is equivalent to ``e <= U_T(E)`` with per-row integer thresholds
``U_T``, so a code is a count of 16 comparisons; :func:`lis_codes_by_thresholds` exposes it for
exhaustive tests against the reference formula.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._intmath import bit_length
from ._common import device_guard, interpreting, pow2_at_least

LIS_MASKED_CODE = tl.constexpr(255)


@triton.jit
def _lis_code_by_division(total, exps, BITS: tl.constexpr):
    """Reference formula: round-half-even ``E / e``, log2 rounding, mask; int32 codes."""
    positive = exps > 0
    den = tl.where(positive, exps, 1)
    quot = total // den  # both non-negative: truncation is floor
    twice_rem = 2 * (total - quot * den)
    up = (twice_rem > den) | ((twice_rem == den) & ((quot & 1) == 1))
    ratio = quot + tl.where(up, 1, 0)
    msb = bit_length(ratio) - 1
    below = tl.maximum(msb - 1, 0)
    next_bit = tl.where(msb >= 1, (ratio >> below) & 1, 0)
    code = msb + next_bit
    valid = positive & (code < (1 << BITS))
    return tl.where(valid, code, LIS_MASKED_CODE).to(tl.int32)


@triton.jit
def _lis_threshold(total, T: tl.constexpr):
    """Largest ``e`` with ``round_half_even(total / e) >= T`` (int64 ``total >= 0``).

    ``T`` even: ``2E >= (2T - 1) e``; ``T`` odd (only 3): ties round down, so ``2E - 1 >= 5 e``.
    Written with ``divmod(E, 2T - 1)`` so that ``2E`` never overflows int64.
    """
    DEN: tl.constexpr = 2 * T - 1
    TIE: tl.constexpr = T % 2
    quot = total // DEN
    twice_rem = 2 * (total - quot * DEN) - TIE
    return 2 * quot + tl.where(twice_rem < 0, -1, tl.where(twice_rem >= DEN, 1, 0))


@triton.jit
def _lis_thresholds(total):
    """The 16 thresholds of 4-bit LIS: ``R >= T`` for ``T`` in 2, 3, 6, 12, ..., 3 * 2**14."""
    return (_lis_threshold(total, 2), _lis_threshold(total, 3), _lis_threshold(total, 6),
            _lis_threshold(total, 12), _lis_threshold(total, 24), _lis_threshold(total, 48),
            _lis_threshold(total, 96), _lis_threshold(total, 192), _lis_threshold(total, 384),
            _lis_threshold(total, 768), _lis_threshold(total, 1536), _lis_threshold(total, 3072),
            _lis_threshold(total, 6144), _lis_threshold(total, 12288), _lis_threshold(total, 24576),
            _lis_threshold(total, 49152))


@triton.jit
def _lis_code4(exps, u):
    """4-bit LIS code of int64 ``exps [BM, BN]`` from the row thresholds ``u`` (16 x ``[BM]``).

    Returns int32 codes in 0..16; 16 means masked (``R >= 3 * 2**14``, or ``e == 0``).
    """
    code = tl.where(exps <= u[0][:, None], 1, 0)
    code += tl.where(exps <= u[1][:, None], 1, 0)
    code += tl.where(exps <= u[2][:, None], 1, 0)
    code += tl.where(exps <= u[3][:, None], 1, 0)
    code += tl.where(exps <= u[4][:, None], 1, 0)
    code += tl.where(exps <= u[5][:, None], 1, 0)
    code += tl.where(exps <= u[6][:, None], 1, 0)
    code += tl.where(exps <= u[7][:, None], 1, 0)
    code += tl.where(exps <= u[8][:, None], 1, 0)
    code += tl.where(exps <= u[9][:, None], 1, 0)
    code += tl.where(exps <= u[10][:, None], 1, 0)
    code += tl.where(exps <= u[11][:, None], 1, 0)
    code += tl.where(exps <= u[12][:, None], 1, 0)
    code += tl.where(exps <= u[13][:, None], 1, 0)
    code += tl.where(exps <= u[14][:, None], 1, 0)
    code += tl.where(exps <= u[15][:, None], 1, 0)
    return tl.where(exps > 0, code, 16)


@triton.jit
def _log_int_softmax_kernel(
    s_ptr, out_ptr, table_ptr, R, L,
    BITS: tl.constexpr, ROWS: tl.constexpr, BLOCK_L: tl.constexpr,
):
    rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    row_ok = rows < R
    row_base = rows.to(tl.int64) * L
    cols = tl.arange(0, BLOCK_L)

    row_max = tl.full((ROWS,), -128, tl.int32)
    for l0 in range(0, L, BLOCK_L):
        mask = row_ok[:, None] & ((l0 + cols) < L)[None, :]
        s = tl.load(s_ptr + row_base[:, None] + (l0 + cols)[None, :], mask=mask, other=-128).to(tl.int32)
        row_max = tl.maximum(row_max, tl.max(s, axis=1))

    total = tl.zeros((ROWS,), tl.int64)
    for l0 in range(0, L, BLOCK_L):
        mask = row_ok[:, None] & ((l0 + cols) < L)[None, :]
        s = tl.load(s_ptr + row_base[:, None] + (l0 + cols)[None, :], mask=mask, other=-128).to(tl.int32)
        e = tl.load(table_ptr + (row_max[:, None] - s), mask=mask, other=0)
        total += tl.sum(e, axis=1)

    for l0 in range(0, L, BLOCK_L):
        mask = row_ok[:, None] & ((l0 + cols) < L)[None, :]
        offs = row_base[:, None] + (l0 + cols)[None, :]
        s = tl.load(s_ptr + offs, mask=mask, other=-128).to(tl.int32)
        e = tl.load(table_ptr + (row_max[:, None] - s), mask=mask, other=0)
        code = _lis_code_by_division(total[:, None], e, BITS)
        tl.store(out_ptr + offs, code.to(tl.uint8), mask=mask)


def launch_config(length: int):
    """``(BLOCK_L, ROWS, num_warps)`` for rows of ``length`` scores."""
    block_l = min(pow2_at_least(length, 16), 1024)
    if interpreting():
        return block_l, 32, 4
    return block_l, max(1, min(16, 2048 // block_l)), 4


def log_int_softmax(scores: torch.Tensor, exp_table: torch.Tensor, bits: int = 4) -> torch.Tensor:
    """Launcher of ``fqvit::log_int_softmax``: int8 scores ``[..., L]`` → uint8 codes, same shape."""
    # Same layout as the fake kernel (empty_like keeps a permuted input's strides).
    out = torch.empty_like(scores, dtype=torch.uint8)
    if scores.numel() == 0:
        return out
    result = out if out.is_contiguous() else torch.empty(scores.shape, dtype=torch.uint8, device=scores.device)
    length = scores.shape[-1]
    flat = scores.contiguous().view(-1, length)
    rows = flat.shape[0]
    block_l, rows_per_program, num_warps = launch_config(length)
    grid = (triton.cdiv(rows, rows_per_program),)
    with device_guard(scores):
        _log_int_softmax_kernel[grid](flat, result, exp_table.contiguous(), rows, length, BITS=int(bits),
                                      ROWS=rows_per_program, BLOCK_L=block_l, num_warps=num_warps)
    if result is not out:
        out.copy_(result)
    return out


@triton.jit
def _lis_codes_check_kernel(total_ptr, exps_ptr, out_ptr, R, L, BLOCK_R: tl.constexpr, BLOCK_L: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    cols = tl.program_id(1) * BLOCK_L + tl.arange(0, BLOCK_L)
    mask = (rows < R)[:, None] & (cols < L)[None, :]
    total = tl.load(total_ptr + rows, mask=rows < R, other=1)
    offs = rows.to(tl.int64)[:, None] * L + cols[None, :]
    exps = tl.load(exps_ptr + offs, mask=mask, other=1)
    code = _lis_code4(exps, _lis_thresholds(total))
    tl.store(out_ptr + offs, code, mask=mask)


def lis_codes_by_thresholds(total: torch.Tensor, exps: torch.Tensor) -> torch.Tensor:
    """The fused attention's code rule on int64 row sums ``total [R]`` and ``exps [R, L]``.

    Returns int32 codes 0..16 (16 = masked) for tests against the reference formula.
    """
    rows, length = exps.shape
    out = torch.empty((rows, length), dtype=torch.int32, device=exps.device)
    grid = (triton.cdiv(rows, 32), triton.cdiv(length, 256))
    with device_guard(exps):
        _lis_codes_check_kernel[grid](total.contiguous(), exps.contiguous(), out, rows, length,
                                      BLOCK_R=32, BLOCK_L=256)
    return out
