"""Every documented parameter range pinned at both ends: the last accepted value is accepted (and
computed alike on every backend), the first value past it is refused with a ValueError naming the
parameter. Scalar parameters are set directly; tensor parameters have one element set (the others
stay valid), so a check that looks at the first element only, or at the wrong bound, fails here.
"""

from typing import Callable, List, NamedTuple, Sequence

import pytest
import torch

from op_backends import on_every_backend
from fqvit_kernels import ops, params, reference as ref, testing

INT32_MAX = 2**31 - 1


class Limit(NamedTuple):
    name: str                      # test id: op.parameter
    op: str
    build: Callable                # gen -> list of valid args
    index: int                     # position of the parameter
    element: bool                  # set one element of a tensor parameter (else the scalar itself)
    ok: Sequence[int]              # last accepted values (both ends)
    bad: Sequence[int]             # first refused values
    match: str                     # the ValueError message names this


def _linear(gen):
    return list(testing.linear_case(3, 6, 16, gen).args)


def _gelu(gen):
    args = _linear(gen)
    table = testing.random_step_table(gen, 4, 0)  # steps 0 or 1: valid for every cell width
    return args[:5] + [2, table, 3]


def _residual(gen):
    return list(testing.linear_case(3, 6, 16, gen, "residual").args)


def _ln(gen):
    return list(testing.layernorm_case(3, 8, gen).args) + [0]


def _dyadic(gen):
    return list(testing.layernorm_dyadic_case(3, 8, gen).args)


def _lis(gen):
    return list(testing.scores_case((2, 5), gen).args)


def _attention(gen):
    return list(testing.attention_case(1, 1, 5, 8, gen).args)


def _uniform(gen):
    return list(testing.attention_uniform_case(1, 1, 5, 8, gen).args)  # N = 5: inv_softmax_shift <= 38


def _scores(gen):
    a = _attention(gen)
    return a[:2] + a[3:7]


def _attn_v(gen):
    codes = torch.randint(0, 16, (1, 3, 4), generator=gen, dtype=torch.uint8)
    return [codes, torch.randint(-128, 128, (1, 4, 5), generator=gen, dtype=torch.int8), 0]


def _quantize(gen):
    return list(testing.quantize_case((3, 4), gen).args)


K = 16
HEADROOM = params.max_linear_bias(K)
LIMITS: List[Limit] = [
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
    Limit("log_int_softmax.bits", "log_int_softmax", _lis, 2, False, [1, 8], [0, 9], "bits"),
    Limit("log_attn_v.v_zero_point", "log_attn_v", _attn_v, 2, False, [-128, 127], [-129, 128], "v_zero_point"),
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
    Limit("int_attention_uniform.exp_table", "int_attention_uniform", _uniform, 7, True, [0, ops.MAX_UNIFORM_EXP],
          [-1, ops.MAX_UNIFORM_EXP + 1], "exp_table values"),
    Limit("int_attention_uniform.inv_softmax_multiplier", "int_attention_uniform", _uniform, 8, False,
          [1, INT32_MAX], [0, 2**31], "inv_softmax_multiplier"),
    Limit("int_attention_uniform.inv_softmax_shift", "int_attention_uniform", _uniform, 9, False, [1, 38], [0, 39],
          "inv_softmax_shift"),
    Limit("int_attention_uniform.softmax_zero_point", "int_attention_uniform", _uniform, 10, False, [0, 255],
          [-1, 256], "softmax_zero_point"),
    Limit("int_attention_uniform.out_shift", "int_attention_uniform", _uniform, 12, False, [1, 52], [0, 53],
          "out_shift"),
    Limit("int_attention_uniform.out_zero_point", "int_attention_uniform", _uniform, 13, False, [-128, 127],
          [-129, 128], "out_zero_point"),
    Limit("quantize.zero_point", "quantize", _quantize, 2, False, [-128, 127], [-129, 128], "zero_point"),
]


def _with(limit: Limit, gen, value):
    args = limit.build(gen)
    if limit.element:
        t = args[limit.index].clone()
        t[len(t) // 2] = value  # not the first element: a check must look at every one
        args[limit.index] = t
    else:
        args[limit.index] = value
    return tuple(args)


@pytest.mark.parametrize("limit", LIMITS, ids=[lim.name for lim in LIMITS])
def test_first_value_past_each_limit_is_refused(limit, gen):
    for value in limit.bad:
        with pytest.raises(ValueError, match=limit.match):
            getattr(torch.ops.fqvit, limit.op)(*_with(limit, gen, value))


@pytest.mark.parametrize("limit", LIMITS, ids=[lim.name for lim in LIMITS])
@on_every_backend
def test_last_value_inside_each_limit_is_accepted_and_exact(limit, backend, gen):
    for value in limit.ok:
        args = _with(limit, gen, value)
        expected = getattr(ref, limit.op)(*args)
        testing.assert_equal(getattr(torch.ops.fqvit, limit.op)(*args), expected, f"{limit.name}={value} dispatched")
        testing.assert_equal(backend.run(limit.op, *args), expected, f"{limit.name}={value} on {backend.name}")


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


def test_shape_limits_both_sides():
    """LayerNorm channels, GELU table length and span, GEMM K: the largest accepted, the next refused."""
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
