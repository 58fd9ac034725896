"""Conversion helpers: float scales and weights → the integer parameters the ops take.

These run once, at conversion time, and are the only place where float scales meet the integer
world. Every helper validates its inputs (positive finite scales, representable ranges) and
raises ``ValueError`` naming the argument; see ``docs/numerics.md`` for the formulas' derivation.
"""

from __future__ import annotations

from typing import Sequence, Tuple, Union

import math
from typing import NamedTuple

import torch

from . import reference
from .contract import (  # noqa: F401 (re-exported)
    GELU_ARGMIN, GELU_CELL_SLOPE, GELU_MAX_SLOPE, LN_WEIGHT_BITS, MAX_PTF_ALPHA, MAX_SHIFT, MAX_VARIANCE_OFFSET, MIN_SHIFT,
    MULTIPLIER_BITS,
)
from .quant.quantizers import LIS_COEF, LIS_X0, int_exp_float

__all__ = [
    "MULTIPLIER_BITS",
    "fixed_point_multiplier",
    "fixed_point_multipliers",
    "shared_shift_multipliers",
    "linear_params",
    "max_linear_bias",
    "layernorm_params",
    "layernorm_variance_offset",
    "layernorm_dyadic_params",
    "ptf_alpha",
    "lis_exp_table",
    "uniform_exp_table",
    "GeluTable",
    "gelu_table",
    "gelu_table_from_lut",
]


FloatLike = Union[float, torch.Tensor]


def _check_positive_finite(name: str, values: torch.Tensor) -> None:
    if values.numel() == 0:
        raise ValueError(f"{name} is empty")
    if not torch.isfinite(values).all():
        raise ValueError(f"{name} must be finite, got {values.flatten()[:8].tolist()}")
    if not (values > 0).all():
        raise ValueError(f"{name} must be > 0, got min {values.min().item()}")


def _as_float64(name: str, value: FloatLike) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        if value.is_complex() or not (value.is_floating_point() or value.dtype in (torch.int32, torch.int64)):
            raise TypeError(f"{name} must be a real number or tensor, got dtype {value.dtype}")
        return value.detach().to("cpu", torch.float64)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a real number or tensor, got {type(value).__name__}")
    return torch.tensor(float(value), dtype=torch.float64)


def fixed_point_multiplier(real: float, name: str = "real") -> Tuple[int, int]:
    """``(m, s)`` with ``m`` in ``[2**30, 2**31)`` and ``m * 2**-s`` the nearest such to ``real > 0``.

    The relative error is at most ``2**-31``. ``real`` must lie in ``[2**-31, 2**30)`` so that the
    shift stays in ``[1, 62]``.
    """
    value = _as_float64(name, real)
    if value.numel() != 1:
        raise ValueError(f"{name} must be a single number, got shape {tuple(value.shape)}")
    mult, shift = fixed_point_multipliers(value.reshape(1), name=name)
    return int(mult[0]), int(shift[0])


def fixed_point_multipliers(real: FloatLike, name: str = "real") -> Tuple[torch.Tensor, torch.Tensor]:
    """Vector form of :func:`fixed_point_multiplier`: int32 multipliers and int32 shifts."""
    value = _as_float64(name, real).reshape(-1)
    _check_positive_finite(name, value)
    mantissa, exponent = torch.frexp(value)  # value = mantissa * 2**exponent, mantissa in [0.5, 1)
    mult = torch.round(mantissa * 2.0**MULTIPLIER_BITS).to(torch.int64)
    overflow = mult == 2**MULTIPLIER_BITS
    mult = torch.where(overflow, mult >> 1, mult)
    exponent = exponent.to(torch.int64) + overflow.to(torch.int64)
    shift = MULTIPLIER_BITS - exponent
    _check_shift(name, shift, value)
    return mult.to(torch.int32), shift.to(torch.int32)


