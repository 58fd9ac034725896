"""The C++ CPU backend (fqvit_kernels._C): every op bit-identical to fqvit_kernels.reference.

Each case runs the extension function directly and through ``torch.ops.fqvit`` (which must
dispatch to it) and compares both with the reference using ``torch.equal``: ragged shapes, strided
inputs, range edges, a hypothesis property test and 1-vs-2-thread determinism.
"""

import pytest
import torch
from hypothesis import given, settings, strategies as st

from fqvit_kernels import backends, ops, params, reference as ref, testing

try:
    from fqvit_kernels import _C
except ImportError as exc:  # only when the extension was not built
    pytest.skip(f"C++ extension fqvit_kernels._C is not built ({backends.cpu_extension_error() or exc}); "
                "build it with `pip install --no-build-isolation --no-deps -e .`", allow_module_level=True)

INT32_MAX = 2**31 - 1


def check(name, args, what="", refused=None):
    """C++ direct and dispatched outputs equal the reference (values, dtype, shape and strides).

    ``refused``: arguments the op refuses with a ValueError matching it, which the kernel must
    still compute like the reference (no undefined behaviour for any parameter value).
    """
    expected = getattr(ref, name)(*args)
    direct = getattr(_C, name)(*args)
    label = f"{name} {what}".strip()
    testing.assert_equal(direct, expected, f"{label} (fqvit_kernels._C)")
    if refused is not None:
        with pytest.raises(ValueError, match=refused):
            getattr(torch.ops.fqvit, name)(*args)
        return direct
    dispatched = getattr(torch.ops.fqvit, name)(*args)
    testing.assert_equal(dispatched, expected, f"{label} (torch.ops.fqvit)")
    if name == "int_attention":  # [B, H, N, D] in [B, N, H, D] memory, as the fake kernel says
        assert direct.stride() == ops.attention_output(args[0]).stride(), label
    elif all(a.is_contiguous() for a in args if isinstance(a, torch.Tensor)):
        assert direct.stride() == expected.stride(), label
    return direct


def _int8(gen, *shape):
    return torch.randint(-128, 128, shape, generator=gen, dtype=torch.int8)


def test_every_cpu_op_dispatches_to_cpp():
    assert backends.cpu_extension_error() is None
    for name in ops.OP_NAMES:
        assert hasattr(_C, name), name
        assert backends.BACKEND[name]["cpu"] == "cpp", name


def test_dispatch_with_default_arguments(gen):
    # The dispatcher drops trailing arguments equal to their defaults before calling the kernel.
    case = testing.linear_case(5, 16, 24, gen)
    assert len(case.args) == 6
    testing.assert_equal(torch.ops.fqvit.int8_linear(*case.args), ref.int8_linear(*case.args))
    scores, table, _ = testing.scores_case((3, 9), gen).args
    testing.assert_equal(torch.ops.fqvit.log_int_softmax(scores, table), ref.log_int_softmax(scores, table))


# ----------------------------------------------------------------------------------------------
# GEMMs
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("m", [1, 7, 197, 577])
def test_int8_gemms_ragged(m, gen):
    # K = 1 and N = 1 make the transposed weight a [1, N] / [K, 1] view with degenerate strides.
    for n, k in ((9, 13), (48, 100), (24, 385), (5, 1), (1, 7), (1, 1)):
        check("int8_matmul", testing.matmul_case(m, n, k, gen).args, f"M={m} N={n} K={k}")
        for epilogue in ("plain", "gelu", "steps", "residual") if m * n >= 2 else ():  # linear_case: 2 outputs
            case = testing.linear_case(m, n, k, gen, epilogue)
            check("int8_linear", case.args, f"{epilogue} M={m} N={n} K={k}")


@pytest.mark.parametrize("m", [2049, 4097 + 7])
def test_int8_linear_in_row_panels(m, gen):
    """Tall, wide products (M > 2048, N >= 1024) run as equal row panels, each GEMM followed by its
    epilogue: ragged panel counts, every epilogue, the residual rows and the strided x rows indexed
    per panel."""
    for epilogue in ("plain", "gelu", "residual"):
        case = testing.linear_case(m, 1024 + 3, 16, gen, epilogue)
        check("int8_linear", case.args, f"{epilogue} M={m}")
    case = testing.linear_case(m, 1030, 16, gen, "residual")
    args = list(case.args)
    args[0] = torch.cat([args[0], args[0]], 1)[:, ::2]  # strided x
    check("int8_linear", tuple(args), "strided x in panels")


