"""``int_attention_uniform`` (FQ-ViT's 8/8/8 attention, uniform uint8 softmax) on every backend.

Each backend (C++, the dispatched op, Triton under the interpreter or on a GPU, Triton forced onto
its general paths) is compared bit for bit with ``reference.int_attention_uniform`` on random
inputs: ragged sequence lengths, head dims 8-200, strided q/k/v views, flat and peaked softmax rows
(probabilities past 128 steps use the weights' high int8 digit), non-zero softmax zero points, and
the edges of the op's limits.
"""

import pytest
import torch

from op_backends import on_every_backend
from fqvit_kernels import ops, params, reference as ref, testing


def _check(backend, case):
    expected = ref.int_attention_uniform(*case.args)
    got = backend.run("int_attention_uniform", *case.args)
    testing.assert_equal(got, expected, f"int_attention_uniform on {backend.name}")
    return expected


@on_every_backend
@pytest.mark.parametrize("b,h,n,d", [(1, 1, 1, 8), (2, 3, 7, 16), (1, 2, 65, 64), (1, 1, 197, 64), (1, 1, 130, 200),
                                     (1, 1, 577, 32)])
def test_matches_reference(backend, b, h, n, d, gen):
    _check(backend, testing.attention_uniform_case(b, h, n, d, gen))


@on_every_backend
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


@on_every_backend
def test_strided_qkv_views(backend, gen):
    """q, k, v as the views the block passes: slices of one [B, N, 3, H, D] qkv tensor."""
    case = testing.attention_uniform_case(2, 3, 19, 24, gen)
    qkv = torch.randint(-128, 128, (2, 19, 3, 3, 24), generator=gen, dtype=torch.int8)
    parts = qkv.permute(2, 0, 3, 1, 4)
    args = (parts[0], parts[1], parts[2]) + case.args[3:]
    assert not parts[0].is_contiguous()
    expected = ref.int_attention_uniform(*args)
    testing.assert_equal(backend.run("int_attention_uniform", *args), expected, backend.name)


@on_every_backend
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
