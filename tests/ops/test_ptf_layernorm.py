"""``ptf_layernorm`` (exact PTF LayerNorm) and ``ptf_layernorm_dyadic`` (FQ-ViT's dyadic form).

Tests that take ``backend`` run once per implementation (tests/ops/conftest.py): the oracle's ties,
the parameter limits and the fuzzing on every backend; the C++ cases (ragged, zero-variance and
extreme rows) on the extension and the dispatched op; the Triton cases on the Triton kernels. Then
the Triton fast and chunked paths (direct launcher calls), and the dispatched op alone: bad inputs
and numerics against float LayerNorm and FQ-ViT's formula.
"""

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings, strategies as st

import int_oracle as oracle
from fqvit_kernels import ops, params, reference as ref, testing
from op_backends import triton_only
from op_checks import (INT32_MAX, agree, check, check_bad_inputs, check_on_device, check_oracle, ints, Limit,
                       limit_tests, replace, strided_1d)

try:  # the Triton-only tests below; the others run without Triton
    from triton_kernels import layernorm
    from triton_kernels._common import force_paths
except ImportError:
    layernorm = force_paths = None

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"  # of the direct Triton calls
MAX_FAST_CHANNELS = layernorm.MAX_FAST_CHANNELS if layernorm is not None else 8192


# ==================================================================================================
# Every backend: rounding ties against the plain-Python oracle (tests/int_oracle.py)
# ==================================================================================================


