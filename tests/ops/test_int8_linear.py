"""``int8_matmul`` and ``int8_linear`` (plain, GELU step-table and residual epilogues).

Tests that take ``backend`` run once per implementation (tests/ops/conftest.py): the oracle's ties,
the parameter limits and the fuzzing on every backend; the C++ cases (ragged, strided, range edges,
row panels) on the extension and the dispatched op; the Triton cases on the Triton kernels (under the
interpreter on CPU tensors, or on a GPU with the ViT shapes). Then the Triton fast paths (direct
launcher calls), and the dispatched op alone: bad inputs, exact products, numerics vs float.
"""

from fractions import Fraction

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings, strategies as st

import int_oracle as oracle
from fqvit_kernels import ops, params, reference as ref, testing
from op_backends import triton_only
from op_checks import (INT32_MAX, agree, check, check_bad_inputs, check_on_device, check_oracle, int8, ints, Limit,
                       limit_tests, replace, strided_1d)

try:  # the Triton-only tests below; the others run without Triton
    from triton_kernels import gemm
    from triton_kernels._common import force_paths
except ImportError:
    gemm = force_paths = None

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"  # of the direct Triton calls


# ==================================================================================================
# Every backend: rounding ties against the plain-Python oracle (tests/int_oracle.py)
# ==================================================================================================

# -- requantization (round half up) ----------------------------------------------------------------


