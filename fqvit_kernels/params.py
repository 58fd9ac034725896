"""Conversion helpers: float scales and weights → the integer parameters the ops take.

These run once, at conversion time, and are the only place where float scales meet the integer
world. Every helper validates its inputs (positive finite scales, representable ranges) and
raises ``ValueError`` naming the argument; see ``docs/numerics.md`` for the formulas' derivation.
"""

from __future__ import annotations

from typing import Sequence, Tuple, Union

import torch

from . import reference

__all__ = [
    "MULTIPLIER_BITS",
    "fixed_point_multiplier",
    "fixed_point_multipliers",
    "shared_shift_multipliers",
    "fold_linear_bias",
    "layernorm_params",
    "ptf_alpha",
    "lis_exp_table",
    "gelu_lut",
    "LIS_X0",
    "LIS_N",
    "LIS_COEF",
]

#: Fixed-point multipliers are normalised to ``[2**30, 2**31)``: 31 significant bits.
MULTIPLIER_BITS = 31
#: Shifts must stay in this range so that ``acc * multiplier + 2**(shift - 1)`` fits int64.
MIN_SHIFT, MAX_SHIFT = 1, 62

# FQ-ViT LIS constants (fqvit_reference.md §4.1).
LIS_X0 = -0.6931
LIS_N = 30
LIS_COEF = (0.35815147, 0.96963238, 1.0)

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


def fold_linear_bias(
    bias: torch.Tensor | None,
    weight_int8: torch.Tensor,
    input_scale: float,
    weight_scale: torch.Tensor,
    input_zero_point: int,
) -> torch.Tensor:
    """int32 bias for ``int8_linear``: ``round(b / (s_x * s_w[n])) - zp_x * sum_k w[n, k]``.

    The second term turns ``x @ w.T`` on stored activations into ``(x - zp_x) @ w.T``.
    """
    if weight_int8.dtype != torch.int8 or weight_int8.dim() != 2:
        raise TypeError(f"weight_int8 must be a 2-D int8 tensor, got {weight_int8.dtype} {tuple(weight_int8.shape)}")
    out_features = weight_int8.shape[0]
    s_x = _as_float64("input_scale", input_scale).reshape(-1)
    s_w = _as_float64("weight_scale", weight_scale).reshape(-1)
    _check_positive_finite("input_scale", s_x)
    _check_positive_finite("weight_scale", s_w)
    if s_w.numel() not in (1, out_features):
        raise ValueError(f"weight_scale must have 1 or {out_features} values, got {s_w.numel()}")
    row_sums = weight_int8.to(torch.int64).sum(dim=1).cpu()
    folded = -int(input_zero_point) * row_sums
    if bias is not None:
        b = _as_float64("bias", bias).reshape(-1)
        if b.numel() != out_features:
            raise ValueError(f"bias must have {out_features} values, got {b.numel()}")
        if not torch.isfinite(b).all():
            raise ValueError("bias must be finite")
        folded = folded + torch.round(b / (s_x * s_w)).to(torch.int64)
    limit = 2**31 - 1 - 128 * 128 * weight_int8.shape[1]
    if folded.abs().max() > limit:
        raise ValueError(
            f"bias / (input_scale * weight_scale) reaches {int(folded.abs().max())}, beyond the int32 "
            f"headroom {limit} left by K={weight_int8.shape[1]}"
        )
    return folded.to(torch.int32)


#: Mantissa bits of the LayerNorm weight multiplier (``gamma / s_out``).
LN_WEIGHT_BITS = 15


