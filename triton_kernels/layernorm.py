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

import math

import torch
import triton
import triton.language as tl

from fqvit_kernels import contract

from ._intmath import bit_length, floor_div, round_half_even_shift, round_half_even_shift_add, round_shift
from fqvit_kernels import checks

from ._common import device_guard, fast_paths_allowed, interpreting, pow2_at_least
from .spec import I8, I32, I64, CompileSpec

LN_NORM_FRAC_BITS = contract.LN_NORM_FRAC_BITS
#: The fixed-point widths of reference.ptf_layernorm_dyadic, as the kernel's constexprs.
DYADIC_CONSTEXPRS = dict(A_FRAC=contract.LN_DYADIC_A_FRAC_BITS, MEAN_FRAC=contract.LN_DYADIC_MEAN_FRAC_BITS,
                         B_FRAC=contract.LN_DYADIC_B_FRAC_BITS, BETA_FRAC=contract.LN_DYADIC_BETA_FRAC_BITS)


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
def _load_cols(ptr, ch, col_ok, other, EVEN_C: tl.constexpr):
    """One chunk of a per-channel parameter."""
    if EVEN_C:
        return tl.load(ptr + ch)
    return tl.load(ptr + ch, mask=col_ok, other=other)


@triton.jit
def _load_chunk(x_ptr, alpha_ptr, row_offs, row_ok, chunk, C, input_zero_point, CHUNK: tl.constexpr,
                EVEN_C: tl.constexpr, ZERO_MASKED: tl.constexpr):
    """Chunk ``chunk`` of the rows: ``X = (x - zp) << alpha`` in int32 (``|X| <= 2040``), its
    store mask, channels and channel mask; ``ZERO_MASKED``: X = 0 outside the mask (for sums)."""
    ch = chunk * CHUNK + tl.arange(0, CHUNK)
    col_ok = ch < C
    if EVEN_C:
        mask = row_ok[:, None]
    else:
        mask = row_ok[:, None] & col_ok[None, :]
    alpha = tl.minimum(tl.maximum(_load_cols(alpha_ptr, ch, col_ok, 0, EVEN_C), 0), 3)
    x = tl.load(x_ptr + row_offs + ch[None, :], mask=mask, other=0).to(tl.int32)
    centered = (x - input_zero_point) << alpha[None, :]
    if ZERO_MASKED:
        centered = tl.where(mask, centered, 0)
    return centered, mask, ch, col_ok


@triton.jit
def _chunked_rows(x_ptr, alpha_ptr, M, C, input_zero_point, ROWS: tl.constexpr, CHUNK: tl.constexpr,
                  N_CHUNKS: tl.constexpr, EVEN_C: tl.constexpr, OFFSETS_64: tl.constexpr):
    """This program's rows: offsets, validity, ``S1`` (int32, ``|S1| <= C * 2040``) and
    ``C*S2 - S1**2`` (int64; each chunk's ``sum X**2 <= 256 * 2040**2 < 2**31`` in int32)."""
    rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    row_ok = rows < M
    if OFFSETS_64:
        row_offs = rows.to(tl.int64)[:, None] * C
    else:
        row_offs = rows[:, None] * C  # M * C < 2**31 (the launcher's choice)
    sum1 = tl.zeros((ROWS,), tl.int32)
    sum2 = tl.zeros((ROWS,), tl.int64)
    for chunk in tl.static_range(N_CHUNKS):
        centered, mask, ch, col_ok = _load_chunk(x_ptr, alpha_ptr, row_offs, row_ok, chunk, C, input_zero_point,
                                                 CHUNK, EVEN_C, True)
        sum1 += tl.sum(centered, axis=1)
        sum2 += tl.sum(centered * centered, axis=1).to(tl.int64)
    var_num = sum2 * C - sum1.to(tl.int64) * sum1.to(tl.int64)
    return row_offs, row_ok, sum1, var_num


