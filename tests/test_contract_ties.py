"""Every rounding site of the integer contract on exact ties and edges, on every backend.

Realistic parameters (multipliers from float ratios, ~31-bit mantissas) almost never produce an
exact tie, so a kernel that rounds half down, or half away from zero, passes random tests. Here the
cases are built to land on ties: power-of-two multipliers, exact half values, float32 near-ties,
step-table boundaries, tiny exponent tables whose ratios are exact halves, masked keys. Each case is
computed by the plain-Python oracle (tests/int_oracle.py, independent of fqvit_kernels.reference)
and every backend (reference, dispatched op, C++, Triton) must equal it. Each builder also asserts
that its case really holds ties, so the test cannot quietly lose its power.
"""

from fractions import Fraction

import pytest
import torch

import int_oracle as oracle
from op_backends import on_every_backend
from fqvit_kernels import reference as ref, testing


def _tensor(rows, dtype):
    return torch.tensor(rows, dtype=dtype)


def _check(backend, op, args, expected_rows, dtype):
    got = backend.run(op, *args)
    testing.assert_equal(got, _tensor(expected_rows, dtype).reshape(got.shape), f"{op} on {backend.name}")


def _ints(t):
    return t.tolist()


# -- int8_linear: requantization (round half up) --------------------------------------------------


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


@on_every_backend
def test_linear_requantization_ties_round_half_up(backend, gen):
    args = _requant_tie_case(gen)
    expected = oracle.int8_linear(*(_ints(a) if isinstance(a, torch.Tensor) else a for a in args))
    _check(backend, "int8_linear", args, expected, torch.int8)


# -- int8_linear: GELU step table, every pre-GELU index of the table ------------------------------


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
@on_every_backend
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
    expected = oracle.int8_linear(_ints(x), _ints(w), _ints(bias), _ints(mult), _ints(shift), zp, _ints(table),
                                  cell_bits)
    _check(backend, "int8_linear", args, expected, torch.int8)


# -- int8_linear: residual mixing (FQ-ViT's float32 quantizer) ------------------------------------


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
    return oracle.int8_linear(_ints(x), _ints(w), _ints(bias), _ints(mult), _ints(shift), zp, None, 0, _ints(residual),
                              rzp, _ints(bm), _ints(rm), _ints(rs), fzp)


def _exact_rounding_differs(args, expected) -> int:
    """How many outputs exact rounding of the mixed value would get wrong (FQ-ViT's float32 differs)."""
    x, w, bias, mult, shift, zp, _, _, residual, rzp, bm, rm, rs, fzp = args
    acc = oracle.matmul(_ints(x), _ints(w))
    differs = 0
    for i, row in enumerate(acc):
        for n, a in enumerate(row):
            b = oracle.clamp(oracle.round_shift(a * 2**30, 30) + zp, -128, 127)
            mixed = (b - zp) * int(bm[n]) + (int(residual[i, n]) - rzp) * int(rm[n])
            exact = oracle.clamp(oracle.round_half_even(Fraction(mixed, 2 ** int(rs[n])) + fzp + 128), 0, 255) - 128
            differs += exact != expected[i][n]
    return differs


@on_every_backend
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
    _check(backend, "int8_linear", args, expected, torch.int8)


# -- PTF LayerNorm (exact): norm and affine rounding, zero-variance rows ---------------------------


def _layernorm_tie_case(gen, m=24, c=24):
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
@on_every_backend
def test_ptf_layernorm_ties(backend, gen, variance_offset):
    x, zp, alpha, wm, bias, shift, out_zp = _layernorm_tie_case(gen)
    args = (x, zp, alpha, wm, bias, shift, out_zp, variance_offset)
    expected = oracle.ptf_layernorm(_ints(x), zp, _ints(alpha), _ints(wm), _ints(bias), _ints(shift), out_zp,
                                    variance_offset)
    _check(backend, "ptf_layernorm", args, expected, torch.int8)


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


@on_every_backend
def test_ptf_layernorm_dyadic_ties_and_gain_extremes(backend, gen):
    args = _dyadic_tie_case(gen)
    expected = oracle.ptf_layernorm_dyadic(*(_ints(a) if isinstance(a, torch.Tensor) else a for a in args))
    _check(backend, "ptf_layernorm_dyadic", args, expected, torch.int8)


# -- Log-Int-Softmax: ratio ties, thresholds, masking, degenerate tables ---------------------------


def _table(rows_fn):
    """A [256, 256] exponent table from ``rows_fn(distance) -> value`` (same for every row max)."""
    row = [int(rows_fn(d)) for d in range(256)]
    return torch.tensor([row] * 256, dtype=torch.int64)


