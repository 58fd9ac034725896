"""``int_attention`` (fused 8/8/4 attention: scores, LIS codes, attn @ V, requantization) and
``attention_scores`` (its first stage as an op of its own).

Tests that take ``backend`` run once per implementation (tests/ops/conftest.py): the oracle's ties
and degenerate tables, the parameter limits and the fuzzing on every backend; the C++ cases
(ragged, qkv views, stride-0 tokens, extreme requantization) on the extension and the dispatched
op; the Triton cases on the Triton kernels (interpreter, or ViT shapes on a GPU). Then the Triton
float32-division fast path (direct launcher calls), and the dispatched op alone: composition of the
unfused ops, qkv views, bad inputs.
"""

import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st

import int_oracle as oracle
from fqvit_kernels import ops, params, reference as ref, testing
from op_backends import triton_only
from op_checks import (INT32_MAX, agree, check, check_bad_inputs, check_on_device, check_oracle, exp_rows,
                       huge_table, int8, ints, Limit, limit_tests, lis_tables, replace, table_from)

try:  # the Triton-only tests below; the others run without Triton
    from triton_kernels import attention
    from triton_kernels._common import force_paths
except ImportError:
    attention = force_paths = None

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"  # of the direct Triton calls


# ==================================================================================================
# Every backend: score and output requantization ties, degenerate tables, masked keys (the oracle)
# ==================================================================================================


@pytest.mark.parametrize("n,d", [(1, 8), (7, 16), (33, 8)])
@pytest.mark.parametrize("table_name", ["tiny", "only_max", "dominant"])
def test_int_attention_ties_and_degenerate_tables(backend, gen, n, d, table_name):
    """Scores acc / 2 and context / 2**16: exact halves decided by FQ-ViT's float32 rounding."""
    h = 2
    q = torch.randint(-3, 4, (1, h, n, d), generator=gen, dtype=torch.int8)
    k = torch.randint(-3, 4, (1, h, n, d), generator=gen, dtype=torch.int8)
    v = torch.randint(-128, 128, (1, h, n, d), generator=gen, dtype=torch.int8)
    zp = int(torch.randint(-2, 3, (), generator=gen))
    table = lis_tables(gen)[table_name]
    s_mult, s_shift, s_zp = 1, 1, int(torch.randint(-5, 6, (), generator=gen))
    o_mult, o_shift, o_zp = 1, 16, int(torch.randint(-5, 6, (), generator=gen))
    args = (q, k, v, zp, s_mult, s_shift, s_zp, table, o_mult, o_shift, o_zp)
    expected = torch.empty(1, h, n, d, dtype=torch.int8)
    for head in range(h):
        expected[0, head] = torch.tensor(oracle.attention(ints(q[0, head]), ints(k[0, head]), ints(v[0, head]), zp,
                                                          s_mult, s_shift, s_zp, ints(table), o_mult, o_shift, o_zp),
                                         dtype=torch.int8)
    got = backend.run("int_attention", *args)
    testing.assert_equal(got, expected, f"int_attention on {backend.name}")


def test_attention_scores_ties(backend, gen):
    q = torch.randint(-4, 5, (2, 7, 12), generator=gen, dtype=torch.int8)
    k = torch.randint(-4, 5, (2, 9, 12), generator=gen, dtype=torch.int8)
    zp = int(torch.randint(-2, 3, (), generator=gen))
    for mult, shift in ((1, 1), (3, 2), (2**30, 31)):
        s_zp = int(torch.randint(-10, 11, (), generator=gen))
        expected = [[[oracle.float32_code(a * mult, shift, s_zp) for a in row]
                     for row in oracle.matmul([[x - zp for x in r] for r in qb], [[x - zp for x in r] for r in kb])]
                    for qb, kb in zip(ints(q), ints(k))]
        check_oracle(backend, "attention_scores", (q, k, zp, mult, shift, s_zp), expected, torch.int8)


