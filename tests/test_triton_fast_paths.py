"""The Triton kernels' int32 fast paths against their general int64 paths and the reference.

A fast path runs only when host-checked preconditions hold (every GEMM shift >= 33, ...), read
once per parameter tensor and remembered until the tensor changes. These tests pin: which path a
launch takes, that both are bit-exact at the preconditions' edges, that a parameter violating
them (also after an in-place edit of a tensor already seen) falls back instead of giving a wrong
answer, and that ``FQVIT_TRITON_FALLBACK=1`` switches the fast paths off. The ordinary
interpreter, fuzz, tie and limit tests run every Triton op both ways (``op_backends``).
"""

import os

import pytest
import torch

CUDA = torch.cuda.is_available()
if not CUDA:
    os.environ.setdefault("TRITON_INTERPRET", "1")  # must precede the first import of triton

pytest.importorskip("triton")
import triton.language as tl  # noqa: E402
from triton.runtime.interpreter import InterpretedFunction  # noqa: E402

import triton  # noqa: E402
from triton_kernels import gemm, layernorm  # noqa: E402
from triton_kernels._common import FALLBACK_ENV, fast_paths_allowed, force_paths  # noqa: E402
from triton_kernels._intmath import round_half_even_shift_add  # noqa: E402

from fqvit_kernels import params, reference as ref, testing  # noqa: E402

DEVICE = "cuda" if CUDA else "cpu"
IN_PROCESS = CUDA or isinstance(tl.standard.sum, InterpretedFunction)
pytestmark = [pytest.mark.interpreter,
              pytest.mark.skipif(not IN_PROCESS, reason="triton imported before TRITON_INTERPRET: "
                                 "test_triton_interpreter re-runs the interpreter files in a fresh process")]

EPILOGUES = ["plain", "gelu", "steps", "residual"]


def _both_paths(case):
    """Kernel output with fast paths allowed and forced off; both must equal the reference."""
    args = case.to(DEVICE).args
    expected = ref.int8_linear(*case.args)
    outputs = []
    for fast in (True, False):
        with force_paths(fast):
            got = gemm.int8_linear(*args).cpu()
        testing.assert_equal(got, expected, f"int8_linear ({'fast' if fast else 'general'} path)")
        outputs.append(got)
    return outputs


def _with_shift(case, shift):
    args = list(case.args)
    args[4] = shift
    return testing.OpCase(case.name, tuple(args), case.floats)


@pytest.mark.parametrize("epilogue", EPILOGUES)
@pytest.mark.parametrize("m,n,k", [(1, 7, 64), (7, 50, 128), (33, 7, 40), (70, 130, 200)])  # EVEN_K and ragged K
def test_int8_linear_fast_and_general_paths_agree(m, n, k, epilogue, gen):
    case = testing.linear_case(m, n, k, gen, epilogue)
    shift = case.args[4]
    if int(shift.min()) < gemm.FAST_MIN_SHIFT:  # keep the test meaningful whatever the draw
        case = _with_shift(case, shift.clamp(min=gemm.FAST_MIN_SHIFT))
    with force_paths(True):
        assert gemm.fast_epilogue(case.args[4].to(DEVICE))
    _both_paths(case)


@pytest.mark.parametrize("epilogue", ["plain", "residual"])
@pytest.mark.parametrize("shift_value", [33, 47, 62])
def test_int8_linear_fast_path_at_its_extremes(shift_value, epilogue, gen):
    """Largest products and biases the op accepts, at the smallest and largest fast shifts, with
    zero points at both ends: the high-word form must not lose a carry or wrap."""
    k = 64
    case = testing.linear_case(4, 6, k, gen, epilogue)
    args = list(case.args)
    x = torch.full((4, k), -128, dtype=torch.int8)
    x[1] = 127
    x[2, ::2] = 127
    args[0] = x
    args[1] = torch.full((6, k), -128, dtype=torch.int8)
    headroom = params.max_linear_bias(k) - (1 << (shift_value - 1))
    args[2] = torch.tensor([headroom, -headroom, 0, 1, -1, 12345], dtype=torch.int64)
    args[3] = torch.tensor([2**31 - 1, 2**31 - 1, 2**30, 1, 2**31 - 1, 977], dtype=torch.int32)
    args[4] = torch.full((6,), shift_value, dtype=torch.int32)
    for zp in (-128, 127):
        args[5] = zp
        _both_paths(testing.OpCase("int8_linear", tuple(args)))


def test_int8_linear_ties_on_the_fast_path():
    """Power-of-two ratios make exact ties: round_shift rounds half up on both paths."""
    k = 64
    x = torch.arange(-32, 32, dtype=torch.int8).reshape(1, k).repeat(3, 1)
    w = torch.eye(k, dtype=torch.int8)[:5] * 3
    bias = torch.tensor([0, 1 << 32, -(1 << 32), (1 << 33) - 1, 5], dtype=torch.int64)
    mult = torch.full((5,), 2**30, dtype=torch.int32)
    shift = torch.tensor([33, 33, 34, 35, 33], dtype=torch.int32)
    case = testing.OpCase("int8_linear", (x, w, bias, mult, shift, 3))
    _both_paths(case)


