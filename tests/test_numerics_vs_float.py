"""Each integer op against the float operation it replaces (declared error in output LSBs).

Tolerances come from docs/numerics.md: requantization is a fixed-point product followed by one
rounding, so it may differ from the float formula by at most 1 LSB (the float formula rounds half
to even, the integer one half up, and the multiplier carries 31 bits).
"""

import pytest
import torch
import torch.nn.functional as F

from fqvit_kernels import params, reference as ref, testing
from lis_transcription import lis_codes

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
        case.args[7].to(torch.float64) - f["residual_zero_point"]) * f["residual_scale"]
    expected = torch.clamp(torch.round(real / f["final_scale"]) + f["final_zero_point"], -128, 127)
    diff = (out.to(torch.float64) - expected).abs()
    assert diff.max() <= 1, f"max error {diff.max()} LSB"
    assert (diff == 0).float().mean() > 0.97


def test_int8_linear_gelu_table_close_to_float_gelu(gen):
    case = testing.linear_case(197, 128, 256, gen, "gelu", lut_length=4096)
    out = case.run()
    f = case.floats
    gelu = F.gelu(_float_linear(case).to(torch.float32)).to(torch.float64)
    expected = torch.clamp(torch.round(gelu / f["gelu_scale"]) + f["gelu_zero_point"], -128, 127)
    diff = (out.to(torch.float64) - expected).abs()
    # Pre-GELU grid step = out_scale, GELU slope <= 1.13: the table input adds <= 0.57 * out_scale /
    # gelu_scale LSB of error (< 1 LSB for these scales) on top of the output rounding.
    bound = 1 + int(0.57 * f["out_scale"] / f["gelu_scale"] + 0.999)
    assert diff.max() <= bound
    assert (diff <= 1).float().mean() > 0.99


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
    diff = (out.to(torch.float64) - expected).abs()
    constant_rows = (x_q == x_q[:, :1]).all(dim=1)
    diff = diff[~constant_rows]
    if diff.numel():
        # Every element within 1 LSB; the exact-match rate is measured on a large sample below.
        assert diff.max() <= 1, f"max error {diff.max()} LSB"


def test_ptf_layernorm_many_rows_strong_channel_variation(gen):
    case = testing.layernorm_case(4096, 768, gen, wide_channels=8)
    out = case.run()
    x_q, zp, alpha, _, _, _, out_zp = case.args
    assert alpha.max() >= 2, "the case must exercise the PTF shifts"
    f = case.floats
    x = (x_q.to(torch.float64) - zp) * f["scale"]
    y = F.layer_norm(x, (768,), f["gamma"], f["beta"], eps=1e-12)
    expected = torch.clamp(torch.round(y / f["out_scale"]) + out_zp, -128, 127)
    diff = (out.to(torch.float64) - expected).abs()
    assert diff.max() <= 1
    assert (diff == 0).float().mean() >= 0.999


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


@pytest.mark.parametrize("n", [1, 7, 50, 197, 577])
def test_lis_codes_equal_independent_transcription(n, gen):
    for _ in range(3):
        case = testing.scores_case((4, n), gen)
        scores, table, bits = case.args
        s = case.floats["score_scale"]
        zp = int(torch.randint(-128, 128, (), generator=gen))
        x = (scores.to(torch.float64) - zp) * s
        expected = lis_codes(x, s, bits)
        expected = torch.where(expected < 0, torch.full_like(expected, 255), expected).to(torch.uint8)
        testing.assert_equal(torch.ops.fqvit.log_int_softmax(scores, table, bits), expected, f"LIS codes S={s}")


@pytest.mark.parametrize("score_scale", [0.005, 0.0213, 0.05, 0.1, 0.35, 0.69, 1.5])
def test_lis_codes_over_all_distances(score_scale, gen):
    # Rows that contain every distance 0..255 from the row max, in shuffled order.
    base = torch.arange(127, -129, -1, dtype=torch.int64)
    rows = torch.stack([base[torch.randperm(256, generator=gen)] for _ in range(4)]).to(torch.int8)
    table = params.lis_exp_table(score_scale)
    expected = lis_codes(rows.to(torch.float64) * score_scale, score_scale)
    expected = torch.where(expected < 0, torch.full_like(expected, 255), expected).to(torch.uint8)
    testing.assert_equal(torch.ops.fqvit.log_int_softmax(rows, table), expected)


def test_lis_eight_bit_codes_match_transcription(gen):
    case = testing.scores_case((6, 197), gen, bits=8)
    scores, table, _ = case.args
    s = case.floats["score_scale"]
    expected = lis_codes(scores.to(torch.float64) * s, s, bits=8)
    expected = torch.where(expected < 0, torch.full_like(expected, 255), expected).to(torch.uint8)
    testing.assert_equal(torch.ops.fqvit.log_int_softmax(scores, table, 8), expected)


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
    table = torch.zeros(256, dtype=torch.int64)
    table[0], table[1] = 3, 2
    scores = torch.tensor([[0, -1, -128, -128]], dtype=torch.int8)
    codes = torch.ops.fqvit.log_int_softmax(scores, table)
    testing.assert_equal(codes, torch.tensor([[1, 1, 255, 255]], dtype=torch.uint8))