def _check_shift(name: str, shift: torch.Tensor, value: torch.Tensor) -> None:
    bad = (shift < MIN_SHIFT) | (shift > MAX_SHIFT)
    if bad.any():
        worst = value[bad][0].item()
        raise ValueError(
            f"{name}={worst:g} is outside the fixed-point range [2**-31, 2**30) "
            "(check the scales it was computed from)"
        )


def shared_shift_multipliers(first: FloatLike, second: FloatLike, names: Sequence[str] = ("first", "second")):
    """Per-channel multipliers ``m1, m2`` with one shift ``s`` so that ``m_i * 2**-s ≈ r_i``.

    The shift is set by ``max(r1, r2)`` (its multiplier gets 31 bits); the smaller ratio keeps
    ``31 - log2(r_max / r_min)`` bits. Used by the residual epilogue of ``int8_linear``.
    Returns int32 ``(m1, m2, s)``.
    """
    r1 = _as_float64(names[0], first).reshape(-1)
    r2 = _as_float64(names[1], second).reshape(-1)
    if r1.numel() == 1 and r2.numel() > 1:
        r1 = r1.expand_as(r2)
    if r2.numel() == 1 and r1.numel() > 1:
        r2 = r2.expand_as(r1)
    if r1.shape != r2.shape:
        raise ValueError(f"{names[0]} and {names[1]} must have the same length, got {r1.numel()} and {r2.numel()}")
    _check_positive_finite(names[0], r1)
    _check_positive_finite(names[1], r2)
    _, shift = fixed_point_multipliers(torch.maximum(r1, r2), name=f"max({names[0]}, {names[1]})")
    scale = torch.ldexp(torch.ones_like(r1), shift.to(torch.int64))
    m1 = torch.round(r1 * scale).to(torch.int64)
    m2 = torch.round(r2 * scale).to(torch.int64)
    return m1.to(torch.int32), m2.to(torch.int32), shift


def max_linear_bias(k: int) -> int:
    """Largest ``|bias|`` of ``int8_linear`` for reduction depth ``k``: ``acc * multiplier + bias`` and
    the rounding half ``2**(shift - 1)`` must stay inside int64 (``|acc| <= 128 * 128 * k``)."""
    return 2**62 - 128 * 128 * k * (2**31 - 1)


def linear_params(weight_int8: torch.Tensor, weight_scale: FloatLike, input_scale: FloatLike,
                  input_zero_point: int, output_scale: FloatLike, bias: torch.Tensor | None = None):
    """``(bias int64 [N], multiplier int32 [N], shift int32 [N])`` of ``int8_linear``.

    ``multiplier[n] * 2**-shift[n] ≈ s_x * s_w[n] / s_out`` and, on the same fixed-point grid,
    ``bias[n] = round(b[n] / s_out * 2**shift[n]) - zp_x * sum_k w[n, k] * multiplier[n]``: the float
    bias keeps ``shift`` fractional bits of an output step (FQ-ViT adds it in float), and the
    zero-point term turns ``x @ w.T`` on stored activations into ``(x - zp_x) @ w.T`` exactly.
    """
    if not isinstance(weight_int8, torch.Tensor) or weight_int8.dtype != torch.int8 or weight_int8.dim() != 2:
        raise TypeError(f"weight_int8 must be a 2-D int8 tensor, got {getattr(weight_int8, 'dtype', type(weight_int8))}")
    out_features, k = weight_int8.shape
    s_x = _as_float64("input_scale", input_scale).reshape(-1)
    s_w = _as_float64("weight_scale", weight_scale).reshape(-1)
    s_out = _as_float64("output_scale", output_scale).reshape(-1)
    for name, value in (("input_scale", s_x), ("weight_scale", s_w), ("output_scale", s_out)):
        _check_positive_finite(name, value)
    if s_x.numel() != 1 or s_out.numel() != 1:
        raise ValueError("input_scale and output_scale must be single numbers (per-tensor activations)")
    if s_w.numel() not in (1, out_features):
        raise ValueError(f"weight_scale must have 1 or {out_features} values, got {s_w.numel()}")
    if isinstance(input_zero_point, bool) or not isinstance(input_zero_point, int):
        raise TypeError(f"input_zero_point must be an int, got {type(input_zero_point).__name__}")
    mult, shift = fixed_point_multipliers((s_x * s_w / s_out).expand(out_features), "requant ratio s_x * s_w / s_out")
    row_sums = weight_int8.to(torch.int64).sum(dim=1).cpu()
    folded = -int(input_zero_point) * row_sums * mult.to(torch.int64)
    if bias is not None:
        b = _as_float64("bias", bias).reshape(-1)
        if b.numel() != out_features:
            raise ValueError(f"bias must have {out_features} values, got {b.numel()}")
        if not torch.isfinite(b).all():
            raise ValueError("bias must be finite")
        scaled = torch.ldexp(b / s_out, shift.to(torch.int64))
        limit = max_linear_bias(k)
        if scaled.abs().max() >= limit:
            raise ValueError(f"bias / output_scale * 2**shift reaches {scaled.abs().max().item():.3g}, beyond the "
                             f"int64 headroom {limit} left by K={k} (bias far outside the output range)")
        folded = folded + torch.round(scaled).to(torch.int64)
    limit = max_linear_bias(k)
    if folded.abs().max() > limit:
        raise ValueError(f"the folded bias reaches {int(folded.abs().max())}, beyond the int64 headroom {limit} "
                         f"left by K={k}")
    return folded, mult, shift




