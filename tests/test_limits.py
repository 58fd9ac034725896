"""Every op at the edges of the ranges documented in docs/numerics.md: exact there, a clear error
just past them. Results are checked against plain Python integers (no torch arithmetic) and, where
present, against the C++ backend and the Triton kernels (interpreter or GPU)."""

import pytest
import torch

from fqvit_kernels import ops, params, reference as ref, testing
from op_backends import all_agree

def _backends_agree(name, args, expected, dispatch=True, triton=True):
    """Every backend equals ``expected``; ``dispatch=False`` for arguments the op refuses but the
    kernels must still handle without undefined behaviour; ``triton=False`` where the interpreter
    would take minutes."""
    skip = (() if dispatch else ("dispatch", "dispatch-cuda")) + (() if triton else ("triton", "triton-fallback"))
    all_agree(name, args, expected, skip=skip)


def _round_shift(v: int, s: int) -> int:
    return (v + (1 << (s - 1))) >> s  # Python ints: exact, arithmetic shift


def test_int8_linear_at_the_int64_bias_limit():
    k = 64
    x = torch.full((2, k), -128, dtype=torch.int8)
    x[1] = 127
    w = torch.full((3, k), -128, dtype=torch.int8)
    headroom = params.max_linear_bias(k)
    bias = torch.tensor([headroom, -headroom, 0], dtype=torch.int64)
    mult = torch.tensor([2**31 - 1, 2**30, 1], dtype=torch.int32)
    shift = torch.tensor([62, 1, 31], dtype=torch.int32)
    out = torch.ops.fqvit.int8_linear(x, w, bias, mult, shift, 0)
    expected = torch.empty(2, 3, dtype=torch.int8)
    for i in range(2):
        for n in range(3):
            acc = sum(int(x[i, j]) * int(w[n, j]) for j in range(k))
            v = acc * int(mult[n]) + int(bias[n])
            assert -(2**62) <= v <= 2**62  # plus the rounding half 2**61: inside int64
            expected[i, n] = max(-128, min(127, _round_shift(v, int(shift[n]))))
    testing.assert_equal(out, expected)
    _backends_agree("int8_linear", (x, w, bias, mult, shift, 0), expected)
    with pytest.raises(ValueError, match="bias values"):
        torch.ops.fqvit.int8_linear(x, w, bias + torch.tensor([1, 0, 0]), mult, shift, 0)


def test_int8_linear_gelu_table_at_its_limits():
    """The longest table at the widest cells it allows (L * 2**bits = 2**30), t far outside it."""
    gen = torch.Generator().manual_seed(5)
    x = torch.randint(-128, 128, (4, 40), generator=gen, dtype=torch.int8)
    w = torch.randint(-128, 128, (6, 40), generator=gen, dtype=torch.int8)
    bias = torch.tensor([0, 2**40, -(2**40), 7, 0, 0], dtype=torch.int64)
    mult = torch.tensor([2**31 - 1, 2**30, 1, 12345, 0, 2**31 - 1], dtype=torch.int32)
    shift = torch.tensor([1, 20, 62, 9, 5, 40], dtype=torch.int32)
    for length, bits in ((ops.MAX_GELU_TABLE_LENGTH, 14), (1024, 20), (1, 20), (1, 0)):
        table = testing.random_step_table(gen, length, bits)
        for zp in (-(2**31), 2**31 - 1, 0):
            args = (x, w, bias, mult, shift, zp, table, bits)
            acc = x.to(torch.int64) @ w.to(torch.int64).t()
            t = [[_round_shift(int(acc[i, n]) * int(mult[n]) + int(bias[n]), int(shift[n])) + zp for n in range(6)]
                 for i in range(4)]
            expected = torch.empty(4, 6, dtype=torch.int8)
            for i in range(4):
                for n in range(6):
                    cell = min(max(t[i][n] >> bits, 0), length - 1)
                    e = int(table[cell])
                    below = ((e & 0xFF) ^ 0x80) - 0x80
                    direction = ((e >> 8) & 3) - 1
                    expected[i, n] = below + (direction if t[i][n] - (cell << bits) >= (e >> 10) else 0)
            out = ref.int8_linear(*args)
            testing.assert_equal(out, expected, f"L={length} bits={bits} zp={zp}")
            inside = 0 <= zp <= length << bits  # a pre-GELU zero point outside the table: refused by the op
            _backends_agree("int8_linear", args, expected, dispatch=inside)
            if not inside:
                with pytest.raises(ValueError, match="pre-GELU zero point"):
                    torch.ops.fqvit.int8_linear(*args)
    with pytest.raises(ValueError, match="more than 2"):
        torch.ops.fqvit.int8_linear(x, w, bias, mult, shift, 0, torch.zeros(2**16, dtype=torch.int32), 15)