@pytest.mark.parametrize("epilogue", EPILOGUES)
def test_shifts_below_the_fast_range_take_the_general_path(epilogue, gen):
    case = testing.linear_case(9, 20, 40, gen, epilogue)
    shift = case.args[4].clone()
    shift[3] = gemm.FAST_MIN_SHIFT - 1
    case = _with_shift(case, shift)
    with force_paths(True):
        assert not gemm.fast_epilogue(shift.to(DEVICE))
    _both_paths(case)


def test_an_in_place_edit_of_a_seen_shift_tensor_is_noticed(gen):
    case = testing.linear_case(9, 20, 40, gen)
    args = list(case.to(DEVICE).args)
    shift = args[4].clamp(min=40)
    args[4] = shift
    with force_paths(True):
        assert gemm.fast_epilogue(shift)
        gemm.int8_linear(*args)  # remembered: fast
        shift[0] = 20  # now below the fast range; value checks would not see it on a converted block
        assert not gemm.fast_epilogue(shift)
        got = gemm.int8_linear(*args).cpu()
    testing.assert_equal(got, ref.int8_linear(*[a.cpu() if isinstance(a, torch.Tensor) else a for a in args]))


def test_fallback_environment_variable(monkeypatch):
    monkeypatch.delenv(FALLBACK_ENV, raising=False)
    assert fast_paths_allowed()
    monkeypatch.setenv(FALLBACK_ENV, "1")
    assert not fast_paths_allowed()
    assert not gemm.fast_epilogue(torch.full((3,), 40, dtype=torch.int32, device=DEVICE))
    with force_paths(True):  # the test switch wins over the environment
        assert fast_paths_allowed()
    monkeypatch.setenv(FALLBACK_ENV, "0")
    assert fast_paths_allowed()


def test_64bit_offsets_are_chosen_for_huge_operands():
    assert not gemm._needs_64bit_offsets(torch.empty(12608, 3072, dtype=torch.int8))
    big = torch.empty((2**20, 2**11), dtype=torch.int8, device="meta")  # 2**31 elements, no storage
    assert gemm._needs_64bit_offsets(big)


# -- LayerNorm -------------------------------------------------------------------------------------

@triton.jit
def _root_kernel(v_ptr, root_ptr, recip_ptr, BLOCK: tl.constexpr):
    offs = tl.arange(0, BLOCK)
    root, recip = layernorm._root_and_reciprocal(tl.load(v_ptr + offs))
    tl.store(root_ptr + offs, root)
    tl.store(recip_ptr + offs, recip)


