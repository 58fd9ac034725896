"""Each integer op against the float operation it replaces (declared error in output LSBs).

Tolerances come from docs/numerics.md: requantization is a fixed-point product followed by one
rounding, so it may differ from the float formula by at most 1 LSB (the float formula rounds half
to even, the integer one half up, and the multiplier carries 31 bits).
"""

import pytest
import torch
import torch.nn.functional as F

from fqvit_kernels import params, reference as ref, testing
from lis_transcription import lis_codes, scores_to_float

TOKENS = [1, 7, 197, 577]


def _float_linear(case):
    x, weight = case.args[0], case.args[1]
    f = case.floats
    centered = (x.to(torch.float64) - f["x_zero_point"]) * f["x_scale"]
    w = weight.to(torch.float64) * f["weight_scale"][:, None]
    return centered @ w.t() + f["bias"]


@pytest.mark.parametrize("m", TOKENS)
@pytest.mark.parametrize("k", [64, 200, 771])
def test_int8_linear_requant_within_one_lsb(m, k, gen):
    case = testing.linear_case(m, 96, k, gen)
    out = case.run()
    f = case.floats
    expected = torch.clamp(torch.round(_float_linear(case) / f["out_scale"]) + f["out_zero_point"], -128, 127)
    diff = (out.to(torch.float64) - expected).abs()
    assert diff.max() <= 1, f"max error {diff.max()} LSB"
    assert (diff == 0).float().mean() > 0.97


@pytest.mark.parametrize("m", [7, 197])
def test_int8_linear_residual_within_one_lsb_of_float_add(m, gen):
    case = testing.linear_case(m, 160, 128, gen, "residual")
    out = case.run()
    f = case.floats
    # The branch alone is the plain epilogue (checked against float above); given that branch,
    # FQ-ViT adds the residual in float and re-quantizes onto the PTF grid: one rounding, <= 1 LSB.
    branch = torch.ops.fqvit.int8_linear(*case.args[:6]).to(torch.float64)
    real = (branch - f["out_zero_point"]) * f["out_scale"] + (
        case.args[8].to(torch.float64) - f["residual_zero_point"]) * f["residual_scale"]
    expected = torch.clamp(torch.round(real / f["final_scale"]) + f["final_zero_point"], -128, 127)
    diff = (out.to(torch.float64) - expected).abs()
    assert diff.max() <= 1, f"max error {diff.max()} LSB"
    assert (diff == 0).float().mean() > 0.97


@pytest.mark.parametrize("m", [7, 197])
def test_int8_linear_gelu_table_equals_quantized_float_gelu(m, gen):
    """The GELU step table reproduces FQ-ViT's qact(GELU(v)) of the float linear output v: the only
    differences left are v within one pre-GELU grid step (2**-17 of a GELU output step or finer) of
    a rounding boundary, and the 31-bit multiplier; at most 1 LSB."""
    case = testing.linear_case(m, 512, 256, gen, "gelu")
    out = case.run()
    f = case.floats
    gelu = F.gelu(_float_linear(case))  # float64, exact erf
    expected = torch.clamp(torch.round(gelu / f["gelu_scale"]) + f["gelu_zero_point"], -128, 127)
    diff = (out.to(torch.float64) - expected).abs()
    assert diff.max() <= 1
    assert (diff == 0).double().mean() >= 0.999


