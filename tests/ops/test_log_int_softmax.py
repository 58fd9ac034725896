"""``log_int_softmax``: FQ-ViT's Log-Int-Softmax codes (4-bit by default, 1..8 bits).

Tests that take ``backend`` run once per implementation (tests/ops/conftest.py): the oracle's ties,
masks and degenerate tables, the parameter limits and the fuzzing on every backend; the C++ cases
(ragged, tie-prone tables, both code forms) on the extension and the dispatched op; the Triton cases
on the Triton kernels. Then the fused attention's division-free code rule (Triton, exhaustive), and
the dispatched op alone: exponent-table limits, bad inputs and an independent transcription of
FQ-ViT's float32 formulas.
"""

import functools

import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st

import int_oracle as oracle
from fqvit_kernels import ops, params, reference as ref, testing
from lis_transcription import lis_codes, scores_to_float
from op_backends import triton_only
from op_checks import (agree, check, check_bad_inputs, check_on_device, check_oracle, exp_rows, huge_table, int8,
                       ints, Limit, limit_tests, lis_tables, replace)

try:
    from fqvit_kernels import _C
except ImportError:  # the C++ checks below need the extension
    _C = None

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"  # of the direct Triton calls


# ==================================================================================================
# Every backend: ratio ties, thresholds, masking and degenerate tables against the oracle
# ==================================================================================================


@pytest.mark.parametrize("table_name", ["tiny", "only_max", "halving", "wide", "dominant"])
@pytest.mark.parametrize("bits", [4, 8])
def test_log_int_softmax_ties_masks_and_degenerate_tables(backend, gen, table_name, bits):
    table = lis_tables(gen)[table_name]
    scores = torch.randint(-6, 6, (9, 33), generator=gen, dtype=torch.int8)  # small distances
    scores[0] = 3  # all keys equal: ratio = count
    scores[1, :] = -128
    scores[1, 5] = 127  # the largest distance
    scores[2, :2] = 2  # two maxima
    scores[2, 2:] = -6
    expected = oracle.log_int_softmax(ints(scores), ints(table), bits)
    check_oracle(backend, "log_int_softmax", (scores, table, bits), expected, torch.uint8)