def test_int8_gemms_strided_inputs(gen):
    x = _int8(gen, 40, 2 * 37)[:, ::2]
    weight = _int8(gen, 37, 24).t()  # [24, 37], column-major
    check("int8_matmul", (x, weight))
    case = testing.linear_case(40, 24, 37, gen, "residual")
    args = list(case.args)
    args[0], args[1] = x, weight
    args[2] = torch.stack([args[2], args[2]], 1)[:, 0]  # strided bias
    args[8] = args[8].t().contiguous().t()  # column-major residual
    check("int8_linear", tuple(args), "strided")
    gelu = list(testing.linear_case(40, 24, 37, gen, "gelu").args)
    gelu[0], gelu[1] = x, weight
    gelu[6] = torch.stack([gelu[6], gelu[6]], 1)[:, 0]  # strided table
    check("int8_linear", tuple(gelu), "strided gelu table")


def test_int8_gemms_empty_rows(gen):
    check("int8_matmul", testing.matmul_case(0, 5, 9, gen).args)
    case = testing.linear_case(3, 8, 9, gen)
    check("int8_linear", (case.args[0][:0],) + case.args[1:], "M=0")


def test_int8_gemms_at_max_k():
    k = ops.MAX_GEMM_K
    x = torch.full((2, k), -128, dtype=torch.int8)
    x[1, ::3] = 127
    w = torch.full((3, k), -128, dtype=torch.int8)
    w[2, ::2] = 127
    check("int8_matmul", (x, w), "K=MAX_GEMM_K")
    headroom = params.max_linear_bias(k)
    bias = torch.tensor([headroom, -headroom, 0], dtype=torch.int64)
    mult = torch.tensor([INT32_MAX, 1, 2**30], dtype=torch.int32)
    shift = torch.tensor([62, 1, 31], dtype=torch.int32)
    check("int8_linear", (x, w, bias, mult, shift, 0), "K=MAX_GEMM_K plain")
    table = testing.random_step_table(torch.Generator().manual_seed(0), ops.MAX_GELU_TABLE_LENGTH, 14)
    check("int8_linear", (x, w, bias, mult, shift, 2**30, table, 14), "K=MAX_GEMM_K gelu")
    res = torch.tensor([[127, -128, 5], [-128, 127, 0]], dtype=torch.int8)
    ones = torch.full((3,), INT32_MAX, dtype=torch.int32)
    check("int8_linear", (x, w, bias, mult, shift, 127, None, 0, res, -128, ones, ones,
                          torch.tensor([1, 52, 40], dtype=torch.int32), 127), "K=MAX_GEMM_K residual")


def test_int8_linear_extreme_parameters(gen):
    case = testing.linear_case(33, 17, 29, gen, "residual")
    x, w, bias = case.args[:3]
    for mult_value, shift_value in ((INT32_MAX, 1), (1, 62), (0, 5), (INT32_MAX, 62)):
        mult = torch.full((17,), mult_value, dtype=torch.int32)
        shift = torch.full((17,), shift_value, dtype=torch.int32)
        for zp in (-128, 127):
            check("int8_linear", (x, w, bias, mult, shift, zp), f"plain m={mult_value} s={shift_value}")
            args = (x, w, bias, mult, shift, zp, None, 0) + case.args[8:]
            check("int8_linear", args, f"residual m={mult_value} s={shift_value}")
        for bits in (0, 3, 20):
            table = testing.random_step_table(gen, 2, bits)
            for t_zp in (-(2**31), INT32_MAX, 0):
                check("int8_linear", (x, w, bias, mult, shift, t_zp, table, bits), f"gelu 2-cell table bits={bits}",
                      refused=None if 0 <= t_zp <= 2 << bits else "pre-GELU zero point")