def test_gelu_table_covers_every_step(gen):
    """Against float64 GELU codes on a dense sweep of pre-GELU values, including both tails."""
    for _ in range(4):
        s_out = float(torch.exp(torch.empty(()).uniform_(-7, -1, generator=gen)))
        zp = int(torch.randint(-128, 20, (), generator=gen))
        table = params.gelu_table(s_out, zp)
        v = torch.cat([torch.linspace(-12, 300 * s_out, 200001, dtype=torch.float64),
                       torch.randn(50000, generator=gen, dtype=torch.float64) * 3])
        t = torch.round(v / table.pre_scale).to(torch.int64) + table.pre_zero_point
        got = ref.gelu_table_lookup(t, table.table, table.cell_bits)
        g = 0.5 * v * (1 + torch.special.erf(v / 2**0.5))
        expected = torch.clamp(torch.round(g / s_out + zp + 128), 0, 255) - 128
        # v is rounded onto the pre-GELU grid first: compare at the grid value itself.
        vg = (t - table.pre_zero_point).to(torch.float64) * table.pre_scale
        gg = 0.5 * vg * (1 + torch.special.erf(vg / 2**0.5))
        on_grid = torch.clamp(torch.round(gg / s_out + zp + 128), 0, 255) - 128
        testing.assert_equal(got.to(torch.int64), on_grid.to(torch.int64), f"s_out={s_out:g} zp={zp}")
        assert (got.to(torch.float64) != expected).double().mean() < 1e-4


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
    measured 0.1 % of the outputs at C = 2, none at C = 3..8, ~1e-6 at C >= 64."""
    case = testing.layernorm_dyadic_case(m, c, gen, wide_channels=max(1, c // 100))
    out = case.run()
    x_q, zp, _, _, _, _, out_zp = case.args
    f = case.floats
    y = _fqvit_int_layernorm_float64(x_q, zp, f["scale"], f["gamma"], f["beta"], f["out_scale"])
    expected = torch.clamp(y + out_zp, -128, 127)
    expected = _constant_rows_give_beta(expected, x_q, zp, case.args[2], f["beta"], f["out_scale"], out_zp)
    diff = (out.to(torch.float64) - expected).abs()
    assert diff.max() <= 1
    assert (diff == 0).double().mean() >= (0.99 if c == 2 else 0.9999)


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


def _transcribed(scores, case, bits=4):
    s, zp = case.floats["score_scale"], case.floats["score_zero_point"]
    codes = lis_codes(scores_to_float(scores, s, zp), s, bits)
    return torch.where(codes < 0, torch.full_like(codes, 255), codes).to(torch.uint8)


@pytest.mark.parametrize("n", [1, 7, 50, 197, 577])
def test_lis_codes_equal_independent_transcription(n, gen):
    for _ in range(3):
        case = testing.scores_case((4, n), gen)
        scores, table, bits = case.args
        testing.assert_equal(torch.ops.fqvit.log_int_softmax(scores, table, bits), _transcribed(scores, case, bits),
                             f"LIS codes S={case.floats['score_scale']}")


@pytest.mark.parametrize("score_scale", [0.005, 0.0213, 0.05, 0.1, 0.35, 0.69, 1.5])
def test_lis_codes_over_all_distances(score_scale, gen):
    # Rows that contain every distance 0..255 from the row max, in shuffled order.
    base = torch.arange(127, -129, -1, dtype=torch.int64)
    rows = torch.stack([base[torch.randperm(256, generator=gen)] for _ in range(4)]).to(torch.int8)
    zp = int(torch.randint(-128, 128, (), generator=gen))
    case = testing.OpCase("log_int_softmax", (rows, params.lis_exp_table(score_scale, zp), 4),
                          dict(score_scale=score_scale, score_zero_point=zp))
    testing.assert_equal(case.run(), _transcribed(rows, case))


def test_lis_eight_bit_codes_match_transcription(gen):
    case = testing.scores_case((6, 197), gen, bits=8)
    scores, table, _ = case.args
    testing.assert_equal(torch.ops.fqvit.log_int_softmax(scores, table, 8), _transcribed(scores, case, 8))


def test_lis_codes_vs_official_float32_sum(gen):
    """The official code sums the exponents in float32; the op rounds the exact sum to float32 once.
    Measured: the two orders give the same codes but for rare near-ties (docs/numerics.md)."""
    differ = total = 0
    for n in (17, 197, 577):
        case = testing.scores_case((64, n), gen)
        scores = case.args[0]
        s, zp = case.floats["score_scale"], case.floats["score_zero_point"]
        official = lis_codes(scores_to_float(scores, s, zp), s, exact_sum=False)
        official = torch.where(official < 0, torch.full_like(official, 255), official).to(torch.uint8)
        differ += int((case.run() != official).sum())
        total += scores.numel()
    assert differ / total < 1e-4, f"{differ} of {total} codes differ"


@pytest.mark.parametrize("n", [1, 7, 197])
@pytest.mark.parametrize("d", [1, 64, 80])
def test_log_attn_v_equals_float_product(n, d, gen):
    codes = torch.randint(0, 17, (2, 3, n, n), generator=gen).to(torch.uint8)
    codes[codes == 16] = 255
    v = torch.randint(-128, 128, (2, 3, n, d), generator=gen, dtype=torch.int8)
    zp = int(torch.randint(-128, 128, (), generator=gen))
    # Any codes are valid as long as the weights stay in range; these sum to < 256.
    out = torch.ops.fqvit.log_attn_v(codes, v, zp)
    weights = torch.where(codes <= 15, torch.pow(2.0, -codes.to(torch.float64)), torch.zeros((), dtype=torch.float64))
    expected = weights @ (v.to(torch.float64) - zp)
    assert torch.equal(out.to(torch.float64) * 2.0**-15, expected)


def test_quantize_matches_fqvit_uniform_quantizer(gen):
    for per_channel in (False, True):
        case = testing.quantize_case((7, 197, 96), gen, per_channel)
        x, scale, zp = case.args
        out = torch.ops.fqvit.quantize(x, scale, zp)
        zp_u = zp + 128  # FQ-ViT: q = clamp(round(x / s + zp), 0, 255) in float32, uint8 codes
        expected = (torch.clamp(torch.round(x / scale + zp_u), 0, 255) - 128).to(torch.int8)
        testing.assert_equal(out, expected)
        back = torch.ops.fqvit.dequantize(out, scale, zp)
        assert torch.equal(back, (expected.float() + 128 - zp_u) * scale)


def test_lis_ratio_ties_round_half_to_even():
    # Row [0, -1] with e = [3, 2]: E/e_0 = 5/3 -> R = 2, k = 1; E/e_1 = 2.5 is a tie -> R = 2 (even),
    # k = 1, where rounding half up would give R = 3, k = 2. e = 0 (distance >= 2 here) is masked.
    table = torch.zeros(256, 256, dtype=torch.int64)
    table[:, 0], table[:, 1] = 3, 2
    scores = torch.tensor([[0, -1, -128, -128]], dtype=torch.int8)
    codes = torch.ops.fqvit.log_int_softmax(scores, table)
    testing.assert_equal(codes, torch.tensor([[1, 1, 255, 255]], dtype=torch.uint8))


def test_lis_ratio_follows_float32_rounding():
    """A row sum with more than 24 significant bits: FQ-ViT's float32 sum rounds it, and a ratio just
    above 2.5 in exact arithmetic becomes the tie 2.5, which rounds to even (code 1, not 2)."""
    e0, e1, e2 = 3 << 29, 1 << 30, 1  # float32-representable exponents
    total = e0 + e1 + e2  # 2.5 * 2**30 + 1, not a float32
    table = torch.zeros(256, 256, dtype=torch.int64)
    table[:, 0], table[:, 1], table[:, 2] = e0, e1, e2
    scores = torch.tensor([[5, 4, 3]], dtype=torch.int8)
    official = torch.round(torch.tensor(float(total), dtype=torch.float32) / torch.tensor(float(e1)))
    assert int(official) == 2 and (2 * total + e1) // (2 * e1) == 3  # float32 vs exact
    codes = torch.ops.fqvit.log_int_softmax(scores, table)
    assert int(codes[0, 1]) == 1  # R = 2: floor(log2) = 1, next bit 0