def test_int_attention_lis_ratio_of_two_and_a_half(backend):
    """Exponents 2, 2, 1 (sum 5): two ratios of exactly 2.5, the one tie where rounding half to
    even (2, code 1) and half up (3, code 2) give different codes (2.5 is the only such tie: other
    ties k + 1/2 with k even round to k or k + 1 of the same code). Scores are the accumulators
    themselves (multiplier 2**30, shift 30)."""
    d, n = 8, 5
    q = torch.zeros(1, 1, n, d, dtype=torch.int8)
    q[..., 0] = 1
    k = torch.zeros(1, 1, n, d, dtype=torch.int8)
    k[0, 0, :, 0] = torch.tensor([10, 9, 8, -20, -30])  # score distances 0, 1, 2, 30, 40 from the max
    v = torch.arange(n * d, dtype=torch.int64).reshape(1, 1, n, d).remainder(50).to(torch.int8) - 20
    table = table_from(lambda dist: (2, 2, 1)[dist] if dist < 3 else 0)
    s_mult, s_shift, s_zp = 2**30, 30, 0  # score = accumulator (exact)
    o_mult, o_shift, o_zp = 1, 10, 0
    args = (q, k, v, 0, s_mult, s_shift, s_zp, table, o_mult, o_shift, o_zp)
    expected = torch.tensor(oracle.attention(ints(q[0, 0]), ints(k[0, 0]), ints(v[0, 0]), 0, s_mult, s_shift, s_zp,
                                             ints(table), o_mult, o_shift, o_zp), dtype=torch.int8)
    codes = oracle.lis_codes([2, 2, 1, 0, 0])
    assert codes[:3] == [1, 1, 2], codes  # round(2.5) = 2 -> code 1; round(5) = 5 -> code 2
    got = backend.run("int_attention", *args)
    testing.assert_equal(got, expected.reshape(got.shape), f"int_attention on {backend.name}")


# ==================================================================================================
# Parameter limits (docs/numerics.md): the last accepted value exact on every backend, the next refused
# ==================================================================================================


def _attention(gen):
    return list(testing.attention_case(1, 1, 5, 8, gen).args)


def _scores(gen):
    a = _attention(gen)
    return a[:2] + a[3:7]


LIMITS = [
    Limit("attention_scores.qkv_zero_point", "attention_scores", _scores, 2, False, [-128, 127], [-129, 128],
          "qkv_zero_point"),
    Limit("attention_scores.score_multiplier", "attention_scores", _scores, 3, False, [0, INT32_MAX], [-1, 2**31],
          "score_multiplier"),
    Limit("attention_scores.score_shift", "attention_scores", _scores, 4, False, [1, 52], [0, 53], "score_shift"),
    Limit("attention_scores.score_zero_point", "attention_scores", _scores, 5, False, [-128, 127], [-129, 128],
          "score_zero_point"),
    Limit("int_attention.out_multiplier", "int_attention", _attention, 8, False, [0, INT32_MAX], [-1, 2**31],
          "out_multiplier"),
    Limit("int_attention.out_shift", "int_attention", _attention, 9, False, [1, 52], [0, 53], "out_shift"),
    Limit("int_attention.out_zero_point", "int_attention", _attention, 10, False, [-128, 127], [-129, 128],
          "out_zero_point"),
]


test_first_value_past_each_limit_is_refused, test_last_value_inside_each_limit_is_accepted_and_exact = \
    limit_tests(LIMITS)


def _round_shift(v: int, s: int) -> int:
    return (v + (1 << (s - 1))) >> s  # Python ints: exact, arithmetic shift


@pytest.mark.backends(exclude=("triton", "triton-fallback"))  # the interpreter would take minutes (many K tiles)
def test_attention_scores_at_the_head_dim_limit(backend):
    d = ops.MAX_HEAD_DIM
    q = torch.full((1, 2, d), -128, dtype=torch.int8)
    k = torch.full((1, 1, d), -128, dtype=torch.int8)
    args = (q, k, 127, 1, 31, 0)
    out = ref.attention_scores(*args)
    acc = 255 * 255 * d
    assert acc < 2**31 and int(out[0, 0, 0]) == min(127, _round_shift(acc, 31))  # no tie: any rounding agrees
    agree(backend, "attention_scores", args, out)
    with pytest.raises(ValueError, match="head dim"):
        torch.ops.fqvit.attention_scores(torch.zeros((1, 1, d + 1), dtype=torch.int8),
                                         torch.zeros((1, 1, d + 1), dtype=torch.int8), 0, 1, 31, 0)


def test_int_attention_with_constant_scores_and_extreme_requant(backend, gen):
    # All keys equal: every probability is 1/N, so every code is round(log2 N) and the context
    # is v's mean; extreme but valid multipliers saturate cleanly.
    case = testing.attention_case(1, 2, 33, 16, gen)
    q, k, v, zp = case.args[:4]
    k = torch.zeros_like(k)
    for o_mult, o_shift in ((2**31 - 1, 1), (1, 52), (2**30, 30)):
        args = (q, k, v, zp) + case.args[4:8] + (o_mult, o_shift, 0)
        out = ref.int_attention(*args)
        agree(backend, "int_attention", args, out)