def _layernorm_tie_case(gen, m=24, c=24):
    """Norm and affine rounding on exact ties, zero-variance rows."""
    x = torch.randint(-128, 128, (m, c), generator=gen, dtype=torch.int8)
    x[0] = 7  # zero variance
    x[1, :] = -128
    x[1, ::2] = 127  # maximal spread
    zp = int(torch.randint(-20, 21, (), generator=gen))
    x[2, :] = zp
    x[2, 3] = zp + 1  # near-zero variance whatever the PTF shifts: variance_offset (epsilon) decides
    x[3, :] = zp
    x[3, :3] = zp - 1
    alpha = torch.randint(0, 4, (c,), generator=gen, dtype=torch.int32)
    # Weight 1 over 2**25: the output is norm / 2 (norm has 24 fraction bits), half the norms odd;
    # weight 0 with odd multiples of 2**(shift - 1) as bias: exact ties in the affine rounding.
    wm = torch.ones(c, dtype=torch.int32)
    wm[c // 2:] = 0
    shift = torch.full((c,), 25, dtype=torch.int32)
    shift[c // 2:] = torch.randint(1, 40, (c - c // 2,), generator=gen, dtype=torch.int32)
    odd = torch.randint(-100, 100, (c,), generator=gen, dtype=torch.int64) * 2 + 1
    bias = torch.where(wm == 0, odd << (shift.to(torch.int64) - 1), torch.zeros(c, dtype=torch.int64))
    out_zp = int(torch.randint(-10, 11, (), generator=gen))
    return x, zp, alpha, wm, bias, shift, out_zp


@pytest.mark.parametrize("variance_offset", [0, 12345])
def test_ptf_layernorm_ties(backend, gen, variance_offset):
    x, zp, alpha, wm, bias, shift, out_zp = _layernorm_tie_case(gen)
    args = (x, zp, alpha, wm, bias, shift, out_zp, variance_offset)
    expected = oracle.ptf_layernorm(ints(x), zp, ints(alpha), ints(wm), ints(bias), ints(shift), out_zp,
                                    variance_offset)
    check_oracle(backend, "ptf_layernorm", args, expected, torch.int8)


def _dyadic_tie_case(gen, m=40, c=20):
    case = testing.layernorm_dyadic_case(m, c, gen)
    x, zp, alpha, gm, gs, beta, out_zp = case.args
    x = x.clone()
    x[0] = zp  # zero variance: output round_half_even(beta / 2**47), with beta an exact half below
    x[1] = 5
    beta = beta.clone()
    beta[::2] = (torch.randint(-60, 60, (c - c // 2,), generator=gen, dtype=torch.int64) * 2 + 1) << 46
    # Gains of every size: N from 0 (|A| >= 128, M saturated at 255) to 31, and negative gains.
    gs = gs.clone()
    gs[1::4] = 15
    gs[2::4] = 62
    gm = gm.clone()
    gm[3::4] = -gm[3::4].abs()
    gm[5] = 0
    return x, zp, alpha, gm, gs, beta, out_zp


def test_ptf_layernorm_dyadic_ties_and_gain_extremes(backend, gen):
    args = _dyadic_tie_case(gen)
    expected = oracle.ptf_layernorm_dyadic(*(ints(a) if isinstance(a, torch.Tensor) else a for a in args))
    check_oracle(backend, "ptf_layernorm_dyadic", args, expected, torch.int8)


def test_ptf_layernorm_dyadic_tiny_gain_uses_the_full_31_bit_shift(backend):
    """A gain so small that A * 2**31 is in [1, 2): M = 1 only with N = 31 (N = 30 gives M = 0), and
    with beta / s_out = 1/2 and a zero-mean row the output is round(1/2 + X / 2**31): 1 for X > 0
    only when N reaches 31. The gain's shift is searched so the case provably discriminates."""
    x = torch.tensor([[1, -1, 2, -2, 3, -3, 4, -4]], dtype=torch.int8)
    alpha = torch.zeros(8, dtype=torch.int32)
    gm = torch.full((8,), 2**30, dtype=torch.int32)
    beta = torch.zeros(8, dtype=torch.int64)
    beta[0] = 2**46  # beta / s_out = 1/2 (47 fraction bits)
    found = None
    for shift in range(15, 63):
        gs = torch.full((8,), 40, dtype=torch.int32)
        gs[0] = shift
        args = (x, 0, alpha, gm, gs, beta, 0)
        int_args = [ints(a) if isinstance(a, torch.Tensor) else a for a in args]
        right, capped = oracle.ptf_layernorm_dyadic(*int_args), oracle.ptf_layernorm_dyadic(*int_args, max_n=30)
        if right != capped:
            found = (args, right)
            break
    assert found is not None, "no gain shift separates N = 31 from N = 30"
    check_oracle(backend, "ptf_layernorm_dyadic", found[0], found[1], torch.int8)


def test_ptf_layernorm_dyadic_row_mean_is_floored(backend):
    """The row mean ``floor(S1 * 2**20 / C)`` shifts ``B`` by a fraction of its last bit, so a
    mean rounded toward zero changes an output only rarely: this input (generator seed 650 of
    ``layernorm_dyadic_case(64, 48)``, found by searching seeds) has one element where it does."""
    case = testing.layernorm_dyadic_case(64, 48, torch.Generator().manual_seed(650))
    int_args = [ints(a) if isinstance(a, torch.Tensor) else a for a in case.args]
    expected = oracle.ptf_layernorm_dyadic(*int_args)
    assert expected != oracle.ptf_layernorm_dyadic(*int_args, mean_toward_zero=True), "the case no longer discriminates"
    check_oracle(backend, "ptf_layernorm_dyadic", case.args, expected, torch.int8)


# ==================================================================================================
# Parameter limits (docs/numerics.md): the last accepted value exact on every backend, the next refused
# ==================================================================================================


def _ln(gen):
    return list(testing.layernorm_case(3, 8, gen).args) + [0]


def _dyadic(gen):
    return list(testing.layernorm_dyadic_case(3, 8, gen).args)


LIMITS = [
    Limit("ptf_layernorm.input_zero_point", "ptf_layernorm", _ln, 1, False, [-128, 127], [-129, 128], "input_zero_point"),
    Limit("ptf_layernorm.ptf_alpha", "ptf_layernorm", _ln, 2, True, [0, 3], [-1, 4], "ptf_alpha values"),
    Limit("ptf_layernorm.bias", "ptf_layernorm", _ln, 4, True, [-(2**60), 2**60], [-(2**60) - 1, 2**60 + 1], "bias values"),
    Limit("ptf_layernorm.shift", "ptf_layernorm", _ln, 5, True, [1, 62], [0, 63], "shift values"),
    Limit("ptf_layernorm.output_zero_point", "ptf_layernorm", _ln, 6, False, [-128, 127], [-129, 128], "output_zero_point"),
    Limit("ptf_layernorm.variance_offset", "ptf_layernorm", _ln, 7, False, [0, ops.MAX_VARIANCE_OFFSET],
          [-1, ops.MAX_VARIANCE_OFFSET + 1], "variance_offset"),
    Limit("ptf_layernorm_dyadic.ptf_alpha", "ptf_layernorm_dyadic", _dyadic, 2, True, [0, 3], [-1, 4], "ptf_alpha values"),
    Limit("ptf_layernorm_dyadic.gamma_multiplier", "ptf_layernorm_dyadic", _dyadic, 3, True,
          [0, 2**30, INT32_MAX, -(2**30), -INT32_MAX], [2**30 - 1, -(2**30) + 1, -(2**31)], "gamma_multiplier"),
    Limit("ptf_layernorm_dyadic.gamma_shift", "ptf_layernorm_dyadic", _dyadic, 4, True,
          [ref.LN_DYADIC_MIN_GAMMA_SHIFT, ref.LN_DYADIC_MAX_GAMMA_SHIFT],
          [ref.LN_DYADIC_MIN_GAMMA_SHIFT - 1, ref.LN_DYADIC_MAX_GAMMA_SHIFT + 1], "gamma_shift values"),
    Limit("ptf_layernorm_dyadic.beta", "ptf_layernorm_dyadic", _dyadic, 5, True, [-(2**62), 2**62],
          [-(2**62) - 1, 2**62 + 1], "beta values"),
]


test_first_value_past_each_limit_is_refused, test_last_value_inside_each_limit_is_accepted_and_exact = \
    limit_tests(LIMITS)


def test_shape_limits_both_sides():
    """LayerNorm channels: the largest accepted, the next refused."""
    c = ops.MAX_LN_CHANNELS
    for channels, ok in ((c, True), (c + 1, False)):
        x = torch.zeros((1, channels), dtype=torch.int8)
        args = (x, 0, torch.zeros(channels, dtype=torch.int32), torch.ones(channels, dtype=torch.int32),
                torch.zeros(channels, dtype=torch.int64), torch.full((channels,), 20, dtype=torch.int32), 0)
        if ok:
            torch.ops.fqvit.ptf_layernorm(*args)
        else:
            with pytest.raises(ValueError, match=f"at most {c}"):
                torch.ops.fqvit.ptf_layernorm(*args)


def test_ptf_layernorm_at_the_channel_limit_with_extreme_values(backend):
    c = ops.MAX_LN_CHANNELS
    x = torch.full((3, c), 127, dtype=torch.int8)
    x[0, ::2] = -128  # maximal spread: |X| = 255 << 3 on every channel
    x[1, :5] = -128   # a few outliers in a near-constant row
    alpha = torch.full((c,), 3, dtype=torch.int32)
    gamma, beta = torch.linspace(-2, 2, c, dtype=torch.float64), torch.linspace(-1, 1, c, dtype=torch.float64)
    wm, bias, shift = params.layernorm_params(gamma, beta, 0.03)
    args = (x, -128, alpha, wm, bias, shift, 0)
    out = ref.ptf_layernorm(*args)
    # Independent float64 check: 1 LSB of the exact LayerNorm (rows are not near-constant here).
    xf = ((x.to(torch.float64) + 128) * 8)
    y = torch.nn.functional.layer_norm(xf, (c,), gamma, beta, eps=0.0) / 0.03
    expected_float = torch.clamp(torch.round(y), -128, 127)
    assert (out[:2].double() - expected_float[:2]).abs().max() <= 1  # row 2 is constant: float gives NaN
    assert torch.equal(out[2], torch.clamp(ref.round_shift(bias, shift), -128, 127).to(torch.int8))
    agree(backend, "ptf_layernorm", args, out)
    with pytest.raises(ValueError, match="at most 8192"):
        torch.ops.fqvit.ptf_layernorm(torch.zeros((1, c + 1), dtype=torch.int8), 0,
                                      torch.zeros(c + 1, dtype=torch.int32), *(t[:1].expand(c + 1).contiguous()
                                                                             for t in (wm, bias, shift)), 0)


def _rhe(v: int, s: int) -> int:
    if s == 0:
        return v
    q, r = v >> s, v - ((v >> s) << s)
    half = 1 << (s - 1)
    return q + (1 if r > half or (r == half and q & 1) else 0)


def test_ptf_layernorm_dyadic_at_its_limits(backend):
    """C = 8192, the widest spread, |gamma / s_out| just below 2**16 (the largest A), beta at
    2**62; checked against Python ints and float64 FQ-ViT formulas."""
    c = ops.MAX_LN_CHANNELS
    x = torch.full((3, c), 127, dtype=torch.int8)
    x[0, ::2] = -128
    x[1, :5] = -128
    alpha = torch.full((c,), 3, dtype=torch.int32)
    gm = torch.full((c,), 2**31 - 1, dtype=torch.int32)
    gm[1::2] *= -1
    gs = torch.full((c,), 15, dtype=torch.int32)
    beta = torch.full((c,), 2**62, dtype=torch.int64)
    beta[1::2] = -(2**62)
    args = (x, -128, alpha, gm, gs, beta, 0)
    out = ref.ptf_layernorm_dyadic(*args)
    # Row 2 is constant: round(beta / 2**47) = +-2**15, clamped.
    assert (out[2, ::2] == 127).all() and (out[2, 1::2] == -128).all()
    # Rows 0 and 1 by Python ints: A, M, N and B from the formulas of reference.ptf_layernorm_dyadic.
    for row in (0, 1):
        xs = [(int(v) + 128) << 3 for v in x[row].tolist()]
        s1, s2 = sum(xs), sum(v * v for v in xs)
        var = c * s2 - s1 * s1
        p = (62 - var.bit_length()) // 2
        root = math.isqrt(var << (2 * p))
        c_inv = c * ((1 << 62) // root)
        sh = c_inv.bit_length() - 32
        rho, e0 = c_inv >> sh, sh + p - 62
        mean = (s1 << 20) // c
        for j in (0, 1, 2, 5, c - 1):
            g, sign = abs(int(gm[j])), (-1 if int(gm[j]) < 0 else 1)
            prod = g * rho
            e = e0 - int(gs[j])
            log2a = prod.bit_length() - 1 + e
            n = min(max(7 - log2a, 0), 31)
            m = 255 if log2a > 7 else prod >> min(max(-(e + n), 0), 63)
            frac = 24 - max(log2a - 7, 0)
            a_fixed = prod >> min(max(-(e + n) - frac, 0), 63)
            b_val = _rhe((int(beta[j]) >> (31 - n)) - ((sign * a_fixed * mean) >> (frac + 4)), 16)
            y = _rhe(sign * m * xs[j] + b_val, n)
            assert int(out[row, j]) == max(-128, min(127, y)), (row, j)
    agree(backend, "ptf_layernorm_dyadic", args, out)
    with pytest.raises(ValueError, match="gamma_shift"):
        torch.ops.fqvit.ptf_layernorm_dyadic(x, -128, alpha, gm, gs - 1, beta, 0)
    with pytest.raises(ValueError, match="beta values"):
        torch.ops.fqvit.ptf_layernorm_dyadic(x, -128, alpha, gm, gs, beta + 1, 0)


# ==================================================================================================
# Every backend but the reference: property-based fuzzing against the reference
# ==================================================================================================

FUZZ = settings(max_examples=12, deadline=None, derandomize=False,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
seeds = st.integers(0, 2**31 - 1)


@pytest.mark.backends(exclude=("reference",))
@FUZZ
@given(m=st.integers(1, 40), c=st.integers(1, 300), wide=st.integers(0, 6), seed=seeds)
def test_fuzz_ptf_layernorm(backend, m, c, wide, seed):
    case = testing.layernorm_case(m, c, torch.Generator().manual_seed(seed), wide_channels=wide)
    agree(backend, case.name, case.args, ref.ptf_layernorm(*case.args))


@pytest.mark.backends(exclude=("reference",))
@FUZZ
@given(m=st.integers(1, 40), c=st.integers(1, 300), wide=st.integers(0, 6), seed=seeds)
def test_fuzz_ptf_layernorm_dyadic(backend, m, c, wide, seed):
    case = testing.layernorm_dyadic_case(m, c, torch.Generator().manual_seed(seed), wide_channels=wide)
    agree(backend, case.name, case.args, ref.ptf_layernorm_dyadic(*case.args))


# ==================================================================================================
# The C++ extension and the dispatched op: ragged shapes, zero-variance and extreme rows
# ==================================================================================================

cpu_kernels = pytest.mark.backends("cpp", "dispatch")


@cpu_kernels
@pytest.mark.parametrize("m,c", [(1, 1), (7, 7), (197, 384), (577, 33), (3, ops.MAX_LN_CHANNELS)])
def test_ptf_layernorm_ragged(m, c, backend, gen):
    for eps in (0.0, 1e-6, 1e-2):
        check(backend, "ptf_layernorm", testing.layernorm_case(m, c, gen, wide_channels=min(4, c), eps=eps).args,
              f"M={m} C={c} eps={eps}")


@cpu_kernels
def test_ptf_layernorm_edges(backend, gen):
    m, c = 9, 50
    case = testing.layernorm_case(m, c, gen)
    x, zp, alpha, wmult, bias, shift, out_zp = case.args
    x = x.clone()
    x[0] = 17  # zero variance
    x[1] = zp  # zero variance at the zero point
    x[2] = torch.where(torch.arange(c) % 2 == 0, 127, -128).to(torch.int8)  # largest spread
    x[3] = -128
    x[3, 0] = 127  # one outlier channel
    check(backend, "ptf_layernorm", (x, zp, alpha, wmult, bias, shift, out_zp), "zero-variance / extreme rows")
    alpha3 = torch.full((c,), ops.MAX_PTF_ALPHA, dtype=torch.int32)
    wide = torch.where(torch.arange(c) % 3 == 0, INT32_MAX, -INT32_MAX).to(torch.int32)
    big_bias = torch.where(torch.arange(c) % 2 == 0, 2**60, -(2**60))
    for s in (1, 62):
        shift_s = torch.full((c,), s, dtype=torch.int32)
        for in_zp in (-128, 127):
            check(backend, "ptf_layernorm", (x, in_zp, alpha3, wide, big_bias, shift_s, 127), f"extreme s={s}")
            check(backend, "ptf_layernorm", (x, in_zp, alpha3, wide, big_bias, shift_s, 127,
                                             params.MAX_VARIANCE_OFFSET), f"largest variance offset s={s}")
    rows_equal = torch.full((4, ops.MAX_LN_CHANNELS), -5, dtype=torch.int8)
    rows_equal[1, -1] = 6
    c = ops.MAX_LN_CHANNELS
    check(backend, "ptf_layernorm", (rows_equal, 127, torch.full((c,), 3, dtype=torch.int32),
                                     torch.full((c,), INT32_MAX, dtype=torch.int32), torch.zeros(c, dtype=torch.int64),
                                     torch.full((c,), 40, dtype=torch.int32), 0), "max C")


@cpu_kernels
@pytest.mark.parametrize("m,c", [(1, 1), (7, 7), (197, 384), (577, 33), (3, ops.MAX_LN_CHANNELS)])
def test_ptf_layernorm_dyadic_ragged(m, c, backend, gen):
    check(backend, "ptf_layernorm_dyadic", testing.layernorm_dyadic_case(m, c, gen, wide_channels=min(4, c)).args,
          f"M={m} C={c}")


@cpu_kernels
def test_ptf_layernorm_dyadic_edges(backend, gen):
    m, c = 9, 50
    x, zp, alpha, gm, gs, beta, out_zp = testing.layernorm_dyadic_case(m, c, gen).args
    x = x.clone()
    x[0] = 17  # zero variance
    x[1] = zp
    x[2] = torch.where(torch.arange(c) % 2 == 0, 127, -128).to(torch.int8)  # largest spread
    x[3] = -128
    x[3, 0] = 127  # one outlier channel: a tiny sigma, a huge A (N = 0, M = 255)
    x[4] = 5
    x[4, 7] = 6  # the smallest nonzero variance
    check(backend, "ptf_layernorm_dyadic", (x, zp, alpha, gm, gs, beta, out_zp), "zero-variance / extreme rows")
    alpha3 = torch.full((c,), ops.MAX_PTF_ALPHA, dtype=torch.int32)
    signs = torch.where(torch.arange(c) % 3 == 0, 1, -1)
    for mult_mag, shift_value, beta_value in ((INT32_MAX, 15, 2**62), (2**30, 62, -(2**62)), (0, 31, 0),
                                              (2**30 + 12345, 15, 7)):
        mult = (signs * mult_mag).to(torch.int32)
        shift = torch.full((c,), shift_value, dtype=torch.int32)
        betas = torch.where(torch.arange(c) % 2 == 0, beta_value, -beta_value).to(torch.int64)
        for in_zp in (-128, 127):
            check(backend, "ptf_layernorm_dyadic", (x, in_zp, alpha3, mult, shift, betas, 127), f"extreme |gm|={mult_mag}")


@pytest.mark.backends("cpp", "triton")
def test_out_of_range_alphas_are_clamped_not_undefined(backend, gen):
    """PTF shifts the op refuses (reachable with value checks off, or tampered after a cached check),
    in kernels called directly, still give defined results: the reference at the clamped value."""
    args = list(testing.layernorm_case(5, 40, gen).args)
    alpha = args[2].clone()
    alpha[::3] = 9
    alpha[1::3] = -4
    expected = ref.ptf_layernorm(*args[:2], alpha.clamp(0, 3), *args[3:])
    args[2] = alpha
    testing.assert_equal(backend.run("ptf_layernorm", *args), expected, "alpha out of range")


# ==================================================================================================
# The Triton kernels: small shapes (interpreter on CPU tensors), ViT shapes on a GPU
# ==================================================================================================

triton_kernels_only = pytest.mark.backends("triton")


@triton_kernels_only
@pytest.mark.parametrize("dyadic", [False, True])
def test_ptf_layernorm_strided_parameter_vectors(dyadic, backend, gen):
    case = (testing.layernorm_dyadic_case if dyadic else testing.layernorm_case)(5, 48, gen)
    args = tuple(strided_1d(a) if isinstance(a, torch.Tensor) and a.dim() == 1 else a for a in case.args)
    check_on_device(backend, testing.OpCase(case.name, args))


@triton_kernels_only
@pytest.mark.parametrize("m,c", [(1, 1), (1, 8), (7, 80), (33, 200), (20, 768)])
def test_ptf_layernorm(m, c, backend, gen):
    check_on_device(backend, testing.layernorm_case(m, c, gen))
    check_on_device(backend, testing.layernorm_case(m, c, gen, eps=1e-5))


@triton_kernels_only
@pytest.mark.parametrize("m,c", [(1, 1), (1, 8), (7, 80), (33, 200), (20, 768)])
def test_ptf_layernorm_dyadic(m, c, backend, gen):
    check_on_device(backend, testing.layernorm_dyadic_case(m, c, gen))


@triton_kernels_only
@pytest.mark.parametrize("dyadic", [False, True])
def test_ptf_layernorm_zero_variance_and_extreme_rows(dyadic, backend, gen):
    case = (testing.layernorm_dyadic_case if dyadic else testing.layernorm_case)(6, 48, gen)
    args = list(case.args)
    x = args[0].clone()
    x[0] = 17
    x[3] = args[1]  # every channel at the zero point
    x[4] = -128
    x[4, 0] = 127  # one outlier: tiny sigma, huge gain
    x[5] = 5
    x[5, 9] = 6  # the smallest nonzero variance
    args[0] = x
    args[2] = torch.zeros_like(args[2])
    check_on_device(backend, testing.OpCase(case.name, tuple(args)))
    if dyadic:  # extreme parameters: largest/smallest gains, beta at its limits
        c = x.shape[1]
        signs = torch.where(torch.arange(c) % 3 == 0, 1, -1)
        for mag, sh, beta in ((2**31 - 1, 15, 2**62), (2**30, 62, -(2**62)), (0, 31, 3)):
            extreme = (x, -128, torch.full((c,), 3, dtype=torch.int32), (signs * mag).to(torch.int32),
                       torch.full((c,), sh, dtype=torch.int32), torch.full((c,), beta, dtype=torch.int64), 127)
            check_on_device(backend, testing.OpCase(case.name, extreme))


@pytest.mark.gpu
@triton_kernels_only
@pytest.mark.parametrize("m,c", [(12608, 768), (1577, 1024), (3, 8192)])
def test_gpu_layernorm(m, c, backend, gen):
    check_on_device(backend, testing.layernorm_case(m, c, gen))
    check_on_device(backend, testing.layernorm_dyadic_case(m, c, gen))


# ==================================================================================================
# The Triton fast (int32) and chunked paths (direct launcher calls)
# ==================================================================================================


def _on_device(args):
    return [a.to(DEVICE) if isinstance(a, torch.Tensor) else a for a in args]


@triton_only
def test_triton_float_root_and_reciprocal_are_exact_at_squares_and_edges(gen):
    """floor(sqrt(v)) and floor(2**62 / root) from float64 plus one correction step, for v in
    [2**60, 2**62): perfect squares and their neighbours (where a rounded float root lands on the
    wrong side), the range ends, and random values."""
    from triton_layernorm_check import root_and_reciprocal

    roots = torch.randint(2**30, 2**31, (200,), generator=gen, dtype=torch.int64)
    roots = torch.cat([roots, torch.tensor([2**30, 2**31 - 1, 3037000499 // 2])])
    squares = roots * roots
    values = torch.cat([squares, squares - 1, squares + 1, (roots + 1) * (roots + 1) - 1,
                        torch.tensor([2**60, 2**62 - 1, 2**61, 2**61 + 1]),
                        torch.randint(2**60, 2**62, (400,), generator=gen, dtype=torch.int64)])
    values = values[(values >= 2**60) & (values < 2**62)]
    block = 1 << (values.numel() - 1).bit_length()
    v = torch.full((block,), 2**60, dtype=torch.int64)
    v[:values.numel()] = values
    root, recip = root_and_reciprocal(v.to(DEVICE))
    expected_root = torch.tensor([math.isqrt(int(x)) for x in v])
    testing.assert_equal(root.cpu(), expected_root, "root")
    testing.assert_equal(recip.cpu(), torch.tensor([2**62 // int(r) for r in expected_root]), "reciprocal")


@triton_only
@pytest.mark.parametrize("dyadic", [False, True])
@pytest.mark.parametrize("m,c", [(1, 8), (4, 1), (7, 80), (5, 200), (3, 384), (20, 768), (2, 1280)])
def test_triton_layernorm_fast_and_general_paths_agree(dyadic, m, c, gen):
    case = (testing.layernorm_dyadic_case if dyadic else testing.layernorm_case)(m, c, gen)
    launcher = layernorm.ptf_layernorm_dyadic if dyadic else layernorm.ptf_layernorm
    if dyadic:
        with force_paths(True):
            assert layernorm.fast_dyadic(case.args[3].to(DEVICE))
    expected = getattr(ref, case.name)(*case.args)
    for fast in (True, False):
        with force_paths(fast):
            testing.assert_equal(launcher(*case.to(DEVICE).args).cpu(), expected, f"{case.name} fast={fast}")


@triton_only
@pytest.mark.parametrize("channels,chunk,n_chunks", [(768, 256, 3), (384, 128, 3), (192, 64, 3), (1280, 256, 5),
                                                    (8, 8, 1), (1, 1, 1), (80, 128, 1), (200, 256, 1),
                                                    (96, 128, 1), (8192, 256, 32)])
def test_triton_layernorm_chunks_cover_each_row_once(channels, chunk, n_chunks):
    got = layernorm.chunked_config(channels)[:2]
    assert got == (chunk, n_chunks)
    assert (n_chunks - 1) * chunk < channels <= n_chunks * chunk


@triton_only
@pytest.mark.parametrize("c", [2, 768, MAX_FAST_CHANNELS, MAX_FAST_CHANNELS + 1])
def test_triton_layernorm_extreme_row_at_the_int32_bound(c):
    """One channel at +127, every other at -128: that channel sits sqrt(C - 1) standard deviations
    from the mean, the largest normalised value a row can have (|z| = sqrt(C - 1) * 2**24, just
    below 2**31 at C = 8192, the widest row the fast kernel takes). Unit gain at several output
    scales keeps the output in range, so the int32 clamp decides nothing."""
    x = torch.full((3, c), -128, dtype=torch.int8)
    x[0, 0] = 127
    x[1, c - 1] = 127
    x[2, c // 2] = 127
    alpha = torch.zeros(c, dtype=torch.int32)
    gamma = torch.linspace(0.5, 1.5, c, dtype=torch.float64)
    beta = torch.linspace(-1.0, 1.0, c, dtype=torch.float64)
    for out_scale in (0.5, 1.0, 4.0):
        wm, bias, shift = params.layernorm_params(gamma, beta, out_scale)
        args = (x, 0, alpha, wm, bias, shift, 0)
        expected = ref.ptf_layernorm(*args)
        assert layernorm.affine_fits_int32(c, wm, bias, shift)
        for fast in (True, False):
            with force_paths(fast):
                got = layernorm.ptf_layernorm(*_on_device(args))
            testing.assert_equal(got.cpu(), expected, f"C={c} out_scale={out_scale} fast={fast}")


@triton_only
def test_triton_layernorm_affine_outside_int32_is_clamped_in_int64(gen):
    """Biases near 2**60 with shift 1 (inside the op's limits) overflow an int32 clamp: the host check
    must send them to the int64 clamp, and both must agree with the reference."""
    case = testing.layernorm_case(6, 96, gen)
    args = list(case.args)
    assert layernorm.affine_fits_int32(96, args[3], args[4], args[5])
    bias, shift = args[4].clone(), args[5].clone()
    bias[5], shift[5] = 2**60, 1
    bias[17], shift[17] = -(2**60), 1
    args[4], args[5] = bias, shift
    assert not layernorm.affine_fits_int32(96, args[3], bias, shift)
    with force_paths(True):
        got = layernorm.ptf_layernorm(*_on_device(args))
    expected = ref.ptf_layernorm(*args)
    testing.assert_equal(got.cpu(), expected)
    assert (expected[:, 5] == 127).all() and (expected[:, 17] == -128).all()


@triton_only
def test_triton_layernorm_affine_just_beyond_int32_is_clamped_in_int64():
    """The int32 clamp's bound is tight: an outlier channel (sqrt(95) standard deviations from its
    row mean) with the largest gain and shift 27 reaches about 2**31.3 before the clamp: an int32
    clamp would wrap it negative; the reference saturates it at 127."""
    c = 96
    x = torch.full((2, c), -100, dtype=torch.int8)
    x[:, 3] = 120
    alpha = torch.zeros(c, dtype=torch.int32)
    wm, bias, shift = params.layernorm_params(torch.ones(c, dtype=torch.float64), torch.zeros(c, dtype=torch.float64), 1.0)
    wm[3], bias[3], shift[3] = 2**31 - 1, 0, 27
    args = (x, 0, alpha, wm, bias, shift, 0)
    assert not layernorm.affine_fits_int32(c, wm, bias, shift)
    expected = ref.ptf_layernorm(*args)
    assert (expected[:, 3] == 127).all()
    with force_paths(True):
        got = layernorm.ptf_layernorm(*_on_device(args))
    testing.assert_equal(got.cpu(), expected)


@triton_only
def test_triton_dyadic_layernorm_with_unnormalised_gains_takes_the_general_path(gen):
    """The kernels are defined for gains the op refuses (value checks off): with one |gain| below
    2**30 the fast path's one-compare bit length would be wrong, so the launcher must not take it."""
    case = testing.layernorm_dyadic_case(5, 48, gen)
    args = list(case.args)
    gm = args[3].clone()
    gm[7] = 12345
    args[3] = gm
    with force_paths(True):
        assert not layernorm.fast_dyadic(gm.to(DEVICE))
        got = layernorm.ptf_layernorm_dyadic(*_on_device(args))
    testing.assert_equal(got.cpu(), ref.ptf_layernorm_dyadic(*args))


# ==================================================================================================
# The dispatched op: bad inputs, numerics against float LayerNorm and FQ-ViT's formula
# ==================================================================================================


def _bad_cases(gen):
    ln = testing.layernorm_case(4, 16, gen)
    dy = testing.layernorm_dyadic_case(4, 16, gen)
    return [
        # (op, args, exception, substring of the message)
        ("ptf_layernorm", replace(ln.args, 0, ln.args[0].t()), ValueError, "x must be contiguous"),
        ("ptf_layernorm", replace(ln.args, 2, ln.args[2] + 4), ValueError, "ptf_alpha values"),
        ("ptf_layernorm", replace(ln.args, 2, ln.args[2].to(torch.int64)), TypeError, "ptf_alpha must have dtype int32"),
        ("ptf_layernorm", replace(ln.args, 4, ln.args[4].to(torch.int32)), TypeError, "bias must have dtype int64"),
        ("ptf_layernorm", replace(ln.args, 5, ln.args[5][:-1]), ValueError, "shift must have shape"),
        ("ptf_layernorm", replace(ln.args, 1, -129), ValueError, "input_zero_point"),
        ("ptf_layernorm", replace(ln.args, 0, torch.zeros((2, 9000), dtype=torch.int8)), ValueError, "at most 8192"),
        ("ptf_layernorm", ln.args + (-1,), ValueError, "variance_offset"),
        ("ptf_layernorm", ln.args + (2**61 + 1,), ValueError, "variance_offset"),
        ("ptf_layernorm_dyadic", replace(dy.args, 4, torch.full_like(dy.args[4], 14)), ValueError,
         "gamma_shift values"),
        ("ptf_layernorm_dyadic", replace(dy.args, 3, torch.full_like(dy.args[3], 5)), ValueError, "31-bit mantissas"),
        ("ptf_layernorm_dyadic", replace(dy.args, 5, dy.args[5].to(torch.int32)), TypeError, "beta must have dtype int64"),
        ("ptf_layernorm_dyadic", replace(dy.args, 5, torch.full_like(dy.args[5], 2**62 + 1)), ValueError, "beta values"),
        ("ptf_layernorm_dyadic", replace(dy.args, 2, dy.args[2] + 4), ValueError, "ptf_alpha values"),
        ("ptf_layernorm_dyadic", replace(dy.args, 3, dy.args[3][:-1]), ValueError, "gamma_multiplier must have shape"),
    ]


def test_bad_input_matrix(gen):
    """Bad inputs raise TypeError/ValueError whose message names the offending argument."""
    cases = _bad_cases(gen)
    assert len(cases) >= 15
    check_bad_inputs(cases)


# Numerics (docs/numerics.md): each op against the float operation it replaces.


@pytest.mark.parametrize("m", [1, 7, 197])
@pytest.mark.parametrize("c", [2, 64, 384, 771])
def test_ptf_layernorm_vs_float_layernorm(m, c, gen):
    case = testing.layernorm_case(max(m, 1), c, gen, wide_channels=max(1, c // 100))
    out = case.run()
    x_q, zp, _, _, _, _, out_zp = case.args
    f = case.floats
    x = (x_q.to(torch.float64) - zp) * f["scale"]
    y = F.layer_norm(x, (c,), f["gamma"], f["beta"], eps=1e-12)
    expected = torch.clamp(torch.round(y / f["out_scale"]) + out_zp, -128, 127)
    expected = _constant_rows_give_beta(expected, x_q, zp, case.args[2], f["beta"], f["out_scale"], out_zp)
    diff = (out.to(torch.float64) - expected).abs()
    # Every element within 1 LSB (constant rows: beta / s_out); the exact-match rate is measured on a
    # large sample below.
    assert diff.max() <= 1, f"max error {diff.max()} LSB"


@pytest.mark.parametrize("eps", [0.0, 1e-6, 1e-2])
def test_ptf_layernorm_many_rows_strong_channel_variation(eps, gen):
    case = testing.layernorm_case(4096, 768, gen, wide_channels=8, eps=eps)
    out = case.run()
    x_q, zp, alpha, _, _, _, out_zp = case.args[:7]
    assert alpha.max() >= 2, "the case must exercise the PTF shifts"
    f = case.floats
    x = (x_q.to(torch.float64) - zp) * f["scale"]
    y = F.layer_norm(x, (768,), f["gamma"], f["beta"], eps=eps or 1e-12)
    expected = torch.clamp(torch.round(y / f["out_scale"]) + out_zp, -128, 127)
    diff = (out.to(torch.float64) - expected).abs()
    assert diff.max() <= 1
    assert (diff == 0).float().mean() >= 0.999


def _constant_rows(x_q, zp, alpha):
    """Rows whose channels hold one real value (zero variance: the float formulas give NaN there)."""
    real = (x_q.to(torch.int64) - zp) << alpha.to(torch.int64)
    return (real == real[:, :1]).all(dim=1)


def _constant_rows_give_beta(expected, x_q, zp, alpha, beta, out_scale, out_zp):
    """``expected`` with its zero-variance rows replaced by the documented output ``beta / s_out``
    (the float formulas give NaN or an arbitrary value there)."""
    constant = _constant_rows(x_q, zp, alpha)
    beta_codes = torch.clamp(torch.round(beta.to(torch.float64) / out_scale) + out_zp, -128, 127)
    return torch.where(constant[:, None], beta_codes.expand_as(expected), expected)


def _fqvit_int_layernorm_float64(x_q, zp, scale, gamma, beta, out_scale):
    """FQ-ViT's QIntLayerNorm integer-mode formula (docs/fqvit.md §3.3) in float64, transcribed
    independently: x_q on the PTF grid, no epsilon, 8-bit M over 2**N, B rounded at 2**N."""
    c = x_q.shape[-1]
    s_min = scale.min()
    xq = (x_q.to(torch.float64) - zp) * torch.round(scale / s_min)
    mean = xq.mean(dim=-1, keepdim=True) * s_min
    std = (s_min / c) * torch.sqrt(c * (xq**2).sum(-1, keepdim=True) - xq.sum(-1, keepdim=True) ** 2)
    a = s_min / std * gamma / out_scale
    n = torch.clamp(7 - torch.floor(torch.log2(a.abs())), 0, 31)
    m = torch.clamp(torch.floor(a.abs() * 2**n), 0, 255)
    b = torch.round((beta - mean / std * gamma) / out_scale * 2**n)
    return torch.round((torch.sign(a) * m * xq + b) / 2**n)


@pytest.mark.parametrize("m", [1, 7, 197])
@pytest.mark.parametrize("c", [2, 3, 64, 384, 771])
def test_ptf_layernorm_dyadic_equals_fqvit_formula(m, c, gen):
    """The integer op computes FQ-ViT's approximation itself: equal to its float64 evaluation except
    where the exact value sits on a floor or rounding boundary. With C = 2 the standard deviation is
    rational and B hits exact ties, which the fixed point (floors of A and the mean) rounds down:
    measured 0.1 % of the outputs at C = 2, none at C = 3..8, ~3e-6 at C >= 64 (400 seeds: at most 1
    of the 5,397 outputs at 7 x 771, 4 of 151,887 at 197 x 771). So the bound is a count: a rate of
    1e-4 (30x the measured one), and at least 2 outputs, since one boundary output in a small case
    is expected now and then (a 0.9999 fraction failed 2 % of the seeds at 7 x 771)."""
    case = testing.layernorm_dyadic_case(m, c, gen, wide_channels=max(1, c // 100))
    out = case.run()
    x_q, zp, _, _, _, _, out_zp = case.args
    f = case.floats
    y = _fqvit_int_layernorm_float64(x_q, zp, f["scale"], f["gamma"], f["beta"], f["out_scale"])
    expected = torch.clamp(y + out_zp, -128, 127)
    expected = _constant_rows_give_beta(expected, x_q, zp, case.args[2], f["beta"], f["out_scale"], out_zp)
    diff = (out.to(torch.float64) - expected).abs()
    assert diff.max() <= 1
    mismatches = int((diff != 0).sum())
    assert mismatches <= (0.01 if c == 2 else 1e-4) * diff.numel() or (c != 2 and mismatches <= 2), mismatches


def test_ptf_layernorm_dyadic_many_rows(gen):
    # Our fixed point carries about 2**-30 of A and 2**-12 of B (FQ-ViT's float32: ~2**-24 and
    # ~2**-6); measured 2e-6 to 5e-6 of the outputs differ from the float64 evaluation, by 1.
    case = testing.layernorm_dyadic_case(4096, 768, gen, wide_channels=8)
    x_q, zp, _, gm, gs, beta, out_zp = case.args
    alpha = torch.randint(0, 4, (768,), generator=gen, dtype=torch.int32)
    alpha[0] = 0  # PTF shifts 0..3, counted from the finest channel
    out = torch.ops.fqvit.ptf_layernorm_dyadic(x_q, zp, alpha, gm, gs, beta, out_zp)
    f = case.floats
    scale = torch.pow(2.0, alpha.to(torch.float64)) * 0.01
    y = _fqvit_int_layernorm_float64(x_q, zp, scale, f["gamma"], f["beta"], f["out_scale"])
    diff = (out.to(torch.float64) - torch.clamp(y + out_zp, -128, 127)).abs()
    assert diff.max() <= 1 and (diff == 0).double().mean() >= 0.9999


def test_ptf_layernorm_zero_variance_rows_are_finite_and_defined(gen):
    # Equal real values in every channel: the zero point everywhere (real 0 whatever each channel's
    # PTF shift), or any constant when all shifts are 0. FQ-ViT returns NaN here (its issue #31).
    case = testing.layernorm_case(5, 64, gen)
    x_q, zp, alpha = case.args[:3]
    variants = [(torch.full_like(x_q, zp), alpha), (torch.full_like(x_q, 17), torch.zeros_like(alpha))]
    for constant, shifts in variants:
        args = (constant, zp, shifts) + case.args[3:]
        out = torch.ops.fqvit.ptf_layernorm(*args)
        _, _, _, _, bias, shift, out_zp = args
        expected = torch.clamp(ref.round_shift(bias, shift) + out_zp, -128, 127).to(torch.int8)
        testing.assert_equal(out, expected.expand_as(out))
        f = case.floats
        beta_only = torch.clamp(torch.round(f["beta"] / f["out_scale"]) + out_zp, -128, 127)
        assert (out[0].to(torch.float64) - beta_only).abs().max() <= 1
