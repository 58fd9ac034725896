"""Bad inputs raise TypeError/ValueError whose message names the offending argument."""

import pytest
import torch

from fqvit_kernels import params, testing


def _replace(args, index, value):
    args = list(args)
    args[index] = value
    return tuple(args)


def _bad_cases(gen):
    lin = testing.linear_case(4, 8, 16, gen)
    gelu = testing.linear_case(4, 8, 16, gen, "gelu")
    ln = testing.layernorm_case(4, 16, gen)
    dy = testing.layernorm_dyadic_case(4, 16, gen)
    lis = testing.scores_case((3, 5), gen)
    att = testing.attention_case(1, 2, 5, 8, gen)
    qnt = testing.quantize_case((4, 6), gen)
    a, b = testing.matmul_case(4, 5, 6, gen).args
    codes = torch.zeros((1, 5, 5), dtype=torch.uint8)
    v = torch.zeros((1, 5, 4), dtype=torch.int8)
    meta_b = b.to("meta")
    cases = [
        # (op, args, exception, substring of the message)
        ("int8_matmul", (a.float(), b), TypeError, "a must have dtype int8"),
        ("int8_matmul", (a, b.to(torch.int32)), TypeError, "b must have dtype int8"),
        ("int8_matmul", (a[None], b), ValueError, "a must have rank 2"),
        ("int8_matmul", (a, b[:, :5]), ValueError, "K=6"),
        ("int8_matmul", (a[:, :0], b[:, :0]), ValueError, "a has an empty dimension"),
        ("int8_matmul", (a, meta_b), ValueError, "b is on meta"),
        ("int8_linear", _replace(lin.args, 2, lin.args[2].to(torch.int32)), TypeError, "bias must have dtype int64"),
        ("int8_linear", _replace(lin.args, 2, lin.args[2][:3]), ValueError, "bias must have shape"),
        ("int8_linear", _replace(lin.args, 3, -lin.args[3]), ValueError, "multiplier values"),
        ("int8_linear", _replace(lin.args, 4, lin.args[4] + 70), ValueError, "shift values"),
        ("int8_linear", _replace(lin.args, 5, 300), ValueError, "output_zero_point"),
        # A Python type the schema cannot take is refused by the dispatcher itself (RuntimeError).
        ("int8_linear", _replace(lin.args, 5, 1.5), RuntimeError, "argument 'output_zero_point'"),
        ("int8_linear", lin.args + (None, 0, torch.zeros((4, 8), dtype=torch.int8)), ValueError, "residual needs"),
        ("int8_linear", lin.args + (torch.zeros(0, dtype=torch.int32),), ValueError, "gelu_table must have 1"),
        ("int8_linear", lin.args + (torch.zeros(3, dtype=torch.int8),), TypeError, "gelu_table must have dtype int32"),
        ("int8_linear", lin.args + (torch.full((3,), -1, dtype=torch.int32),), ValueError, "not a step-table entry"),
        ("int8_linear", lin.args + (torch.full((3,), 3 << 10, dtype=torch.int32), 1), ValueError,
         "not a step-table entry"),  # step 3 > 2**1
        ("int8_linear", _replace(gelu.args, 7, 21), ValueError, "gelu_cell_bits"),
        ("int8_linear", lin.args + (None, 3), ValueError, "needs a gelu_table"),
        ("int8_linear", lin.args + (torch.zeros(2**16, dtype=torch.int32), 15), ValueError, "more than 2\\*\\*30"),
        ("int8_linear", lin.args + (None, 0, torch.zeros((4, 9), dtype=torch.int8), 0, lin.args[3], lin.args[3],
                                    lin.args[4], 0), ValueError, "residual must have shape"),
        ("int8_linear", _replace(lin.args, 2, torch.full_like(lin.args[2], 2**62)), ValueError, "bias values"),
        ("ptf_layernorm", _replace(ln.args, 0, ln.args[0].t()), ValueError, "x must be contiguous"),
        ("ptf_layernorm", _replace(ln.args, 2, ln.args[2] + 4), ValueError, "ptf_alpha values"),
        ("ptf_layernorm", _replace(ln.args, 2, ln.args[2].to(torch.int64)), TypeError, "ptf_alpha must have dtype int32"),
        ("ptf_layernorm", _replace(ln.args, 4, ln.args[4].to(torch.int32)), TypeError, "bias must have dtype int64"),
        ("ptf_layernorm", _replace(ln.args, 5, ln.args[5][:-1]), ValueError, "shift must have shape"),
        ("ptf_layernorm", _replace(ln.args, 1, -129), ValueError, "input_zero_point"),
        ("ptf_layernorm", _replace(ln.args, 0, torch.zeros((2, 9000), dtype=torch.int8)), ValueError, "at most 8192"),
        ("ptf_layernorm", ln.args + (-1,), ValueError, "variance_offset"),
        ("ptf_layernorm", ln.args + (2**61 + 1,), ValueError, "variance_offset"),
        ("ptf_layernorm_dyadic", _replace(dy.args, 4, torch.full_like(dy.args[4], 14)), ValueError,
         "gamma_shift values"),
        ("ptf_layernorm_dyadic", _replace(dy.args, 3, torch.full_like(dy.args[3], 5)), ValueError, "31-bit mantissas"),
        ("ptf_layernorm_dyadic", _replace(dy.args, 5, dy.args[5].to(torch.int32)), TypeError, "beta must have dtype int64"),
        ("ptf_layernorm_dyadic", _replace(dy.args, 5, torch.full_like(dy.args[5], 2**62 + 1)), ValueError, "beta values"),
        ("ptf_layernorm_dyadic", _replace(dy.args, 2, dy.args[2] + 4), ValueError, "ptf_alpha values"),
        ("ptf_layernorm_dyadic", _replace(dy.args, 3, dy.args[3][:-1]), ValueError, "gamma_multiplier must have shape"),
        ("log_int_softmax", _replace(lis.args, 0, lis.args[0].to(torch.int32)), TypeError, "scores must have dtype int8"),
        ("log_int_softmax", _replace(lis.args, 1, lis.args[1][:255]), ValueError, "exp_table must have shape"),
        ("log_int_softmax", _replace(lis.args, 1, lis.args[1][0]), ValueError, "exp_table must have rank 2"),
        ("log_int_softmax", _replace(lis.args, 1, lis.args[1] * 0 + (2**25 + 1)), ValueError, "float32-representable"),
        ("log_int_softmax", _replace(lis.args, 1, -lis.args[1]), ValueError, "exp_table values"),
        ("log_int_softmax", _replace(lis.args, 2, 9), ValueError, "bits"),
        ("log_int_softmax", _replace(lis.args, 1, torch.full((256, 256), 2**62, dtype=torch.int64)), ValueError,
         "overflows int64"),
        ("log_attn_v", (codes, v[:, :4], 0), ValueError, "do not match"),
        ("log_attn_v", (codes.to(torch.int8), v, 0), TypeError, "codes must have dtype uint8"),
        ("log_attn_v", (torch.zeros((1, 1, 300), dtype=torch.uint8), torch.zeros((1, 300, 4), dtype=torch.int8), 0),
         ValueError, "not LIS codes"),
        ("int_attention", _replace(att.args, 1, att.args[1][:, :, :4]), ValueError, "share one shape"),
        ("int_attention", _replace(att.args, 0, att.args[0].transpose(2, 3).contiguous().transpose(2, 3)), ValueError,
         "q must have unit stride"),
        ("int_attention", _replace(att.args, 4, -5), ValueError, "score_multiplier"),
        ("int_attention", _replace(att.args, 9, 0), ValueError, "out_shift"),
        ("int_attention", _replace(att.args, 9, 53), ValueError, "out_shift must lie in \\[1, 52\\]"),
        ("attention_scores", att.args[:2] + att.args[3:5] + (53, 0), ValueError, "score_shift"),
        ("int_attention", _replace(att.args, 2, att.args[2][0]), ValueError, "v must have rank 4"),
        ("quantize", _replace(qnt.args, 0, qnt.args[0].to(torch.int32)), TypeError, "x must have dtype"),
        ("quantize", _replace(qnt.args, 1, torch.tensor(0.0)), ValueError, "scale must be > 0"),
        ("quantize", _replace(qnt.args, 1, torch.tensor(float("nan"))), ValueError, "scale must be finite"),
        ("quantize", _replace(qnt.args, 1, torch.ones(5)), ValueError, "one per channel"),
        ("quantize", _replace(qnt.args, 1, torch.tensor(0.1, dtype=torch.float64)), TypeError, "scale must have dtype float32"),
        ("quantize", _replace(qnt.args, 0, torch.tensor([[1.0, float("inf")] * 3] * 4)), ValueError, "x contains NaN or inf"),
        ("dequantize", (torch.zeros(3, dtype=torch.int8), torch.tensor(-1.0), 0), ValueError, "scale must be > 0"),
    ]
    return cases