def _lis_tables(gen):
    tiny = torch.randint(0, 7, (256, 256), generator=gen, dtype=torch.int64)
    tiny[:, 0] = torch.randint(1, 7, (256,), generator=gen)
    return {
        # exact-half ratios (E = 3, e = 2 -> 1.5; E = 5, e = 2 -> 2.5) and every small threshold
        "tiny": tiny,
        # only the maximum has an exponent: the others are masked, the maxima share 2**-log2(count)
        "only_max": _table(lambda d: 1 if d == 0 else 0),
        # exponents halving with the distance: ratios are powers of two and sums of them
        "halving": _table(lambda d: 2 ** max(23 - d, 0) if d < 24 else 0),
        # float32 sums: 24-bit entries whose sums lose bits (ties in fl32(E))
        "wide": _table(lambda d: (2**24 - 1) if d == 0 else (2**23 + 1) if d < 4 else 3),
        # one dominant key: the rest cross the 4-bit mask threshold (ratio >= 49152)
        "dominant": _table(lambda d: 2**20 if d == 0 else (d % 5) + 1),
    }


@pytest.mark.parametrize("table_name", ["tiny", "only_max", "halving", "wide", "dominant"])
@pytest.mark.parametrize("bits", [4, 8])
@on_every_backend
def test_log_int_softmax_ties_masks_and_degenerate_tables(backend, gen, table_name, bits):
    table = _lis_tables(gen)[table_name]
    scores = torch.randint(-6, 6, (9, 33), generator=gen, dtype=torch.int8)  # small distances
    scores[0] = 3  # all keys equal: ratio = count
    scores[1, :] = -128
    scores[1, 5] = 127  # the largest distance
    scores[2, :2] = 2  # two maxima
    scores[2, 2:] = -6
    expected = oracle.log_int_softmax(_ints(scores), _ints(table), bits)
    _check(backend, "log_int_softmax", (scores, table, bits), expected, torch.uint8)


