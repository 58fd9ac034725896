"""FQ-ViT's quantizers and float-simulated integer formulas (the ``fake`` mode numerics).

Everything here is float32 arithmetic in the order the official code uses, so that ``fake`` mode
reproduces FQ-ViT's numbers including its rounding quirks (docs/fqvit.md §2, §3.3, §4):

* :func:`quantize_weight` — int8 symmetric per-output-channel MinMax (divisor 127.5);
* :func:`fake_quantize` — uniform asymmetric uint8 (``x / s + zp``, half-to-even rounding);
* :func:`log_int_softmax_float` — Log-Int-Softmax via the official float32 formulas;
* :func:`int_layernorm_float` — ``QIntLayerNorm`` in ``'int'`` mode (8-bit ``M``, ``N`` in 0..31).
"""

from __future__ import annotations

from typing import Tuple

import torch

from .observers import fake_quant, symmetric_params

__all__ = [
    "quantize_weight",
    "weight_scale",
    "weight_range",
    "fake_quantize",
    "quantize_codes",
    "log_int_softmax_float",
    "lis_codes_float",
    "int_exp_float",
    "int_layernorm_float",
    "LIS_X0",
    "LIS_N",
    "LIS_COEF",
]

from ..contract import LIS_COEF, LIS_N, LIS_X0  # noqa: E402 (FQ-ViT's i-exp constants, re-exported)


def weight_range(bits: int = 8) -> Tuple[int, int]:
    """``(qmin, qmax)`` of ``bits``-bit signed weights: ``(-2**(bits-1), 2**(bits-1) - 1)``."""
    return -(1 << (bits - 1)), (1 << (bits - 1)) - 1


def weight_scale(weight: torch.Tensor, bits: int = 8) -> torch.Tensor:
    """Symmetric per-output-channel MinMax scale ``max|w_n| / ((qmax - qmin) / 2)`` (float32)."""
    rows = weight.detach().to(torch.float32).reshape(weight.shape[0], -1)
    qmin, qmax = weight_range(bits)
    scale, _ = symmetric_params(rows.min(dim=1).values, rows.max(dim=1).values, qmin, qmax)
    return scale


def quantize_weight(weight: torch.Tensor, bits: int = 8) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(int8 codes [N, K], float32 scale [N])``: symmetric per-output-channel MinMax, round to nearest.

    ``s = max|w_n| / ((qmax - qmin) / 2)`` (127.5 for 8 bits, 7.5 for 4; at least float32 eps),
    ``q = clip(round(w / s), qmin, qmax)``; the fake-quantized weight FQ-ViT uses is ``q * s``.
    """
    w = weight.detach().to(torch.float32)
    scale = weight_scale(w, bits)
    qmin, qmax = weight_range(bits)
    codes = torch.round(w / scale.reshape(-1, *([1] * (w.dim() - 1)))).clamp(qmin, qmax)
    return codes.to(torch.int8), scale


def fake_quantize(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, bits: int = 8) -> torch.Tensor:
    """Uniform unsigned fake quantization, scale per tensor or per last-dim channel (PTF)."""
    return fake_quant(x, scale, zero_point, 0, 2**bits - 1)


def quantize_codes(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, bits: int = 8) -> torch.Tensor:
    """The unsigned codes ``clip(round(x / s + zp), 0, 2**bits - 1)`` (float tensor of integers)."""
    return torch.round(x / scale + zero_point).clamp(0, 2**bits - 1)


def int_exp_float(x_int: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``QIntSoftmax.int_softmax.int_exp`` in float32 (I-BERT polynomial, ``n = 30``)."""
    # The official expression, evaluated with in-place float32 ops on fresh temporaries (the same
    # values; about half the peak memory on [B, H, N, N] scores during calibration).
    a, b, c = LIS_COEF
    x0_int = torch.floor(LIS_X0 / scale)
    x_int = torch.max(x_int, LIS_N * x0_int)
    q = torch.div(x_int, x0_int).floor_()
    r = x_int.sub_(x0_int * q)  # x_int is a fresh tensor from torch.max
    b_int = torch.floor((b / a) / scale)
    c_int = torch.floor((c / a) / scale**2)
    z = (r + b_int).mul_(r).add_(c_int)
    del r
    return z.mul_(torch.pow(2, q.neg_().add_(LIS_N))).floor_().clamp_(min=0)