# ==================================================================================================
# Every backend but the reference: property-based fuzzing against the reference
# ==================================================================================================

FUZZ = settings(max_examples=12, deadline=None, derandomize=False,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _agrees(backend, case):
    agree(backend, case.name, case.args, getattr(ref, case.name)(*case.args))


@pytest.mark.slow
@pytest.mark.backends(exclude=("reference",))
@FUZZ
@given(b=st.integers(1, 2), h=st.integers(1, 3), n=st.integers(1, 40), d=st.sampled_from([8, 13, 32, 64]),
       seed=st.integers(0, 2**31 - 1))
def test_fuzz_int_attention_and_parts(backend, b, h, n, d, seed):
    """The fused attention and its parts: attention_scores, and log_attn_v of the LIS codes."""
    case = testing.attention_case(b, h, n, d, torch.Generator().manual_seed(seed))
    _agrees(backend, case)
    q, k, v, zp, s_mult, s_shift, s_zp, table = case.args[:8]
    _agrees(backend, testing.OpCase("attention_scores", (q, k, zp, s_mult, s_shift, s_zp)))
    codes = ref.log_int_softmax(ref.attention_scores(q, k, zp, s_mult, s_shift, s_zp), table)
    _agrees(backend, testing.OpCase("log_attn_v", (codes, v, zp)))


# ==================================================================================================
# The C++ extension and the dispatched op: ragged shapes, qkv views, stride-0 tokens, extremes
# ==================================================================================================

cpu_kernels = pytest.mark.backends("cpp", "dispatch")


@cpu_kernels
def test_attention_scores_shapes(backend, gen):
    for q_shape, nk in (((5, 8), 9), ((2, 7, 64), 1), ((2, 3, 50, 80), 50), ((1, 2, 197, 64), 197), ((3, 1), 1),
                        ((4, 1), 6), ((1, 5), 1)):
        q = int8(gen, *q_shape)
        k = int8(gen, *q_shape[:-2], nk, q_shape[-1])
        for zp, mult, shift, szp in ((-128, INT32_MAX, 52, 127), (127, 1 << 30, 40, -128), (3, INT32_MAX, 1, 0)):
            check(backend, "attention_scores", (q, k, zp, mult, shift, szp), f"{q_shape} Nk={nk}")
    q = int8(gen, 2, 9, 3, 16).transpose(1, 2)
    check(backend, "attention_scores", (q, q.flip(-2), 5, 1 << 30, 44, 1), "strided")


@cpu_kernels
@pytest.mark.parametrize("b,h,n,d", [(2, 3, 1, 8), (1, 2, 7, 64), (2, 2, 50, 80), (1, 3, 197, 64), (1, 1, 577, 8),
                                     (2, 2, 5, 1), (1, 2, 1, 1)])
def test_int_attention_ragged(b, h, n, d, backend, gen):
    case = testing.attention_case(b, h, n, d, gen)
    out = check(backend, "int_attention", case.args, f"B={b} H={h} N={n} D={d}")
    assert out.shape == (b, h, n, d) and out.transpose(1, 2).is_contiguous()


@cpu_kernels
def test_int_attention_strided_and_edges(backend, gen):
    b, h, n, d = 2, 3, 40, 16
    case = testing.attention_case(b, h, n, d, gen)
    qkv = int8(gen, b, n, 3, h, d)  # timm's qkv layout, read as views
    q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
    args = (q, k, v) + case.args[3:]
    check(backend, "int_attention", args, "qkv views")
    table = case.args[7]
    only_max = torch.zeros(256, dtype=torch.int64)
    only_max[0] = 7
    for zp in (-128, 127):
        check(backend, "int_attention", (q, k, v, zp, INT32_MAX, 52, 127, exp_rows(only_max), INT32_MAX, 1, -128),
              "extreme")
        check(backend, "int_attention", (q, k, v, zp, 1 << 30, 20, -128, table, 1, 52, 127), "extreme")
    # Scores all on one grid point: every code is ~log2(N), none masked (the dense attn@V path).
    flat = testing.attention_case(1, 2, 197, 64, gen).args
    check(backend, "int_attention", flat[:4] + (1, 52, 0) + flat[7:], "flat softmax, N=197")
    # Expanded (stride-0) token dimension: torch._int_mm mishandles such operands.
    q1, k1, v1 = (int8(gen, b, h, 1, d).expand(b, h, n, d) for _ in range(3))
    check(backend, "int_attention", (q1, k1, v1) + case.args[3:], "stride-0 tokens")
    equal = torch.full((1, 1, 9, 8), 4, dtype=torch.int8)
    check(backend, "int_attention", (equal, equal, equal, 4) + case.args[4:], "all scores equal")


# ==================================================================================================
# The Triton kernels: small shapes (interpreter on CPU tensors), ViT shapes on a GPU
# ==================================================================================================

triton_kernels_only = pytest.mark.backends("triton")


def _check_attention(backend, case):
    got = check_on_device(backend, case)
    assert got.transpose(1, 2).is_contiguous(), "output memory must be [B, N, H, D]"


@triton_kernels_only
@pytest.mark.parametrize("nq,nk,d", [(1, 1, 8), (7, 50, 80), (33, 7, 13), (70, 130, 64)])
def test_attention_scores(nq, nk, d, backend, gen):
    q = torch.randint(-128, 128, (2, nq, d), generator=gen, dtype=torch.int8)
    k = torch.randint(-128, 128, (2, nk, d), generator=gen, dtype=torch.int8)
    mult, shift = params.fixed_point_multiplier(1.0 / (d**0.5 * 60.0))
    zp = int(torch.randint(-64, 64, (), generator=gen))
    check_on_device(backend, testing.OpCase("attention_scores", (q, k, zp, mult, shift, -3)))


@triton_kernels_only
@pytest.mark.parametrize("b,h,n,d", [(1, 1, 1, 8), (1, 2, 7, 80), (2, 1, 50, 8), (1, 1, 70, 32),
                                     (1, 1, 197, 64), (1, 1, 129, 80), (2, 2, 70, 16)])
def test_int_attention(b, h, n, d, backend, gen):
    _check_attention(backend, testing.attention_case(b, h, n, d, gen))


@triton_kernels_only
def test_int_attention_strided_qkv_view(backend, gen):
    """q, k, v as views of one packed qkv tensor [B, N, 3, H, D] (timm's layout)."""
    b, h, n, d = 1, 2, 9, 16
    case = testing.attention_case(b, h, n, d, gen)
    packed = torch.stack(case.args[:3], dim=0).permute(1, 3, 0, 2, 4).contiguous()  # [B, N, 3, H, D]
    views = packed.permute(2, 0, 3, 1, 4).unbind(0)
    assert not views[0].is_contiguous()
    _check_attention(backend, testing.OpCase("int_attention", tuple(views) + case.args[3:]))


@triton_kernels_only
def test_int_attention_near_int64_limit(backend, gen):
    case = testing.attention_case(1, 2, 50, 16, gen)
    args = list(case.args)
    args[7] = huge_table(50)
    _check_attention(backend, testing.OpCase("int_attention", tuple(args)))


@pytest.mark.gpu
@pytest.mark.backends("triton", "gluon")  # gluon: the one-pass kernel itself (sm_90, N <= 1024, D <= 64)
@pytest.mark.parametrize("n", [1, 7, 50, 197, 577, 1024, 1025])
@pytest.mark.parametrize("d", [32, 64, 80, 128])
def test_gpu_int_attention(n, d, backend, gen):
    _check_attention(backend, testing.attention_case(2, 3, n, d, gen))


@pytest.mark.gpu
@pytest.mark.backends("triton", "gluon")
def test_gpu_vit_b_attention_on_qkv_views(backend, gen):
    """ViT-B heads as the block passes them: views of one packed [B, N, 3, H, D] projection."""
    case = testing.attention_case(8, 12, 197, 64, gen)
    packed = torch.stack(case.args[:3], dim=0).permute(1, 3, 0, 2, 4).contiguous()
    views = packed.permute(2, 0, 3, 1, 4).unbind(0)
    _check_attention(backend, testing.OpCase("int_attention", tuple(views) + case.args[3:]))


@pytest.mark.gpu
@triton_kernels_only
def test_gpu_vit_b_attention_and_softmax(backend, gen):
    case = testing.attention_case(8, 12, 197, 64, gen)
    _check_attention(backend, case)
    scores_case = testing.scores_case((8, 12, 197, 197), gen)
    check_on_device(backend, scores_case)


# ==================================================================================================
# The Triton fused attention's float32-division fast path (direct launcher calls)
# ==================================================================================================


@triton_only
def test_triton_fqvit_exponent_tables_take_the_float32_division_path(gen):
    with force_paths(True):
        for scale, zp in ((0.01, 0), (0.05, -20), (0.3, 40)):
            assert attention.fast_attention(params.lis_exp_table(scale, zp).to(DEVICE))


@triton_only
@pytest.mark.parametrize("n,d", [(7, 16), (50, 64), (70, 32)])
def test_triton_int_attention_fast_and_general_paths_agree(n, d, gen):
    case = testing.attention_case(2, 2, n, d, gen)
    expected = ref.int_attention(*case.args)
    for fast in (True, False):
        with force_paths(fast):
            assert attention.fast_attention(case.args[7].to(DEVICE)) == fast
            testing.assert_equal(attention.int_attention(*case.to(DEVICE).args).cpu(), expected, f"fast={fast}")


@triton_only
def test_triton_exponent_tables_that_are_not_float32_integers_take_the_general_path(gen):
    """2**24 + 1 is no float32: dividing by its float32 rounding would not be FQ-ViT's ratio of the
    table as given, so such a table must not take the division path; the result stays exact."""
    case = testing.attention_case(1, 2, 33, 16, gen)
    args = list(case.args)
    table = args[7].clone()
    table[:, 0] = 2**24 + 1
    table[:, 1] = 2**24 - 1
    args[7] = table
    with force_paths(True):
        assert not attention.fast_attention(table.to(DEVICE))
        got = attention.int_attention(*[a.to(DEVICE) if isinstance(a, torch.Tensor) else a for a in args])
    testing.assert_equal(got.cpu(), ref.int_attention(*args))


# ==================================================================================================
# The dispatched op: the unfused composition, qkv views, bad inputs
# ==================================================================================================


@pytest.mark.parametrize("n", [1, 7, 50, 197])
@pytest.mark.parametrize("d", [8, 64, 80])
def test_int_attention_equals_unfused_composition(n, d, gen):
    case = testing.attention_case(2, 3, n, d, gen)
    q, k, v, zp, s_mult, s_shift, s_zp, table, o_mult, o_shift, o_zp = case.args
    scores = torch.ops.fqvit.attention_scores(q, k, zp, s_mult, s_shift, s_zp)
    codes = torch.ops.fqvit.log_int_softmax(scores, table, 4)
    context = torch.ops.fqvit.log_attn_v(codes, v, zp)
    expected = ref.requantize_float32(context, o_mult, o_shift, o_zp).to(torch.int8)
    out = case.run()
    testing.assert_equal(out, expected)
    assert out.transpose(1, 2).is_contiguous(), "output memory must be [B, N, H, D]"


def test_int_attention_accepts_qkv_views_of_one_projection(gen):
    b, n, h, d = 2, 7, 3, 16
    case = testing.attention_case(b, h, n, d, gen)
    qkv = torch.randint(-128, 128, (b, n, 3, h, d), generator=gen, dtype=torch.int8)
    q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
    args = (q, k, v) + case.args[3:]
    # Against the reference on contiguous copies: a kernel that misreads strides cannot agree with it.
    testing.assert_equal(torch.ops.fqvit.int_attention(*args),
                         ref.int_attention(q.contiguous(), k.contiguous(), v.contiguous(), *case.args[3:]))


def _bad_cases(gen):
    att = testing.attention_case(1, 2, 5, 8, gen)
    return [
        # (op, args, exception, substring of the message)
        ("int_attention", replace(att.args, 1, att.args[1][:, :, :4]), ValueError, "share one shape"),
        ("int_attention", replace(att.args, 0, att.args[0].transpose(2, 3).contiguous().transpose(2, 3)), ValueError,
         "q must have unit stride"),
        ("int_attention", replace(att.args, 4, -5), ValueError, "score_multiplier"),
        ("int_attention", replace(att.args, 9, 0), ValueError, "out_shift"),
        ("int_attention", replace(att.args, 9, 53), ValueError, "out_shift must lie in \\[1, 52\\]"),
        ("attention_scores", att.args[:2] + att.args[3:5] + (53, 0), ValueError, "score_shift"),
        ("int_attention", replace(att.args, 2, att.args[2][0]), ValueError, "v must have rank 4"),
    ]


def test_bad_input_matrix(gen):
    """Bad inputs raise TypeError/ValueError whose message names the offending argument."""
    cases = _bad_cases(gen)
    assert len(cases) >= 7
    check_bad_inputs(cases)
