"""Executable specification of every ``torch.ops.fqvit`` op, in plain PyTorch integer arithmetic.

Each function here defines the bits an op must return; the C++ and Triton kernels are tested
against these with ``torch.equal``. Nothing between the op inputs and outputs is float (the only
float code is :func:`quantize` / :func:`dequantize`, the model boundary). Arithmetic is int64
so that intermediate values can be read off without overflow reasoning; ``docs/numerics.md``
gives the ranges in which every intermediate fits and the narrower widths a kernel may use.

Conventions (shared with ``docs/numerics.md``):

* Activations are FQ-ViT's asymmetric uint8 codes stored as int8 (``stored = code - 128``);
  a ``zero_point`` argument is always in the stored (int8) domain, so the real value of a stored
  activation ``a`` is ``scale * (a - zero_point)``.
* Weights are int8, symmetric, per output channel.
* ``round_shift(v, s)`` is ``floor((v + 2**(s-1)) / 2**s)``: division by ``2**s`` rounding half
  up (towards +inf), the rounding used by every fixed-point requantization here.
* A fixed-point multiplier ``(m, s)`` stands for the real number ``m * 2**-s``.
"""

from __future__ import annotations

import functools
from typing import Optional, Tuple

import torch

from .contract import (  # noqa: F401  (re-exported: reference.X stays valid)
    FLOAT32_BITS, GELU_DIRECTION_SHIFT, GELU_MAX_CELL_BITS, GELU_STEP_SHIFT, LIS_MASKED_CODE, LIS_MAX_LEVEL,
    LIS_THRESHOLD_CAP, LIS_VALUE_SHIFT, LN_DYADIC_A_FRAC_BITS, LN_DYADIC_B_FRAC_BITS, LN_DYADIC_BETA_FRAC_BITS,
    LN_DYADIC_MAX_GAMMA_SHIFT, LN_DYADIC_MAX_N, LN_DYADIC_MEAN_FRAC_BITS, LN_DYADIC_MIN_GAMMA_SHIFT, LN_NORM_FRAC_BITS, MAX_FLOAT32_REQUANT_SHIFT, UNIFORM_EXP_BITS,
)

__all__ = [
    "LIS_MASKED_CODE",
    "LIS_VALUE_SHIFT",
    "round_shift",
    "requantize",
    "isqrt",
    "bit_length",
    "int8_matmul",
    "int8_linear",
    "ptf_layernorm",
    "ptf_layernorm_dyadic",
    "round_half_even_shift",
    "round_to_float32",
    "requantize_float32",
    "float32_code",
    "float32_ratio",
    "lis_level_constants",
    "lis_level_thresholds",
    "gelu_table_lookup",
    "log_int_softmax",
    "log_attn_v",
    "attention_scores",
    "int_attention",
    "int_attention_uniform",
    "uniform_softmax_codes",
    "quantize",
    "dequantize",
]


from .contract import INT8_MAX as _INT8_MAX, INT8_MIN as _INT8_MIN  # noqa: E402


# ----------------------------------------------------------------------------------------------
# Integer primitives
# ----------------------------------------------------------------------------------------------


def round_shift(value: torch.Tensor, shift) -> torch.Tensor:
    """Divide int64 ``value`` by ``2**shift`` rounding half up; ``shift`` (>= 1) may be a tensor."""
    value = value.to(torch.int64)
    if isinstance(shift, torch.Tensor):
        shift = shift.to(torch.int64)
        half = torch.ones_like(shift) << (shift - 1)
    else:
        half = 1 << (int(shift) - 1)
    return (value + half) >> shift


def requantize(acc: torch.Tensor, multiplier, shift, zero_point: int, lo: int = _INT8_MIN,
               hi: int = _INT8_MAX) -> torch.Tensor:
    """``clamp(round_shift(acc * multiplier, shift) + zero_point, lo, hi)`` as int64."""
    if isinstance(multiplier, torch.Tensor):
        multiplier = multiplier.to(torch.int64)
    scaled = round_shift(acc.to(torch.int64) * multiplier, shift)
    return torch.clamp(scaled + zero_point, lo, hi)


def bit_length(value: torch.Tensor) -> torch.Tensor:
    """Number of significant bits of each non-negative int64 (0 for 0), by binary search."""
    value = value.to(torch.int64)
    length = torch.zeros_like(value)
    for step in (32, 16, 8, 4, 2, 1):
        upper = value >> step
        has_upper = upper > 0
        length = length + has_upper.to(torch.int64) * step
        value = torch.where(has_upper, upper, value)
    return length + (value > 0).to(torch.int64)


def isqrt(value: torch.Tensor) -> torch.Tensor:
    """``floor(sqrt(value))`` for int64 ``0 <= value < 2**62``, digit by digit (no float)."""
    rest = value.to(torch.int64).clone()
    root = torch.zeros_like(rest)
    bit = 1 << 60
    while bit:
        trial = root + bit
        take = rest >= trial
        rest = torch.where(take, rest - trial, rest)
        root = torch.where(take, (root >> 1) + bit, root >> 1)
        bit >>= 2
    return root




