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

from typing import Optional

import torch

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
    "log_int_softmax",
    "log_attn_v",
    "attention_scores",
    "int_attention",
    "quantize",
    "dequantize",
]

#: Code written by :func:`log_int_softmax` for a probability that FQ-ViT rounds to zero.
LIS_MASKED_CODE = 255
#: :func:`log_attn_v` weights a code ``k`` by ``2**(LIS_VALUE_SHIFT - k)`` (exact for 4-bit codes).
LIS_VALUE_SHIFT = 15

_INT8_MIN, _INT8_MAX = -128, 127


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


def int8_linear(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    multiplier: torch.Tensor,
    shift: torch.Tensor,
    output_zero_point: int,
    gelu_lut: Optional[torch.Tensor] = None,
    residual: Optional[torch.Tensor] = None,
    residual_zero_point: int = 0,
    branch_multiplier: Optional[torch.Tensor] = None,
    residual_multiplier: Optional[torch.Tensor] = None,
    residual_shift: Optional[torch.Tensor] = None,
    final_zero_point: int = 0,
) -> torch.Tensor:
    """Quantized linear layer with a fused requantization epilogue; int8 ``[M, N]``.

    ``acc = x @ weight.T + bias`` (int32; ``bias`` already holds the quantized float bias and the
    ``-zp_x * sum_k w`` zero-point correction, see :func:`fqvit_kernels.params.fold_linear_bias`),
    then per output channel ``n``::

        t = round_shift(acc * multiplier[n], shift[n]) + output_zero_point

    and one of three epilogues:

    * plain: ``out = clamp(t, -128, 127)``;
    * GELU table (``gelu_lut`` int8 ``[L]``): ``out = gelu_lut[clamp(t, 0, L - 1)]`` — ``t`` is then
      an index on the pre-GELU grid and ``output_zero_point`` its offset;
    * residual (``residual`` int8 ``[M, N]`` and the three per-channel tensors)::

        b   = clamp(t, -128, 127)                       # branch on its own grid (FQ-ViT qact3)
        out = clamp(round_shift((b - output_zero_point) * branch_multiplier[n]
                                + (residual - residual_zero_point) * residual_multiplier[n],
                                residual_shift[n]) + final_zero_point, -128, 127)

      i.e. the residual add re-quantized onto the next PTF grid.
    """
    acc = _exact_matmul(x, weight.t()) + bias.to(torch.int64)
    t = round_shift(acc * multiplier.to(torch.int64), shift) + output_zero_point
    if gelu_lut is not None:
        index = torch.clamp(t, 0, gelu_lut.numel() - 1)
        return gelu_lut[index]
    branch = torch.clamp(t, _INT8_MIN, _INT8_MAX)
    if residual is not None:
        mixed = (branch - output_zero_point) * branch_multiplier.to(torch.int64) + (
            residual.to(torch.int64) - residual_zero_point
        ) * residual_multiplier.to(torch.int64)
        branch = torch.clamp(round_shift(mixed, residual_shift) + final_zero_point, _INT8_MIN, _INT8_MAX)
    return branch.to(torch.int8)


# ----------------------------------------------------------------------------------------------
# PTF LayerNorm
# ----------------------------------------------------------------------------------------------

#: Fractional bits of the normalised value ``(x - mean) / std`` inside :func:`ptf_layernorm`.
LN_NORM_FRAC_BITS = 16