def test_lis_tie_builder_really_holds_half_ratios(gen):
    """float32_ratio's half-to-even rule is exercised: the tiny table gives exact halves E / e = k + 1/2."""
    table = lis_tables(gen)["tiny"]
    scores = torch.randint(-6, 6, (64, 33), generator=gen, dtype=torch.int8)
    halves = 0
    for row in ints(scores):
        exps = [int(table[max(row) + 128, max(row) - s]) for s in row]
        total = sum(exps)
        halves += sum(1 for e in exps if e > 0 and (2 * total) % e == 0 and ((2 * total) // e) % 2 == 1)
    assert halves >= 10, halves


def _largest_masked_exponent(others, bits):
    """The largest exponent ``x`` that LIS masks in a row whose other exponents are ``others``
    (binary search with the oracle; the sum barely moves with ``x``)."""
    lo, hi = 1, max(others)
    assert oracle.lis_codes([lo] + others, bits)[0] == 255 and oracle.lis_codes([hi] + others, bits)[0] != 255
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if oracle.lis_codes([mid] + others, bits)[0] == 255 else (lo, mid)
    return lo


@pytest.mark.parametrize("bits", [4, 5])
def test_log_int_softmax_exponent_exactly_at_the_mask_threshold(backend, bits):
    """A key whose exponent equals the row's mask threshold is masked (``e <= threshold``), also when
    a farther key has a larger exponent (tables need not decrease). 5 bits masks only for ratios
    above 1.5 * 2**31, hence the 2**40 exponents."""
    big = 2**40 if bits == 5 else 2**20
    others = [big, big // 2]  # distances 0 and 2
    x = _largest_masked_exponent(others, bits)
    row = [big, x, big // 2] + [0] * 253
    table = torch.tensor([row] * 256, dtype=torch.int64)
    scores = torch.tensor([[5, 4, 3], [4, 5, 3], [3, 4, 5]], dtype=torch.int8)  # distance 1 in each row
    scores = torch.cat([scores, torch.tensor([[5, 4, 3]], dtype=torch.int8)])
    for value, masked in ((x, True), (x + 1, False)):
        row[1] = value
        table = torch.tensor([row] * 256, dtype=torch.int64)
        expected = oracle.log_int_softmax(ints(scores), ints(table), bits)
        assert (expected[0][1] == 255) == masked
        check_oracle(backend, "log_int_softmax", (scores, table, bits), expected, torch.uint8)


def test_float32_ratio_is_exact_up_to_the_int64_limit(gen):
    """The reference ratio against the exact oracle for sums from 2**62 to just below 2**63 and
    exponents that need not be float32 integers (the kernels' threshold paths accept them): quotients
    just below 1 (fl32(E) rounded under e), near 1, and large. The long division must not overflow
    int64 (2 * r with r near 2**62 once did, giving 0 for a ratio of 1)."""
    top = 2**63 - 2**40  # fl32(E) stays an int64
    total = torch.randint(2**62, top, (64,), generator=gen, dtype=torch.int64)
    total[0] = 2**62 + 12345678901  # fl32 rounds 12345678901 down: fl32(E) < E
    exps = torch.stack([total, total - 1, total // 3, total // 65537 + 1,
                        torch.randint(1, 2**20, (64,), generator=gen, dtype=torch.int64)], 1)
    got = ref.float32_ratio(total[:, None].expand_as(exps), exps)
    for i in range(exps.shape[0]):
        for j in range(exps.shape[1]):
            assert int(got[i, j]) == oracle.float32_ratio(int(total[i]), int(exps[i, j])), (i, j)


def test_lis_row_sums_stay_where_their_float32_rounding_fits_int64():
    """FQ-ViT rounds the exponent sum E to float32; from 2**63 - 2**38 on that rounds to 2**63,
    which no int64 holds (the reference then wrapped to -2**63). The op accepts tables only up to
    ops.MAX_LIS_ROW_SUM, where the rounding is still below 2**63, and the ratio there is exact."""
    edge = torch.tensor([ops.MAX_LIS_ROW_SUM, ops.MAX_LIS_ROW_SUM + 1], dtype=torch.int64)
    rounded = ref.round_to_float32(edge)
    assert int(rounded[0]) == 2**63 - 2**39 and int(rounded[1]) < 0  # the first past the limit wraps
    e = torch.tensor([3], dtype=torch.int64)
    assert int(ref.float32_ratio(edge[:1], e)[0]) == oracle.float32_ratio(ops.MAX_LIS_ROW_SUM, 3)
    # A float32-integer maximum whose N-fold sum lies past the limit but inside int64 (searched).
    found = None
    for n in range(2, 300):
        low, high = ops.MAX_LIS_ROW_SUM // n + 1, (2**63 - 1) // n
        top = int(ref.round_to_float32(torch.tensor(high)))
        top = top if top <= high else top - (1 << (top.bit_length() - 24))
        if low <= top <= high:
            found = (n, top)
            break
    assert found is not None
    n, top = found
    table = torch.zeros(256, 256, dtype=torch.int64)
    table[:, 0] = top
    scores = torch.full((1, n), 5, dtype=torch.int8)
    with pytest.raises(ValueError, match="overflows int64"):
        torch.ops.fqvit.log_int_softmax(scores, table, 4)
    table[:, 0] = top - (1 << (top.bit_length() - 24))  # one float32 step lower: accepted, exact
    testing.assert_equal(torch.ops.fqvit.log_int_softmax(scores, table, 4), ref.log_int_softmax(scores, table, 4))


# ==================================================================================================
# Parameter limits (docs/numerics.md): the last accepted value exact on every backend, the next refused
# ==================================================================================================


def _lis(gen):
    return list(testing.scores_case((2, 5), gen).args)


LIMITS = [
    Limit("log_int_softmax.bits", "log_int_softmax", _lis, 2, False, [1, 8], [0, 9], "bits"),
]


test_first_value_past_each_limit_is_refused, test_last_value_inside_each_limit_is_accepted_and_exact = \
    limit_tests(LIMITS)


def test_exp_table_limits_both_sides(gen):
    """Entries: float32-representable integers (2**24 + 2 yes, 2**24 + 1 no); the row maximum's own
    exponent at least 1 (0 refused); the row sum inside int64."""
    scores, table, bits = _lis(gen)
    for entry, ok in ((2**24 + 2, True), (2**24 + 1, False), (2**24, True), (3 * 2**40, True), (3 * 2**40 + 1, False)):
        t = table.clone()
        t[7, 3] = entry
        if ok:
            testing.assert_equal(torch.ops.fqvit.log_int_softmax(scores, t, bits), ref.log_int_softmax(scores, t, bits))
        else:
            with pytest.raises(ValueError, match="float32-representable"):
                torch.ops.fqvit.log_int_softmax(scores, t, bits)
    t = table.clone()
    t[200, 0] = 0
    with pytest.raises(ValueError, match=r"exp_table\[:, 0\]"):
        torch.ops.fqvit.log_int_softmax(scores, t, bits)
    t = table.clone()
    t[5, 0] = 1
    torch.ops.fqvit.log_int_softmax(scores, t, bits)
    keys = 5
    limit = ops.MAX_LIS_ROW_SUM // keys  # largest total-safe maximum, rounded down to a float32 integer
    top = int(ref.round_to_float32(torch.tensor([limit]))[0])
    top = top if top <= limit else top - (1 << (top.bit_length() - 24))
    t = table.clone()
    t[3, 9] = top
    torch.ops.fqvit.log_int_softmax(scores, t, bits)
    t[3, 9] = top + (1 << (top.bit_length() - 24))  # the next float32 integer
    with pytest.raises(ValueError, match="overflows int64"):
        torch.ops.fqvit.log_int_softmax(scores, t, bits)


@functools.lru_cache(maxsize=None)
def _int64_sum_limit_case():
    """The smallest score scale whose table keeps N * max(table) < 2**63 for N = 4096, its codes
    checked against FQ-ViT's float32 formula evaluated with Python floats (searched once, shared by
    every backend's test)."""
    n = 4096
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
    return scale, scores, table, out


def test_log_int_softmax_at_the_int64_sum_limit(backend):
    scale, scores, table, out = _int64_sum_limit_case()
    agree(backend, "log_int_softmax", (scores, table, 4), out)
    with pytest.raises(ValueError, match="overflows int64"):
        torch.ops.fqvit.log_int_softmax(scores, params.lis_exp_table(scale / 1.01), 4)


# ==================================================================================================
# Every backend but the reference: property-based fuzzing against the reference
# ==================================================================================================

FUZZ = settings(max_examples=12, deadline=None, derandomize=False,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.mark.backends(exclude=("reference",))
@FUZZ
@given(rows=st.integers(1, 9), n=st.integers(1, 260), bits=st.integers(1, 8), seed=st.integers(0, 2**31 - 1))
def test_fuzz_log_int_softmax(backend, rows, n, bits, seed):
    case = testing.scores_case((rows, n), torch.Generator().manual_seed(seed), bits=bits)
    agree(backend, case.name, case.args, ref.log_int_softmax(*case.args))


# ==================================================================================================
# The C++ extension and the dispatched op: ragged shapes, tie-prone tables, both code forms
# ==================================================================================================

cpu_kernels = pytest.mark.backends("cpp", "dispatch")


@cpu_kernels
@pytest.mark.parametrize("n", [1, 7, 50, 197, 577])
def test_log_int_softmax_ragged(n, backend, gen):
    for bits in (1, 4, 8):
        check(backend, "log_int_softmax", testing.scores_case((2, 3, n), gen, bits).args, f"N={n} bits={bits}")


@cpu_kernels
def test_log_int_softmax_edges(backend, gen):
    n = 197
    scores = int8(gen, 6, n)
    scores[0] = 5  # all equal
    scores[1] = -128
    scores[1, 3] = 127  # one maximum far above the rest
    scores[2, ::2] = 127
    only_max = torch.zeros(256, dtype=torch.int64)
    only_max[0] = 1000
    check(backend, "log_int_softmax", (scores, exp_rows(only_max), 4), "all masked except the max")
    check(backend, "log_int_softmax", (scores, exp_rows(torch.ones(256)), 8), "flat table")
    top = torch.full((256,), ref.round_to_float32(torch.tensor((2**63 - 1) // n)).item() // 2, dtype=torch.int64)
    top[1::2] = 1
    check(backend, "log_int_softmax", (scores, exp_rows(top), 4), "largest table")
    table = params.lis_exp_table(0.3, 4)
    check(backend, "log_int_softmax", (scores.t(), table, 4), "strided scores")
    check(backend, "log_int_softmax", (torch.tensor([3], dtype=torch.int8), table, 4), "rank 1")
    check(backend, "log_int_softmax", (int8(gen, 0, 4, 7), table, 4), "empty")
    for score_scale in (0.005, 0.02, 1.0):  # ops require table.max() * N < 2**63 and table[:, 0] > 0
        check(backend, "log_int_softmax", (scores, params.lis_exp_table(score_scale, -20), 4), f"scale {score_scale}")
    rows_differ = torch.randint(1, 2**24, (256, 256), generator=gen)  # every row its own exponents
    check(backend, "log_int_softmax", (scores, rows_differ, 4), "per-row tables")


@cpu_kernels
@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_log_int_softmax_small_tables_hit_rounding_ties(backend, data):
    # Tiny exponent tables make E / e land exactly on the half-way points of the round-half-even
    # ratio and on the masking threshold, where a division-free shortcut is easiest to get wrong.
    gen = torch.Generator().manual_seed(data.draw(st.integers(0, 2**31 - 1), label="seed"))
    table = torch.randint(0, data.draw(st.integers(2, 64), label="table max"), (256, 256), generator=gen)
    table[:, 0] = table[:, 0].clamp(min=1)
    rows, n = data.draw(st.integers(1, 8)), data.draw(st.integers(1, 60))
    spread = data.draw(st.integers(1, 256), label="score spread")
    scores = (torch.randint(0, spread, (rows, n), generator=gen) - 128).to(torch.int8)
    bits = data.draw(st.integers(1, 8), label="bits")
    check(backend, "log_int_softmax", (scores, table, bits), f"{rows}x{n} bits={bits}")


_NOT_FLOAT32 = "float32-representable"


@cpu_kernels
@pytest.mark.parametrize("seed", range(6))
def test_log_int_softmax_both_code_forms(seed, backend):
    """The C++ LIS takes FQ-ViT's float32 division when every exponent of a row's distances is a
    float32 integer and the exact per-row thresholds otherwise. The op refuses tables that float32
    cannot hold, but the kernel (value checks off) must still compute them like the reference: the
    same tie-prone tables, once as they are and once scaled by 2**25 + 1 (same ratios, exponents
    float32 cannot hold), and once with a single inexact exponent in the row. The fused attention
    likewise."""
    gen = torch.Generator().manual_seed(1000 + seed)
    small = torch.randint(0, 2 + 8 * seed, (256, 256), generator=gen)
    small[:, 0] = small[:, 0].clamp(min=1)
    scores = (torch.randint(0, 12, (16, 40), generator=gen) - 128 + 20 * seed).to(torch.int8)
    scaled = small * (2**25 + 1)
    assert ((scaled > 0) & (scaled.to(torch.float32).to(torch.int64) != scaled)).any()  # threshold form taken
    one_inexact = small.clone()
    one_inexact[:, 5] = 2**25 + 1
    for bits in (1, 2, 3, 4):
        check(backend, "log_int_softmax", (scores, small, bits), f"float32 form, bits={bits}")
        check(backend, "log_int_softmax", (scores, scaled, bits), f"threshold form, bits={bits}", refused=_NOT_FLOAT32)
        check(backend, "log_int_softmax", (scores, one_inexact, bits), f"one inexact exponent, bits={bits}",
              refused=_NOT_FLOAT32)
    att = testing.attention_case(1, 2, 33, 16, gen)
    inexact_table = att.args[7] * 3 + 1  # odd and above 2**24 near the row maximum: threshold form
    check(backend, "int_attention", att.args[:7] + (inexact_table,) + att.args[8:], "threshold form",
          refused=_NOT_FLOAT32)


@cpu_kernels
def test_log_int_softmax_masking_threshold_ties(backend):
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
                check(backend, "log_int_softmax", (scores, exp_rows(table), bits), f"bits={bits} delta={delta}")


@cpu_kernels
def test_log_int_softmax_float32_rounding_of_the_sum(backend, gen):
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
        check(backend, "log_int_softmax", (scores, exp_rows(table), 8), f"e1={e1} k={k}")


@pytest.mark.skipif(_C is None, reason="needs the C++ extension")
def test_cpp_lis_level_constants_match_the_reference():
    assert [tuple(c) for c in _C.lis_level_constants()] == list(ref.lis_level_constants())


# ==================================================================================================
# The Triton kernels: small shapes under the interpreter (ViT-B on a GPU: tests/ops/test_int_attention.py)
# ==================================================================================================

triton_kernels_only = pytest.mark.backends("triton")


@triton_kernels_only
@pytest.mark.parametrize("shape", [(1, 1), (3, 7), (2, 5, 50), (3, 1100)])
@pytest.mark.parametrize("bits", [4, 8, 1])
def test_log_int_softmax(shape, bits, backend, gen):
    check_on_device(backend, testing.scores_case(shape, gen, bits))


@triton_kernels_only
def test_log_int_softmax_permuted_input(backend, gen):
    case = testing.scores_case((2, 9, 7), gen)
    scores = case.args[0].transpose(1, 2)
    testing.assert_equal(backend.run("log_int_softmax", scores, case.args[1]), ref.log_int_softmax(scores, case.args[1]))


@triton_kernels_only
def test_log_int_softmax_near_int64_limit(backend, gen):
    scores = torch.randint(-128, 128, (4, 50), generator=gen, dtype=torch.int8)
    scores[:, :7] = 127  # many keys at the row max: E close to 2**63
    check_on_device(backend, testing.OpCase("log_int_softmax", (scores, huge_table(50), 4)))


# -- the fused attention's division-free code rule (tests/triton_lis_check.py) ------------------------


def _reference_codes(total, exps):
    """4-bit codes by the reference's formula (FQ-ViT's float32 ratio), 16 = masked."""
    positive = exps > 0
    tot = total[:, None].expand_as(exps)
    ratio = ref.float32_ratio(tot, torch.where(positive, exps, torch.ones_like(exps)))
    msb = ref.bit_length(ratio) - 1
    next_bit = ((ratio >> torch.clamp(msb - 1, min=0)) & 1) * (msb >= 1)
    code = msb + next_bit
    return torch.where(positive & (code < 16), code, torch.full_like(code, 16)).to(torch.int32)


@triton_only
def test_triton_lis_threshold_codes_match_division(gen):
    """The fused attention's division-free codes, including float32 ties and sums near 2**63."""
    from triton_lis_check import lis_codes_by_thresholds

    rows, length = 96, 300
    total = torch.randint(1, 2**40, (rows,), generator=gen, dtype=torch.int64)
    total[40:60] = 2**62 + torch.randint(0, 2**40, (20,), generator=gen)  # near the int64 limit
    divisor = torch.randint(1, 70000, (rows, length), generator=gen)
    exps = total[:, None] // divisor
    for i, level in enumerate(ref.lis_level_constants()[:16]):
        # Exponents around each level's threshold, where the float32 rounding decides.
        u = ref.lis_level_thresholds(total[i:i + 1], 16)[0, i]
        exps[i, :3] = torch.stack([u - 1, u, u + 1])
        big = ref.lis_level_thresholds(total[40 + i:41 + i], 16)[0, i]
        exps[40 + i, :3] = torch.stack([big - 1, big, big + 1])
    exps = torch.minimum(exps, total[:, None])
    exps[:, 5] = 0
    got = lis_codes_by_thresholds(total.to(DEVICE), exps.to(DEVICE)).cpu()
    expected = _reference_codes(total, exps)
    testing.assert_equal(got, expected, "codes")
    assert set(expected.unique().tolist()) == set(range(17))


@triton_only
def test_triton_lis_threshold_codes_every_table_entry(gen):
    """Every (row sum, table entry) pair a real table gives, for several score scales."""
    from triton_lis_check import lis_codes_by_thresholds

    for scale in (0.02, 0.08, 0.3):
        table = params.lis_exp_table(scale, 3)[200, :201]
        counts = torch.randint(1, 2000, (64, table.numel()), generator=gen)
        counts[:, 1:] *= torch.randint(0, 2, (64, table.numel() - 1), generator=gen)
        total = (counts * table).sum(dim=1)
        exps = table.expand(64, table.numel()).contiguous()
        got = lis_codes_by_thresholds(total.to(DEVICE), exps.to(DEVICE)).cpu()
        testing.assert_equal(got, _reference_codes(total, exps), f"codes at scale {scale}")


@triton_only
def test_triton_lis_threshold_codes_exhaustive_small_sums():
    """Every pair 1 <= e <= E <= 512 (where round-half-even ties are densest)."""
    from triton_lis_check import lis_codes_by_thresholds

    total = torch.arange(1, 513, dtype=torch.int64)
    exps = torch.minimum(torch.arange(1, 513, dtype=torch.int64)[None, :], total[:, None]).contiguous()
    got = lis_codes_by_thresholds(total.to(DEVICE), exps.to(DEVICE)).cpu()
    testing.assert_equal(got, _reference_codes(total, exps), "codes")


# ==================================================================================================
# The dispatched op: shapes, bad inputs, an independent transcription of FQ-ViT's float32 formulas
# ==================================================================================================


@pytest.mark.parametrize("shape", [(1,), (7,), (3, 197), (2, 2, 577)])
def test_log_int_softmax_ragged_shapes(shape, gen):
    case = testing.scores_case(shape, gen)
    codes = case.run()
    assert codes.shape == torch.Size(shape) and codes.dtype == torch.uint8
    # The row maximum always gets a code; every code is 0..15 or the masked 255.
    assert ((codes <= 15) | (codes == 255)).all()
    top = case.args[0].to(torch.int64).argmax(dim=-1, keepdim=True)
    assert (codes.gather(-1, top) <= 15).all()


def _bad_cases(gen):
    lis = testing.scores_case((3, 5), gen)
    return [
        # (op, args, exception, substring of the message)
        ("log_int_softmax", replace(lis.args, 0, lis.args[0].to(torch.int32)), TypeError, "scores must have dtype int8"),
        ("log_int_softmax", replace(lis.args, 1, lis.args[1][:255]), ValueError, "exp_table must have shape"),
        ("log_int_softmax", replace(lis.args, 1, lis.args[1][0]), ValueError, "exp_table must have rank 2"),
        ("log_int_softmax", replace(lis.args, 1, lis.args[1] * 0 + (2**25 + 1)), ValueError, "float32-representable"),
        ("log_int_softmax", replace(lis.args, 1, -lis.args[1]), ValueError, "exp_table values"),
        ("log_int_softmax", replace(lis.args, 2, 9), ValueError, "bits"),
        ("log_int_softmax", replace(lis.args, 1, torch.full((256, 256), 2**62, dtype=torch.int64)), ValueError,
         "overflows int64"),
    ]


def test_bad_input_matrix(gen):
    """Bad inputs raise TypeError/ValueError whose message names the offending argument."""
    cases = _bad_cases(gen)
    assert len(cases) >= 7
    check_bad_inputs(cases)


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