def round_to_float32(value: torch.Tensor) -> torch.Tensor:
    """int64 ``value`` rounded to 24 significant bits, ties to even: float32's rounding of a number,
    here of a fixed-point number ``value * 2**-s`` whatever ``s`` (the rounding is scale-free)."""
    value = value.to(torch.int64)
    magnitude = value.abs()
    drop = torch.clamp(bit_length(magnitude) - FLOAT32_BITS, min=0)
    rounded = round_half_even_shift(magnitude, drop) << drop
    return torch.where(value < 0, -rounded, rounded)


def float32_code(value: torch.Tensor, shift, zero_point: int) -> torch.Tensor:
    """FQ-ViT's quantizer ``round(x / s + zp)`` evaluated in float32, on the exact ``x / s = value *
    2**-shift`` (``shift`` an int or per-element tensor in 1..52); int8 codes (int64).

    FQ-ViT rounds ``x / s`` to float32, adds the (unsigned) zero point in float32 and rounds half to
    even::

        y = fl32(value * 2**-shift)
        u = fl32(y + zero_point + 128)
        code = clamp(round_half_even(u), 0, 255) - 128

    The two float32 roundings move values within about 2**-17 of a half-integer onto it, where the
    tie goes to the even code. An exact half-up requantization disagrees with FQ-ViT there, and
    such near-ties are not rare: scales calibrated on related tensors (a residual stream before and
    after a block, the attention scores) make some codes land on them systematically. All int64:
    ``|value| < 2**62`` and ``shift <= 52`` keep ``y + (zero_point + 128) * 2**shift`` inside int64.
    """
    shift = torch.as_tensor(shift, dtype=torch.int64, device=value.device)
    y = round_to_float32(value.to(torch.int64))
    u = round_to_float32(y + ((int(zero_point) + 128) << shift))
    code = round_half_even_shift(u, shift)
    return torch.clamp(code, 0, 255) - 128


def requantize_float32(acc: torch.Tensor, multiplier: int, shift: int, zero_point: int) -> torch.Tensor:
    """:func:`float32_code` of ``acc * multiplier * 2**-shift``: FQ-ViT's quantizer applied to the exact
    product, for the attention's scalar requantizations (scores and context)."""
    return float32_code(acc.to(torch.int64) * int(multiplier), shift, zero_point)


def _exact_matmul(a: torch.Tensor, b_t: torch.Tensor) -> torch.Tensor:
    """Exact integer ``a @ b_t`` as int64 for integer-valued inputs whose sums stay below 2**53.

    On CPU this is an int64 matmul. Other devices have no int64 GEMM, so there it is a float64
    GEMM: every product and every partial sum is an integer of magnitude below 2**53, which
    float64 represents exactly, so the result is exact whatever the summation order.
    """
    if a.device.type == "cpu":
        return torch.matmul(a.to(torch.int64), b_t.to(torch.int64))
    return torch.matmul(a.to(torch.float64), b_t.to(torch.float64)).to(torch.int64)


# ----------------------------------------------------------------------------------------------
# GEMMs
# ----------------------------------------------------------------------------------------------


def int8_matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """int8 ``a [M, K]`` times int8 ``b [N, K]`` transposed, int32 ``[M, N]`` (exact)."""
    return _exact_matmul(a, b.t()).to(torch.int32)




def gelu_table_lookup(t: torch.Tensor, table: torch.Tensor, cell_bits: int) -> torch.Tensor:
    """int8 codes of the pre-GELU values ``t`` (int64) from a step table ``table`` (int32 ``[L]``).

    The table describes a staircase ``code(t)`` whose steps are all +1 or -1 (a quantized GELU,
    or any such function). Cell ``i`` covers ``t`` in ``[i * 2**cell_bits, (i + 1) * 2**cell_bits)``
    and holds at most one step; its entry packs ``below`` (int8, bits 0..7), ``direction + 1``
    (bits 8..9; direction -1, 0 or +1) and ``step`` (``0..2**cell_bits``, bits 10..30)::

        code(t) = below + direction * (t - i * 2**cell_bits >= step)

    ``t`` below the table belongs to cell 0, above it to cell ``L - 1``, so cell 0's ``below`` and
    the last cell's ``below + direction`` extend to infinity. A plain look-up table
    ``lut[clamp(t, 0, L - 1)]`` is the case ``cell_bits = 0``, ``direction = 0``.
    """
    cell = torch.clamp(t >> cell_bits, 0, table.numel() - 1)
    entry = table.to(torch.int64)[cell]
    below = ((entry & 0xFF) ^ 0x80) - 0x80
    direction = ((entry >> GELU_DIRECTION_SHIFT) & 3) - 1
    step = entry >> GELU_STEP_SHIFT
    return (below + direction * (t - (cell << cell_bits) >= step).to(torch.int64)).to(torch.int8)


