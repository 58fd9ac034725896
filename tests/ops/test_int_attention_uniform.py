"""``int_attention_uniform`` (FQ-ViT's 8/8/8 attention, uniform uint8 softmax) on every backend.

Each backend (C++, the dispatched op, Triton under the interpreter or on a GPU, Triton forced onto
its general paths) is compared bit for bit with ``reference.int_attention_uniform`` on random
inputs: ragged sequence lengths, head dims 8-200, strided q/k/v views, flat and peaked softmax rows
(probabilities past 128 steps use the weights' high int8 digit), non-zero softmax zero points, and
the edges of the op's limits. Tests that take ``backend`` run once per implementation
(tests/ops/conftest.py); the others call the dispatched op.
"""

import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st

from fqvit_kernels import ops, params, reference as ref, testing
from op_checks import INT32_MAX, agree, check_on_device, Limit, limit_tests


def _check(backend, case):
    expected = ref.int_attention_uniform(*case.args)
    got = backend.run("int_attention_uniform", *case.args)
    testing.assert_equal(got, expected, f"int_attention_uniform on {backend.name}")
    return expected


@pytest.mark.parametrize("b,h,n,d", [(1, 1, 1, 8), (2, 3, 7, 16), (1, 2, 65, 64), (1, 1, 197, 64), (1, 1, 130, 200),
                                     (1, 1, 577, 32)])
def test_matches_reference(backend, b, h, n, d, gen):
    _check(backend, testing.attention_uniform_case(b, h, n, d, gen))


def test_peaked_rows_use_the_high_digit(backend, gen):
    """A tiny calibrated peak (s_softmax = 0.05 / 255) puts most probabilities past 128 steps (the
    high int8 digit of the weight) and many at the 255 clamp; a flat score grid gives equal codes."""
    for _ in range(50):  # a random draw reaches both most of the time; keep drawing until one does
        case = testing.attention_uniform_case(1, 2, 40, 32, gen, peak=0.05)
        q, k, _, *score_args = case.args[:7]
        codes = ref.uniform_softmax_codes(ref.attention_scores(q, k, *score_args), *case.args[7:11])
        if (codes.to(torch.int64) - case.args[10] >= 128).any() and (codes == 255).any():
            break
    else:
        raise AssertionError("no draw put probabilities past the high digit and at the clamp")
    _check(backend, case)
    args = list(case.args)
    args[5] = 52  # score shift: every score rounds to the zero point (one flat row)
    _check(backend, testing.OpCase(case.name, tuple(args)))


def test_strided_qkv_views(backend, gen):
    """q, k, v as the views the block passes: slices of one [B, N, 3, H, D] qkv tensor."""
    case = testing.attention_uniform_case(2, 3, 19, 24, gen)
    qkv = torch.randint(-128, 128, (2, 19, 3, 3, 24), generator=gen, dtype=torch.int8)
    parts = qkv.permute(2, 0, 3, 1, 4)
    args = (parts[0], parts[1], parts[2]) + case.args[3:]
    assert not parts[0].is_contiguous()
    expected = ref.int_attention_uniform(*args)
    testing.assert_equal(backend.run("int_attention_uniform", *args), expected, backend.name)


def test_softmax_shift_at_its_limit(backend, gen):
    """The largest inv_softmax_shift the op accepts for N keys keeps 2 E 2**s <= 2**62: run it, and
    one more is refused."""
    n = 9
    case = testing.attention_uniform_case(1, 1, n, 16, gen)
    args = list(case.args)
    limit = 62 - ops.MAX_UNIFORM_EXP.bit_length() - (n - 1).bit_length()
    args[8], args[9] = 2**31 - 1, limit
    _check(backend, testing.OpCase(case.name, tuple(args)))
    args[9] = limit + 1
    with pytest.raises(ValueError, match="inv_softmax_shift"):
        torch.ops.fqvit.int_attention_uniform(*args)


def test_block_tables_come_from_params():
    table = params.uniform_exp_table(0.05)
    assert table.shape == (256,) and int(table[0]) == 2**ref.UNIFORM_EXP_BITS
    assert bool((table[1:] <= table[:-1]).all())


@pytest.mark.parametrize("index,value,match", [
    (7, torch.zeros(256, dtype=torch.int64), "exp_table"),
    (7, torch.full((256,), 2**20 + 1, dtype=torch.int64), "exp_table"),
    (7, torch.ones(255, dtype=torch.int64), "exp_table"),
    (7, torch.ones((16, 16), dtype=torch.int64), "exp_table"),
    (8, 0, "inv_softmax_multiplier"),
    (8, 2**31, "inv_softmax_multiplier"),
    (9, 0, "inv_softmax_shift"),
    (10, -1, "softmax_zero_point"),
    (10, 256, "softmax_zero_point"),
])
def test_bad_parameters_are_refused(index, value, match, gen):
    args = list(testing.attention_uniform_case(1, 1, 5, 8, gen).args)
    args[index] = value
    with pytest.raises((ValueError, TypeError), match=match):
        torch.ops.fqvit.int_attention_uniform(*args)


def test_sequence_length_limit(gen):
    case = testing.attention_uniform_case(1, 1, 3, 8, gen)
    q = torch.zeros(1, 1, ops.MAX_UNIFORM_KEYS + 1, 8, dtype=torch.int8)
    with pytest.raises(ValueError, match="sequence length"):
        torch.ops.fqvit.int_attention_uniform(q, q, q, *case.args[3:])


# ==================================================================================================
# Parameter limits (docs/numerics.md): the last accepted value exact on every backend, the next refused
# ==================================================================================================


def _uniform(gen):
    return list(testing.attention_uniform_case(1, 1, 5, 8, gen).args)  # N = 5: inv_softmax_shift <= 38


LIMITS = [
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
]


test_first_value_past_each_limit_is_refused, test_last_value_inside_each_limit_is_accepted_and_exact = \
    limit_tests(LIMITS)


# ==================================================================================================
# Every backend but the reference: property-based fuzzing against the reference
# ==================================================================================================

FUZZ = settings(max_examples=12, deadline=None, derandomize=False,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.mark.backends(exclude=("reference",))
@FUZZ
@given(b=st.integers(1, 2), h=st.integers(1, 3), n=st.integers(1, 40), d=st.sampled_from([8, 13, 32, 64]),
       peak=st.sampled_from([0.05, 0.3, 1.0]), seed=st.integers(0, 2**31 - 1))
def test_fuzz_int_attention_uniform(backend, b, h, n, d, peak, seed):
    case = testing.attention_uniform_case(b, h, n, d, torch.Generator().manual_seed(seed), peak=peak)
    agree(backend, case.name, case.args, ref.int_attention_uniform(*case.args))


# ==================================================================================================
# The Triton kernels on a GPU: model sizes
# ==================================================================================================


@pytest.mark.gpu
@pytest.mark.backends("triton")
@pytest.mark.parametrize("n", [1, 50, 197, 577, 1025])
@pytest.mark.parametrize("d", [32, 64, 80, 128])
def test_gpu_int_attention_uniform(n, d, backend, gen):
    got = check_on_device(backend, testing.attention_uniform_case(2, 3, n, d, gen))
    assert got.transpose(1, 2).is_contiguous(), "output memory must be [B, N, H, D]"
    check_on_device(backend, testing.attention_uniform_case(1, 2, n, d, gen, peak=0.05))