def test_float_root_and_reciprocal_are_exact_at_squares_and_edges(gen):
    """floor(sqrt(v)) and floor(2**62 / root) from float64 plus one correction step, for v in
    [2**60, 2**62): perfect squares and their neighbours (where a rounded float root lands on the
    wrong side), the range ends, and random values."""
    import math

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
    v = v.to(DEVICE)
    root, recip = torch.empty_like(v), torch.empty_like(v)
    _root_kernel[(1,)](v, root, recip, BLOCK=block)
    expected_root = torch.tensor([math.isqrt(int(x)) for x in v.cpu()])
    testing.assert_equal(root.cpu(), expected_root, "root")
    testing.assert_equal(recip.cpu(), torch.tensor([2**62 // int(r) for r in expected_root]), "reciprocal")


@triton.jit
def _rhe_kernel(v_ptr, s_ptr, out_ptr, BLOCK: tl.constexpr):
    offs = tl.arange(0, BLOCK)
    tl.store(out_ptr + offs, round_half_even_shift_add(tl.load(v_ptr + offs), tl.load(s_ptr + offs)))


def test_round_half_even_by_one_addition_matches_the_reference(gen):
    shifts = torch.arange(0, 63, dtype=torch.int32).repeat(16)
    quot = torch.randint(-2**20, 2**20, (shifts.numel(),), generator=gen, dtype=torch.int64)
    one = torch.ones_like(quot)
    half = torch.where(shifts > 0, (one << shifts.to(torch.int64)) >> 1, torch.zeros_like(quot))
    rem = [half, half - 1, half + 1, torch.zeros_like(quot)]  # ties, either side, exact
    values = torch.cat([(quot << torch.clamp(shifts.to(torch.int64), max=40)) + r for r in rem] +
                       [torch.randint(-2**62, 2**62, (shifts.numel(),), generator=gen, dtype=torch.int64)])
    shifts = shifts.repeat(5)
    n = 1 << (values.numel() - 1).bit_length()
    v = torch.zeros(n, dtype=torch.int64)
    s = torch.zeros(n, dtype=torch.int32)
    v[:values.numel()], s[:values.numel()] = values, shifts
    out = torch.empty_like(v).to(DEVICE)
    _rhe_kernel[(1,)](v.to(DEVICE), s.to(DEVICE), out, BLOCK=n)
    testing.assert_equal(out.cpu(), ref.round_half_even_shift(v, s.to(torch.int64)), "round half even")


@pytest.mark.parametrize("dyadic", [False, True])
@pytest.mark.parametrize("m,c", [(1, 8), (4, 1), (7, 80), (5, 200), (3, 384), (20, 768), (2, 1280)])
def test_layernorm_fast_and_general_paths_agree(dyadic, m, c, gen):
    case = (testing.layernorm_dyadic_case if dyadic else testing.layernorm_case)(m, c, gen)
    launcher = layernorm.ptf_layernorm_dyadic if dyadic else layernorm.ptf_layernorm
    if dyadic:
        with force_paths(True):
            assert layernorm.fast_dyadic(case.args[3].to(DEVICE))
    expected = getattr(ref, case.name)(*case.args)
    for fast in (True, False):
        with force_paths(fast):
            testing.assert_equal(launcher(*case.to(DEVICE).args).cpu(), expected, f"{case.name} fast={fast}")


@pytest.mark.parametrize("channels,chunk,n_chunks", [(768, 256, 3), (384, 128, 3), (192, 64, 3), (1280, 256, 5),
                                                    (8, 8, 1), (1, 1, 1), (80, 128, 1), (200, 256, 1),
                                                    (96, 128, 1), (8192, 256, 32)])
def test_layernorm_chunks_cover_each_row_once(channels, chunk, n_chunks):
    got = layernorm.chunked_config(channels)[:2]
    assert got == (chunk, n_chunks)
    assert (n_chunks - 1) * chunk < channels <= n_chunks * chunk


@pytest.mark.parametrize("c", [2, 768, layernorm.MAX_FAST_CHANNELS, layernorm.MAX_FAST_CHANNELS + 1])
def test_layernorm_extreme_row_at_the_int32_bound(c):
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
                got = layernorm.ptf_layernorm(*[a.to(DEVICE) if isinstance(a, torch.Tensor) else a for a in args])
            testing.assert_equal(got.cpu(), expected, f"C={c} out_scale={out_scale} fast={fast}")


def test_layernorm_affine_outside_int32_is_clamped_in_int64(gen):
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
        got = layernorm.ptf_layernorm(*[a.to(DEVICE) if isinstance(a, torch.Tensor) else a for a in args])
    expected = ref.ptf_layernorm(*args)
    testing.assert_equal(got.cpu(), expected)
    assert (expected[:, 5] == 127).all() and (expected[:, 17] == -128).all()


def test_layernorm_affine_just_beyond_int32_is_clamped_in_int64():
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
        got = layernorm.ptf_layernorm(*[a.to(DEVICE) if isinstance(a, torch.Tensor) else a for a in args])
    testing.assert_equal(got.cpu(), expected)


def test_dyadic_layernorm_with_unnormalised_gains_takes_the_general_path(gen):
    """The kernels are defined for gains the op refuses (value checks off): with one |gain| below
    2**30 the fast path's one-compare bit length would be wrong, so the launcher must not take it."""
    case = testing.layernorm_dyadic_case(5, 48, gen)
    args = list(case.args)
    gm = args[3].clone()
    gm[7] = 12345
    args[3] = gm
    with force_paths(True):
        assert not layernorm.fast_dyadic(gm.to(DEVICE))
        got = layernorm.ptf_layernorm_dyadic(*[a.to(DEVICE) if isinstance(a, torch.Tensor) else a for a in args])
    testing.assert_equal(got.cpu(), ref.ptf_layernorm_dyadic(*args))


# -- attention -------------------------------------------------------------------------------------

def test_fqvit_exponent_tables_take_the_float32_division_path(gen):
    from triton_kernels import attention

    with force_paths(True):
        for scale, zp in ((0.01, 0), (0.05, -20), (0.3, 40)):
            assert attention.fast_attention(params.lis_exp_table(scale, zp).to(DEVICE))


@pytest.mark.parametrize("n,d", [(7, 16), (50, 64), (70, 32)])
def test_int_attention_fast_and_general_paths_agree(n, d, gen):
    from triton_kernels import attention

    case = testing.attention_case(2, 2, n, d, gen)
    expected = ref.int_attention(*case.args)
    for fast in (True, False):
        with force_paths(fast):
            assert attention.fast_attention(case.args[7].to(DEVICE)) == fast
            testing.assert_equal(attention.int_attention(*case.to(DEVICE).args).cpu(), expected, f"fast={fast}")


def test_exponent_tables_that_are_not_float32_integers_take_the_general_path(gen):
    """2**24 + 1 is no float32: dividing by its float32 rounding would not be FQ-ViT's ratio of the
    table as given, so such a table must not take the division path; the result stays exact."""
    from triton_kernels import attention

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