def layernorm_params(gamma: torch.Tensor, beta: torch.Tensor, output_scale: float):
    """``(weight_multiplier int32, bias int64, shift int32)`` for ``ptf_layernorm``.

    ``weight_multiplier[c] * 2**(16 - shift[c]) ≈ gamma[c] / s_out`` with a 15-bit mantissa and
    ``bias[c] = round(beta[c] / s_out * 2**shift[c])``.
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
    mantissa, exponent = torch.frexp(ratio.abs())
    exponent = torch.where(ratio == 0, torch.zeros_like(exponent), exponent).to(torch.int64)
    mult = torch.round(mantissa * 2.0**LN_WEIGHT_BITS).to(torch.int64) * torch.sign(ratio).to(torch.int64)
    # ratio ≈ mult * 2**(exponent - LN_WEIGHT_BITS); norm carries 16 fractional bits on top.
    shift = LN_WEIGHT_BITS + reference.LN_NORM_FRAC_BITS - exponent
    _check_shift("gamma / output_scale", shift, ratio)
    bias = torch.round(b / s_out * torch.ldexp(torch.ones_like(b), shift)).to(torch.int64)
    if bias.abs().max() >= 2**60:
        raise ValueError("beta / output_scale is too large for the LayerNorm bias (|beta/s_out| * 2**shift >= 2**60)")
    return mult.to(torch.int32), bias, shift.to(torch.int32)


def ptf_alpha(scale: torch.Tensor, base_scale: float | None = None, max_alpha: int = 3) -> torch.Tensor:
    """Per-channel PTF exponents ``alpha`` (int32) with ``scale[c] == base_scale * 2**alpha[c]``.

    ``base_scale`` defaults to ``scale.min()``. Raises if a channel is not an exact power-of-two
    multiple (FQ-ViT's PTF scales are ``s1 * 2**alpha`` with ``alpha`` in 0..3).
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


def lis_exp_table(score_scale: float, n: int = LIS_N) -> torch.Tensor:
    """int64 table ``e[d]``, ``d`` in 0..255: FQ-ViT's integer exponent of ``-d * score_scale``.

    Follows ``QIntSoftmax.int_softmax`` (fqvit_reference.md §4.1): ``x0_int = floor(x0 / S)``,
    ``b_int = floor((b/a) / S)``, ``c_int = floor((c/a) / S**2)`` evaluated in float32 as the official
    code does, then exact integer arithmetic: clamp ``-d`` at ``n * x0_int``, ``q = floor(x / x0_int)``,
    ``r = x - q * x0_int``, ``e = max(r * (r + b_int) + c_int, 0) << (n - q)``.
    """
    s = _as_float64("score_scale", score_scale).reshape(-1)
    if s.numel() != 1:
        raise ValueError("score_scale must be a single number")
    _check_positive_finite("score_scale", s)
    if not isinstance(n, int) or not 1 <= n <= 30:
        raise ValueError(f"n must be an integer in 1..30, got {n!r}")
    s32 = s.to(torch.float32)
    a, b, c = LIS_COEF
    x0_int = int(torch.floor(torch.tensor(LIS_X0, dtype=torch.float32) / s32).item())
    b_int = int(torch.floor(torch.tensor(b / a, dtype=torch.float32) / s32).item())
    c_int = int(torch.floor(torch.tensor(c / a, dtype=torch.float32) / (s32 * s32)).item())
    if c_int >= 2**31:
        raise ValueError(f"score_scale={s.item():g} is too small for LIS (c_int = {c_int} >= 2**31)")
    table = []
    for d in range(256):
        x = max(-d, n * x0_int)
        q = x // x0_int
        r = x - x0_int * q
        z = r * (r + b_int) + c_int
        table.append(max(z, 0) << (n - q))
    return torch.tensor(table, dtype=torch.int64)


def gelu_lut(pre_scale: float, pre_zero_point: int, length: int, output_scale: float,
             output_zero_point: int) -> torch.Tensor:
    """int8 table for the GELU epilogue of ``int8_linear``.

    Entry ``i`` is the pre-GELU value ``(i - pre_zero_point) * pre_scale``, passed through the exact
    (erf) GELU and quantized like FQ-ViT's ``mlp.qact1``: ``clamp(round(g / s_out + zp_out + 128), 0,
    255) - 128``.
    """
    if not isinstance(length, int) or not 2 <= length <= 1 << 16:
        raise ValueError(f"length must be an integer in 2..65536, got {length!r}")
    s_in = _as_float64("pre_scale", pre_scale).reshape(-1)
    s_out = _as_float64("output_scale", output_scale).reshape(-1)
    _check_positive_finite("pre_scale", s_in)
    _check_positive_finite("output_scale", s_out)
    pre = (torch.arange(length, dtype=torch.float64) - pre_zero_point) * s_in
    gelu = torch.nn.functional.gelu(pre.to(torch.float32))
    return reference.quantize(gelu, s_out.to(torch.float32), output_zero_point)