def int8_linear(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    multiplier: torch.Tensor,
    shift: torch.Tensor,
    output_zero_point: int,
    gelu_table: Optional[torch.Tensor] = None,
    gelu_cell_bits: int = 0,
    residual: Optional[torch.Tensor] = None,
    residual_zero_point: int = 0,
    branch_multiplier: Optional[torch.Tensor] = None,
    residual_multiplier: Optional[torch.Tensor] = None,
    residual_shift: Optional[torch.Tensor] = None,
    final_zero_point: int = 0,
) -> torch.Tensor:
    """Quantized linear layer with a fused requantization epilogue; int8 ``[M, N]``.

    ``acc = x @ weight.T`` (exact, int32 range), then per output channel ``n``::

        t = round_shift(acc * multiplier[n] + bias[n], shift[n]) + output_zero_point

    ``bias`` (int64) is added *after* the multiplication, on the output grid with ``shift[n]``
    fractional bits: it holds the layer's float bias and the ``-zp_x * sum_k w`` zero-point
    correction at that precision (:func:`fqvit_kernels.params.linear_params`), so a float bias
    costs no rounding at the accumulator's coarse step. Then one of three epilogues:

    * plain: ``out = clamp(t, -128, 127)``;
    * GELU step table (``gelu_table`` int32 ``[L]``, ``gelu_cell_bits``): ``t`` is an index on a
      fine pre-GELU grid (``output_zero_point`` its offset) and
      ``out = gelu_table_lookup(t, gelu_table, gelu_cell_bits)``;
    * residual (``residual`` int8 ``[M, N]`` and the three per-channel tensors)::

        b   = clamp(t, -128, 127)                       # branch on its own grid (FQ-ViT qact3)
        out = float32_code((b - output_zero_point) * branch_multiplier[n]
                           + (residual - residual_zero_point) * residual_multiplier[n],
                           residual_shift[n], final_zero_point)

      i.e. the residual add re-quantized onto the next PTF grid, rounded as FQ-ViT's float32
      quantizer does (:func:`float32_code`; ``residual_shift <= 52``).
    """
    acc = _exact_matmul(x, weight.t())
    t = round_shift(acc * multiplier.to(torch.int64) + bias.to(torch.int64), shift) + output_zero_point
    if gelu_table is not None:
        return gelu_table_lookup(t, gelu_table, gelu_cell_bits)
    branch = torch.clamp(t, _INT8_MIN, _INT8_MAX)
    if residual is not None:
        mixed = (branch - output_zero_point) * branch_multiplier.to(torch.int64) + (
            residual.to(torch.int64) - residual_zero_point
        ) * residual_multiplier.to(torch.int64)
        branch = float32_code(mixed, residual_shift, final_zero_point)
    return branch.to(torch.int8)


# ----------------------------------------------------------------------------------------------
# PTF LayerNorm
# ----------------------------------------------------------------------------------------------