def layernorm_params(gamma: torch.Tensor, beta: torch.Tensor, output_scale: float):
    """``(weight_multiplier int32, bias int64, shift int32)`` for ``ptf_layernorm`` (the exact LayerNorm).

    ``weight_multiplier[c] * 2**(24 - shift[c]) ≈ gamma[c] / s_out`` with a 24-bit mantissa and
    ``bias[c] = round(beta[c] / s_out * 2**shift[c])``. ``shift`` is capped at 62 and where
    ``|beta / s_out| * 2**shift`` would pass 2**59; such channels (a tiny ``gamma`` against its
    ``beta``) keep fewer mantissa bits of ``gamma``.
    """
    g = _as_float64("gamma", gamma).reshape(-1)
    b = _as_float64("beta", beta).reshape(-1)
    s_out = _as_float64("output_scale", output_scale).reshape(-1)
    _check_positive_finite("output_scale", s_out)
    if s_out.numel() != 1:
        raise ValueError("output_scale must be a single number (the LayerNorm output is per-tensor)")
    if g.shape != b.shape:
        raise ValueError(f"gamma and beta must have the same length, got {g.numel()} and {b.numel()}")
    if not (torch.isfinite(g).all() and torch.isfinite(b).all()):
        raise ValueError("gamma and beta must be finite")
    ratio = g / s_out
    beta_ratio = b / s_out
    _, exponent = torch.frexp(ratio.abs())
    exponent = torch.where(ratio == 0, torch.zeros_like(exponent), exponent).to(torch.int64)
    # ratio ≈ mult * 2**(exponent - LN_WEIGHT_BITS); norm carries LN_NORM_FRAC_BITS on top.
    shift = LN_WEIGHT_BITS + reference.LN_NORM_FRAC_BITS - exponent
    _, beta_exponent = torch.frexp(beta_ratio.abs())
    shift = torch.minimum(shift, torch.minimum(torch.full_like(shift, MAX_SHIFT), 59 - beta_exponent.to(torch.int64)))
    _check_shift("gamma / output_scale", shift, ratio)
    scale = torch.ldexp(torch.ones_like(ratio), shift - reference.LN_NORM_FRAC_BITS)
    mult = torch.round(ratio * scale).to(torch.int64)
    bias = torch.round(torch.ldexp(beta_ratio, shift)).to(torch.int64)
    if bias.abs().max() >= 2**60:
        raise ValueError("beta / output_scale is too large for the LayerNorm bias (|beta/s_out| * 2**shift >= 2**60)")
    return mult.to(torch.int32), bias, shift.to(torch.int32)