def ptf_layernorm(
    x: torch.Tensor,
    input_zero_point: int,
    ptf_alpha: torch.Tensor,
    weight_multiplier: torch.Tensor,
    bias: torch.Tensor,
    shift: torch.Tensor,
    output_zero_point: int,
) -> torch.Tensor:
    """Integer LayerNorm of PTF-quantized int8 rows ``x [M, C]``; int8 ``[M, C]``.

    Channel ``c`` of the input has scale ``s_base * 2**ptf_alpha[c]`` and the shared zero point, so
    ``X_c = (x_c - input_zero_point) << ptf_alpha[c]`` puts every channel on the grid ``s_base``
    (LayerNorm does not depend on ``s_base``). Per row, with ``S1 = sum X``, ``S2 = sum X**2``::

        V = C*S2 - S1**2                  # C**2 * variance, exact
        D_c = C*X_c - S1                  # C * (X_c - mean), exact
        z_c = D_c / sqrt(V) * 2**16       # normalised value, fixed point (see below)
        out_c = clamp(round_shift(z_c * weight_multiplier[c] + bias[c], shift[c])
                      + output_zero_point, -128, 127)

    ``sqrt(V)`` is taken as ``isqrt(V * 4**p) * 2**-p`` with ``p`` chosen so that the root has 31
    bits, and the per-row division is one reciprocal ``floor(2**62 / root)``; no epsilon is added
    (as in FQ-ViT's integer LayerNorm). A row with ``V == 0`` (all channels equal) has ``z = 0``:
    its output is the bias term alone, the limit of a float LayerNorm with a vanishing epsilon.
    ``weight_multiplier * 2**(16 - shift)`` approximates ``gamma / s_out`` and
    ``bias * 2**-shift`` approximates ``beta / s_out``
    (:func:`fqvit_kernels.params.layernorm_params`).
    """
    channels = x.shape[-1]
    centered = (x.to(torch.int64) - input_zero_point) << ptf_alpha.to(torch.int64)
    sum1 = centered.sum(dim=-1, keepdim=True)
    sum2 = (centered * centered).sum(dim=-1, keepdim=True)
    var_num = channels * sum2 - sum1 * sum1
    dev_num = channels * centered - sum1

    # p = (62 - bitlen(V)) // 2 puts V * 4**p in [2**60, 2**62): its root has exactly 31 bits.
    p = torch.div(62 - bit_length(var_num), 2, rounding_mode="floor")
    nonzero = var_num > 0
    p = torch.where(nonzero, p, torch.zeros_like(p))
    root = isqrt(var_num << (2 * p))
    reciprocal = torch.where(nonzero, (1 << 62) // torch.clamp(root, min=1), torch.zeros_like(root))
    # dev_num * reciprocal ~ D * 2**(62+p) / sqrt(V); keep 16 fractional bits.
    norm = round_shift(dev_num * reciprocal, 62 - LN_NORM_FRAC_BITS - p)

    affine = norm * weight_multiplier.to(torch.int64) + bias.to(torch.int64)
    out = round_shift(affine, shift) + output_zero_point
    return torch.clamp(out, _INT8_MIN, _INT8_MAX).to(torch.int8)


# ----------------------------------------------------------------------------------------------
# Log-Int-Softmax and attention
# ----------------------------------------------------------------------------------------------


def _round_half_even_div(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """``round(num / den)`` with ties to even, for int64 ``num >= 0``, ``den > 0``."""
    quot = torch.div(num, den, rounding_mode="floor")
    twice_rem = 2 * (num - quot * den)
    up = (twice_rem > den) | ((twice_rem == den) & (quot % 2 == 1))
    return quot + up.to(torch.int64)


def log_int_softmax(scores: torch.Tensor, exp_table: torch.Tensor, bits: int = 4) -> torch.Tensor:
    """FQ-ViT Log-Int-Softmax of int8 scores on the 8-bit score grid; uint8 codes, same shape.

    Along the last dim (keys), with ``d_j = max_i scores_i - scores_j`` in 0..255::

        e_j = exp_table[d_j]              # FQ-ViT's integer exponent (I-BERT polynomial, n = 30)
        E   = sum_j e_j
        R_j = round(E / e_j)              # half to even; >= 1
        m_j = floor(log2 R_j)
        k_j = m_j + (bit m_j - 1 of R_j)  # log2 rounding at 1.5 * 2**m
        code_j = k_j                      if e_j > 0 and k_j < 2**bits
               = LIS_MASKED_CODE (255)    otherwise (FQ-ViT's mask: probability 0)

    The softmax probability FQ-ViT uses is ``2**-code`` (0 for the masked code). The table comes
    from :func:`fqvit_kernels.params.lis_exp_table`.
    """
    values = scores.to(torch.int64)
    distance = values.amax(dim=-1, keepdim=True) - values
    exps = exp_table.to(torch.int64)[distance]
    total = exps.sum(dim=-1, keepdim=True)
    positive = exps > 0
    ratio = _round_half_even_div(total.expand_as(exps), torch.where(positive, exps, torch.ones_like(exps)))
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

    ``clamp(round_shift(((q - zp) @ (k - zp).T) * score_multiplier, score_shift)
    + score_zero_point, -128, 127)``; ``score_multiplier * 2**-score_shift`` approximates
    ``s_qkv**2 / sqrt(D) / s_score``.
    """
    q_c = q.to(torch.int64) - qkv_zero_point
    k_c = k.to(torch.int64) - qkv_zero_point
    acc = _exact_matmul(q_c, k_c.transpose(-1, -2))
    return requantize(acc, score_multiplier, score_shift, score_zero_point).to(torch.int8)


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
    :func:`log_attn_v` → ``clamp(round_shift(. * out_multiplier, out_shift) + out_zero_point)``,
    where ``out_multiplier * 2**-out_shift`` approximates ``s_qkv * 2**-15 / s_out``. The result
    is laid out in memory as ``[B, N, H, D]`` (a permuted view), so the projection can read it as
    ``[B*N, H*D]`` without a copy.
    """
    scores = attention_scores(q, k, qkv_zero_point, score_multiplier, score_shift, score_zero_point)
    codes = log_int_softmax(scores, exp_table, bits=4)
    context = log_attn_v(codes, v, qkv_zero_point)
    out = requantize(context, out_multiplier, out_shift, out_zero_point).to(torch.int8)
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