def test_int8_linear_gelu_step_table_edges(gen):
    """Steps at 0 and at 2**bits (never taken), falling and rising steps, indices far outside."""
    case = testing.linear_case(70, 33, 48, gen, "steps")
    x, w, bias, mult, shift, t_zp, table, bits = case.args
    check("int8_linear", case.args, f"random table L={table.numel()} bits={bits}")
    for length, cell_bits in ((1, 0), (1, 20), (5, 0), (300, 7), (2**10, 20)):
        table = testing.random_step_table(gen, length, cell_bits)
        span = length << cell_bits
        for zp in (span // 2, 0, span, -span, 2**31 - 1):
            check("int8_linear", (x, w, bias, mult, shift, zp, table, cell_bits), f"L={length} bits={cell_bits}",
                  refused=None if 0 <= zp <= span else "pre-GELU zero point")


# ----------------------------------------------------------------------------------------------
# PTF LayerNorm
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("m,c", [(1, 1), (7, 7), (197, 384), (577, 33), (3, ops.MAX_LN_CHANNELS)])
def test_ptf_layernorm_ragged(m, c, gen):
    for eps in (0.0, 1e-6, 1e-2):
        check("ptf_layernorm", testing.layernorm_case(m, c, gen, wide_channels=min(4, c), eps=eps).args,
              f"M={m} C={c} eps={eps}")


def test_ptf_layernorm_edges(gen):
    m, c = 9, 50
    case = testing.layernorm_case(m, c, gen)
    x, zp, alpha, wmult, bias, shift, out_zp = case.args
    x = x.clone()
    x[0] = 17  # zero variance
    x[1] = zp  # zero variance at the zero point
    x[2] = torch.where(torch.arange(c) % 2 == 0, 127, -128).to(torch.int8)  # largest spread
    x[3] = -128
    x[3, 0] = 127  # one outlier channel
    check("ptf_layernorm", (x, zp, alpha, wmult, bias, shift, out_zp), "zero-variance / extreme rows")
    alpha3 = torch.full((c,), ops.MAX_PTF_ALPHA, dtype=torch.int32)
    wide = torch.where(torch.arange(c) % 3 == 0, INT32_MAX, -INT32_MAX).to(torch.int32)
    big_bias = torch.where(torch.arange(c) % 2 == 0, 2**60, -(2**60))
    for s in (1, 62):
        shift_s = torch.full((c,), s, dtype=torch.int32)
        for in_zp in (-128, 127):
            check("ptf_layernorm", (x, in_zp, alpha3, wide, big_bias, shift_s, 127), f"extreme s={s}")
            check("ptf_layernorm", (x, in_zp, alpha3, wide, big_bias, shift_s, 127, params.MAX_VARIANCE_OFFSET),
                  f"largest variance offset s={s}")
    rows_equal = torch.full((4, ops.MAX_LN_CHANNELS), -5, dtype=torch.int8)
    rows_equal[1, -1] = 6
    c = ops.MAX_LN_CHANNELS
    check("ptf_layernorm", (rows_equal, 127, torch.full((c,), 3, dtype=torch.int32), torch.full((c,), INT32_MAX, dtype=torch.int32),
                            torch.zeros(c, dtype=torch.int64), torch.full((c,), 40, dtype=torch.int32), 0), "max C")


@pytest.mark.parametrize("m,c", [(1, 1), (7, 7), (197, 384), (577, 33), (3, ops.MAX_LN_CHANNELS)])
def test_ptf_layernorm_dyadic_ragged(m, c, gen):
    check("ptf_layernorm_dyadic", testing.layernorm_dyadic_case(m, c, gen, wide_channels=min(4, c)).args, f"M={m} C={c}")


def test_ptf_layernorm_dyadic_edges(gen):
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
    check("ptf_layernorm_dyadic", (x, zp, alpha, gm, gs, beta, out_zp), "zero-variance / extreme rows")
    alpha3 = torch.full((c,), ops.MAX_PTF_ALPHA, dtype=torch.int32)
    signs = torch.where(torch.arange(c) % 3 == 0, 1, -1)
    for mult_mag, shift_value, beta_value in ((INT32_MAX, 15, 2**62), (2**30, 62, -(2**62)), (0, 31, 0),
                                              (2**30 + 12345, 15, 7)):
        mult = (signs * mult_mag).to(torch.int32)
        shift = torch.full((c,), shift_value, dtype=torch.int32)
        betas = torch.where(torch.arange(c) % 2 == 0, beta_value, -beta_value).to(torch.int64)
        for in_zp in (-128, 127):
            check("ptf_layernorm_dyadic", (x, in_zp, alpha3, mult, shift, betas, 127), f"extreme |gm|={mult_mag}")


# ----------------------------------------------------------------------------------------------
# Log-Int-Softmax and attention
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 7, 50, 197, 577])
def test_log_int_softmax_ragged(n, gen):
    for bits in (1, 4, 8):
        check("log_int_softmax", testing.scores_case((2, 3, n), gen, bits).args, f"N={n} bits={bits}")


