"""``ptf_layernorm`` and ``ptf_layernorm_dyadic``: integer LayerNorms of PTF-quantized int8 rows,
``ROWS`` rows per program.

Each program holds ``ROWS x BLOCK_C`` channels in registers (``BLOCK_C`` = C rounded up to a
power of two, masked). Per row, in int64 exactly as :func:`fqvit_kernels.reference.ptf_layernorm`:
``X = (x - zp) << alpha``, ``S1``, ``S2``, ``V = C*S2 - S1**2``; the bit length of ``V`` by binary
search, ``p = (62 - bitlen) // 2``, ``floor(sqrt(V * 4**p))`` digit by digit (31 steps, two bits per
step), one reciprocal ``2**62 // root`` per row, then ``round_shift(D * recip, 62 - LN_NORM_FRAC_BITS - p)`` and the
per-channel fixed-point affine. The per-row work is vectorised across the ``ROWS`` rows.

``ptf_layernorm_dyadic`` shares the row statistics and the root, then follows
:func:`fqvit_kernels.reference.ptf_layernorm_dyadic` per element (FQ-ViT's 8-bit ``M / 2**N``
factor, round-half-even at ``2**16`` and ``2**N``), all in int64.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from fqvit_kernels import reference as _ref

from ._intmath import bit_length, floor_div, round_half_even_shift, round_half_even_shift_add, round_shift
from fqvit_kernels import _checks

from ._common import device_guard, fast_paths_allowed, interpreting, pow2_at_least

LN_NORM_FRAC_BITS = _ref.LN_NORM_FRAC_BITS
#: The fixed-point widths of reference.ptf_layernorm_dyadic, as the kernel's constexprs.
DYADIC_CONSTEXPRS = dict(A_FRAC=_ref.LN_DYADIC_A_FRAC_BITS, MEAN_FRAC=_ref.LN_DYADIC_MEAN_FRAC_BITS,
                         B_FRAC=_ref.LN_DYADIC_B_FRAC_BITS, BETA_FRAC=_ref.LN_DYADIC_BETA_FRAC_BITS)


@triton.jit
def _isqrt(value):
    """``floor(sqrt(value))`` for int64 ``0 <= value < 2**62``, digit by digit."""
    rest = value
    root = tl.zeros(value.shape, tl.int64)
    bit = tl.full(value.shape, 1, tl.int64) << 60
    for _ in tl.static_range(31):
        trial = root + bit
        take = rest >= trial
        rest = tl.where(take, rest - trial, rest)
        root = tl.where(take, (root >> 1) + bit, root >> 1)
        bit = bit >> 2
    return root


@triton.jit
def _root_and_reciprocal(scaled):
    """``floor(sqrt(scaled))`` and ``floor(2**62 / root)`` for int64 ``scaled`` in ``[2**60, 2**62)``
    (anything for rows masked afterwards), from float64 ``sqrt``/``div`` rounded to nearest plus an
    exact integer correction: the float results are within one of the true floors (the operands
    have at most 62 bits, the relative errors 2**-53), and one step each way fixes them; the
    squares and products stay below 2**62 + 2**32. (Only the downward steps are ever taken with
    IEEE sqrt/div: rounding ``scaled`` to a double moves its root by at most 2**-24, under half the
    spacing of doubles near it; the upward ones are a safeguard for three instructions per row.)
    About 20 instructions per row instead of a 31-step root and a 64-bit division."""
    root = tl.sqrt(scaled.to(tl.float64)).to(tl.int64)
    root = tl.where(root * root > scaled, root - 1, root)
    root = tl.where((root + 1) * (root + 1) <= scaled, root + 1, root)
    root = tl.minimum(tl.maximum(root, 1), 2147483647)
    top = tl.full(root.shape, 1 << 62, tl.int64)
    recip = (top.to(tl.float64) / root.to(tl.float64)).to(tl.int64)
    recip = tl.where(recip * root > top, recip - 1, recip)
    recip = tl.where((recip + 1) * root <= top, recip + 1, recip)
    return root, recip


@triton.jit
def _row_statistics(x_ptr, alpha_ptr, M, C, input_zero_point, variance_offset, row0, ROWS: tl.constexpr,
                    BLOCK_C: tl.constexpr, FAST: tl.constexpr = False):
    """``X = (x - zp) << alpha`` of ``ROWS`` rows, their ``S1``, ``V = C*S2 - S1**2 + variance_offset``
    and the row root: ``p``, ``1/sqrt(V) = reciprocal * 2**(p - 62)`` (0 for ``V == 0``)."""
    rows = row0 + tl.arange(0, ROWS)
    cols = tl.arange(0, BLOCK_C)
    col_ok = cols < C
    mask = (rows[:, None] < M) & col_ok[None, :]
    offs = rows.to(tl.int64)[:, None] * C + cols[None, :]
    x = tl.load(x_ptr + offs, mask=mask, other=0).to(tl.int64)
    alpha = tl.minimum(tl.maximum(tl.load(alpha_ptr + cols, mask=col_ok, other=0), 0), 3).to(tl.int64)
    centered = (x - input_zero_point) << alpha[None, :]
    centered = tl.where(mask, centered, 0)
    sum1 = tl.sum(centered, axis=1)
    sum2 = tl.sum(centered * centered, axis=1)
    channels = tl.zeros_like(sum1) + C  # int64; also right if C is specialised to a constant
    var_num = channels * sum2 - sum1 * sum1 + variance_offset
    nonzero = var_num > 0
    p = tl.where(nonzero, (62 - bit_length(var_num)) >> 1, 0)
    if FAST:
        root, reciprocal = _root_and_reciprocal(var_num << (2 * p))
        reciprocal = tl.where(nonzero, reciprocal, 0)
    else:
        root = _isqrt(var_num << (2 * p))
        numerator = tl.full(root.shape, 1, tl.int64) << 62
        reciprocal = tl.where(nonzero, numerator // tl.maximum(root, 1), 0)
    return centered, sum1, channels, nonzero, p, reciprocal, offs, mask, cols, col_ok


@triton.jit
def _ptf_layernorm_kernel(
    x_ptr, out_ptr, alpha_ptr, wmult_ptr, bias_ptr, shift_ptr,
    M, C, input_zero_point, output_zero_point, variance_offset,
    ROWS: tl.constexpr, BLOCK_C: tl.constexpr, NORM_FRAC_BITS: tl.constexpr, FAST: tl.constexpr,
):
    centered, sum1, channels, nonzero, p, reciprocal, offs, mask, cols, col_ok = _row_statistics(
        x_ptr, alpha_ptr, M, C, input_zero_point, variance_offset, tl.program_id(0) * ROWS, ROWS, BLOCK_C, FAST)
    dev_num = channels[:, None] * centered - sum1[:, None]
    norm = round_shift(dev_num * reciprocal[:, None], (62 - NORM_FRAC_BITS - p)[:, None])

    wmult = tl.load(wmult_ptr + cols, mask=col_ok, other=0).to(tl.int64)
    bias = tl.load(bias_ptr + cols, mask=col_ok, other=0)
    shift = tl.load(shift_ptr + cols, mask=col_ok, other=1).to(tl.int64)
    affine = norm * wmult[None, :] + bias[None, :]
    out = round_shift(affine, shift[None, :]) + output_zero_point
    out = tl.minimum(tl.maximum(out, -128), 127).to(tl.int8)
    tl.store(out_ptr + offs, out, mask=mask)


@triton.jit
def _ptf_layernorm_dyadic_kernel(
    x_ptr, out_ptr, alpha_ptr, gmult_ptr, gshift_ptr, beta_ptr,
    M, C, input_zero_point, output_zero_point,
    ROWS: tl.constexpr, BLOCK_C: tl.constexpr, A_FRAC: tl.constexpr, MEAN_FRAC: tl.constexpr,
    B_FRAC: tl.constexpr, BETA_FRAC: tl.constexpr, FAST: tl.constexpr,
):
    centered, sum1, channels, nonzero, p, reciprocal, offs, mask, cols, col_ok = _row_statistics(
        x_ptr, alpha_ptr, M, C, input_zero_point, 0, tl.program_id(0) * ROWS, ROWS, BLOCK_C, FAST)
    # rho = C / sqrt(V) normalised to 32 bits, e0 its exponent; the row mean with MEAN_FRAC bits.
    c_inv = channels * reciprocal
    sh = tl.where(nonzero, bit_length(c_inv) - 32, 0)
    rho = c_inv >> sh
    e0 = sh + p - 62
    mean = floor_div(sum1 << MEAN_FRAC, channels)

    gm = tl.load(gmult_ptr + cols, mask=col_ok, other=0)
    gs = tl.load(gshift_ptr + cols, mask=col_ok, other=31)
    beta = tl.load(beta_ptr + cols, mask=col_ok, other=0)
    if FAST:
        # Per channel: the zero-variance constant. Per element: the exponents in int32; |gm| in
        # {0} U [2**30, 2**31) (checked on the host) and rho in [2**31, 2**32), so a nonzero
        # product has 62 or 63 bits (its bit length is one compare) and comes from one 32 x 32 ->
        # 64-bit multiply; ``a_fixed < 2**32`` times ``|mean| < 2**31`` likewise.
        constant = round_half_even_shift_add(beta, tl.full(beta.shape, BETA_FRAC, tl.int32))
        e = (e0.to(tl.int32))[:, None] - gs[None, :]
        prod = (tl.abs(gm).to(tl.uint32).to(tl.uint64)[None, :] * rho.to(tl.uint32).to(tl.uint64)[:, None]).to(tl.int64)
        log2_a = tl.where(prod > 0, 61 + (prod >> 62).to(tl.int32) + e, -(1 << 20))
        n = tl.minimum(tl.maximum(7 - log2_a, 0), 31)
        m = tl.where(log2_a > 7, 255, (prod >> tl.minimum(tl.maximum(-(e + n), 0), 63)).to(tl.int32))
        frac = A_FRAC - tl.maximum(log2_a - 7, 0)
        a_fixed = (prod >> tl.minimum(tl.maximum(-(e + n) - frac, 0), 63)).to(tl.uint32)
        negative_mean = mean < 0
        magnitude = (a_fixed.to(tl.uint64) * tl.abs(mean).to(tl.uint32).to(tl.uint64)[:, None]).to(tl.int64)
        signed = tl.where((gm < 0)[None, :] != negative_mean[:, None], -magnitude, magnitude)
        mean_term = signed >> tl.minimum(tl.maximum(frac + MEAN_FRAC - B_FRAC, 0), 63)
        beta_term = beta[None, :] >> (BETA_FRAC - B_FRAC - n)
        b = round_half_even_shift_add(beta_term - mean_term, tl.full(prod.shape, B_FRAC, tl.int32))
        mx = tl.where(gm < 0, -1, 1)[None, :] * m * centered.to(tl.int32)  # |.| < 2**19
        y = round_half_even_shift_add(mx + b, n)
        y = tl.where(nonzero[:, None], y, constant[None, :])
    else:
        gm = gm.to(tl.int64)
        gs = gs.to(tl.int64)
        sign = tl.where(gm < 0, -1, 1)
        e = e0[:, None] - gs[None, :]
        prod = tl.abs(gm)[None, :] * rho[:, None]  # < 2**63
        log2_a = tl.where(prod > 0, bit_length(prod) - 1 + e, -(1 << 20))
        n = tl.minimum(tl.maximum(7 - log2_a, 0), 31)
        m = tl.where(log2_a > 7, 255, prod >> tl.minimum(tl.maximum(-(e + n), 0), 63))
        frac = A_FRAC - tl.maximum(log2_a - 7, 0)
        a_fixed = prod >> tl.minimum(tl.maximum(-(e + n) - frac, 0), 63)
        mean_term = (sign[None, :] * a_fixed * mean[:, None]) >> tl.minimum(tl.maximum(frac + MEAN_FRAC - B_FRAC, 0), 63)
        beta_term = beta[None, :] >> (BETA_FRAC - B_FRAC - n)
        b = round_half_even_shift(beta_term - mean_term, tl.full(prod.shape, B_FRAC, tl.int64))
        y = round_half_even_shift(sign[None, :] * m * centered + b, n)
        constant = round_half_even_shift(beta[None, :] + tl.zeros_like(prod), tl.full(prod.shape, BETA_FRAC, tl.int64))
        y = tl.where(nonzero[:, None], y, constant)
    out = tl.minimum(tl.maximum(y + output_zero_point, -128), 127).to(tl.int8)
    tl.store(out_ptr + offs, out, mask=mask)


def fast_dyadic(gamma_multiplier: torch.Tensor) -> bool:
    """Whether ``ptf_layernorm_dyadic`` takes its fast path: every ``|gamma_multiplier|`` 0 or in
    ``[2**30, 2**31)`` (what the op validates; read once per tensor and remembered)."""
    if not fast_paths_allowed():
        return False
    g = gamma_multiplier
    return bool(_checks.cached_fact(g, "normalised", lambda: bool(((g == 0) | (g.abs() >= 2**30)).all())))


def launch_config(channels: int):
    """``(BLOCK_C, ROWS, num_warps)`` for rows of ``channels`` int8 values."""
    block_c = pow2_at_least(channels, 16)
    if interpreting():
        return block_c, 16, 4
    # Keep about 4K int64 lanes per program; wide rows get more warps.
    rows = max(1, min(8, 4096 // block_c))
    return block_c, rows, 4 if block_c * rows <= 2048 else 8


def ptf_layernorm(x: torch.Tensor, input_zero_point: int, ptf_alpha: torch.Tensor,
                  weight_multiplier: torch.Tensor, bias: torch.Tensor, shift: torch.Tensor,
                  output_zero_point: int, variance_offset: int = 0) -> torch.Tensor:
    """Launcher of ``fqvit::ptf_layernorm`` (contiguous int8 ``x [M, C]``); int8 ``[M, C]``."""
    m, c = x.shape
    out = torch.empty_like(x)
    if m == 0:
        return out
    block_c, rows, num_warps = launch_config(c)
    ptf_alpha, weight_multiplier, bias, shift = (t.contiguous() for t in (ptf_alpha, weight_multiplier, bias, shift))
    grid = (triton.cdiv(m, rows),)
    with device_guard(x):
        _ptf_layernorm_kernel[grid](
            x, out, ptf_alpha, weight_multiplier, bias, shift, m, c,
            int(input_zero_point), int(output_zero_point), int(variance_offset),
            ROWS=rows, BLOCK_C=block_c, NORM_FRAC_BITS=LN_NORM_FRAC_BITS, FAST=fast_paths_allowed(),
            num_warps=num_warps,
        )
    return out


def ptf_layernorm_dyadic(x: torch.Tensor, input_zero_point: int, ptf_alpha: torch.Tensor,
                         gamma_multiplier: torch.Tensor, gamma_shift: torch.Tensor, beta: torch.Tensor,
                         output_zero_point: int) -> torch.Tensor:
    """Launcher of ``fqvit::ptf_layernorm_dyadic`` (contiguous int8 ``x [M, C]``); int8 ``[M, C]``."""
    m, c = x.shape
    out = torch.empty_like(x)
    if m == 0:
        return out
    block_c, rows, num_warps = launch_config(c)
    ptf_alpha, gamma_multiplier, gamma_shift, beta = (t.contiguous() for t in (ptf_alpha, gamma_multiplier,
                                                                                gamma_shift, beta))
    grid = (triton.cdiv(m, rows),)
    with device_guard(x):
        _ptf_layernorm_dyadic_kernel[grid](
            x, out, ptf_alpha, gamma_multiplier, gamma_shift, beta, m, c,
            int(input_zero_point), int(output_zero_point),
            ROWS=rows, BLOCK_C=block_c, num_warps=num_warps, FAST=fast_dyadic(gamma_multiplier),
            **DYADIC_CONSTEXPRS,
        )
    return out