def test_bad_input_matrix(gen):
    cases = _bad_cases(gen)
    assert len(cases) >= 40
    for op, args, exc, message in cases:
        with pytest.raises(exc, match=message) as info:
            getattr(torch.ops.fqvit, op)(*args)
        assert info.type is exc, f"{op}: raised {info.type.__name__}, expected {exc.__name__}"


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf")])
def test_param_helpers_reject_bad_scales(bad):
    with pytest.raises(ValueError, match="real"):
        params.fixed_point_multiplier(bad)
    with pytest.raises(ValueError, match="score_scale"):
        params.lis_exp_table(bad)
    with pytest.raises(ValueError, match="output_scale"):
        params.layernorm_params(torch.ones(3), torch.zeros(3), bad)
    with pytest.raises(ValueError, match="input_scale"):
        params.linear_params(torch.zeros((2, 3), dtype=torch.int8), torch.ones(2), bad, 0, 1.0)
    with pytest.raises(ValueError, match="output_scale"):
        params.gelu_table(bad, 0)
    with pytest.raises(ValueError, match="output_scale"):
        params.layernorm_dyadic_params(torch.ones(3), torch.zeros(3), bad)


def test_param_helpers_reject_out_of_range_ratios():
    with pytest.raises(ValueError, match="fixed-point range"):
        params.fixed_point_multiplier(2.0**40)
    with pytest.raises(ValueError, match="fixed-point range"):
        params.fixed_point_multiplier(2.0**-40)
    with pytest.raises(TypeError, match="real"):
        params.fixed_point_multiplier("0.5")
    with pytest.raises(ValueError, match="not a PTF scale"):
        params.ptf_alpha(torch.tensor([0.1, 0.3]))


def test_parameter_checks_rerun_after_in_place_modification(gen):
    case = testing.linear_case(3, 8, 16, gen)
    case.run()  # the shift tensor passes and is remembered
    shift = case.args[4]
    shift[0] = 0  # modified in place: the version counter changes, so it is checked again
    with pytest.raises(ValueError, match="shift values"):
        case.run()
