"""Bad inputs raise TypeError/ValueError whose message names the offending argument: the parameter
helpers, and the validation cache after an in-place edit. (Each op's own bad-input matrix:
test_bad_input_matrix in tests/ops/test_<op>.py.)"""

import pytest
import torch

from fqvit_kernels import params, testing


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
