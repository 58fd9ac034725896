"""``log_attn_v``: LIS codes times V by shifts (the attention context from 4-bit codes).

Tests that take ``backend`` run once per implementation (tests/ops/conftest.py): the oracle's ties
and the weight-sum limit on every backend; the C++ cases (ragged, any codes, strided) on the
extension and the dispatched op; the Triton cases on the Triton kernels. Then the dispatched op
alone: bad inputs and the exact float product. (Fuzzing together with the fused attention:
tests/ops/test_int_attention.py.)
"""

import pytest
import torch

import int_oracle as oracle
from fqvit_kernels import reference as ref, testing
from op_checks import (agree, check, check_bad_inputs, check_on_device, check_oracle, int8, ints, Limit, limit_tests,
                       lis_codes)


# ==================================================================================================
# Every backend: ties against the plain-Python oracle (tests/int_oracle.py)
# ==================================================================================================


def test_log_attn_v_ties(backend, gen):
    codes = torch.randint(0, 20, (2, 7, 9), generator=gen, dtype=torch.uint8)
    codes[codes > 15] = 255  # masked
    v = torch.randint(-128, 128, (2, 9, 12), generator=gen, dtype=torch.int8)
    v_zp = int(torch.randint(-128, 128, (), generator=gen))
    expected = [oracle.log_attn_v(cb, vb, v_zp) for cb, vb in zip(ints(codes), ints(v))]
    check_oracle(backend, "log_attn_v", (codes, v, v_zp), expected, torch.int32)


# ==================================================================================================
# Parameter limits (docs/numerics.md): the last accepted value exact on every backend, the next refused
# ==================================================================================================


def _attn_v(gen):
    codes = torch.randint(0, 16, (1, 3, 4), generator=gen, dtype=torch.uint8)
    return [codes, torch.randint(-128, 128, (1, 4, 5), generator=gen, dtype=torch.int8), 0]


LIMITS = [
    Limit("log_attn_v.v_zero_point", "log_attn_v", _attn_v, 2, False, [-128, 127], [-129, 128], "v_zero_point"),
]


test_first_value_past_each_limit_is_refused, test_last_value_inside_each_limit_is_accepted_and_exact = \
    limit_tests(LIMITS)


def test_log_attn_v_weight_sum_limit(backend):
    nk = 257  # 255 * 257 * 2**15 = 2147450880 < 2**31: the largest all-zero-code row
    codes = torch.zeros((1, 2, nk), dtype=torch.uint8)
    v = torch.full((1, nk, 3), 127, dtype=torch.int8)
    out = torch.ops.fqvit.log_attn_v(codes, v, -128)
    assert int(out.max()) == 255 * nk * 2**15
    agree(backend, "log_attn_v", (codes, v, -128), out)
    with pytest.raises(ValueError, match="not LIS codes"):
        torch.ops.fqvit.log_attn_v(torch.zeros((1, 2, nk + 1), dtype=torch.uint8),
                                   torch.zeros((1, nk + 1, 3), dtype=torch.int8), 0)


# ==================================================================================================
# The C++ extension and the dispatched op: ragged shapes, any codes, strided inputs
# ==================================================================================================

cpu_kernels = pytest.mark.backends("cpp", "dispatch")


@cpu_kernels
@pytest.mark.parametrize("n,d", [(1, 8), (7, 64), (50, 80), (197, 64), (577, 8), (1, 1), (6, 1)])
def test_log_attn_v_ragged(n, d, backend, gen):
    codes = lis_codes(gen, (2, 3, n, n))
    v = int8(gen, 2, 3, n, d)
    for zp in (-128, 0, 127):
        check(backend, "log_attn_v", (codes, v, zp), f"N={n} D={d} zp={zp}")


@cpu_kernels
def test_log_attn_v_any_codes(backend, gen):
    # Codes 0..15 anywhere (also many small codes per row), masked 255 and other codes > 15.
    codes = torch.randint(0, 16, (4, 60, 33), generator=gen).to(torch.uint8)
    codes[0, :, :20] = 0
    codes[1] = torch.randint(16, 256, (60, 33), generator=gen).to(torch.uint8)
    codes[2, ::2] = 255
    v = int8(gen, 4, 33, 80)
    check(backend, "log_attn_v", (codes, v, -128), "any codes")
    check(backend, "log_attn_v", (codes.transpose(-1, -2).contiguous().transpose(-1, -2), v[..., ::2], 7), "strided")
    check(backend, "log_attn_v", (codes[:, :0], v, 1), "Nq=0")


# ==================================================================================================
# The Triton kernels: small shapes (interpreter on CPU tensors)
# ==================================================================================================


@pytest.mark.backends("triton")
@pytest.mark.parametrize("b,nq,nk,d", [(1, 1, 1, 8), (2, 7, 50, 80), (3, 33, 70, 13), (1, 65, 70, 200),
                                       (2, 65, 9, 130)])
def test_log_attn_v(b, nq, nk, d, backend, gen):
    case = testing.scores_case((b, nq, nk), gen)
    codes = ref.log_int_softmax(*case.args)
    v = torch.randint(-128, 128, (b, nk, d), generator=gen, dtype=torch.int8)
    zp = int(torch.randint(-128, 128, (), generator=gen))
    check_on_device(backend, testing.OpCase("log_attn_v", (codes, v, zp)))
    raw = torch.randint(0, 256, (b, nq, nk), generator=gen, dtype=torch.uint8)
    raw[..., 0] = 0  # weight 2**15
    check_on_device(backend, testing.OpCase("log_attn_v", (raw, v, zp)))


# ==================================================================================================
# The dispatched op: bad inputs, the exact float product
# ==================================================================================================


def _bad_cases(gen):
    codes = torch.zeros((1, 5, 5), dtype=torch.uint8)
    v = torch.zeros((1, 5, 4), dtype=torch.int8)
    return [
        # (op, args, exception, substring of the message)
        ("log_attn_v", (codes, v[:, :4], 0), ValueError, "do not match"),
        ("log_attn_v", (codes.to(torch.int8), v, 0), TypeError, "codes must have dtype uint8"),
        ("log_attn_v", (torch.zeros((1, 1, 300), dtype=torch.uint8), torch.zeros((1, 300, 4), dtype=torch.int8), 0),
         ValueError, "not LIS codes"),
    ]


def test_bad_input_matrix(gen):
    """Bad inputs raise TypeError/ValueError whose message names the offending argument."""
    cases = _bad_cases(gen)
    assert len(cases) >= 3
    check_bad_inputs(cases)


@pytest.mark.parametrize("n", [1, 7, 197])
@pytest.mark.parametrize("d", [1, 64, 80])
def test_log_attn_v_equals_float_product(n, d, gen):
    codes = torch.randint(0, 17, (2, 3, n, n), generator=gen).to(torch.uint8)
    codes[codes == 16] = 255
    v = torch.randint(-128, 128, (2, 3, n, d), generator=gen, dtype=torch.int8)
    zp = int(torch.randint(-128, 128, (), generator=gen))
    # Any codes are valid as long as the weights stay in range; these sum to < 256.
    out = torch.ops.fqvit.log_attn_v(codes, v, zp)
    weights = torch.where(codes <= 15, torch.pow(2.0, -codes.to(torch.float64)), torch.zeros((), dtype=torch.float64))
    expected = weights @ (v.to(torch.float64) - zp)
    assert torch.equal(out.to(torch.float64) * 2.0**-15, expected)
