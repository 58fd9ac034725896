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


def test_linear_params_fold_zero_point_and_bias_on_the_output_grid(gen):
    x = torch.randint(-128, 128, (9, 21), generator=gen, dtype=torch.int8)
    w = torch.randint(-128, 128, (6, 21), generator=gen, dtype=torch.int8)
    zp = -37
    s_x, s_w, s_out = 0.05, torch.full((6,), 0.01, dtype=torch.float64), 0.3
    bias = torch.randn(6, generator=gen, dtype=torch.float64)
    folded, mult, shift = params.linear_params(w, s_w, s_x, zp, s_out, bias)
    assert folded.dtype == torch.int64 and mult.dtype == torch.int32 and shift.dtype == torch.int32
    m, s = mult.to(torch.int64), shift.to(torch.int64)
    # acc * m + bias on stored activations equals (x - zp) @ w.T * m + round(b / s_out * 2**s).
    acc = ref.int8_matmul(x, w).to(torch.int64)
    centered = (x.to(torch.int64) - zp) @ w.to(torch.int64).t()
    scaled_bias = torch.round(torch.ldexp(bias / s_out, s)).to(torch.int64)
    assert torch.equal(acc * m + folded, centered * m + scaled_bias)
    # The bias keeps 2**-shift of an output step: far below the old accumulator-step rounding.
    assert ((scaled_bias.double() * torch.pow(2.0, -s.double()) - bias / s_out).abs() <= 2.0 ** -s.double()).all()
    real = centered.double() * s_x * s_w / s_out + bias / s_out
    out = ref.round_shift(acc * m + folded, s)
    assert (out.double() - real).abs().max() <= 0.5 + 1e-6


def test_linear_params_refuse_a_bias_beyond_the_int64_headroom():
    w = torch.ones((2, 4), dtype=torch.int8)
    with pytest.raises(ValueError, match="headroom"):
        params.linear_params(w, torch.ones(2), 1.0, 0, 1.0, torch.tensor([1e10, 0.0]))


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
    assert ((approx_gamma - gamma / s_out).abs() <= (gamma / s_out).abs() * 2.0**-23).all()
    approx_beta = bias.to(torch.float64) * torch.pow(2.0, -shift.to(torch.float64))
    assert ((approx_beta - beta / s_out).abs() <= 2.0**-30).all()


def test_lis_exp_table_rows_are_positive_float32_integers():
    # Rows are non-increasing in the distance except where FQ-ViT's float32 x / S lands just inside
    # the clamp at n * x0_int (e.g. S = 0.3: distance 90 gives 26, 91 gives 31): FQ-ViT's own values.
    for s in (0.005, 0.05, 0.3, 1.0):
        for zp in (-128, -3, 60):
            t = params.lis_exp_table(s, zp)
            assert t.dtype == torch.int64 and t.shape == (256, 256)
            for m in range(256):
                assert t[m, 0] > 0 and (t[m, : m + 1] >= 0).all()  # distances 0..m exist for row max m - 128
                assert (t[m, m + 1:] == 0).all()
            assert torch.equal(ref.round_to_float32(t), t)


def test_lis_exp_table_is_fqvit_float32_exponent(gen):
    """Each entry is the official float32 exponent of x / S - max(x / S) for x = (q - zp) * S."""
    from fqvit_kernels.quant.quantizers import int_exp_float

    for s in (0.013, 0.05, 0.21):
        zp = int(torch.randint(-128, 128, (), generator=gen))
        t = params.lis_exp_table(s, zp)
        s32 = torch.tensor(s, dtype=torch.float32)
        for _ in range(200):
            m, j = sorted(torch.randint(0, 256, (2,), generator=gen).tolist(), reverse=True)
            x = (torch.tensor([float(j), float(m)]) - float(zp + 128)) * s32
            xi = x / s32
            e = int_exp_float((xi[0] - xi[1]).reshape(1), s32)
            assert int(t[m, m - j]) == int(e), (m, j)


def test_layernorm_dyadic_params(gen):
    gamma = torch.randn(50, generator=gen, dtype=torch.float64)
    gamma[3] = 0.0
    gamma[4] = 1e-12  # below 2**-32 * s_out: counts as 0
    beta = torch.randn(50, generator=gen, dtype=torch.float64)
    s_out = 0.037
    mult, shift, beta_fixed = params.layernorm_dyadic_params(gamma, beta, s_out)
    mag = mult.to(torch.int64).abs()
    assert (((mag >= 2**30) & (mag < 2**31)) | (mag == 0)).all()
    assert mult[3] == 0 and mult[4] == 0
    approx = mult.double() * torch.pow(2.0, -shift.double())
    ratio = gamma / s_out
    nonzero = mag > 0
    assert ((approx - ratio)[nonzero].abs() <= ratio[nonzero].abs() * 2.0**-31).all()
    assert torch.equal(beta_fixed, torch.round(beta / s_out * 2.0**47).to(torch.int64))
    with pytest.raises(ValueError, match="2\\*\\*16"):
        params.layernorm_dyadic_params(torch.tensor([1e4]), torch.tensor([0.0]), 1e-3)
    with pytest.raises(ValueError, match="2\\*\\*15"):
        params.layernorm_dyadic_params(torch.tensor([1.0]), torch.tensor([100.0]), 1e-3)


def test_gelu_table_parameters(gen):
    table = params.gelu_table(0.04, -120)
    length = table.table.numel()
    assert table.table.dtype == torch.int32 and length << table.cell_bits <= 2**30
    assert 0 <= table.pre_zero_point < 2**31
    # One cell spans less than one GELU output step over GELU's largest slope.
    assert (table.pre_scale * 2**table.cell_bits) * params.GELU_MAX_SLOPE < 0.04
    lut = torch.randint(-128, 128, (9,), generator=gen, dtype=torch.int8)
    t = torch.arange(-3, 12)
    assert torch.equal(ref.gelu_table_lookup(t, params.gelu_table_from_lut(lut), 0), lut[t.clamp(0, 8)])
    with pytest.raises(ValueError, match="too"):
        params.gelu_table(1e-7, 0)


def test_shared_shift_multipliers_round_each_ratio_to_nearest(gen):
    """One shift for both ratios (set by the larger, whose multiplier gets 31 bits); each multiplier
    is the nearest integer to ratio * 2**shift, so the residual mix is off by at most half a unit."""
    from fractions import Fraction

    first = torch.exp(torch.empty(300, dtype=torch.float64).uniform_(-6, 3, generator=gen))
    second = first * torch.exp(torch.empty(300, dtype=torch.float64).uniform_(-4, 4, generator=gen))
    m1, m2, shift = params.shared_shift_multipliers(first, second)
    assert shift.dtype == torch.int32 and m1.dtype == torch.int32 and m2.dtype == torch.int32
    for r1, r2, a, b, s in zip(first.tolist(), second.tolist(), m1.tolist(), m2.tolist(), shift.tolist()):
        for r, m in ((r1, a), (r2, b)):
            assert abs(Fraction(m) - Fraction(r) * 2**s) <= Fraction(1, 2), (r, m, s)
        assert max(a, b) >= 2**30 and max(a, b) < 2**31
