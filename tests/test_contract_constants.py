"""One home for the contract's numbers: the C++ extension's compiled constants, the Triton kernels'
constexprs and the Python modules that re-export them all equal ``fqvit_kernels.contract``."""

import pytest

from fqvit_kernels import backends, contract, ops, params, reference as ref
from fqvit_kernels.quant import quantizers


def test_cpp_constants_equal_the_contract():
    try:
        from fqvit_kernels import _C
    except ImportError as exc:
        pytest.skip(f"C++ extension not built ({backends.cpu_extension_error() or exc})")
    assert dict(_C.contract_constants()) == contract.CPP_CONSTANTS


def test_python_modules_reexport_the_contract():
    for module in (ref, ops, params, quantizers):
        for name in dir(module):
            if name.isupper() and hasattr(contract, name):
                assert getattr(module, name) == getattr(contract, name), f"{module.__name__}.{name}"
    # The names other modules read through reference/ops keep working.
    assert ref.LIS_MASKED_CODE == 255 and ops.MAX_LIS_ROW_SUM == contract.MAX_LIS_ROW_SUM
    assert set(contract.CPP_CONSTANTS) <= set(dir(contract))


def test_triton_constexprs_equal_the_contract():
    pytest.importorskip("triton")
    from triton_kernels import gemm, layernorm, softmax

    assert softmax.LIS_MASKED_CODE.value == contract.LIS_MASKED_CODE
    assert softmax.THRESHOLD_CAP.value == contract.LIS_THRESHOLD_CAP
    assert gemm._GELU_DIRECTION_SHIFT.value == contract.GELU_DIRECTION_SHIFT
    assert gemm._GELU_STEP_SHIFT.value == contract.GELU_STEP_SHIFT
    assert layernorm.LN_NORM_FRAC_BITS == contract.LN_NORM_FRAC_BITS
    assert layernorm.DYADIC_CONSTEXPRS == dict(
        A_FRAC=contract.LN_DYADIC_A_FRAC_BITS, MEAN_FRAC=contract.LN_DYADIC_MEAN_FRAC_BITS,
        B_FRAC=contract.LN_DYADIC_B_FRAC_BITS, BETA_FRAC=contract.LN_DYADIC_BETA_FRAC_BITS)
