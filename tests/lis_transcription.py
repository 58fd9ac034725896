"""Independent transcription of FQ-ViT's Log-Int-Softmax (fqvit_reference.md §4), for tests only.

Written directly from the official formulas on *real-valued* inputs ``x = (score - zp) * S``,
with float64 tensors in place of the official float32 (so that ``e_j`` up to 2**40 and their sums
stay exact): ``floor``/``round``/``log2`` as the code uses them, no lookup table, no bit tricks.
It shares no code with ``fqvit_kernels``.
"""

import torch

X0 = -0.6931
N = 30
COEF = [0.35815147, 0.96963238, 1.0]


def _int_polynomial(x_int, scale):
    b_over_a = COEF[1] / COEF[0]
    c_over_a = COEF[2] / COEF[0]
    # Constants are floored from float32 arithmetic, as in the official code.
    s32 = torch.tensor(scale, dtype=torch.float32)
    b_int = torch.floor(torch.tensor(b_over_a, dtype=torch.float32) / s32).double()
    c_int = torch.floor(torch.tensor(c_over_a, dtype=torch.float32) / s32**2).double()
    return x_int * (x_int + b_int) + c_int


def _int_exp(x_int, scale):
    s32 = torch.tensor(scale, dtype=torch.float32)
    x0_int = torch.floor(torch.tensor(X0, dtype=torch.float32) / s32).double()
    x_int = torch.max(x_int, N * x0_int)
    q = torch.floor(x_int / x0_int)
    r = x_int - x0_int * q
    exp_int = _int_polynomial(r, scale)
    return torch.clamp(torch.floor(exp_int * 2 ** (N - q)), min=0)


def lis_codes(x, scale, bits=4):
    """4-bit log2 codes k of FQ-ViT's LIS for real scores ``x`` on grid ``scale``; -1 where masked."""
    x_int = torch.round(x / scale)  # x is an exact multiple of scale in the tests
    x_int = x_int - x_int.max(dim=-1, keepdim=True).values
    exp_int = _int_exp(x_int, scale)
    exp_sum = exp_int.sum(dim=-1, keepdim=True)
    rounds = torch.round(exp_sum / exp_int)  # inf where exp_int == 0
    big = torch.floor(torch.log2(rounds))
    extra = (rounds - 2**big) >= 2 ** (big - 1)
    rounds = big + extra.double()
    mask = rounds >= 2**bits
    k = torch.clamp(rounds, 0, 2**bits - 1)
    return torch.where(mask, torch.full_like(k, -1.0), k)