def layernorm_variance_offset(channels: int, eps: float, base_scale: float) -> int:
    """``ptf_layernorm``'s ``variance_offset`` for a LayerNorm epsilon: ``round(C**2 * eps / s**2)``.

    On the input grid ``s`` (the finest PTF scale) ``V = C * S2 - S1**2`` is ``C**2 * var / s**2``, so
    adding this to ``V`` is adding ``eps`` to the variance, as ``torch.nn.LayerNorm`` does.
    """
    s = _as_float64("base_scale", base_scale).reshape(-1)
    _check_positive_finite("base_scale", s)
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 <= eps < float("inf"):
        raise ValueError(f"eps must be a finite number >= 0, got {eps!r}")
    offset = round(channels * channels * float(eps) / float(s.min()) ** 2)
    if offset > MAX_VARIANCE_OFFSET:
        raise ValueError(f"the LayerNorm epsilon is {offset} on the integer grid (> 2**61): the input scale is too small")
    return int(offset)


def layernorm_dyadic_params(gamma: torch.Tensor, beta: torch.Tensor, output_scale: float):
    """``(gamma_multiplier int32, gamma_shift int32, beta int64)`` for ``ptf_layernorm_dyadic``.

    ``gamma_multiplier[c] * 2**-gamma_shift[c] ≈ gamma[c] / s_out`` with a 31-bit mantissa (sign in
    the multiplier; ``|gamma / s_out| < 2**-32`` counts as 0) and ``beta[c] = round(beta[c] / s_out *
    2**47)``. Raises ``ValueError`` when ``|gamma / s_out| >= 2**16`` or ``|beta / s_out| >= 2**15``.
    """
    g = _as_float64("gamma", gamma).reshape(-1)
    b = _as_float64("beta", beta).reshape(-1)
    s_out = _as_float64("output_scale", output_scale).reshape(-1)
    _check_positive_finite("output_scale", s_out)
    if s_out.numel() != 1:
        raise ValueError("output_scale must be a single number (the LayerNorm output is per-tensor)")
    if g.shape != b.shape:
        raise ValueError(f"gamma and beta must have the same length, got {g.numel()} and {b.numel()}")
    if not (torch.isfinite(g).all() and torch.isfinite(b).all()):
        raise ValueError("gamma and beta must be finite")
    ratio = g / s_out
    if ratio.abs().max() >= 2.0**16:
        raise ValueError(f"gamma / output_scale reaches {ratio.abs().max().item():.4g}; ptf_layernorm_dyadic needs "
                         "|gamma / s_out| < 2**16 (the LayerNorm output scale is far too small)")
    zero = ratio.abs() < 2.0**-32
    mantissa, exponent = torch.frexp(ratio.abs())
    mult = torch.round(mantissa * 2.0**MULTIPLIER_BITS).to(torch.int64)
    carry = mult == 2**MULTIPLIER_BITS
    mult = torch.where(carry, mult >> 1, mult)
    shift = MULTIPLIER_BITS - exponent.to(torch.int64) - carry.to(torch.int64)
    mult = torch.where(zero, torch.zeros_like(mult), mult * torch.sign(ratio).to(torch.int64))
    shift = torch.where(zero, torch.full_like(shift, 31), shift)
    beta_ratio = b / s_out
    if beta_ratio.abs().max() >= 2.0**15:
        raise ValueError(f"beta / output_scale reaches {beta_ratio.abs().max().item():.4g}; ptf_layernorm_dyadic "
                         "needs |beta / s_out| < 2**15")
    beta_fixed = torch.round(torch.ldexp(beta_ratio, torch.tensor(reference.LN_DYADIC_BETA_FRAC_BITS))).to(torch.int64)
    return mult.to(torch.int32), shift.to(torch.int32), beta_fixed