def ptf_layernorm(
    x: torch.Tensor,
    input_zero_point: int,
    ptf_alpha: torch.Tensor,
    weight_multiplier: torch.Tensor,
    bias: torch.Tensor,
    shift: torch.Tensor,
    output_zero_point: int,
    variance_offset: int = 0,
) -> torch.Tensor:
    """Integer LayerNorm of PTF-quantized int8 rows ``x [M, C]``; int8 ``[M, C]``.

    Channel ``c`` of the input has scale ``s_base * 2**ptf_alpha[c]`` and the shared zero point, so
    ``X_c = (x_c - input_zero_point) << ptf_alpha[c]`` puts every channel on the grid ``s_base``
    (LayerNorm does not depend on ``s_base``). Per row, with ``S1 = sum X``, ``S2 = sum X**2``::

        V = C*S2 - S1**2 + variance_offset  # C**2 * (variance + eps), exact
        D_c = C*X_c - S1                  # C * (X_c - mean), exact
        z_c = D_c / sqrt(V) * 2**24       # normalised value, fixed point (see below)
        out_c = clamp(round_shift(z_c * weight_multiplier[c] + bias[c], shift[c])
                      + output_zero_point, -128, 127)

    ``sqrt(V)`` is taken as ``isqrt(V * 4**p) * 2**-p`` with ``p`` chosen so that the root has 31
    bits, and the per-row division is one reciprocal ``floor(2**62 / root)``. ``variance_offset``
    is the LayerNorm's epsilon on this grid, ``round(C**2 * eps / s_base**2)``
    (:func:`fqvit_kernels.params.layernorm_variance_offset`; 0: no epsilon).
    ``z`` keeps ``LN_NORM_FRAC_BITS = 24`` fraction bits. A row with ``V == 0`` (all channels
    equal) has ``z = 0``: its output is the bias term alone, the limit of a float LayerNorm with a
    vanishing epsilon. ``weight_multiplier * 2**(24 - shift)`` approximates ``gamma / s_out`` (24-bit
    mantissa) and ``bias * 2**-shift`` approximates ``beta / s_out``
    (:func:`fqvit_kernels.params.layernorm_params`).
    """
    channels = x.shape[-1]
    centered = (x.to(torch.int64) - input_zero_point) << ptf_alpha.to(torch.int64)
    sum1 = centered.sum(dim=-1, keepdim=True)
    sum2 = (centered * centered).sum(dim=-1, keepdim=True)
    var_num = channels * sum2 - sum1 * sum1 + int(variance_offset)
    dev_num = channels * centered - sum1

    # p = (62 - bitlen(V)) // 2 puts V * 4**p in [2**60, 2**62): its root has exactly 31 bits.
    p = torch.div(62 - bit_length(var_num), 2, rounding_mode="floor")
    nonzero = var_num > 0
    p = torch.where(nonzero, p, torch.zeros_like(p))
    root = isqrt(var_num << (2 * p))
    reciprocal = torch.where(nonzero, (1 << 62) // torch.clamp(root, min=1), torch.zeros_like(root))
    # dev_num * reciprocal ~ D * 2**(62+p) / sqrt(V); keep LN_NORM_FRAC_BITS fractional bits.
    norm = round_shift(dev_num * reciprocal, 62 - LN_NORM_FRAC_BITS - p)

    affine = norm * weight_multiplier.to(torch.int64) + bias.to(torch.int64)
    out = round_shift(affine, shift) + output_zero_point
    return torch.clamp(out, _INT8_MIN, _INT8_MAX).to(torch.int8)


def round_half_even_shift(value: torch.Tensor, shift) -> torch.Tensor:
    """``round(value / 2**shift)`` with ties to even (``torch.round``'s rule), int64; ``shift >= 0``."""
    value = value.to(torch.int64)
    shift = torch.as_tensor(shift, dtype=torch.int64, device=value.device)
    quot = value >> shift
    rem = value - (quot << shift)
    half = torch.where(shift > 0, torch.ones_like(shift) << torch.clamp(shift - 1, min=0), torch.zeros_like(shift))
    up = (shift > 0) & ((rem > half) | ((rem == half) & ((quot & 1) == 1)))
    return quot + up.to(torch.int64)




def ptf_layernorm_dyadic(
    x: torch.Tensor,
    input_zero_point: int,
    ptf_alpha: torch.Tensor,
    gamma_multiplier: torch.Tensor,
    gamma_shift: torch.Tensor,
    beta: torch.Tensor,
    output_zero_point: int,
) -> torch.Tensor:
    """FQ-ViT's integer LayerNorm (``QIntLayerNorm`` in ``'int'`` mode) on PTF int8 rows; int8 ``[M, C]``.

    FQ-ViT approximates the per-element factor ``A_c = gamma_c / (sigma * s_out)`` by ``M / 2**N``
    with an 8-bit ``M``, rounds the offset ``B_c`` at ``2**N`` and outputs
    ``round((sign(A) * M * X_c + B_c) / 2**N)`` (docs/fqvit.md §3.3; no epsilon, population
    std). ``fake`` mode evaluates that in float32; this is the same computation in exact integer
    arithmetic, so the two differ only where float32 rounding decides (docs/numerics.md). Per row,
    with ``X_c = (x_c - zp) << alpha_c``, ``S1 = sum X``, ``S2 = sum X**2``, ``V = C*S2 - S1**2``::

        R   = isqrt(V * 4**p)  (31 bits),  inv = 2**62 // R        # 1/sqrt(V) = inv * 2**(p-62)
        rho = (C * inv) >> sh  (32 bits)                           # C/sqrt(V) = 1/sigma_X
        mu  = floor(S1 * 2**20 / C)                                # mean of X, 20 fraction bits

    and per element, with ``g_c = gamma_c / s_out = gm_c * 2**-gs_c`` (``gamma_multiplier``,
    ``gamma_shift``; ``|gm|`` in ``{0} U [2**30, 2**31)``)::

        P   = |gm_c| * rho,  A = P * 2**e,  e = sh + p - 62 - gs_c  # |A| = |g_c| / sigma_X
        N   = clamp(7 - floor(log2 A), 0, 31)
        M   = min(floor(A * 2**N), 255)                            # FQ-ViT's get_MN
        AF  = floor(A * 2**(N + F)),  F = 24 - max(floor(log2 A) - 7, 0)   # A * 2**N, < 2**32
        B   = round_half_even(beta_c * 2**(N - 47) - sign * AF * mu * 2**-(F + 20))
        y   = round_half_even((sign * M * X_c + B) / 2**N)
        out = clamp(y + output_zero_point, -128, 127)

    ``beta`` holds ``round(beta_c / s_out * 2**47)``; both terms of ``B`` are carried with 16
    fractional bits (floors), far finer than FQ-ViT's float32 ``B``. A row with ``V == 0`` (all
    channels equal; FQ-ViT: NaN) gives ``round_half_even(beta_c / s_out)``, the LayerNorm of a
    constant row with a vanishing epsilon.
    """
    channels = x.shape[-1]
    centered = (x.to(torch.int64) - input_zero_point) << ptf_alpha.to(torch.int64)
    sum1 = centered.sum(dim=-1, keepdim=True)
    sum2 = (centered * centered).sum(dim=-1, keepdim=True)
    var_num = channels * sum2 - sum1 * sum1
    nonzero = var_num > 0
    p = torch.where(nonzero, torch.div(62 - bit_length(var_num), 2, rounding_mode="floor"), torch.zeros_like(var_num))
    root = isqrt(var_num << (2 * p))
    inv = torch.where(nonzero, (1 << 62) // torch.clamp(root, min=1), torch.zeros_like(root))
    c_inv = channels * inv
    sh = torch.where(nonzero, bit_length(c_inv) - 32, torch.zeros_like(c_inv))
    rho = c_inv >> sh
    mean = torch.div(sum1 << LN_DYADIC_MEAN_FRAC_BITS, channels, rounding_mode="floor")

    gm = gamma_multiplier.to(torch.int64)
    sign = torch.where(gm < 0, -1, 1).to(torch.int64)
    prod = gm.abs() * rho
    e = sh + p - 62 - gamma_shift.to(torch.int64)
    log2_a = torch.where(prod > 0, bit_length(prod) - 1 + e, torch.full_like(prod, -(1 << 20)))
    n = torch.clamp(7 - log2_a, 0, LN_DYADIC_MAX_N)
    m_shift = torch.clamp(-(e + n), 0, 63)
    m = torch.where(log2_a > 7, torch.full_like(prod, 255), prod >> m_shift)
    frac = LN_DYADIC_A_FRAC_BITS - torch.clamp(log2_a - 7, min=0)
    a_fixed = prod >> torch.clamp(-(e + n) - frac, 0, 63)
    mean_term = (sign * a_fixed * mean) >> (frac + LN_DYADIC_MEAN_FRAC_BITS - LN_DYADIC_B_FRAC_BITS)
    beta_term = beta.to(torch.int64) >> (LN_DYADIC_BETA_FRAC_BITS - LN_DYADIC_B_FRAC_BITS - n)
    b = round_half_even_shift(beta_term - mean_term, LN_DYADIC_B_FRAC_BITS)
    y = round_half_even_shift(sign * m * centered + b, n)
    constant = round_half_even_shift(beta.to(torch.int64), LN_DYADIC_BETA_FRAC_BITS).expand_as(y)
    y = torch.where(nonzero, y, constant)
    return torch.clamp(y + output_zero_point, _INT8_MIN, _INT8_MAX).to(torch.int8)


# ----------------------------------------------------------------------------------------------
# Log-Int-Softmax and attention
# ----------------------------------------------------------------------------------------------


def _round_half_even_div(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """``round(num / den)`` with ties to even, for int64 ``num >= 0``, ``den > 0``."""
    quot = torch.div(num, den, rounding_mode="floor")
    twice_rem = 2 * (num - quot * den)
    up = (twice_rem > den) | ((twice_rem == den) & (quot % 2 == 1))
    return quot + up.to(torch.int64)


def _lis_exponents(values: torch.Tensor, exp_table: torch.Tensor) -> torch.Tensor:
    """``exp_table[max + 128, max - s_j]`` for int64 scores ``values`` (row max along the last dim)."""
    row_max = values.amax(dim=-1, keepdim=True)
    index = (row_max + 128) * 256 + (row_max - values)
    return exp_table.to(torch.int64).reshape(-1)[index]


def float32_ratio(total: torch.Tensor, exps: torch.Tensor) -> torch.Tensor:
    """``round_half_even(fl32(fl32(E) / e))`` for int64 ``E >= e > 0``: FQ-ViT's
    ``torch.round(exp_sum / exp_int)`` in float32, evaluated exactly in integers (``e`` as given; FQ-ViT's
    exponents are float32 integers already).

    ``fl32(E)`` rounds the exact sum to 24 significant bits (FQ-ViT sums in float32; the exact sum
    rounded once agrees with it but in rare order-dependent cases), the quotient ``q = fl32(E) / e``
    (at least 1) is rounded to 24 significant bits and then to an integer, ties to even both times.
    """
    total = round_to_float32(total.to(torch.int64))
    exps = exps.to(torch.int64)
    quot = torch.div(total, exps, rounding_mode="floor")
    rem = total - quot * exps
    bits = bit_length(quot)
    # Quotients of 24 bits or more: round at integer bit p = bits - 24 (the remainder is sticky).
    p = torch.clamp(bits - FLOAT32_BITS, min=0)
    low = quot & ((torch.ones_like(p) << p) - 1)
    half = torch.where(p > 0, torch.ones_like(p) << torch.clamp(p - 1, min=0), torch.zeros_like(p))
    odd = ((quot >> p) & 1) == 1
    # (Comparisons of 2 * r with e are written r against e - r: r < e < 2**63, so 2 * r may overflow.)
    up_int = torch.where(p > 0, (low > half) | ((low == half) & ((rem > 0) | odd)),
                         (rem > exps - rem) | ((rem == exps - rem) & odd))
    big = ((quot >> p) + up_int.to(torch.int64)) << p
    # Shorter quotients keep f = 24 - bits fraction bits: long division, one bit at a time. (A
    # quotient below 1, possible when fl32(E) rounds below an e that is not a float32, is at least
    # 1 - 2**-24: its 24 bits are all fraction bits.)
    frac_bits = torch.clamp(FLOAT32_BITS - bits, min=0)
    fixed = quot.clone()
    r = rem.clone()
    for i in range(FLOAT32_BITS):
        active = i < frac_bits
        bit = (r >= exps - r) & active
        fixed = torch.where(active, 2 * fixed + bit.to(torch.int64), fixed)
        r = torch.where(active, torch.where(bit, r - (exps - r), 2 * r), r)
    up_frac = (r > exps - r) | ((r == exps - r) & ((fixed & 1) == 1))
    small = round_half_even_shift(fixed + up_frac.to(torch.int64), frac_bits)
    return torch.where(bits >= FLOAT32_BITS, big, small)




def _ratio_for_level(level: int) -> int:
    """Smallest ``R`` whose log2 code is at least ``level``: 2, then ``3 * 2**(level - 2)``."""
    return 2 if level == 1 else 3 << (level - 2)


@functools.lru_cache(maxsize=None)
def lis_level_constants() -> Tuple[Tuple[int, int, bool], ...]:
    """``(P, S, inclusive)`` per code level ``c = 1..LIS_MAX_LEVEL`` (index ``c - 1``).

    ``code >= c`` iff ``R = float32_ratio(E, e) >= T_c`` (``T_1 = 2``, ``T_c = 3 * 2**(c-2)``; the log2
    rounding at ``1.5 * 2**m``), and since ``R`` is ``round(fl32(fl32(E) / e))`` that holds iff the
    exact quotient ``fl32(E) / e`` reaches ``L_c = P * 2**-S``: the midpoint below the smallest
    float32 ``V`` that rounds to an integer ``>= T_c`` (``q >= L`` when ties round up to ``V``, i.e.
    ``V`` has an even mantissa, else ``q > L``). So per row ``code >= c`` iff ``e <= U_c`` with
    ``U_c = floor(fl32(E) / L_c)`` (minus one where ``q == L`` is excluded and exact): a threshold per
    row and level replaces the per-score division (:func:`lis_level_thresholds`).
    """
    from fractions import Fraction

    out = []
    for level in range(1, LIS_MAX_LEVEL + 1):
        target = _ratio_for_level(level)
        if target < 2**23:  # T - 1/2 is a float32: ties at it round to even
            half = torch.tensor(target - 0.5, dtype=torch.float32)
            v = half if target % 2 == 0 else torch.nextafter(half, torch.tensor(float("inf")))
        else:  # float32 integers only: the smallest float32 >= T
            v = torch.tensor(float(target), dtype=torch.float32)
            if int(v.item()) < target:
                v = torch.nextafter(v, torch.tensor(float("inf")))
        below = torch.nextafter(v, torch.tensor(0.0))
        mid = (Fraction(v.item()) + Fraction(below.item())) / 2
        even = (v.view(torch.int32).item() & 1) == 0
        denominator = mid.denominator
        shift = denominator.bit_length() - 1
        assert denominator == 1 << shift
        out.append((int(mid.numerator), int(shift), bool(even)))
    return tuple(out)


def lis_level_thresholds(total: torch.Tensor, levels: int) -> torch.Tensor:
    """``U_c`` for ``c = 1..levels`` of int64 row sums ``total [...]``: ``[..., levels]`` int64, capped at
    ``LIS_THRESHOLD_CAP``; ``e <= U_c`` iff ``float32_ratio(total, e) >= T_c`` for ``1 <= e <= total``."""
    rounded = round_to_float32(total.to(torch.int64))
    out = []
    for numerator, shift, inclusive in lis_level_constants()[:levels]:
        # floor(rounded * 2**shift / numerator), exact: rounded = mant * 2**k with mant < 2**25.
        k = torch.clamp(bit_length(rounded) - 25, min=0)  # <= 38: every step below stays in int64
        mant = rounded >> k
        a = mant << shift
        q0, r0 = torch.div(a, numerator, rounding_mode="floor"), torch.remainder(a, numerator)
        k1 = torch.clamp(k, max=30)
        t1 = r0 << k1
        q1, r1 = torch.div(t1, numerator, rounding_mode="floor"), torch.remainder(t1, numerator)
        t2 = r1 << (k - k1)
        q2, r2 = torch.div(t2, numerator, rounding_mode="floor"), torch.remainder(t2, numerator)
        huge = q0 >= ((1 << 62) >> k)  # then the exact threshold is >= 2**62 - 1
        u = (q0 << k) + (q1 << (k - k1)) + q2
        if not inclusive:
            u = u - (r2 == 0).to(torch.int64)
        out.append(torch.where(huge, torch.full_like(u, LIS_THRESHOLD_CAP), torch.clamp(u, max=LIS_THRESHOLD_CAP)))
    return torch.stack(out, dim=-1)


def log_int_softmax(scores: torch.Tensor, exp_table: torch.Tensor, bits: int = 4) -> torch.Tensor:
    """FQ-ViT Log-Int-Softmax of int8 scores on the 8-bit score grid; uint8 codes, same shape.

    Along the last dim (keys), with the row maximum ``m`` and ``d_j = m - scores_j`` in 0..255::

        e_j = exp_table[m + 128, d_j]     # FQ-ViT's integer exponent (I-BERT polynomial, n = 30)
        E   = sum_j e_j
        R_j = float32_ratio(E, e_j)       # round(E / e_j) as FQ-ViT computes it in float32; >= 1
        m_j = floor(log2 R_j)
        k_j = m_j + (bit m_j - 1 of R_j)  # log2 rounding at 1.5 * 2**m
        code_j = k_j                      if e_j > 0 and k_j < 2**bits
               = LIS_MASKED_CODE (255)    otherwise (FQ-ViT's mask: probability 0)

    The probability FQ-ViT uses is ``2**-code`` (0 for the masked code). The table is indexed by
    the row maximum as well as the distance because FQ-ViT feeds its exponent the dequantized
    score divided by the scale in float32, which is not always the integer code: the table
    (:func:`fqvit_kernels.params.lis_exp_table`) holds the exponent of exactly those float values;
    its entries are float32-representable integers (at most 24 significant bits), as FQ-ViT's are.
    Entries with ``d > m + 128`` are never read.
    """
    exps = _lis_exponents(scores.to(torch.int64), exp_table)
    total = exps.sum(dim=-1, keepdim=True)
    positive = exps > 0
    ratio = float32_ratio(total.expand_as(exps), torch.where(positive, exps, torch.ones_like(exps)))
    msb = bit_length(ratio) - 1
    below = torch.clamp(msb - 1, min=0)
    next_bit = ((ratio >> below) & 1) * (msb >= 1).to(torch.int64)
    code = msb + next_bit
    valid = positive & (code < (1 << bits))
    return torch.where(valid, code, torch.full_like(code, LIS_MASKED_CODE)).to(torch.uint8)


def _lis_weights(codes: torch.Tensor) -> torch.Tensor:
    """``2**(15 - code)`` for codes 0..15, 0 for larger codes (masked); int64."""
    codes = codes.to(torch.int64)
    keep = codes <= LIS_VALUE_SHIFT
    return torch.where(keep, 1 << (LIS_VALUE_SHIFT - torch.clamp(codes, max=LIS_VALUE_SHIFT)),
                       torch.zeros_like(codes))


def log_attn_v(codes: torch.Tensor, v: torch.Tensor, v_zero_point: int) -> torch.Tensor:
    """attn @ V with log2 codes ``[..., Nq, Nk]`` and int8 ``v [..., Nk, D]``; int32 ``[..., Nq, D]``.

    ``out[i, d] = sum_j (v[j, d] - v_zero_point) * 2**(15 - codes[i, j])`` (codes > 15 add 0):
    FQ-ViT's shift ``V >> k`` scaled by ``2**15`` so nothing is truncated.
    """
    weights = _lis_weights(codes)
    centered = v.to(torch.int64) - v_zero_point
    return _exact_matmul(weights, centered).to(torch.int32)


def attention_scores(q: torch.Tensor, k: torch.Tensor, qkv_zero_point: int, score_multiplier: int,
                     score_shift: int, score_zero_point: int) -> torch.Tensor:
    """int8 scores ``[..., Nq, Nk]`` on the softmax input grid (FQ-ViT ``qact_attn1``).

    ``requantize_float32((q - zp) @ (k - zp).T, score_multiplier, score_shift, score_zero_point)``:
    ``score_multiplier * 2**-score_shift`` approximates ``s_qkv**2 / sqrt(D) / s_score`` and the
    rounding is FQ-ViT's float32 one (:func:`requantize_float32`).
    """
    q_c = q.to(torch.int64) - qkv_zero_point
    k_c = k.to(torch.int64) - qkv_zero_point
    acc = _exact_matmul(q_c, k_c.transpose(-1, -2))
    return requantize_float32(acc, score_multiplier, score_shift, score_zero_point).to(torch.int8)


def int_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    qkv_zero_point: int,
    score_multiplier: int,
    score_shift: int,
    score_zero_point: int,
    exp_table: torch.Tensor,
    out_multiplier: int,
    out_shift: int,
    out_zero_point: int,
) -> torch.Tensor:
    """Integer attention of int8 ``q, k, v [B, H, N, D]`` (one zero point); int8 ``[B, H, N, D]``.

    The composition :func:`attention_scores` → :func:`log_int_softmax` (4-bit) →
    :func:`log_attn_v` → ``requantize_float32(., out_multiplier, out_shift, out_zero_point)``,
    where ``out_multiplier * 2**-out_shift`` approximates ``s_qkv * 2**-15 / s_out``. The result
    is laid out in memory as ``[B, N, H, D]`` (a permuted view), so the projection can read it as
    ``[B*N, H*D]`` without a copy.
    """
    scores = attention_scores(q, k, qkv_zero_point, score_multiplier, score_shift, score_zero_point)
    codes = log_int_softmax(scores, exp_table, bits=4)
    context = log_attn_v(codes, v, qkv_zero_point)
    out = requantize_float32(context, out_multiplier, out_shift, out_zero_point).to(torch.int8)
    return out.transpose(1, 2).contiguous().transpose(1, 2)




def uniform_softmax_codes(scores: torch.Tensor, exp_table: torch.Tensor, inv_softmax_multiplier: int,
                          inv_softmax_shift: int, softmax_zero_point: int) -> torch.Tensor:
    """Integer softmax of int8 scores along the last dim, quantized to uint8 codes (no LIS).

    Per row, with the distance ``d_j = max - s_j`` in ``[0, 255]`` and ``e_j = exp_table[d_j]``
    (``round(2**20 * exp(-d * s_score))``, :data:`UNIFORM_EXP_BITS`)::

        E      = sum_j e_j
        code_j = clamp(floor((2 e_j m + E 2**s) / (2 E 2**s)) + zp, 0, 255)

    i.e. ``e_j / E / s_softmax`` rounded half up, with ``m * 2**-s`` (``inv_softmax_multiplier``,
    ``inv_softmax_shift``) approximating ``1 / s_softmax`` and ``zp`` FQ-ViT's uint8 zero point of
    the softmax output (``softmax_zero_point``, in ``[0, 255]``). Every intermediate fits int64 under
    the op's limits (docs/numerics.md).
    """
    s = scores.to(torch.int64)
    dist = s.amax(dim=-1, keepdim=True) - s
    e = exp_table.to(torch.int64)[dist]
    total = e.sum(dim=-1, keepdim=True)
    num = e * int(inv_softmax_multiplier)
    den = total << int(inv_softmax_shift)
    code = torch.div(2 * num + den, 2 * den, rounding_mode="floor") + int(softmax_zero_point)
    return torch.clamp(code, 0, 255).to(torch.uint8)


def int_attention_uniform(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    qkv_zero_point: int,
    score_multiplier: int,
    score_shift: int,
    score_zero_point: int,
    exp_table: torch.Tensor,
    inv_softmax_multiplier: int,
    inv_softmax_shift: int,
    softmax_zero_point: int,
    out_multiplier: int,
    out_shift: int,
    out_zero_point: int,
) -> torch.Tensor:
    """Integer attention with FQ-ViT's uniform 8-bit softmax (no LIS) of int8 ``q, k, v [B, H, N, D]``.

    The composition :func:`attention_scores` → :func:`uniform_softmax_codes` →
    ``sum_j (code_ij - softmax_zero_point) * (v_jd - qkv_zero_point)`` (exact, int64) →
    ``requantize_float32(., out_multiplier, out_shift, out_zero_point)``, where
    ``out_multiplier * 2**-out_shift`` approximates ``s_qkv * s_softmax / s_out``. Laid out in
    memory as ``[B, N, H, D]`` like :func:`int_attention`.
    """
    scores = attention_scores(q, k, qkv_zero_point, score_multiplier, score_shift, score_zero_point)
    codes = uniform_softmax_codes(scores, exp_table, inv_softmax_multiplier, inv_softmax_shift, softmax_zero_point)
    weights = codes.to(torch.int64) - int(softmax_zero_point)
    context = _exact_matmul(weights, v.to(torch.int64) - qkv_zero_point)
    out = requantize_float32(context, out_multiplier, out_shift, out_zero_point).to(torch.int8)
    return out.transpose(1, 2).contiguous().transpose(1, 2)


# ----------------------------------------------------------------------------------------------
# Model boundary (float <-> int8)
# ----------------------------------------------------------------------------------------------


def quantize(x: torch.Tensor, scale: torch.Tensor, zero_point: int) -> torch.Tensor:
    """Float → int8 exactly as FQ-ViT's uniform uint8 quantizer, stored as ``code - 128``.

    ``code = clamp(round(x / scale + (zero_point + 128)), 0, 255)`` in float32 (half to even), with
    ``scale`` a scalar or one value per channel (last dim, PTF).
    """
    code = torch.round(x.to(torch.float32) / scale.to(torch.float32) + float(zero_point + 128))
    return (torch.clamp(code, 0, 255) - 128).to(torch.int8)


def dequantize(x: torch.Tensor, scale: torch.Tensor, zero_point: int) -> torch.Tensor:
    """int8 → float32 ``(x - zero_point) * scale`` (scale scalar or per channel, last dim)."""
    return (x.to(torch.int32) - zero_point).to(torch.float32) * scale.to(torch.float32)
