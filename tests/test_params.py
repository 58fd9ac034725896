"""Conversion helpers: float scales → integer parameters."""

import pytest
import torch

from fqvit_kernels import params, reference as ref


def test_fixed_point_multiplier_relative_error(gen):
    reals = torch.exp(torch.empty(2000, dtype=torch.float64).uniform_(-20, 20, generator=gen))
    mult, shift = params.fixed_point_multipliers(reals)
    assert ((mult >= 2**30) & (mult.to(torch.int64) < 2**31)).all()
    approx = mult.to(torch.float64) * torch.pow(2.0, -shift.to(torch.float64))
    assert ((approx / reals - 1).abs() <= 2.0**-31).all()


def test_fixed_point_multiplier_rounds_up_to_next_power():
    # A mantissa that rounds to 2**31 must renormalise instead of overflowing int32.
    m, s = params.fixed_point_multiplier(1.0 - 2.0**-40)
    assert (m, s) == (2**30, 30)


def test_requantize_matches_float_rounding_within_one_lsb(gen):
    acc = torch.randint(-(2**24), 2**24, (20000,), generator=gen)
    ratio = 0.00123456
    m, s = params.fixed_point_multiplier(ratio)
    out = ref.requantize(acc, m, s, 0, -(2**40), 2**40)
    exact = torch.round(acc.to(torch.float64) * ratio)
    assert (out.to(torch.float64) - exact).abs().max() <= 1


def test_round_shift_is_half_up():
    v = torch.tensor([-3, -2, -1, 1, 2, 3, 5], dtype=torch.int64)
    assert ref.round_shift(v, 1).tolist() == [-1, -1, 0, 1, 1, 2, 3]


def test_isqrt_and_bit_length_exact(gen):
    v = torch.randint(0, 2**62 - 1, (5000,), generator=gen, dtype=torch.int64)
    v = torch.cat([v, torch.tensor([0, 1, 2, 3, 4, 2**62 - 1, 2**60, 2**60 - 1])])
    r = ref.isqrt(v)
    assert ((r * r <= v) & ((r + 1) * (r + 1) > v)).all()
    lengths = ref.bit_length(v)
    assert lengths.tolist() == [int(x).bit_length() for x in v.tolist()]


def test_fold_linear_bias_turns_stored_product_into_centered_product(gen):
    x = torch.randint(-128, 128, (9, 21), generator=gen, dtype=torch.int8)
    w = torch.randint(-128, 128, (6, 21), generator=gen, dtype=torch.int8)
    zp = -37
    s_x, s_w = 0.05, torch.full((6,), 0.01, dtype=torch.float64)
    bias = torch.randn(6, generator=gen, dtype=torch.float64)
    folded = params.fold_linear_bias(bias, w, s_x, s_w, zp)
    acc = ref.int8_matmul(x, w).to(torch.int64) + folded
    centered = (x.to(torch.int64) - zp) @ w.to(torch.int64).t()
    assert torch.equal(acc - centered, torch.round(bias / (s_x * s_w)).to(torch.int64).expand_as(acc))


def test_ptf_alpha_roundtrip():
    scale = 0.003 * torch.tensor([1.0, 2.0, 8.0, 4.0, 1.0])
    assert params.ptf_alpha(scale).tolist() == [0, 1, 3, 2, 0]
    with pytest.raises(ValueError, match="0..3"):
        params.ptf_alpha(0.003 * torch.tensor([1.0, 16.0]))


def test_layernorm_params_approximate_gamma_and_beta(gen):
    gamma = torch.randn(50, generator=gen, dtype=torch.float64)
    gamma[3] = 0.0
    beta = torch.randn(50, generator=gen, dtype=torch.float64)
    s_out = 0.037
    mult, bias, shift = params.layernorm_params(gamma, beta, s_out)
    frac = ref.LN_NORM_FRAC_BITS
    approx_gamma = mult.to(torch.float64) * torch.pow(2.0, frac - shift.to(torch.float64))
    assert ((approx_gamma - gamma / s_out).abs() <= (gamma / s_out).abs() * 2.0**-14).all()
    approx_beta = bias.to(torch.float64) * torch.pow(2.0, -shift.to(torch.float64))
    assert ((approx_beta - beta / s_out).abs() <= 2.0**-20).all()


def test_lis_exp_table_is_non_increasing_and_positive():
    for s in (0.005, 0.05, 0.3, 1.0):
        t = params.lis_exp_table(s)
        assert t.dtype == torch.int64 and t.shape == (256,)
        assert (t[1:] <= t[:-1]).all() and t[0] > 0