def lis_codes_float(x: torch.Tensor, scale: torch.Tensor, bits: int = 4) -> Tuple[torch.Tensor, torch.Tensor]:
    """Log2 codes ``k`` (float tensor) and the mask of zeroed probabilities, official float32 path.

    ``x`` is the output of the score QAct (``qact_attn1``) and ``scale`` its scale; ``x / scale`` is
    used as is (not rounded), as the official code does.
    """
    # In-place ops on fresh temporaries: the official float32 values, less peak memory.
    x = x.to(torch.float32)
    scale = scale.to(torch.float32)
    x_int = x / scale
    x_int.sub_(x_int.max(dim=-1, keepdim=True).values)
    exp_int = int_exp_float(x_int, scale)
    del x_int
    exp_sum = exp_int.sum(dim=-1, keepdim=True)
    ratio = torch.div(exp_sum, exp_int).round_()
    del exp_int
    big = torch.log2(ratio).floor_()
    extra = ratio.sub_(torch.pow(2, big)) >= torch.pow(2, big - 1)
    del ratio
    rounds = big.add_(extra.to(big.dtype))
    mask = rounds >= 2**bits
    return rounds.clamp_(0, 2**bits - 1), mask


def log_int_softmax_float(x: torch.Tensor, scale: torch.Tensor, bits: int = 4) -> torch.Tensor:
    """FQ-ViT's ``QIntSoftmax`` LIS branch: dequantized attention ``2**-k`` (0 where masked)."""
    codes, mask = lis_codes_float(x, scale, bits)
    return torch.pow(2, codes.neg_()).masked_fill_(mask, 0.0)


def int_layernorm_float(x: torch.Tensor, in_scale: torch.Tensor, out_scale: torch.Tensor,
                        weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """``QIntLayerNorm`` in integer mode (docs/fqvit.md §3.3), float32 as in the official code.

    ``x`` is PTF fake-quantized with per-channel ``in_scale`` (or a scalar); ``out_scale`` is the scale
    of the QAct consuming the result. No epsilon; population standard deviation; ``A`` becomes an
    8-bit mantissa ``M`` over ``2**N``. Returns values on the output grid (before its zero point and
    clip, which the next QAct applies).
    """
    channels = x.shape[-1]
    in_scale = in_scale.to(torch.float32).reshape(1, 1, -1) if in_scale.numel() > 1 else in_scale.reshape(1, 1, 1)
    out_scale = out_scale.to(torch.float32).reshape(1, 1, -1)
    x_q = (x / in_scale).round()
    in_scale1 = in_scale.min()
    x_q = x_q * (in_scale / in_scale1).round()
    mean_x_q = x_q.mean(dim=-1) * in_scale1
    std_x_q = (in_scale1 / channels) * torch.sqrt(channels * (x_q**2).sum(dim=-1) - x_q.sum(dim=-1) ** 2)
    gamma = weight.to(torch.float32).reshape(1, 1, -1)
    beta = bias.to(torch.float32).reshape(1, 1, -1)
    a = (in_scale1 / std_x_q).unsqueeze(-1) * gamma / out_scale
    a_sign = a.sign()
    n = torch.clamp(7 - torch.floor(torch.log2(a.abs())), 0, 31)
    m = torch.clamp(torch.floor(a.abs() * torch.pow(2, n)), 0, 2**8 - 1)
    b = ((beta - (mean_x_q / std_x_q).unsqueeze(-1) * gamma) / out_scale * torch.pow(2, n)).round()
    y_q = ((a_sign * m * x_q + b) / torch.pow(2, n)).round()
    return y_q * out_scale