def test_ptf_layernorm_at_the_channel_limit_with_extreme_values():
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
    _backends_agree("ptf_layernorm", args, out)
    with pytest.raises(ValueError, match="at most 8192"):
        torch.ops.fqvit.ptf_layernorm(torch.zeros((1, c + 1), dtype=torch.int8), 0,
                                      torch.zeros(c + 1, dtype=torch.int32), *(t[:1].expand(c + 1).contiguous()
                                                                             for t in (wm, bias, shift)), 0)


def test_ptf_layernorm_dyadic_at_its_limits():
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
        root = _isqrt(var << (2 * p))
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
    _backends_agree("ptf_layernorm_dyadic", args, out)
    with pytest.raises(ValueError, match="gamma_shift"):
        torch.ops.fqvit.ptf_layernorm_dyadic(x, -128, alpha, gm, gs - 1, beta, 0)
    with pytest.raises(ValueError, match="beta values"):
        torch.ops.fqvit.ptf_layernorm_dyadic(x, -128, alpha, gm, gs, beta + 1, 0)


def _isqrt(v: int) -> int:
    import math

    return math.isqrt(v)


def _rhe(v: int, s: int) -> int:
    if s == 0:
        return v
    q, r = v >> s, v - ((v >> s) << s)
    half = 1 << (s - 1)
    return q + (1 if r > half or (r == half and q & 1) else 0)


def test_log_int_softmax_at_the_int64_sum_limit():
    n = 4096
    # The smallest score scale whose table keeps n * max(table) < 2**63.
    scale = 0.0008
    while int(params.lis_exp_table(scale).max()) * n >= 2**63:
        scale *= 1.01
    table = params.lis_exp_table(scale)
    assert int(table.max()) * n < 2**63 <= int(params.lis_exp_table(scale / 1.01).max()) * n
    scores = torch.full((2, n), 127, dtype=torch.int8)  # all at the row max: E = n * table[0]
    scores[1, ::3] = -128
    out = ref.log_int_softmax(scores, table)
    # Row 0: every e = table[255, 0], E / e = n = 4096 = 2**12 exactly -> code 12.
    assert (out[0] == 12).all()
    e_max, e_min = int(table[255, 0]), int(table[255, 255])
    total = e_max * (n - len(range(0, n, 3))) + e_min * len(range(0, n, 3))
    # FQ-ViT's float32 round(E / e) by Python floats: float32 E, float32 quotient, half to even.
    import numpy as np
    r = int(np.round(np.float32(total) / np.float32(e_max)))
    m = r.bit_length() - 1
    assert int(out[1, 1]) == m + ((r >> (m - 1)) & 1 if m >= 1 else 0)
    _backends_agree("log_int_softmax", (scores, table, 4), out)
    with pytest.raises(ValueError, match="overflows int64"):
        torch.ops.fqvit.log_int_softmax(scores, params.lis_exp_table(scale / 1.01), 4)


def test_log_attn_v_weight_sum_limit():
    nk = 257  # 255 * 257 * 2**15 = 2147450880 < 2**31: the largest all-zero-code row
    codes = torch.zeros((1, 2, nk), dtype=torch.uint8)
    v = torch.full((1, nk, 3), 127, dtype=torch.int8)
    out = torch.ops.fqvit.log_attn_v(codes, v, -128)
    assert int(out.max()) == 255 * nk * 2**15
    _backends_agree("log_attn_v", (codes, v, -128), out)
    with pytest.raises(ValueError, match="not LIS codes"):
        torch.ops.fqvit.log_attn_v(torch.zeros((1, 2, nk + 1), dtype=torch.uint8),
                                   torch.zeros((1, nk + 1, 3), dtype=torch.int8), 0)


def test_attention_scores_at_the_head_dim_limit():
    d = ops.MAX_HEAD_DIM
    q = torch.full((1, 2, d), -128, dtype=torch.int8)
    k = torch.full((1, 1, d), -128, dtype=torch.int8)
    args = (q, k, 127, 1, 31, 0)
    out = ref.attention_scores(*args)
    acc = 255 * 255 * d
    assert acc < 2**31 and int(out[0, 0, 0]) == min(127, _round_shift(acc, 31))  # no tie: any rounding agrees
    _backends_agree("attention_scores", args, out, triton=False)  # interpreter: too many K tiles
    with pytest.raises(ValueError, match="head dim"):
        torch.ops.fqvit.attention_scores(torch.zeros((1, 1, d + 1), dtype=torch.int8),
                                         torch.zeros((1, 1, d + 1), dtype=torch.int8), 0, 1, 31, 0)


def test_int_attention_with_constant_scores_and_extreme_requant(gen):
    # All keys equal: every probability is 1/N, so every code is round(log2 N) and the context
    # is v's mean; extreme but valid multipliers saturate cleanly.
    case = testing.attention_case(1, 2, 33, 16, gen)
    q, k, v, zp = case.args[:4]
    k = torch.zeros_like(k)
    for o_mult, o_shift in ((2**31 - 1, 1), (1, 52), (2**30, 30)):
        args = (q, k, v, zp) + case.args[4:8] + (o_mult, o_shift, 0)
        out = ref.int_attention(*args)
        _backends_agree("int_attention", args, out)