@triton.jit
def _ptf_layernorm_chunked_kernel(
    x_ptr, out_ptr, alpha_ptr, wmult_ptr, bias_ptr, shift_ptr,
    M, C, input_zero_point, output_zero_point, variance_offset,
    ROWS: tl.constexpr, CHUNK: tl.constexpr, N_CHUNKS: tl.constexpr, EVEN_C: tl.constexpr,
    NORM_FRAC_BITS: tl.constexpr, OFFSETS_64: tl.constexpr, AFFINE_32: tl.constexpr,
):
    """The fast path of ``ptf_layernorm`` (``C <= MAX_FAST_CHANNELS``): the rows read in
    ``N_CHUNKS`` chunks of ``CHUNK`` channels (no padding to a power of two; masks only when
    ``EVEN_C`` is false), twice (statistics, then output; the second read hits the cache), with
    32-bit integers per element wherever the values fit:

    * ``X``, ``S1`` and the chunk sums of squares in int32 (:func:`_chunked_rows`).
    * ``D = C*X - S1`` in int32 (``|D| <= 2 * C * 2040``).
    * ``D * reciprocal`` with ``reciprocal`` in ``(2**31, 2**32]`` as ``(D << 32) - D * r2``,
      ``r2 = 2**32 - reciprocal`` in ``[0, 2**31)``: one 32 x 32 -> 64-bit multiply.
    * ``z = round_shift(D * reciprocal, 62 - F - p)`` fits int32: ``|z| <= sqrt(C - 1) * 2**F``
      (no value deviates from its row mean by more than ``sqrt(C - 1)`` standard deviations)
      ``< 2**31`` for ``C <= 8192`` and ``F = 24``.
    * the affine ``z * wmult + bias`` stays int64 as in the reference (shifts are 25-28 in
      practice, too small for a high-half multiply), with ``2**(shift - 1)`` added to ``bias``
      once per channel and chunk, shared by the ``ROWS`` rows; the shifted value is clamped in
      int32 when :func:`affine_fits_int32` holds, in int64 otherwise.
    The row root and reciprocal come from :func:`_root_and_reciprocal` (exact)."""
    row_offs, row_ok, sum1, var_num = _chunked_rows(x_ptr, alpha_ptr, M, C, input_zero_point, ROWS, CHUNK,
                                                    N_CHUNKS, EVEN_C, OFFSETS_64)
    var_num += variance_offset
    nonzero = var_num > 0
    p = tl.where(nonzero, (62 - bit_length(var_num)) >> 1, 0)
    root, reciprocal = _root_and_reciprocal(var_num << (2 * p))
    # A zero row (all X equal, no epsilon) has D == 0 everywhere: any r2 gives z == 0.
    r2 = ((1 << 32) - reciprocal).to(tl.int32)
    norm_shift = (62 - NORM_FRAC_BITS - p).to(tl.int64)
    norm_half = tl.full((ROWS,), 1, tl.int64) << (norm_shift - 1)
    for chunk in tl.static_range(N_CHUNKS):
        centered, mask, ch, col_ok = _load_chunk(x_ptr, alpha_ptr, row_offs, row_ok, chunk, C, input_zero_point,
                                                 CHUNK, EVEN_C, False)
        wmult = _load_cols(wmult_ptr, ch, col_ok, 0, EVEN_C)
        bias = _load_cols(bias_ptr, ch, col_ok, 0, EVEN_C)
        shift = tl.minimum(tl.maximum(_load_cols(shift_ptr, ch, col_ok, 1, EVEN_C), 1), 63).to(tl.int64)
        bias_half = bias + (tl.full(shift.shape, 1, tl.int64) << (shift - 1))
        wide = (C * centered - sum1[:, None]).to(tl.int64)
        product = (wide << 32) - wide * r2[:, None].to(tl.int64)
        norm = ((product + norm_half[:, None]) >> norm_shift[:, None]).to(tl.int32)
        affine = norm.to(tl.int64) * wmult[None, :].to(tl.int64) + bias_half[None, :]
        if AFFINE_32:  # every channel's (|z| * |wmult| + |bias|) >> shift below 2**31 - 256 (host check)
            out = (affine >> shift[None, :]).to(tl.int32) + output_zero_point
        else:  # the op's full ranges (shifts from 1, biases to 2**60): clamp in int64
            out = (affine >> shift[None, :]) + output_zero_point
        out = tl.minimum(tl.maximum(out, -128), 127).to(tl.int8)
        tl.store(out_ptr + row_offs + ch[None, :], out, mask=mask)