def _requant_tie_case(gen, m=24, n=16, k=5):
    """(acc + b) * 2**30 over 2**31..2**33: small operands, so about a third are exact ties."""
    x = torch.randint(-5, 6, (m, k), generator=gen, dtype=torch.int8)
    w = torch.randint(-5, 6, (n, k), generator=gen, dtype=torch.int8)
    mult = torch.full((n,), 2**30, dtype=torch.int32)
    shift = torch.tensor([31, 31, 32, 33] * (n // 4), dtype=torch.int32)
    bias = torch.randint(-6, 7, (n,), generator=gen, dtype=torch.int64) << 30
    zp = int(torch.randint(-30, 31, (), generator=gen))
    acc = x.to(torch.int64) @ w.to(torch.int64).t()
    v = acc * 2**30 + bias
    s = shift.to(torch.int64)
    ties = (v & ((1 << s) - 1)) == (1 << (s - 1))
    assert ties.float().mean() > 0.2 and bool((ties & (v < 0)).any()) and bool((ties & (v > 0)).any())
    return x, w, bias, mult, shift, zp


def test_linear_requantization_ties_round_half_up(backend, gen):
    args = _requant_tie_case(gen)
    expected = oracle.int8_linear(*(ints(a) if isinstance(a, torch.Tensor) else a for a in args))
    check_oracle(backend, "int8_linear", args, expected, torch.int8)


# -- GELU step table, every pre-GELU index of the table --------------------------------------------


def _edge_step_table(gen, length, cell_bits):
    """Steps at 0, 1, the middle, 2**cell_bits - 1 and 2**cell_bits (never taken); all directions."""
    cell = 1 << cell_bits
    steps = [0, min(1, cell), cell // 2, max(cell - 1, 0), cell]
    entries = []
    for i in range(length):
        direction = (i % 3) - 1
        below = int(torch.randint(-126, 126, (), generator=gen))
        step = steps[i % len(steps)]
        entries.append((step << 10) | ((direction + 1) << 8) | (below & 0xFF))
    return torch.tensor(entries, dtype=torch.int32)


@pytest.mark.parametrize("length,cell_bits", [(256, 0), (64, 2), (32, 3), (3, 7)])
def test_gelu_table_at_every_index(backend, gen, length, cell_bits):
    """K = 1, weight 1, multiplier 2**30 >> 30: t = x + zp hits each of the 256 indices of the span
    (cell starts, steps and the cells' last index included), and indices outside it."""
    x = torch.arange(-128, 128, dtype=torch.int8).reshape(256, 1)
    w = torch.ones((2, 1), dtype=torch.int8)
    mult = torch.full((2,), 2**30, dtype=torch.int32)
    shift = torch.full((2,), 30, dtype=torch.int32)
    span = length << cell_bits
    bias = torch.tensor([0, -40 << 30], dtype=torch.int64)  # the second channel reaches below the table
    zp = min(128, span)
    table = _edge_step_table(gen, length, cell_bits)
    args = (x, w, bias, mult, shift, zp, table, cell_bits)
    expected = oracle.int8_linear(ints(x), ints(w), ints(bias), ints(mult), ints(shift), zp, ints(table), cell_bits)
    check_oracle(backend, "int8_linear", args, expected, torch.int8)


# -- residual mixing (FQ-ViT's float32 quantizer) ---------------------------------------------------


def _residual_tie_case(gen, m=32, k=3):
    """Channels whose mixed value is a half-integer plus a tiny offset (float32 rounds it onto the tie)
    or an exact half: (branch_multiplier, residual_multiplier, residual_shift) per channel."""
    configs = [(1, 1, 1), (3, 1, 2)]
    for s in (20, 26, 30, 31):  # with int32 multipliers, halves of the branch term end at shift 31
        configs.append((1 << (s - 1), 1, s))       # branch carries the half, residual the tiny offset
        configs.append((3, 1 << (s - 1), s))       # residual carries the half
    configs += [(2**30 - 1, 2**29 + 3, 40), (2**31 - 1, 2**31 - 1, 52)]  # the top of the shift range
    n = len(configs)
    x = torch.randint(-2, 3, (m, k), generator=gen, dtype=torch.int8)
    w = torch.randint(-2, 3, (n, k), generator=gen, dtype=torch.int8)
    mult = torch.full((n,), 2**30, dtype=torch.int32)
    shift = torch.full((n,), 30, dtype=torch.int32)
    bias = torch.zeros(n, dtype=torch.int64)
    zp = int(torch.randint(-5, 6, (), generator=gen))
    residual = torch.randint(-128, 128, (m, n), generator=gen, dtype=torch.int8)
    residual_zp = int(torch.randint(-10, 11, (), generator=gen))
    bm = torch.tensor([c[0] for c in configs], dtype=torch.int32)
    rm = torch.tensor([c[1] for c in configs], dtype=torch.int32)
    rs = torch.tensor([c[2] for c in configs], dtype=torch.int32)
    final_zp = int(torch.randint(-20, 21, (), generator=gen))
    return (x, w, bias, mult, shift, zp, None, 0, residual, residual_zp, bm, rm, rs, final_zp)


def _residual_expected(args):
    x, w, bias, mult, shift, zp, _, _, residual, rzp, bm, rm, rs, fzp = args
    return oracle.int8_linear(ints(x), ints(w), ints(bias), ints(mult), ints(shift), zp, None, 0, ints(residual),
                              rzp, ints(bm), ints(rm), ints(rs), fzp)


def _exact_rounding_differs(args, expected) -> int:
    """How many outputs exact rounding of the mixed value would get wrong (FQ-ViT's float32 differs)."""
    x, w, bias, mult, shift, zp, _, _, residual, rzp, bm, rm, rs, fzp = args
    acc = oracle.matmul(ints(x), ints(w))
    differs = 0
    for i, row in enumerate(acc):
        for n, a in enumerate(row):
            b = oracle.clamp(oracle.round_shift(a * 2**30, 30) + zp, -128, 127)
            mixed = (b - zp) * int(bm[n]) + (int(residual[i, n]) - rzp) * int(rm[n])
            exact = oracle.clamp(oracle.round_half_even(Fraction(mixed, 2 ** int(rs[n])) + fzp + 128), 0, 255) - 128
            differs += exact != expected[i][n]
    return differs


def test_residual_mixing_float32_ties(backend, gen):
    # The case must decide codes on float32 ties (exact rounding of the mixed value would differ in
    # at least 20 outputs); a random draw does so nearly always, so draw again until one does.
    for _ in range(20):
        args = _residual_tie_case(gen)
        expected = _residual_expected(args)
        if _exact_rounding_differs(args, expected) >= 20:
            break
    else:
        raise AssertionError("no draw put 20 outputs on float32 ties")
    check_oracle(backend, "int8_linear", args, expected, torch.int8)


# ==================================================================================================
# Parameter limits (docs/numerics.md): the last accepted value exact on every backend, the next refused
# ==================================================================================================


def _linear(gen):
    return list(testing.linear_case(3, 6, 16, gen).args)


def _gelu(gen):
    args = _linear(gen)
    table = testing.random_step_table(gen, 4, 0)  # steps 0 or 1: valid for every cell width
    return args[:5] + [2, table, 3]


def _residual(gen):
    return list(testing.linear_case(3, 6, 16, gen, "residual").args)


K = 16
HEADROOM = params.max_linear_bias(K)
LIMITS = [
    Limit("int8_linear.multiplier", "int8_linear", _linear, 3, True, [0, INT32_MAX], [-1], "multiplier values"),
    Limit("int8_linear.shift", "int8_linear", _linear, 4, True, [1, 62], [0, 63], "shift values"),
    Limit("int8_linear.output_zero_point", "int8_linear", _linear, 5, False, [-128, 127], [-129, 128], "output_zero_point"),
    Limit("int8_linear.bias", "int8_linear", _linear, 2, True, [-HEADROOM, HEADROOM], [-HEADROOM - 1, HEADROOM + 1],
          "bias values"),
    Limit("int8_linear.gelu_pre_zero_point", "int8_linear", _gelu, 5, False, [0, 4 << 3], [-1, (4 << 3) + 1],
          "pre-GELU zero point"),
    Limit("int8_linear.gelu_cell_bits", "int8_linear", _gelu, 7, False, [0, 20], [-1, 21], "gelu_cell_bits"),
    Limit("int8_linear.residual_zero_point", "int8_linear", _residual, 9, False, [-128, 127], [-129, 128],
          "residual_zero_point"),
    Limit("int8_linear.branch_multiplier", "int8_linear", _residual, 10, True, [0, INT32_MAX], [-1],
          "branch_multiplier values"),
    Limit("int8_linear.residual_multiplier", "int8_linear", _residual, 11, True, [0, INT32_MAX], [-1],
          "residual_multiplier values"),
    Limit("int8_linear.residual_shift", "int8_linear", _residual, 12, True, [1, 52], [0, 53], "residual_shift values"),
    Limit("int8_linear.final_zero_point", "int8_linear", _residual, 13, False, [-128, 127], [-129, 128],
          "final_zero_point"),
]


test_first_value_past_each_limit_is_refused, test_last_value_inside_each_limit_is_accepted_and_exact = \
    limit_tests(LIMITS)


def test_shape_limits_both_sides():
    """GELU table length and span, GEMM K: the largest accepted, the next refused."""
    x, w = torch.zeros((1, 4), dtype=torch.int8), torch.zeros((2, 4), dtype=torch.int8)
    lin = (x, w, torch.zeros(2, dtype=torch.int64), torch.ones(2, dtype=torch.int32), torch.ones(2, dtype=torch.int32))
    longest = ops.MAX_GELU_TABLE_LENGTH
    torch.ops.fqvit.int8_linear(*lin, 0, torch.zeros(longest, dtype=torch.int32), 14)  # span exactly 2**30
    for length, bits, match in ((longest + 1, 0, "1..65536 entries"), (longest, 15, "more than 2"),
                                (0, 0, "1..65536 entries")):
        with pytest.raises(ValueError, match=match):
            torch.ops.fqvit.int8_linear(*lin, 0, torch.zeros(length, dtype=torch.int32), bits)
    k = ops.MAX_GEMM_K
    with pytest.raises(ValueError, match=str(k)):
        torch.ops.fqvit.int8_matmul(torch.zeros((1, k + 1), dtype=torch.int8), torch.zeros((1, k + 1), dtype=torch.int8))
    out = torch.ops.fqvit.int8_matmul(torch.full((1, k), -128, dtype=torch.int8), torch.full((1, k), -128, dtype=torch.int8))
    assert int(out) == 128 * 128 * k


def _round_shift(v: int, s: int) -> int:
    return (v + (1 << (s - 1))) >> s  # Python ints: exact, arithmetic shift


def test_int8_linear_at_the_int64_bias_limit(backend):
    """Against plain Python integers (no torch arithmetic)."""
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
    agree(backend, "int8_linear", (x, w, bias, mult, shift, 0), expected)
    with pytest.raises(ValueError, match="bias values"):
        torch.ops.fqvit.int8_linear(x, w, bias + torch.tensor([1, 0, 0]), mult, shift, 0)


def test_int8_linear_gelu_table_at_its_limits(backend):
    """The longest table at the widest cells it allows (L * 2**bits = 2**30), t far outside it;
    against plain Python integers."""
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
            agree(backend, "int8_linear", args, expected, dispatch=inside)
            if not inside:
                with pytest.raises(ValueError, match="pre-GELU zero point"):
                    torch.ops.fqvit.int8_linear(*args)
    with pytest.raises(ValueError, match="more than 2"):
        torch.ops.fqvit.int8_linear(x, w, bias, mult, shift, 0, torch.zeros(2**16, dtype=torch.int32), 15)


# ==================================================================================================
# Every backend but the reference: property-based fuzzing against the reference
# ==================================================================================================

FUZZ = settings(max_examples=12, deadline=None, derandomize=False,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
seeds = st.integers(0, 2**31 - 1)


@pytest.mark.backends(exclude=("reference",))
@FUZZ
@given(m=st.integers(1, 70), n=st.integers(1, 70), k=st.integers(1, 96),
       epilogue=st.sampled_from(["plain", "gelu", "steps", "residual"]), seed=seeds)
def test_fuzz_int8_linear(backend, m, n, k, epilogue, seed):
    case = testing.linear_case(m, n, k, torch.Generator().manual_seed(seed), epilogue)
    agree(backend, case.name, case.args, ref.int8_linear(*case.args))


@pytest.mark.backends(exclude=("reference",))
@FUZZ
@given(m=st.integers(1, 70), n=st.integers(1, 70), k=st.integers(1, 96), seed=seeds)
def test_fuzz_int8_matmul(backend, m, n, k, seed):
    case = testing.matmul_case(m, n, k, torch.Generator().manual_seed(seed))
    agree(backend, case.name, case.args, ref.int8_matmul(*case.args))


# ==================================================================================================
# The C++ extension and the dispatched op: ragged shapes, strided inputs, range edges, row panels
# ==================================================================================================

cpu_kernels = pytest.mark.backends("cpp", "dispatch")


@cpu_kernels
@pytest.mark.parametrize("m", [1, 7, 197, 577])
def test_int8_gemms_ragged(m, backend, gen):
    # K = 1 and N = 1 make the transposed weight a [1, N] / [K, 1] view with degenerate strides.
    for n, k in ((9, 13), (48, 100), (24, 385), (5, 1), (1, 7), (1, 1)):
        check(backend, "int8_matmul", testing.matmul_case(m, n, k, gen).args, f"M={m} N={n} K={k}")
        for epilogue in ("plain", "gelu", "steps", "residual") if m * n >= 2 else ():  # linear_case: 2 outputs
            case = testing.linear_case(m, n, k, gen, epilogue)
            check(backend, "int8_linear", case.args, f"{epilogue} M={m} N={n} K={k}")


@cpu_kernels
@pytest.mark.parametrize("m", [2049, 4097 + 7])
def test_int8_linear_in_row_panels(m, backend, gen):
    """Tall, wide products (M > 2048, N >= 1024) run as equal row panels, each GEMM followed by its
    epilogue: ragged panel counts, every epilogue, the residual rows and the strided x rows indexed
    per panel."""
    for epilogue in ("plain", "gelu", "residual"):
        case = testing.linear_case(m, 1024 + 3, 16, gen, epilogue)
        check(backend, "int8_linear", case.args, f"{epilogue} M={m}")
    case = testing.linear_case(m, 1030, 16, gen, "residual")
    args = list(case.args)
    args[0] = torch.cat([args[0], args[0]], 1)[:, ::2]  # strided x
    check(backend, "int8_linear", tuple(args), "strided x in panels")


@cpu_kernels
def test_int8_gemms_strided_inputs(backend, gen):
    x = int8(gen, 40, 2 * 37)[:, ::2]
    weight = int8(gen, 37, 24).t()  # [24, 37], column-major
    check(backend, "int8_matmul", (x, weight))
    case = testing.linear_case(40, 24, 37, gen, "residual")
    args = list(case.args)
    args[0], args[1] = x, weight
    args[2] = torch.stack([args[2], args[2]], 1)[:, 0]  # strided bias
    args[8] = args[8].t().contiguous().t()  # column-major residual
    check(backend, "int8_linear", tuple(args), "strided")
    gelu = list(testing.linear_case(40, 24, 37, gen, "gelu").args)
    gelu[0], gelu[1] = x, weight
    gelu[6] = torch.stack([gelu[6], gelu[6]], 1)[:, 0]  # strided table
    check(backend, "int8_linear", tuple(gelu), "strided gelu table")


@cpu_kernels
def test_int8_gemms_empty_rows(backend, gen):
    check(backend, "int8_matmul", testing.matmul_case(0, 5, 9, gen).args)
    case = testing.linear_case(3, 8, 9, gen)
    check(backend, "int8_linear", (case.args[0][:0],) + case.args[1:], "M=0")


@cpu_kernels
def test_int8_gemms_at_max_k(backend):
    k = ops.MAX_GEMM_K
    x = torch.full((2, k), -128, dtype=torch.int8)
    x[1, ::3] = 127
    w = torch.full((3, k), -128, dtype=torch.int8)
    w[2, ::2] = 127
    check(backend, "int8_matmul", (x, w), "K=MAX_GEMM_K")
    headroom = params.max_linear_bias(k)
    bias = torch.tensor([headroom, -headroom, 0], dtype=torch.int64)
    mult = torch.tensor([INT32_MAX, 1, 2**30], dtype=torch.int32)
    shift = torch.tensor([62, 1, 31], dtype=torch.int32)
    check(backend, "int8_linear", (x, w, bias, mult, shift, 0), "K=MAX_GEMM_K plain")
    table = testing.random_step_table(torch.Generator().manual_seed(0), ops.MAX_GELU_TABLE_LENGTH, 14)
    check(backend, "int8_linear", (x, w, bias, mult, shift, 2**30, table, 14), "K=MAX_GEMM_K gelu")
    res = torch.tensor([[127, -128, 5], [-128, 127, 0]], dtype=torch.int8)
    ones = torch.full((3,), INT32_MAX, dtype=torch.int32)
    check(backend, "int8_linear", (x, w, bias, mult, shift, 127, None, 0, res, -128, ones, ones,
                                   torch.tensor([1, 52, 40], dtype=torch.int32), 127), "K=MAX_GEMM_K residual")


@cpu_kernels
def test_int8_linear_extreme_parameters(backend, gen):
    case = testing.linear_case(33, 17, 29, gen, "residual")
    x, w, bias = case.args[:3]
    for mult_value, shift_value in ((INT32_MAX, 1), (1, 62), (0, 5), (INT32_MAX, 62)):
        mult = torch.full((17,), mult_value, dtype=torch.int32)
        shift = torch.full((17,), shift_value, dtype=torch.int32)
        for zp in (-128, 127):
            check(backend, "int8_linear", (x, w, bias, mult, shift, zp), f"plain m={mult_value} s={shift_value}")
            args = (x, w, bias, mult, shift, zp, None, 0) + case.args[8:]
            check(backend, "int8_linear", args, f"residual m={mult_value} s={shift_value}")
        for bits in (0, 3, 20):
            table = testing.random_step_table(gen, 2, bits)
            for t_zp in (-(2**31), INT32_MAX, 0):
                check(backend, "int8_linear", (x, w, bias, mult, shift, t_zp, table, bits),
                      f"gelu 2-cell table bits={bits}", refused=None if 0 <= t_zp <= 2 << bits else "pre-GELU zero point")


@cpu_kernels
def test_int8_linear_gelu_step_table_edges(backend, gen):
    """Steps at 0 and at 2**bits (never taken), falling and rising steps, indices far outside."""
    case = testing.linear_case(70, 33, 48, gen, "steps")
    x, w, bias, mult, shift, t_zp, table, bits = case.args
    check(backend, "int8_linear", case.args, f"random table L={table.numel()} bits={bits}")
    for length, cell_bits in ((1, 0), (1, 20), (5, 0), (300, 7), (2**10, 20)):
        table = testing.random_step_table(gen, length, cell_bits)
        span = length << cell_bits
        for zp in (span // 2, 0, span, -span, 2**31 - 1):
            check(backend, "int8_linear", (x, w, bias, mult, shift, zp, table, cell_bits), f"L={length} bits={cell_bits}",
                  refused=None if 0 <= zp <= span else "pre-GELU zero point")


@pytest.mark.backends("cpp", "triton")
def test_out_of_range_shifts_are_clamped_not_undefined(backend, gen):
    """Shifts the op refuses (reachable with value checks off, or tampered after a cached check),
    in kernels called directly, still give defined results: the reference at the clamped shift (in
    Triton, LLVM makes an out-of-range shift poison, so without the clamp the GPU result would be
    arbitrary)."""
    x, w, bias, mult, shift, zp = testing.linear_case(9, 12, 30, gen).args
    for bad in (0, -1, -(2**31), 63, 64, 2**31 - 1):
        tampered = shift.clone()
        tampered[::2] = bad
        expected = ref.int8_linear(x, w, bias, mult, tampered.clamp(1, 63), zp)
        testing.assert_equal(backend.run("int8_linear", x, w, bias, mult, tampered, zp), expected, f"shift {bad}")


# ==================================================================================================
# The Triton kernels: small shapes (interpreter on CPU tensors), ViT shapes on a GPU
# ==================================================================================================

triton_kernels_only = pytest.mark.backends("triton")
GEMM_SHAPES = [(1, 7, 13), (7, 1, 40), (33, 50, 13), (33, 7, 40), (70, 130, 200)]


@triton_kernels_only
@pytest.mark.parametrize("m,n,k", GEMM_SHAPES)
def test_int8_matmul(m, n, k, backend, gen):
    check_on_device(backend, testing.matmul_case(m, n, k, gen))


@triton_kernels_only
def test_int8_matmul_strided_operands(backend, gen):
    a = torch.randint(-128, 128, (40, 33), generator=gen, dtype=torch.int8).t()  # [33, 40], column-major
    b = torch.randint(-128, 128, (7, 80), generator=gen, dtype=torch.int8)[:, ::2]  # [7, 40], stride 2
    testing.assert_equal(backend.run("int8_matmul", a, b), ref.int8_matmul(a, b))


@triton_kernels_only
@pytest.mark.parametrize("epilogue", ["plain", "gelu", "steps", "residual"])
@pytest.mark.parametrize("m,n,k", GEMM_SHAPES[:4])
def test_int8_linear(m, n, k, epilogue, backend, gen):
    check_on_device(backend, testing.linear_case(m, n, k, gen, epilogue))


@triton_kernels_only
def test_int8_linear_extreme_requant(backend, gen):
    """Saturating outputs, large multipliers/shifts and step-table indices far outside the table."""
    case = testing.linear_case(9, 20, 40, gen)
    args = list(case.args)
    args[3] = torch.full((20,), 2**31 - 1, dtype=torch.int32)
    args[4] = torch.randint(1, 63, (20,), generator=gen, dtype=torch.int32)
    check_on_device(backend, testing.OpCase("int8_linear", tuple(args)))
    for length, bits in ((5, 0), (1, 20), (300, 7)):
        table = testing.random_step_table(gen, length, bits)
        for zp in (2**31 - 1000, -(2**31), (length << bits) // 2):
            check_on_device(backend, testing.OpCase("int8_linear", tuple(args[:5]) + (zp, table, bits)))


@triton_kernels_only
@pytest.mark.parametrize("epilogue", ["gelu", "residual"])
def test_int8_linear_strided_parameter_vectors(epilogue, backend, gen):
    case = testing.linear_case(7, 20, 40, gen, epilogue)
    args = tuple(strided_1d(a) if isinstance(a, torch.Tensor) and a.dim() == 1 else a for a in case.args)
    assert not args[2].is_contiguous()
    check_on_device(backend, testing.OpCase("int8_linear", args))


@triton_kernels_only
def test_int8_linear_empty_rows(backend, gen):
    case = testing.linear_case(1, 7, 13, gen)
    out = backend.run("int8_linear", case.args[0][:0], *case.args[1:])
    assert out.shape == (0, 7) and out.dtype == torch.int8


@pytest.mark.gpu
@pytest.mark.backends("triton", "gluon")  # gluon: the Gluon kernel itself (sm_90 only; variants.py)
@pytest.mark.parametrize("m,n,k,epilogue", [
    (1576, 2304, 768, "plain"), (1576, 3072, 768, "gelu"), (1576, 768, 3072, "residual"),
    (1577, 3072, 1024, "gelu"), (1577, 1024, 4096, "residual"), (12608, 768, 768, "residual"),
    (1576, 3072, 768, "steps"),
])
def test_gpu_vit_linears(m, n, k, epilogue, backend, gen):
    check_on_device(backend, testing.linear_case(m, n, k, gen, epilogue))


@pytest.mark.gpu
@pytest.mark.backends("triton", "gluon")
@pytest.mark.parametrize("epilogue", ["plain", "gelu", "steps", "residual"])
@pytest.mark.parametrize("m", [1, 7, 577, 1025])
@pytest.mark.parametrize("n,k", [(48, 48), (784, 3088)])
def test_gpu_linears_ragged_tiles(m, n, k, epilogue, backend, gen):
    """Row counts, N and K that are not multiples of any tile (N and K multiples of 16, so the
    Gluon kernel takes them: TMA's row strides), and a single row: partial tiles, K tails."""
    check_on_device(backend, testing.linear_case(m, n, k, gen, epilogue))


@pytest.mark.gpu
@pytest.mark.parametrize("epilogue", ["plain", "gelu", "residual"])
def test_gpu_gluon_every_candidate(epilogue, gen):
    """Each Gluon tile candidate (the ``gluon`` backend runs the first) on a shape ragged in M, N
    and K tiles, with several tiles per persistent program (M x N tiles > SMs)."""
    from triton_kernels import gluon_gemm

    case = testing.linear_case(3001, 1040, 784, gen, epilogue)
    args = [a.cuda() if isinstance(a, torch.Tensor) else a for a in case.args]
    reason = gluon_gemm.unsupported_reason(args[0], args[1])
    if reason is not None:
        pytest.skip(f"gluon: {reason}")
    expected = ref.int8_linear(*case.args)
    code = {"plain": gemm.EPILOGUE_PLAIN, "gelu": gemm.EPILOGUE_GELU, "residual": gemm.EPILOGUE_RESIDUAL}[epilogue]
    for config in gluon_gemm.CANDIDATES:
        out = torch.empty((3001, 1040), dtype=torch.int8, device="cuda")
        gluon_gemm.launch(args[0], args[1], out, code, *args[2:], config=config)
        testing.assert_equal(out.cpu(), expected, f"gluon candidate {config}")


@pytest.mark.gpu
@triton_kernels_only
@pytest.mark.parametrize("m,n,k", [(12608, 2304, 768), (1000, 1000, 1000)])
def test_gpu_int8_matmul(m, n, k, backend, gen):
    check_on_device(backend, testing.matmul_case(m, n, k, gen))


# ==================================================================================================
# The Triton int32 fast epilogue (direct launcher calls): which path a launch takes, both exact at
# the preconditions' edges, a violating parameter (also edited in place) falls back
# ==================================================================================================

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


@triton_only
@pytest.mark.parametrize("epilogue", EPILOGUES)
@pytest.mark.parametrize("m,n,k", [(1, 7, 64), (7, 50, 128), (33, 7, 40), (70, 130, 200)])  # EVEN_K and ragged K
def test_triton_int8_linear_fast_and_general_paths_agree(m, n, k, epilogue, gen):
    case = testing.linear_case(m, n, k, gen, epilogue)
    shift = case.args[4]
    if int(shift.min()) < gemm.FAST_MIN_SHIFT:  # keep the test meaningful whatever the draw
        case = _with_shift(case, shift.clamp(min=gemm.FAST_MIN_SHIFT))
    with force_paths(True):
        assert gemm.fast_epilogue(case.args[4].to(DEVICE))
    _both_paths(case)


@triton_only
@pytest.mark.parametrize("epilogue", ["plain", "residual"])
@pytest.mark.parametrize("shift_value", [33, 47, 62])
def test_triton_int8_linear_fast_path_at_its_extremes(shift_value, epilogue, gen):
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


@triton_only
def test_triton_int8_linear_ties_on_the_fast_path():
    """Power-of-two ratios make exact ties: round_shift rounds half up on both paths."""
    k = 64
    x = torch.arange(-32, 32, dtype=torch.int8).reshape(1, k).repeat(3, 1)
    w = torch.eye(k, dtype=torch.int8)[:5] * 3
    bias = torch.tensor([0, 1 << 32, -(1 << 32), (1 << 33) - 1, 5], dtype=torch.int64)
    mult = torch.full((5,), 2**30, dtype=torch.int32)
    shift = torch.tensor([33, 33, 34, 35, 33], dtype=torch.int32)
    case = testing.OpCase("int8_linear", (x, w, bias, mult, shift, 3))
    _both_paths(case)


@triton_only
@pytest.mark.parametrize("epilogue", EPILOGUES)
def test_triton_shifts_below_the_fast_range_take_the_general_path(epilogue, gen):
    case = testing.linear_case(9, 20, 40, gen, epilogue)
    shift = case.args[4].clone()
    shift[3] = gemm.FAST_MIN_SHIFT - 1
    case = _with_shift(case, shift)
    with force_paths(True):
        assert not gemm.fast_epilogue(shift.to(DEVICE))
    _both_paths(case)


@triton_only
def test_triton_an_in_place_edit_of_a_seen_shift_tensor_is_noticed(gen):
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


@triton_only
def test_triton_64bit_offsets_are_chosen_for_huge_operands():
    assert not gemm._needs_64bit_offsets(torch.empty(12608, 3072, dtype=torch.int8))
    big = torch.empty((2**20, 2**11), dtype=torch.int8, device="meta")  # 2**31 elements, no storage
    assert gemm._needs_64bit_offsets(big)


# ==================================================================================================
# The dispatched op: bad inputs, exact products, numerics against the float operation it replaces
# ==================================================================================================


def _bad_cases(gen):
    lin = testing.linear_case(4, 8, 16, gen)
    gelu = testing.linear_case(4, 8, 16, gen, "gelu")
    a, b = testing.matmul_case(4, 5, 6, gen).args
    meta_b = b.to("meta")
    return [
        # (op, args, exception, substring of the message)
        ("int8_matmul", (a.float(), b), TypeError, "a must have dtype int8"),
        ("int8_matmul", (a, b.to(torch.int32)), TypeError, "b must have dtype int8"),
        ("int8_matmul", (a[None], b), ValueError, "a must have rank 2"),
        ("int8_matmul", (a, b[:, :5]), ValueError, "K=6"),
        ("int8_matmul", (a[:, :0], b[:, :0]), ValueError, "a has an empty dimension"),
        ("int8_matmul", (a, meta_b), ValueError, "b is on meta"),
        ("int8_linear", replace(lin.args, 2, lin.args[2].to(torch.int32)), TypeError, "bias must have dtype int64"),
        ("int8_linear", replace(lin.args, 2, lin.args[2][:3]), ValueError, "bias must have shape"),
        ("int8_linear", replace(lin.args, 3, -lin.args[3]), ValueError, "multiplier values"),
        ("int8_linear", replace(lin.args, 4, lin.args[4] + 70), ValueError, "shift values"),
        ("int8_linear", replace(lin.args, 5, 300), ValueError, "output_zero_point"),
        # A Python type the schema cannot take is refused by the dispatcher itself (RuntimeError).
        ("int8_linear", replace(lin.args, 5, 1.5), RuntimeError, "argument 'output_zero_point'"),
        ("int8_linear", lin.args + (None, 0, torch.zeros((4, 8), dtype=torch.int8)), ValueError, "residual needs"),
        ("int8_linear", lin.args + (torch.zeros(0, dtype=torch.int32),), ValueError, "gelu_table must have 1"),
        ("int8_linear", lin.args + (torch.zeros(3, dtype=torch.int8),), TypeError, "gelu_table must have dtype int32"),
        ("int8_linear", lin.args + (torch.full((3,), -1, dtype=torch.int32),), ValueError, "not a step-table entry"),
        ("int8_linear", lin.args + (torch.full((3,), 3 << 10, dtype=torch.int32), 1), ValueError,
         "not a step-table entry"),  # step 3 > 2**1
        ("int8_linear", replace(gelu.args, 7, 21), ValueError, "gelu_cell_bits"),
        ("int8_linear", lin.args + (None, 3), ValueError, "needs a gelu_table"),
        ("int8_linear", lin.args + (torch.zeros(2**16, dtype=torch.int32), 15), ValueError, "more than 2\\*\\*30"),
        ("int8_linear", lin.args + (None, 0, torch.zeros((4, 9), dtype=torch.int8), 0, lin.args[3], lin.args[3],
                                    lin.args[4], 0), ValueError, "residual must have shape"),
        ("int8_linear", replace(lin.args, 2, torch.full_like(lin.args[2], 2**62)), ValueError, "bias values"),
    ]


def test_bad_input_matrix(gen):
    """Bad inputs raise TypeError/ValueError whose message names the offending argument."""
    cases = _bad_cases(gen)
    assert len(cases) >= 22
    check_bad_inputs(cases)


def test_pre_gelu_zero_point_outside_the_table_is_refused(gen):
    case = testing.linear_case(4, 16, 24, gen, "gelu")
    args = list(case.args)
    span = args[6].numel() << args[7]
    for zp in (-1, span + 1, 2**31 - 1):
        args[5] = zp
        with pytest.raises(ValueError, match="pre-GELU zero point"):
            torch.ops.fqvit.int8_linear(*args)


@pytest.mark.parametrize("m", [1, 7, 197, 577])
@pytest.mark.parametrize("n,k", [(1, 1), (24, 13), (40, 771)])
def test_int8_matmul_ragged_shapes_exact(m, n, k, gen):
    case = testing.matmul_case(m, n, k, gen)
    a, b = case.args
    expected = (a.to(torch.float64) @ b.to(torch.float64).t()).to(torch.int32)
    testing.assert_equal(case.run(), expected)


def test_int8_matmul_extremes_do_not_overflow():
    k = ops.MAX_GEMM_K
    a = torch.full((2, k), -128, dtype=torch.int8)
    b = torch.full((3, k), -128, dtype=torch.int8)
    out = torch.ops.fqvit.int8_matmul(a, b)
    assert int(out[0, 0]) == 128 * 128 * k
    with pytest.raises(ValueError, match="K=131072"):
        torch.ops.fqvit.int8_matmul(torch.zeros((1, k + 1), dtype=torch.int8), torch.zeros((1, k + 1), dtype=torch.int8))


# Numerics (docs/numerics.md): requantization is a fixed-point product followed by one rounding, so it
# may differ from the float formula by at most 1 LSB (the float formula rounds half to even, the
# integer one half up, and the multiplier carries 31 bits).

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
