"""``quantize`` / ``dequantize``: FQ-ViT's uniform quantizer at the model boundary (float32, round
half to even).

Tests that take ``backend`` run once per implementation (tests/ops/conftest.py): the oracle's ties
and the zero-point limit on every backend (the Triton legs skip: on CUDA these ops keep the PyTorch
reference); the C++ cases on the extension and the dispatched op. Then the dispatched op alone: bad
inputs and FQ-ViT's quantizer formula.
"""

import pytest
import torch

import int_oracle as oracle
from fqvit_kernels import testing
from op_checks import check, check_bad_inputs, check_oracle, int8, Limit, limit_tests, replace


# ==================================================================================================
# Every backend: float32 half-to-even ties against the plain-Python oracle (tests/int_oracle.py)
# ==================================================================================================


@pytest.mark.parametrize("per_channel", [False, True])
def test_quantize_ties_half_to_even(backend, gen, per_channel):
    c = 8
    scale = (2.0 ** -torch.randint(1, 6, (c,), generator=gen)).to(torch.float32) if per_channel else torch.tensor(0.125)
    halves = torch.randint(-300, 300, (16, c), generator=gen).to(torch.float32) + 0.5
    x = (halves * scale).to(torch.float32)
    x[0, 0] = 1e-30  # rounds to the zero point
    zp = int(torch.randint(-10, 11, (), generator=gen))
    s_list = scale.tolist() if per_channel else [float(scale)] * c
    expected = [[oracle.quantize(v, s_list[j], zp) for j, v in enumerate(row)] for row in x.tolist()]
    check_oracle(backend, "quantize", (x, scale, zp), expected, torch.int8)


# ==================================================================================================
# Parameter limits (docs/numerics.md): the last accepted value exact on every backend, the next refused
# ==================================================================================================


def _quantize(gen):
    return list(testing.quantize_case((3, 4), gen).args)


LIMITS = [
    Limit("quantize.zero_point", "quantize", _quantize, 2, False, [-128, 127], [-129, 128], "zero_point"),
]


test_first_value_past_each_limit_is_refused, test_last_value_inside_each_limit_is_accepted_and_exact = \
    limit_tests(LIMITS)


# ==================================================================================================
# The C++ extension and the dispatched op
# ==================================================================================================


@pytest.mark.backends("cpp", "dispatch")
def test_quantize_dequantize(backend, gen):
    for shape in ((), (1,), (7, 13), (2, 197, 384)):
        for per_channel in (False, True):
            if per_channel and not shape:
                continue
            case = testing.quantize_case(shape, gen, per_channel) if shape else testing.OpCase(
                "quantize", (torch.tensor(0.37), torch.tensor(0.02), 3))
            q = check(backend, "quantize", case.args, f"{shape} per_channel={per_channel}")
            check(backend, "dequantize", (q, case.args[1], case.args[2]), f"{shape} per_channel={per_channel}")
    scale = torch.tensor(0.25)
    ties = (torch.arange(-600, 600, dtype=torch.float32) + 0.5) * 0.25  # exact half-way points
    check(backend, "quantize", (ties, scale, -3), "ties to even, clamped")
    x = torch.randn(6, 10, generator=gen) * 3
    for dtype in (torch.float16, torch.bfloat16, torch.float64):
        check(backend, "quantize", (x.to(dtype), torch.tensor(0.03), 5), str(dtype))
    check(backend, "quantize", (x.t(), torch.rand(6, generator=gen) + 0.01, -128), "strided")
    check(backend, "quantize", (torch.empty(0, 4), torch.tensor(0.1), 0), "empty")
    check(backend, "dequantize", (int8(gen, 10, 6).t(), torch.rand(10, generator=gen), 127), "strided")
    check(backend, "dequantize", (int8(gen, 3, 5), torch.tensor([1e-30]), -128), "tiny scale")


# ==================================================================================================
# The dispatched op: bad inputs, FQ-ViT's uniform quantizer
# ==================================================================================================


def _bad_cases(gen):
    qnt = testing.quantize_case((4, 6), gen)
    return [
        # (op, args, exception, substring of the message)
        ("quantize", replace(qnt.args, 0, qnt.args[0].to(torch.int32)), TypeError, "x must have dtype"),
        ("quantize", replace(qnt.args, 1, torch.tensor(0.0)), ValueError, "scale must be > 0"),
        ("quantize", replace(qnt.args, 1, torch.tensor(float("nan"))), ValueError, "scale must be finite"),
        ("quantize", replace(qnt.args, 1, torch.ones(5)), ValueError, "one per channel"),
        ("quantize", replace(qnt.args, 1, torch.tensor(0.1, dtype=torch.float64)), TypeError,
         "scale must have dtype float32"),
        ("quantize", replace(qnt.args, 0, torch.tensor([[1.0, float("inf")] * 3] * 4)), ValueError,
         "x contains NaN or inf"),
        ("dequantize", (torch.zeros(3, dtype=torch.int8), torch.tensor(-1.0), 0), ValueError, "scale must be > 0"),
    ]


def test_bad_input_matrix(gen):
    """Bad inputs raise TypeError/ValueError whose message names the offending argument."""
    cases = _bad_cases(gen)
    assert len(cases) >= 7
    check_bad_inputs(cases)


def test_quantize_matches_fqvit_uniform_quantizer(gen):
    for per_channel in (False, True):
        case = testing.quantize_case((7, 197, 96), gen, per_channel)
        x, scale, zp = case.args
        out = torch.ops.fqvit.quantize(x, scale, zp)
        zp_u = zp + 128  # FQ-ViT: q = clamp(round(x / s + zp), 0, 255) in float32, uint8 codes
        expected = (torch.clamp(torch.round(x / scale + zp_u), 0, 255) - 128).to(torch.int8)
        testing.assert_equal(out, expected)
        back = torch.ops.fqvit.dequantize(out, scale, zp)
        assert torch.equal(back, (expected.float() + 128 - zp_u) * scale)
