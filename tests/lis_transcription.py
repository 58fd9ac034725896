"""Independent transcription of FQ-ViT's Log-Int-Softmax (docs/fqvit.md §4), for tests only.

Written directly from the official formulas, in float32 as the official code runs them, on the
fake-quantized scores ``x = (q - zp) * S`` (float32): ``x / S`` as is (not rounded), the I-BERT
exponent with floors, ``round(E / e)``, ``floor(log2 .)`` and the next-bit test. One deliberate
difference: the row sum ``E`` is summed exactly (float64) and rounded to float32 once, where the
official code sums in float32 in an order that depends on the device; the integer op defines ``E``
that way (docs/numerics.md). It shares no code with ``fqvit_kernels``.
"""

import torch

X0 = -0.6931
N = 30
COEF = [0.35815147, 0.96963238, 1.0]


def _int_exp(x_int, s32):
    a, b, c = COEF
    x0_int = torch.floor(X0 / s32)
    x_int = torch.max(x_int, N * x0_int)
    q = torch.floor(x_int / x0_int)
    r = x_int - x0_int * q
    b_int = torch.floor((b / a) / s32)
    c_int = torch.floor((c / a) / s32**2)
    z = r * (r + b_int) + c_int
    return torch.clamp(torch.floor(z * 2 ** (N - q)), min=0)


def lis_codes(x, scale, bits=4, exact_sum=True):
    """Log2 codes of FQ-ViT's LIS for float32 scores ``x`` on the float32 grid ``scale``; -1 where masked.

    ``exact_sum=False`` sums the exponents in float32 as the official code does.
    """
    s32 = torch.as_tensor(scale, dtype=torch.float32)
    x_int = x.to(torch.float32) / s32
    x_int = x_int - x_int.max(dim=-1, keepdim=True).values
    exp_int = _int_exp(x_int, s32)
    if exact_sum:
        exp_sum = exp_int.double().sum(dim=-1, keepdim=True).float()
    else:
        exp_sum = exp_int.sum(dim=-1, keepdim=True)
    rounds = torch.round(exp_sum / exp_int)  # inf where exp_int == 0
    big = torch.floor(torch.log2(rounds))
    extra = (rounds - 2**big) >= 2 ** (big - 1)
    rounds = big + extra.to(big.dtype)
    mask = rounds >= 2**bits
    k = torch.clamp(rounds, 0, 2**bits - 1)
    return torch.where(mask, torch.full_like(k, -1.0), k)


def scores_to_float(scores, scale, zero_point):
    """FQ-ViT's fake-quantized value ``(q - zp) * S`` (float32) of stored int8 scores (``q = stored + 128``)."""
    s32 = torch.as_tensor(scale, dtype=torch.float32)
    return ((scores.to(torch.float32) + 128.0) - float(zero_point + 128)) * s32