def ptf_alpha(scale: torch.Tensor, base_scale: float | None = None, max_alpha: int = MAX_PTF_ALPHA) -> torch.Tensor:
    """Per-channel PTF exponents ``alpha`` (int32) with ``scale[c] == base_scale * 2**alpha[c]``.

    ``base_scale`` defaults to ``scale.min()``. Raises ``ValueError`` if a channel is not an exact
    power-of-two multiple (FQ-ViT's PTF scales are ``s1 * 2**alpha`` with ``alpha`` in 0..3) or an
    exponent lies outside ``0..max_alpha``.
    """
    s = _as_float64("scale", scale).reshape(-1)
    _check_positive_finite("scale", s)
    base = s.min() if base_scale is None else _as_float64("base_scale", base_scale).reshape(())
    ratio = s / base
    alpha = torch.round(torch.log2(ratio)).to(torch.int64)
    exact = torch.ldexp(base.expand_as(s).clone(), alpha)
    if not torch.allclose(exact, s, rtol=1e-6, atol=0.0):
        raise ValueError("scale is not base_scale * 2**alpha for integer alpha in every channel (not a PTF scale)")
    if (alpha < 0).any() or (alpha > max_alpha).any():
        raise ValueError(f"PTF alpha must lie in 0..{max_alpha}, got {alpha.min().item()}..{alpha.max().item()}")
    return alpha.to(torch.int32)


def uniform_exp_table(score_scale: float) -> torch.Tensor:
    """int64 ``[256]`` exponent table of ``int_attention_uniform`` (FQ-ViT 8/8/8):
    ``round(2**20 * exp(-d * score_scale))`` for a distance ``d = max - s`` to the row max."""
    scale = _as_float64("score_scale", score_scale)
    _check_positive_finite("score_scale", scale.reshape(-1))
    d = torch.arange(256, dtype=torch.float64)
    return torch.round(torch.exp(-d * float(scale)) * 2.0**reference.UNIFORM_EXP_BITS).to(torch.int64)


def lis_exp_table(score_scale: float, zero_point: int = 0) -> torch.Tensor:
    """int64 ``[256, 256]`` exponent table of ``log_int_softmax``: ``table[m + 128, d]`` for a row max
    ``m`` (stored int8 score) and a distance ``d = m - s``.

    Each entry is FQ-ViT's integer exponent (``QIntSoftmax.int_softmax``, docs/fqvit.md §4.1:
    I-BERT polynomial, ``n = 30``) of the value the official code feeds it, computed with the same
    float32 operations as ``fake`` mode: the score's fake-quantized value ``(q - zp) * S`` divided by
    ``S``, minus the row maximum's. Those quotients are not always the integer ``q - zp``, and near a
    multiple of ``x0_int`` the difference moves the exponent by a few percent; indexing by the row
    maximum as well as the distance reproduces them exactly (a table indexed by the distance alone
    changed about 0.1 % of FQ-ViT's codes). ``zero_point`` is the score grid's zero point in the
    stored int8 domain. Entries with ``d > m + 128`` (no such score) are 0.
    """
    s = _as_float64("score_scale", score_scale).reshape(-1)
    if s.numel() != 1:
        raise ValueError("score_scale must be a single number")
    _check_positive_finite("score_scale", s)
    if isinstance(zero_point, bool) or not isinstance(zero_point, int) or not -128 <= zero_point <= 127:
        raise ValueError(f"zero_point must be an int in [-128, 127], got {zero_point!r}")
    s32 = s.to(torch.float32).reshape(())
    a, _, c = LIS_COEF
    c_int = int(torch.floor(torch.tensor(c / a, dtype=torch.float32) / (s32 * s32)).item())
    if not c_int < 2**31:
        raise ValueError(f"score_scale={s.item():g} is too small for LIS (c_int = {c_int} >= 2**31)")
    codes = torch.arange(256, dtype=torch.float32) - float(zero_point + 128)  # q - zp, exact
    x_int = (codes * s32) / s32  # fake quantizer output, then LIS's x / S (both float32)
    distance_values = x_int[None, :] - x_int[:, None]  # [row max, key]: x_key - x_max, float32
    exps = int_exp_float(distance_values, s32).to(torch.int64)  # integers below 2**62
    table = torch.zeros((256, 256), dtype=torch.int64)
    row = torch.arange(256)[:, None]
    dist = torch.arange(256)[None, :]
    key = row - dist
    valid = key >= 0
    table[valid.expand(256, 256)] = exps.gather(1, key.clamp(min=0))[valid.expand(256, 256)]
    return table