@triton.jit
def _dyadic_elements(centered, gm, gs, beta, e0, rho, mean, nonzero, A_FRAC: tl.constexpr,
                     MEAN_FRAC: tl.constexpr, B_FRAC: tl.constexpr, BETA_FRAC: tl.constexpr):
    """The fast per-element part of ``ptf_layernorm_dyadic`` (``y`` before the zero point) for
    int32 ``centered [ROWS, CHUNK]``, per-channel ``gm``, ``gs``, ``beta`` and per-row ``e0``,
    ``rho``, ``mean``, ``nonzero``. The exponents are int32; ``|gm|`` in {0} U [2**30, 2**31)
    (checked on the host) and ``rho`` in [2**31, 2**32), so a nonzero product has 62 or 63 bits
    (its bit length is one compare) and comes from one 32 x 32 -> 64-bit multiply;
    ``a_fixed < 2**32`` times ``|mean| < 2**31`` likewise."""
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
    return tl.where(nonzero[:, None], y, constant[None, :])


@triton.jit
def _dyadic_row_factors(sum1, var_num, C, MEAN_FRAC: tl.constexpr):
    """Per row of ``ptf_layernorm_dyadic``: ``nonzero``, ``rho = C / sqrt(V)`` normalised to 32
    bits, its exponent ``e0`` and the mean of X with ``MEAN_FRAC`` fraction bits."""
    nonzero = var_num > 0
    p = tl.where(nonzero, (62 - bit_length(var_num)) >> 1, 0)
    root, reciprocal = _root_and_reciprocal(var_num << (2 * p))
    c_inv = tl.where(nonzero, reciprocal, 0) * C
    sh = tl.where(nonzero, bit_length(c_inv) - 32, 0)
    rho = c_inv >> sh
    e0 = sh + p - 62
    mean = floor_div(sum1.to(tl.int64) << MEAN_FRAC, C)
    return nonzero, rho, e0, mean


@triton.jit
def _ptf_layernorm_dyadic_chunked_kernel(
    x_ptr, out_ptr, alpha_ptr, gmult_ptr, gshift_ptr, beta_ptr,
    M, C, input_zero_point, output_zero_point,
    ROWS: tl.constexpr, CHUNK: tl.constexpr, N_CHUNKS: tl.constexpr, EVEN_C: tl.constexpr,
    OFFSETS_64: tl.constexpr, A_FRAC: tl.constexpr, MEAN_FRAC: tl.constexpr,
    B_FRAC: tl.constexpr, BETA_FRAC: tl.constexpr,
):
    """The fast path of ``ptf_layernorm_dyadic`` (normalised gains, ``C <= MAX_FAST_CHANNELS``):
    the chunked row statistics of :func:`_ptf_layernorm_chunked_kernel`, then
    :func:`_dyadic_elements` chunk by chunk."""
    row_offs, row_ok, sum1, var_num = _chunked_rows(x_ptr, alpha_ptr, M, C, input_zero_point, ROWS, CHUNK,
                                                    N_CHUNKS, EVEN_C, OFFSETS_64)
    nonzero, rho, e0, mean = _dyadic_row_factors(sum1, var_num, C, MEAN_FRAC)
    for chunk in tl.static_range(N_CHUNKS):
        centered, mask, ch, col_ok = _load_chunk(x_ptr, alpha_ptr, row_offs, row_ok, chunk, C, input_zero_point,
                                                 CHUNK, EVEN_C, False)
        gm = _load_cols(gmult_ptr, ch, col_ok, 0, EVEN_C)
        gs = _load_cols(gshift_ptr, ch, col_ok, 31, EVEN_C)
        beta = _load_cols(beta_ptr, ch, col_ok, 0, EVEN_C)
        y = _dyadic_elements(centered, gm, gs, beta, e0, rho, mean, nonzero, A_FRAC, MEAN_FRAC, B_FRAC, BETA_FRAC)
        out = tl.minimum(tl.maximum(y + output_zero_point, -128), 127).to(tl.int8)
        tl.store(out_ptr + row_offs + ch[None, :], out, mask=mask)


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
        y = _dyadic_elements(centered.to(tl.int32), gm, gs, beta, e0, rho, mean, nonzero, A_FRAC, MEAN_FRAC,
                             B_FRAC, BETA_FRAC)
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
    return bool(checks.cached_fact(g, "normalised", lambda: bool(((g == 0) | (g.abs() >= 2**30)).all())))