def test_lis_tie_builder_really_holds_half_ratios(gen):
    """float32_ratio's half-to-even rule is exercised: the tiny table gives exact halves E / e = k + 1/2."""
    table = _lis_tables(gen)["tiny"]
    scores = torch.randint(-6, 6, (64, 33), generator=gen, dtype=torch.int8)
    halves = 0
    for row in _ints(scores):
        exps = [int(table[max(row) + 128, max(row) - s]) for s in row]
        total = sum(exps)
        halves += sum(1 for e in exps if e > 0 and (2 * total) % e == 0 and ((2 * total) // e) % 2 == 1)
    assert halves >= 10, halves


# -- attention: score and output requantization ties, degenerate tables, masked keys ---------------


@pytest.mark.parametrize("n,d", [(1, 8), (7, 16), (33, 8)])
@pytest.mark.parametrize("table_name", ["tiny", "only_max", "dominant"])
@on_every_backend
def test_int_attention_ties_and_degenerate_tables(backend, gen, n, d, table_name):
    """Scores acc / 2 and context / 2**16: exact halves decided by FQ-ViT's float32 rounding."""
    h = 2
    q = torch.randint(-3, 4, (1, h, n, d), generator=gen, dtype=torch.int8)
    k = torch.randint(-3, 4, (1, h, n, d), generator=gen, dtype=torch.int8)
    v = torch.randint(-128, 128, (1, h, n, d), generator=gen, dtype=torch.int8)
    zp = int(torch.randint(-2, 3, (), generator=gen))
    table = _lis_tables(gen)[table_name]
    s_mult, s_shift, s_zp = 1, 1, int(torch.randint(-5, 6, (), generator=gen))
    o_mult, o_shift, o_zp = 1, 16, int(torch.randint(-5, 6, (), generator=gen))
    args = (q, k, v, zp, s_mult, s_shift, s_zp, table, o_mult, o_shift, o_zp)
    expected = torch.empty(1, h, n, d, dtype=torch.int8)
    for head in range(h):
        expected[0, head] = torch.tensor(oracle.attention(_ints(q[0, head]), _ints(k[0, head]), _ints(v[0, head]), zp,
                                                          s_mult, s_shift, s_zp, _ints(table), o_mult, o_shift, o_zp),
                                         dtype=torch.int8)
    got = backend.run("int_attention", *args)
    testing.assert_equal(got, expected, f"int_attention on {backend.name}")


@on_every_backend
def test_attention_scores_and_log_attn_v_ties(backend, gen):
    q = torch.randint(-4, 5, (2, 7, 12), generator=gen, dtype=torch.int8)
    k = torch.randint(-4, 5, (2, 9, 12), generator=gen, dtype=torch.int8)
    zp = int(torch.randint(-2, 3, (), generator=gen))
    for mult, shift in ((1, 1), (3, 2), (2**30, 31)):
        s_zp = int(torch.randint(-10, 11, (), generator=gen))
        expected = [[[oracle.float32_code(a * mult, shift, s_zp) for a in row]
                     for row in oracle.matmul([[x - zp for x in r] for r in qb], [[x - zp for x in r] for r in kb])]
                    for qb, kb in zip(_ints(q), _ints(k))]
        _check(backend, "attention_scores", (q, k, zp, mult, shift, s_zp), expected, torch.int8)
    codes = torch.randint(0, 20, (2, 7, 9), generator=gen, dtype=torch.uint8)
    codes[codes > 15] = 255  # masked
    v = torch.randint(-128, 128, (2, 9, 12), generator=gen, dtype=torch.int8)
    v_zp = int(torch.randint(-128, 128, (), generator=gen))
    expected = [oracle.log_attn_v(cb, vb, v_zp) for cb, vb in zip(_ints(codes), _ints(v))]
    _check(backend, "log_attn_v", (codes, v, v_zp), expected, torch.int32)


# -- quantize: float32 half-to-even ties ----------------------------------------------------------


@pytest.mark.parametrize("per_channel", [False, True])
@on_every_backend
def test_quantize_ties_half_to_even(backend, gen, per_channel):
    c = 8
    scale = (2.0 ** -torch.randint(1, 6, (c,), generator=gen)).to(torch.float32) if per_channel else torch.tensor(0.125)
    halves = torch.randint(-300, 300, (16, c), generator=gen).to(torch.float32) + 0.5
    x = (halves * scale).to(torch.float32)
    x[0, 0] = 1e-30  # rounds to the zero point
    zp = int(torch.randint(-10, 11, (), generator=gen))
    s_list = scale.tolist() if per_channel else [float(scale)] * c
    expected = [[oracle.quantize(v, s_list[j], zp) for j, v in enumerate(row)] for row in x.tolist()]
    _check(backend, "quantize", (x, scale, zp), expected, torch.int8)


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
@on_every_backend
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
        expected = oracle.log_int_softmax(_ints(scores), _ints(table), bits)
        assert (expected[0][1] == 255) == masked
        _check(backend, "log_int_softmax", (scores, table, bits), expected, torch.uint8)


@on_every_backend
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
        ints = [_ints(a) if isinstance(a, torch.Tensor) else a for a in args]
        right, capped = oracle.ptf_layernorm_dyadic(*ints), oracle.ptf_layernorm_dyadic(*ints, max_n=30)
        if right != capped:
            found = (args, right)
            break
    assert found is not None, "no gain shift separates N = 31 from N = 30"
    _check(backend, "ptf_layernorm_dyadic", found[0], found[1], torch.int8)


@on_every_backend
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
    table = _table(lambda dist: (2, 2, 1)[dist] if dist < 3 else 0)
    s_mult, s_shift, s_zp = 2**30, 30, 0  # score = accumulator (exact)
    o_mult, o_shift, o_zp = 1, 10, 0
    args = (q, k, v, 0, s_mult, s_shift, s_zp, table, o_mult, o_shift, o_zp)
    expected = torch.tensor(oracle.attention(_ints(q[0, 0]), _ints(k[0, 0]), _ints(v[0, 0]), 0, s_mult, s_shift, s_zp,
                                             _ints(table), o_mult, o_shift, o_zp), dtype=torch.int8)
    codes = oracle.lis_codes([2, 2, 1, 0, 0])
    assert codes[:3] == [1, 1, 2], codes  # round(2.5) = 2 -> code 1; round(5) = 5 -> code 2
    got = backend.run("int_attention", *args)
    testing.assert_equal(got, expected.reshape(got.shape), f"int_attention on {backend.name}")


@on_every_backend
def test_ptf_layernorm_dyadic_row_mean_is_floored(backend):
    """The row mean ``floor(S1 * 2**20 / C)`` shifts ``B`` by a fraction of its last bit, so a
    mean rounded toward zero changes an output only rarely: this input (generator seed 650 of
    ``layernorm_dyadic_case(64, 48)``, found by searching seeds) has one element where it does."""
    case = testing.layernorm_dyadic_case(64, 48, torch.Generator().manual_seed(650))
    ints = [_ints(a) if isinstance(a, torch.Tensor) else a for a in case.args]
    expected = oracle.ptf_layernorm_dyadic(*ints)
    assert expected != oracle.ptf_layernorm_dyadic(*ints, mean_toward_zero=True), "the case no longer discriminates"
    _check(backend, "ptf_layernorm_dyadic", case.args, expected, torch.int8)


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
    from fqvit_kernels import ops

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