def _rows(table_1d: torch.Tensor) -> torch.Tensor:
    """A [256, 256] exponent table whose every row is ``table_1d`` (by distance)."""
    return table_1d.to(torch.int64).expand(256, 256).contiguous()


def test_log_int_softmax_edges(gen):
    n = 197
    scores = _int8(gen, 6, n)
    scores[0] = 5  # all equal
    scores[1] = -128
    scores[1, 3] = 127  # one maximum far above the rest
    scores[2, ::2] = 127
    only_max = torch.zeros(256, dtype=torch.int64)
    only_max[0] = 1000
    check("log_int_softmax", (scores, _rows(only_max), 4), "all masked except the max")
    check("log_int_softmax", (scores, _rows(torch.ones(256)), 8), "flat table")
    top = torch.full((256,), ref.round_to_float32(torch.tensor((2**63 - 1) // n)).item() // 2, dtype=torch.int64)
    top[1::2] = 1
    check("log_int_softmax", (scores, _rows(top), 4), "largest table")
    table = params.lis_exp_table(0.3, 4)
    check("log_int_softmax", (scores.t(), table, 4), "strided scores")
    check("log_int_softmax", (torch.tensor([3], dtype=torch.int8), table, 4), "rank 1")
    check("log_int_softmax", (_int8(gen, 0, 4, 7), table, 4), "empty")
    for score_scale in (0.005, 0.02, 1.0):  # ops require table.max() * N < 2**63 and table[:, 0] > 0
        check("log_int_softmax", (scores, params.lis_exp_table(score_scale, -20), 4), f"scale {score_scale}")
    rows_differ = torch.randint(1, 2**24, (256, 256), generator=gen)  # every row its own exponents
    check("log_int_softmax", (scores, rows_differ, 4), "per-row tables")


@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_log_int_softmax_small_tables_hit_rounding_ties(data):
    # Tiny exponent tables make E / e land exactly on the half-way points of the round-half-even
    # ratio and on the masking threshold, where a division-free shortcut is easiest to get wrong.
    gen = torch.Generator().manual_seed(data.draw(st.integers(0, 2**31 - 1), label="seed"))
    table = torch.randint(0, data.draw(st.integers(2, 64), label="table max"), (256, 256), generator=gen)
    table[:, 0] = table[:, 0].clamp(min=1)
    rows, n = data.draw(st.integers(1, 8)), data.draw(st.integers(1, 60))
    spread = data.draw(st.integers(1, 256), label="score spread")
    scores = (torch.randint(0, spread, (rows, n), generator=gen) - 128).to(torch.int8)
    bits = data.draw(st.integers(1, 8), label="bits")
    check("log_int_softmax", (scores, table, bits), f"{rows}x{n} bits={bits}")


_NOT_FLOAT32 = "float32-representable"


@pytest.mark.parametrize("seed", range(6))
def test_log_int_softmax_both_code_forms(seed):
    """The C++ LIS takes FQ-ViT's float32 division when every exponent of a row's distances is a
    float32 integer and the exact per-row thresholds otherwise. The op refuses tables that float32
    cannot hold, but the kernel (value checks off) must still compute them like the reference: the
    same tie-prone tables, once as they are and once scaled by 2**25 + 1 (same ratios, exponents
    float32 cannot hold), and once with a single inexact exponent in the row."""
    gen = torch.Generator().manual_seed(1000 + seed)
    small = torch.randint(0, 2 + 8 * seed, (256, 256), generator=gen)
    small[:, 0] = small[:, 0].clamp(min=1)
    scores = (torch.randint(0, 12, (16, 40), generator=gen) - 128 + 20 * seed).to(torch.int8)
    scaled = small * (2**25 + 1)
    assert ((scaled > 0) & (scaled.to(torch.float32).to(torch.int64) != scaled)).any()  # threshold form taken
    one_inexact = small.clone()
    one_inexact[:, 5] = 2**25 + 1
    for bits in (1, 2, 3, 4):
        check("log_int_softmax", (scores, small, bits), f"float32 form, bits={bits}")
        check("log_int_softmax", (scores, scaled, bits), f"threshold form, bits={bits}", refused=_NOT_FLOAT32)
        check("log_int_softmax", (scores, one_inexact, bits), f"one inexact exponent, bits={bits}",
              refused=_NOT_FLOAT32)
    att = testing.attention_case(1, 2, 33, 16, gen)
    inexact_table = att.args[7] * 3 + 1  # odd and above 2**24 near the row maximum: threshold form
    check("int_attention", att.args[:7] + (inexact_table,) + att.args[8:], "threshold form", refused=_NOT_FLOAT32)


def test_log_int_softmax_masking_threshold_ties():
    # Row with exponents e0 (the max) and e1 = 2 where 2E = (2T - 1) * e1 exactly: R = T - 1/2
    # rounds to even; T = 3 * 2**(2**bits - 2) is the first masked ratio.
    for bits in range(1, 6):
        t = 3 * 2 ** (2**bits - 2)
        for delta in (-2, -1, 0, 1, 2):
            table = torch.zeros(256, dtype=torch.int64)
            table[0] = 2 * t - 3 + delta
            table[1] = 2
            scores = torch.tensor([[10, 9, -100, -100]], dtype=torch.int8)  # E = e0 + 2
            if table[0] > 0 and table.max() * 4 < 2**63 and ref.round_to_float32(table[0]) == table[0]:
                check("log_int_softmax", (scores, _rows(table), bits), f"bits={bits} delta={delta}")


def test_log_int_softmax_float32_rounding_of_the_sum(gen):
    """Row sums above 2**24 whose float32 rounding moves a ratio onto (or off) a half-integer."""
    for _ in range(200):
        e1 = int(torch.randint(1, 2**20, (), generator=gen)) << int(torch.randint(0, 20, (), generator=gen))
        e1 = int(ref.round_to_float32(torch.tensor(e1)))
        k = int(torch.randint(1, 20000, (), generator=gen))
        base = (2 * k + 1) * e1 // 2  # E / e1 = k + 1/2 (or just below)
        e2 = int(torch.randint(0, 2**8, (), generator=gen))
        e0 = int(ref.round_to_float32(torch.tensor(max(base - e1 - e2, 1))))
        table = torch.zeros(256, dtype=torch.int64)
        table[0], table[1], table[2] = max(e0, e1), e1, e2
        scores = torch.tensor([[3, 2, 1, 3]], dtype=torch.int8)
        check("log_int_softmax", (scores, _rows(table), 8), f"e1={e1} k={k}")


def test_lis_level_constants_match_the_reference():
    assert [tuple(c) for c in _C.lis_level_constants()] == list(ref.lis_level_constants())


def _lis_codes(gen, shape):
    scores, table, _ = testing.scores_case(shape, gen).args
    return ref.log_int_softmax(scores, table, 4)


@pytest.mark.parametrize("n,d", [(1, 8), (7, 64), (50, 80), (197, 64), (577, 8), (1, 1), (6, 1)])
def test_log_attn_v_ragged(n, d, gen):
    codes = _lis_codes(gen, (2, 3, n, n))
    v = _int8(gen, 2, 3, n, d)
    for zp in (-128, 0, 127):
        check("log_attn_v", (codes, v, zp), f"N={n} D={d} zp={zp}")


def test_log_attn_v_any_codes(gen):
    # Codes 0..15 anywhere (also many small codes per row), masked 255 and other codes > 15.
    codes = torch.randint(0, 16, (4, 60, 33), generator=gen).to(torch.uint8)
    codes[0, :, :20] = 0
    codes[1] = torch.randint(16, 256, (60, 33), generator=gen).to(torch.uint8)
    codes[2, ::2] = 255
    v = _int8(gen, 4, 33, 80)
    check("log_attn_v", (codes, v, -128), "any codes")
    check("log_attn_v", (codes.transpose(-1, -2).contiguous().transpose(-1, -2), v[..., ::2], 7), "strided")
    check("log_attn_v", (codes[:, :0], v, 1), "Nq=0")


def test_attention_scores_shapes(gen):
    for q_shape, nk in (((5, 8), 9), ((2, 7, 64), 1), ((2, 3, 50, 80), 50), ((1, 2, 197, 64), 197), ((3, 1), 1),
                        ((4, 1), 6), ((1, 5), 1)):
        q = _int8(gen, *q_shape)
        k = _int8(gen, *q_shape[:-2], nk, q_shape[-1])
        for zp, mult, shift, szp in ((-128, INT32_MAX, 52, 127), (127, 1 << 30, 40, -128), (3, INT32_MAX, 1, 0)):
            check("attention_scores", (q, k, zp, mult, shift, szp), f"{q_shape} Nk={nk}")
    q = _int8(gen, 2, 9, 3, 16).transpose(1, 2)
    check("attention_scores", (q, q.flip(-2), 5, 1 << 30, 44, 1), "strided")


@pytest.mark.parametrize("b,h,n,d", [(2, 3, 1, 8), (1, 2, 7, 64), (2, 2, 50, 80), (1, 3, 197, 64), (1, 1, 577, 8),
                                     (2, 2, 5, 1), (1, 2, 1, 1)])
def test_int_attention_ragged(b, h, n, d, gen):
    case = testing.attention_case(b, h, n, d, gen)
    out = check("int_attention", case.args, f"B={b} H={h} N={n} D={d}")
    assert out.shape == (b, h, n, d) and out.transpose(1, 2).is_contiguous()


def test_int_attention_strided_and_edges(gen):
    b, h, n, d = 2, 3, 40, 16
    case = testing.attention_case(b, h, n, d, gen)
    qkv = _int8(gen, b, n, 3, h, d)  # timm's qkv layout, read as views
    q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
    args = (q, k, v) + case.args[3:]
    check("int_attention", args, "qkv views")
    table = case.args[7]
    only_max = torch.zeros(256, dtype=torch.int64)
    only_max[0] = 7
    for zp in (-128, 127):
        check("int_attention", (q, k, v, zp, INT32_MAX, 52, 127, _rows(only_max), INT32_MAX, 1, -128), "extreme")
        check("int_attention", (q, k, v, zp, 1 << 30, 20, -128, table, 1, 52, 127), "extreme")
    # Scores all on one grid point: every code is ~log2(N), none masked (the dense attn@V path).
    flat = testing.attention_case(1, 2, 197, 64, gen).args
    check("int_attention", flat[:4] + (1, 52, 0) + flat[7:], "flat softmax, N=197")
    # Expanded (stride-0) token dimension: torch._int_mm mishandles such operands.
    q1, k1, v1 = (_int8(gen, b, h, 1, d).expand(b, h, n, d) for _ in range(3))
    check("int_attention", (q1, k1, v1) + case.args[3:], "stride-0 tokens")
    equal = torch.full((1, 1, 9, 8), 4, dtype=torch.int8)
    check("int_attention", (equal, equal, equal, 4) + case.args[4:], "all scores equal")


# ----------------------------------------------------------------------------------------------
# quantize / dequantize
# ----------------------------------------------------------------------------------------------


def test_quantize_dequantize(gen):
    for shape in ((), (1,), (7, 13), (2, 197, 384)):
        for per_channel in (False, True):
            if per_channel and not shape:
                continue
            case = testing.quantize_case(shape, gen, per_channel) if shape else testing.OpCase(
                "quantize", (torch.tensor(0.37), torch.tensor(0.02), 3))
            q = check("quantize", case.args, f"{shape} per_channel={per_channel}")
            check("dequantize", (q, case.args[1], case.args[2]), f"{shape} per_channel={per_channel}")
    scale = torch.tensor(0.25)
    ties = (torch.arange(-600, 600, dtype=torch.float32) + 0.5) * 0.25  # exact half-way points
    check("quantize", (ties, scale, -3), "ties to even, clamped")
    x = torch.randn(6, 10, generator=gen) * 3
    for dtype in (torch.float16, torch.bfloat16, torch.float64):
        check("quantize", (x.to(dtype), torch.tensor(0.03), 5), str(dtype))
    check("quantize", (x.t(), torch.rand(6, generator=gen) + 0.01, -128), "strided")
    check("quantize", (torch.empty(0, 4), torch.tensor(0.1), 0), "empty")
    check("dequantize", (_int8(gen, 10, 6).t(), torch.rand(10, generator=gen), 127), "strided")
    check("dequantize", (_int8(gen, 3, 5), torch.tensor([1e-30]), -128), "tiny scale")


# ----------------------------------------------------------------------------------------------
# Properties and threads
# ----------------------------------------------------------------------------------------------


@settings(max_examples=25, deadline=None, derandomize=False)
@given(data=st.data())
def test_property_random_shapes_and_parameters(data):
    gen = torch.Generator().manual_seed(data.draw(st.integers(0, 2**31 - 1), label="seed"))
    kind = data.draw(st.sampled_from(["linear", "layernorm", "layernorm_dyadic", "softmax", "attention"]), label="op")
    if kind == "linear":
        # linear_case derives the output scale from the outputs' spread: it needs M * N >= 2.
        m, n, k = data.draw(st.integers(2, 70)), data.draw(st.integers(1, 40)), data.draw(st.integers(1, 300))
        epilogue = data.draw(st.sampled_from(["plain", "gelu", "steps", "residual"]))
        check("int8_linear", testing.linear_case(m, n, k, gen, epilogue).args, f"{epilogue} {m}x{n}x{k}")
        check("int8_matmul", testing.matmul_case(m, n, k, gen).args)
    elif kind in ("layernorm", "layernorm_dyadic"):
        m, c = data.draw(st.integers(1, 40)), data.draw(st.integers(1, 1100))
        make = testing.layernorm_case if kind == "layernorm" else testing.layernorm_dyadic_case
        check(make(1, 1, gen).name, make(m, c, gen, wide_channels=min(4, c)).args, f"{m}x{c}")
    elif kind == "softmax":
        rows, n = data.draw(st.integers(1, 30)), data.draw(st.integers(1, 300))
        bits = data.draw(st.integers(1, 8))
        check("log_int_softmax", testing.scores_case((rows, n), gen, bits).args, f"{rows}x{n} bits={bits}")
    else:
        b, h = data.draw(st.integers(1, 2)), data.draw(st.integers(1, 3))
        n, d = data.draw(st.integers(1, 120)), data.draw(st.sampled_from([8, 16, 24, 64, 80]))
        case = testing.attention_case(b, h, n, d, gen)
        check("int_attention", case.args, f"B={b} H={h} N={n} D={d}")
        codes = _lis_codes(gen, (b, h, n, n))
        check("log_attn_v", (codes, case.args[2], case.args[3]))
        check("attention_scores", case.args[:2] + case.args[3:7])


def test_one_and_two_threads_give_identical_bits(gen):
    cases = [
        testing.linear_case(300, 96, 77, gen, "residual"),
        testing.linear_case(300, 96, 77, gen, "gelu"),
        testing.layernorm_case(300, 200, gen),
        testing.layernorm_dyadic_case(300, 200, gen),
        testing.scores_case((4, 3, 120, 120), gen),
        testing.attention_case(2, 3, 197, 64, gen),
        testing.quantize_case((300, 64), gen, per_channel=True),
    ]
    previous = torch.get_num_threads()
    try:
        outputs = {}
        for threads in (1, 2):
            torch.set_num_threads(threads)
            outputs[threads] = [getattr(_C, c.name)(*c.args) for c in cases]
    finally:
        torch.set_num_threads(previous)
    for case, one, two in zip(cases, outputs[1], outputs[2]):
        testing.assert_equal(two, one, f"{case.name} 2 threads vs 1")
        testing.assert_equal(one, getattr(ref, case.name)(*case.args), case.name)


def test_info_reports_the_cpp_backend():
    from fqvit_kernels import info

    lines = info.report()
    assert "C++ extension fqvit_kernels._C: loaded" in lines
    rows = {line.split()[0]: line.split()[1:] for line in lines if line.split() and line.split()[0] in ops.OP_NAMES}
    assert set(rows) == set(ops.OP_NAMES)
    assert all(cols[0] == "cpp" for cols in rows.values())


def test_info_reports_the_triton_fast_path_switch(monkeypatch):
    from fqvit_kernels import info

    monkeypatch.delenv("FQVIT_TRITON_FALLBACK", raising=False)
    assert any(line.startswith("Triton fast paths: on") for line in info.report())
    monkeypatch.setenv("FQVIT_TRITON_FALLBACK", "1")
    assert any(line.startswith("Triton fast paths: off") for line in info.report())