#: Widest rows the fast ``ptf_layernorm`` takes: its normalised values ``|z| <= sqrt(C - 1) * 2**24``
#: fit int32 (see :func:`_ptf_layernorm_chunked_kernel`); wider rows take the int64 kernel.
MAX_FAST_CHANNELS = 8192


def affine_fits_int32(channels: int, weight_multiplier: torch.Tensor, bias: torch.Tensor,
                      shift: torch.Tensor) -> bool:
    """Whether ``(z * wmult + bias + 2**(shift-1)) >> shift`` fits int32 with room for the zero
    point for every channel and every ``|z| <= sqrt(C - 1) * 2**24`` (read once per tensor set and
    remembered); parameters from :func:`fqvit_kernels.params.layernorm_params` give values near
    the int8 range."""
    z_max = (2 ** LN_NORM_FRAC_BITS) * (math.isqrt(max(channels - 1, 0)) + 1)

    def compute():
        s = shift.to(torch.int64).clamp(1, 63)
        top = z_max * weight_multiplier.to(torch.int64).abs() + bias.to(torch.int64).abs() + (1 << s - 1)
        return bool(((top >> s) + 1 < 2**31 - 256).all())

    return bool(checks.cached_fact(weight_multiplier, ("int32 affine", channels), compute, also=(bias, shift)))


def chunked_config(channels: int):
    """``(CHUNK, N_CHUNKS, ROWS, num_warps)`` of the fast kernel: the widest power-of-two chunk
    up to 256 that divides ``channels`` if it is at least 64 wide (no masks), else 256-wide chunks
    (or one power-of-two chunk for narrow rows) with the tail masked."""
    chunk = min(256, channels & -channels)
    if chunk < 64 and chunk != channels:
        chunk = min(256, pow2_at_least(channels, 16))
    if interpreting():
        return chunk, triton.cdiv(channels, chunk), 16, 4
    return chunk, triton.cdiv(channels, chunk), 8, 4


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
    ptf_alpha, weight_multiplier, bias, shift = (t.contiguous() for t in (ptf_alpha, weight_multiplier, bias, shift))
    if fast_paths_allowed() and c <= MAX_FAST_CHANNELS:
        chunk, n_chunks, rows, num_warps = chunked_config(c)
        with device_guard(x):
            _ptf_layernorm_chunked_kernel[(triton.cdiv(m, rows),)](
                x, out, ptf_alpha, weight_multiplier, bias, shift, m, c,
                int(input_zero_point), int(output_zero_point), int(variance_offset),
                ROWS=rows, CHUNK=chunk, N_CHUNKS=n_chunks, EVEN_C=c % chunk == 0,
                NORM_FRAC_BITS=LN_NORM_FRAC_BITS, OFFSETS_64=(m + rows) * c >= 2**31,
                AFFINE_32=affine_fits_int32(c, weight_multiplier, bias, shift), num_warps=num_warps,
            )
        return out
    block_c, rows, num_warps = launch_config(c)
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
    ptf_alpha, gamma_multiplier, gamma_shift, beta = (t.contiguous() for t in (ptf_alpha, gamma_multiplier,
                                                                                gamma_shift, beta))
    fast = fast_dyadic(gamma_multiplier)
    if fast and c <= MAX_FAST_CHANNELS:
        chunk, n_chunks, rows, num_warps = chunked_config(c)
        with device_guard(x):
            _ptf_layernorm_dyadic_chunked_kernel[(triton.cdiv(m, rows),)](
                x, out, ptf_alpha, gamma_multiplier, gamma_shift, beta, m, c,
                int(input_zero_point), int(output_zero_point),
                ROWS=rows, CHUNK=chunk, N_CHUNKS=n_chunks, EVEN_C=c % chunk == 0,
                OFFSETS_64=(m + rows) * c >= 2**31, num_warps=num_warps, **DYADIC_CONSTEXPRS,
            )
        return out
    block_c, rows, num_warps = launch_config(c)
    grid = (triton.cdiv(m, rows),)
    with device_guard(x):
        _ptf_layernorm_dyadic_kernel[grid](
            x, out, ptf_alpha, gamma_multiplier, gamma_shift, beta, m, c,
            int(input_zero_point), int(output_zero_point),
            ROWS=rows, BLOCK_C=block_c, num_warps=num_warps, FAST=fast,
            **DYADIC_CONSTEXPRS,
        )
    return out


