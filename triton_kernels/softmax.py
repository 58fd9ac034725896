"""``log_int_softmax``: FQ-ViT Log-Int-Softmax along the last dim, ``ROWS`` rows per program.

Three passes over ``BLOCK_L`` chunks of each row: the row max; the int64 exponent sum
``E = sum_j exp_table[max + 128, max - s_j]`` (a gather from the row maximum's 256-entry row); then
per element the code as a count of per-row thresholds. The code follows FQ-ViT's float32
``round(E / e)`` (:func:`fqvit_kernels.reference.float32_ratio`): ``code >= c`` iff ``e <= U_c(E)``
with ``U_c = floor(fl32(E) / L_c)`` for the per-level constants ``L_c = P_c * 2**-S_c``
(:func:`fqvit_kernels.reference.lis_level_constants`, passed as an int64 ``[63, 3]`` table).
:func:`_level_threshold` evaluates ``U_c`` exactly in int64 (``fl32(E) = mant * 2**k`` with a
25-bit ``mant``, long division in two steps), so no division happens per score.

Also here: :func:`_lis_code4`, the 4-bit code used inside the fused attention kernel (16 thresholds,
the 16th being the mask; tests/triton_lis_check.py runs it alone for exhaustive tests).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from fqvit_kernels import contract, reference as _ref

from ._intmath import bit_length, round_to_float32
from ._common import device_guard, interpreting, pow2_at_least
from .spec import I8, I64, U8, CompileSpec

LIS_MASKED_CODE = tl.constexpr(contract.LIS_MASKED_CODE)
THRESHOLD_CAP = tl.constexpr(contract.LIS_THRESHOLD_CAP)

_LEVEL_TABLES = {}


def level_table(device) -> torch.Tensor:
    """The ``(P, S, inclusive)`` constants of every code level as a flat int64 tensor on ``device``."""
    key = str(device)
    if key not in _LEVEL_TABLES:
        rows = [(p, s, int(inc)) for p, s, inc in _ref.lis_level_constants()]
        _LEVEL_TABLES[key] = torch.tensor(rows, dtype=torch.int64, device=device).reshape(-1)
    return _LEVEL_TABLES[key]


@triton.jit
def _float32_total(total):
    """``fl32(E)`` of int64 row sums as ``(mant, k)``: ``fl32(E) = mant * 2**k``, ``mant < 2**25``."""
    rounded = round_to_float32(total)
    k = tl.maximum(bit_length(rounded) - 25, 0)  # <= 38 for E < 2**63
    return rounded >> k, k


@triton.jit
def _level_threshold(mant, k, numerator, shift, inclusive):
    """``U = floor(mant * 2**(k + shift) / numerator)`` (minus one when exclusive and exact), capped."""
    a = mant << shift
    q0 = a // numerator
    r0 = a - q0 * numerator
    k1 = tl.minimum(k, 30)
    k2 = k - k1
    t1 = r0 << k1
    q1 = t1 // numerator
    r1 = t1 - q1 * numerator
    t2 = r1 << k2
    q2 = t2 // numerator
    r2 = t2 - q2 * numerator
    huge = q0 >= (tl.full(k.shape, 1 << 62, tl.int64) >> k)
    u = (q0 << k) + (q1 << k2) + q2 - tl.where((inclusive == 0) & (r2 == 0), 1, 0)
    return tl.where(huge, THRESHOLD_CAP, tl.minimum(u, THRESHOLD_CAP))


@triton.jit
def _level(mant, k, levels_ptr, c: tl.constexpr):
    return _level_threshold(mant, k, tl.load(levels_ptr + 3 * c), tl.load(levels_ptr + 3 * c + 1),
                            tl.load(levels_ptr + 3 * c + 2))


@triton.jit
def _lis_thresholds(total, levels_ptr):
    """The 16 thresholds of 4-bit LIS (codes 1..15 and the mask) for int64 row sums ``total``."""
    mant, k = _float32_total(total)
    return (_level(mant, k, levels_ptr, 0), _level(mant, k, levels_ptr, 1), _level(mant, k, levels_ptr, 2),
            _level(mant, k, levels_ptr, 3), _level(mant, k, levels_ptr, 4), _level(mant, k, levels_ptr, 5),
            _level(mant, k, levels_ptr, 6), _level(mant, k, levels_ptr, 7), _level(mant, k, levels_ptr, 8),
            _level(mant, k, levels_ptr, 9), _level(mant, k, levels_ptr, 10), _level(mant, k, levels_ptr, 11),
            _level(mant, k, levels_ptr, 12), _level(mant, k, levels_ptr, 13), _level(mant, k, levels_ptr, 14),
            _level(mant, k, levels_ptr, 15))


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
    s_ptr, out_ptr, table_ptr, levels_ptr, R, L,
    BITS: tl.constexpr, ROWS: tl.constexpr, BLOCK_L: tl.constexpr,
):
    # Code levels counted (codes 1..CODE_LEVELS) and whether code 2**BITS (masked) is reachable.
    CODE_LEVELS: tl.constexpr = min((1 << BITS) - 1, 63)
    MASK_LEVEL: tl.constexpr = (1 << BITS) if (1 << BITS) <= 63 else 0
    rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    row_ok = rows < R
    row_base = rows.to(tl.int64) * L
    cols = tl.arange(0, BLOCK_L)

    row_max = tl.full((ROWS,), -128, tl.int32)
    for l0 in range(0, L, BLOCK_L):
        mask = row_ok[:, None] & ((l0 + cols) < L)[None, :]
        s = tl.load(s_ptr + row_base[:, None] + (l0 + cols)[None, :], mask=mask, other=-128).to(tl.int32)
        row_max = tl.maximum(row_max, tl.max(s, axis=1))
    row_table = table_ptr + (row_max + 128) * 256 + row_max

    total = tl.zeros((ROWS,), tl.int64)
    for l0 in range(0, L, BLOCK_L):
        mask = row_ok[:, None] & ((l0 + cols) < L)[None, :]
        s = tl.load(s_ptr + row_base[:, None] + (l0 + cols)[None, :], mask=mask, other=-128).to(tl.int32)
        e = tl.load(row_table[:, None] - s, mask=mask, other=0)
        total += tl.sum(e, axis=1)

    mant, k = _float32_total(tl.maximum(total, 1))
    if MASK_LEVEL > 0:
        masked_at = _level(mant, k, levels_ptr, MASK_LEVEL - 1)
    else:
        masked_at = tl.zeros_like(total)
    for l0 in range(0, L, BLOCK_L):
        mask = row_ok[:, None] & ((l0 + cols) < L)[None, :]
        offs = row_base[:, None] + (l0 + cols)[None, :]
        s = tl.load(s_ptr + offs, mask=mask, other=-128).to(tl.int32)
        e = tl.load(row_table[:, None] - s, mask=mask, other=0)
        code = tl.zeros((ROWS, BLOCK_L), tl.int32)
        for c in tl.static_range(CODE_LEVELS):
            code += tl.where(e <= _level(mant, k, levels_ptr, c)[:, None], 1, 0)
        code = tl.where((e <= 0) | (e <= masked_at[:, None]), LIS_MASKED_CODE, code)
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
        _log_int_softmax_kernel[grid](flat, result, exp_table.contiguous(), level_table(scores.device), rows, length,
                                      BITS=int(bits), ROWS=rows_per_program, BLOCK_L=block_l, num_warps=num_warps)
    if result is not out:
        out.copy_(result)
    return out


# -- ahead-of-time compile specs (compile_check) --------------------------------------------------

#: Argument types of ``_log_int_softmax_kernel`` besides the ``i32`` sizes.
ARG_TYPES = dict(s_ptr=I8, out_ptr=U8, table_ptr=I64, levels_ptr=I64)


def compile_specs(all_configs: bool = False):
    """4-bit LIS rows of a few, ViT and long lengths (one launch config per length)."""
    for length in (7, 197, 4096):
        block_l, rows, warps = launch_config(length)
        yield CompileSpec(f"log_int_softmax L={length}", _log_int_softmax_kernel, ARG_TYPES,
                          dict(BITS=4, ROWS=rows, BLOCK_L=block_l), warps)