class GeluTable(NamedTuple):
    """Parameters of the GELU epilogue of ``int8_linear``: the pre-GELU grid and the step table.

    ``pre_scale`` is the step of the pre-GELU grid ``t`` (``t = round(v / pre_scale) +
    pre_zero_point`` for a pre-GELU value ``v``), ``table`` the int32 step table and ``cell_bits`` its
    cell width (see :func:`fqvit_kernels.reference.gelu_table_lookup`).
    """

    pre_scale: float
    pre_zero_point: int
    table: torch.Tensor
    cell_bits: int


def _gelu_codes(u: torch.Tensor, pre_scale: float, s_out: float, zp_code: float) -> torch.Tensor:
    """Stored int8 codes of FQ-ViT's ``qact(GELU(v))`` at ``v = u * pre_scale`` (float64, exact erf)."""
    v = u.to(torch.float64) * pre_scale
    g = 0.5 * v * (1.0 + torch.special.erf(v / math.sqrt(2.0)))
    return (torch.round(g / s_out + zp_code).clamp(0, 255) - 128).to(torch.int64)


def _first_where(lo: torch.Tensor, hi: torch.Tensor, pred) -> torch.Tensor:
    """Smallest ``u`` in ``(lo, hi]`` with ``pred(u)`` for predicates false at ``lo`` and true at ``hi``
    and monotone in between (vectorised bisection over int64 bounds)."""
    lo, hi = lo.clone(), hi.clone()
    while bool((hi - lo > 1).any()):
        mid = lo + (hi - lo) // 2
        take = pred(mid)
        hi = torch.where(take, mid, hi)
        lo = torch.where(take, lo, mid)
    return hi