# -- ahead-of-time compile specs (compile_check, static report) ----------------------------------

#: Argument types of the exact LayerNorm kernels besides the ``i32`` sizes and zero points.
ARG_TYPES = dict(x_ptr=I8, out_ptr=I8, alpha_ptr=I32, wmult_ptr=I32, bias_ptr=I64, shift_ptr=I32, variance_offset="i64")
#: Argument types of the dyadic (FQ-ViT formula) kernels.
DYADIC_ARG_TYPES = dict(x_ptr=I8, out_ptr=I8, alpha_ptr=I32, gmult_ptr=I32, gshift_ptr=I32, beta_ptr=I64)


def compile_specs(all_configs: bool = False):
    """Both LayerNorms at small, ViT and wide rows: the one-block kernels (general and fast) and the
    chunked int32 kernels (``all_configs`` adds nothing: the launch config is fixed per width)."""
    for channels in (8, 768, 8192):
        block_c, rows, warps = launch_config(channels)
        for fast in (False, True):
            tag = " fast" if fast else ""
            yield CompileSpec(f"ptf_layernorm{tag} C={channels}", _ptf_layernorm_kernel, ARG_TYPES,
                              dict(ROWS=rows, BLOCK_C=block_c, NORM_FRAC_BITS=LN_NORM_FRAC_BITS, FAST=fast), warps)
            yield CompileSpec(f"ptf_layernorm_dyadic{tag} C={channels}", _ptf_layernorm_dyadic_kernel,
                              DYADIC_ARG_TYPES, dict(ROWS=rows, BLOCK_C=block_c, FAST=fast, **DYADIC_CONSTEXPRS), warps)
    for channels in (1, 200, 768, MAX_FAST_CHANNELS):
        chunk, n_chunks, rows, warps = chunked_config(channels)
        shape = dict(ROWS=rows, CHUNK=chunk, N_CHUNKS=n_chunks, EVEN_C=channels % chunk == 0, OFFSETS_64=channels == 1)
        for affine_32 in (True, False):
            yield CompileSpec(f"ptf_layernorm chunked C={channels}{' affine32' if affine_32 else ''}",
                              _ptf_layernorm_chunked_kernel, ARG_TYPES,
                              dict(shape, NORM_FRAC_BITS=LN_NORM_FRAC_BITS, AFFINE_32=affine_32), warps)
        yield CompileSpec(f"ptf_layernorm_dyadic chunked C={channels}", _ptf_layernorm_dyadic_chunked_kernel,
                          DYADIC_ARG_TYPES, dict(shape, **DYADIC_CONSTEXPRS), warps)