def gelu_table(output_scale: float, output_zero_point: int, max_cell_bits: int = reference.GELU_MAX_CELL_BITS,
               max_length: int = 1 << 16) -> GeluTable:
    """The GELU epilogue that reproduces FQ-ViT's ``mlp.qact1(GELU(fc1(x)))`` codes.

    FQ-ViT applies the exact (erf) GELU to the unquantized fc1 output ``v`` and quantizes the result
    on ``mlp.qact1``'s grid (``output_scale``, stored ``output_zero_point``). As a function of ``v``
    that is a staircase: codes fall by one at a time from ``zp`` (``v -> -inf``) to GELU's minimum
    near ``v = -0.75``, then rise by one at a time to 255. The table holds every step exactly (the
    ``v`` where the float64 GELU crosses a rounding boundary) on a pre-GELU grid ``2**cell_bits``
    times finer than a cell, with cells narrower than any two steps on one side of the minimum and
    a cell boundary at the minimum, so each cell holds at most one step. ``cell_bits`` is the
    largest up to ``max_cell_bits`` with ``L * 2**cell_bits <= 2**30`` (``t`` stays int32 in the
    kernels). Raises ``ValueError`` if the table needs more than ``max_length`` cells (an output
    scale tiny against GELU's negative lobe).
    """
    s_out = _as_float64("output_scale", output_scale).reshape(-1)
    _check_positive_finite("output_scale", s_out)
    if s_out.numel() != 1:
        raise ValueError("output_scale must be a single number")
    if isinstance(output_zero_point, bool) or not isinstance(output_zero_point, int) \
            or not -128 <= output_zero_point <= 127:
        raise ValueError(f"output_zero_point must be an int in [-128, 127], got {output_zero_point!r}")
    s_out = float(s_out)
    zp_code = float(output_zero_point + 128)
    cell_width = s_out / GELU_CELL_SLOPE

    def codes_at(v_units: torch.Tensor, scale: float) -> torch.Tensor:
        return _gelu_codes(v_units, scale, s_out, zp_code)

    # The geometry in cells (independent of cell_bits): find the first and last step on a grid of
    # 2**-20 cells, then pick cell_bits from the number of cells.
    probe = cell_width / 2**20
    u_min = torch.tensor([round(GELU_ARGMIN / probe)], dtype=torch.int64)
    far_left = torch.tensor([math.floor(-40.0 / probe)], dtype=torch.int64)
    top = (255.0 - zp_code) * s_out + 1.0
    far_right = torch.tensor([math.ceil(top / probe) + 1], dtype=torch.int64)
    c_inf = int(output_zero_point)
    left_steps = int(codes_at(u_min, probe)) != c_inf
    first = _first_where(far_left, u_min, lambda u: codes_at(u, probe) != c_inf) if left_steps else u_min
    saturated = int(codes_at(u_min, probe)) == 127
    last = u_min if saturated else _first_where(u_min, far_right, lambda u: codes_at(u, probe) == 127)
    # One spare cell on each side absorbs the move from the probe grid to the final one.
    cells_left = math.ceil(int(u_min - first + 1) / 2**20) + 1 if left_steps else 0
    cells_right = int(last - u_min) // 2**20 + 2
    length = cells_left + cells_right
    if length > max_length:
        raise ValueError(f"the GELU step table needs {length} cells (> {max_length}): output_scale={s_out:g} is too "
                         "small for GELU's negative lobe")
    cell_bits = min(int(max_cell_bits), 30 - max(length - 1, 1).bit_length())
    cell = 1 << cell_bits
    pre_scale = cell_width / cell

    def codes(u: torch.Tensor) -> torch.Tensor:
        return codes_at(u, pre_scale)

    # Split the branches exactly at the grid point nearest GELU's minimum.
    near = round(GELU_ARGMIN / pre_scale) + torch.arange(-3, 4, dtype=torch.int64)
    values = near.to(torch.float64) * pre_scale
    u_star = int(near[torch.argmin(0.5 * values * (1.0 + torch.special.erf(values / math.sqrt(2.0))))])
    pre_zero_point = cells_left * cell - u_star
    starts = torch.arange(length, dtype=torch.int64) * cell - pre_zero_point
    ends = starts + cell - 1
    below, last_code = codes(starts), codes(ends)
    direction = last_code - below
    if bool((direction.abs() > 1).any()):
        raise RuntimeError("internal error: a GELU table cell holds more than one step")
    has_step = direction != 0
    step_at = _first_where(starts, ends, lambda u: codes(u) == last_code)
    step = torch.where(has_step, step_at - starts, torch.full_like(starts, cell))
    if cells_left and int(below[0]) != c_inf or int(last_code[-1]) != 127:
        raise RuntimeError("internal error: the GELU table does not reach its limits")
    entry = (step << reference.GELU_STEP_SHIFT) | ((direction + 1) << reference.GELU_DIRECTION_SHIFT) | (below & 0xFF)
    return GeluTable(pre_scale, int(pre_zero_point), entry.to(torch.int32), cell_bits)


def gelu_table_from_lut(lut: torch.Tensor) -> torch.Tensor:
    """A plain int8 look-up table ``lut[clamp(t, 0, L - 1)]`` as a step table (``cell_bits = 0``)."""
    if not isinstance(lut, torch.Tensor) or lut.dtype != torch.int8 or lut.dim() != 1:
        raise TypeError("lut must be a 1-D int8 tensor")
    below = lut.to(torch.int64)
    entry = (1 << reference.GELU_STEP_SHIFT) | (1 << reference.GELU_DIRECTION_SHIFT) | (below & 0xFF)
    return entry.to(torch.int32)
