"""Property-based fuzzing: reference, C++ and Triton backends agree bit for bit.

Shapes and parameters are drawn by hypothesis (fixed example budget so CI stays fast); the
Triton kernels run under the interpreter on CPU tensors, or on CUDA tensors when a GPU exists.
"""

import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st

from fqvit_kernels import reference as ref, testing
from op_backends import all_agree

FUZZ = settings(max_examples=12, deadline=None, derandomize=False,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _all_backends_agree(case: testing.OpCase) -> None:
    all_agree(case.name, case.args, getattr(ref, case.name)(*case.args), skip=("reference",))


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


seeds = st.integers(0, 2**31 - 1)


@FUZZ
@given(m=st.integers(1, 70), n=st.integers(1, 70), k=st.integers(1, 96),
       epilogue=st.sampled_from(["plain", "gelu", "steps", "residual"]), seed=seeds)
def test_fuzz_int8_linear(m, n, k, epilogue, seed):
    _all_backends_agree(testing.linear_case(m, n, k, _gen(seed), epilogue))


@FUZZ
@given(m=st.integers(1, 70), n=st.integers(1, 70), k=st.integers(1, 96), seed=seeds)
def test_fuzz_int8_matmul(m, n, k, seed):
    _all_backends_agree(testing.matmul_case(m, n, k, _gen(seed)))


@FUZZ
@given(m=st.integers(1, 40), c=st.integers(1, 300), wide=st.integers(0, 6), seed=seeds)
def test_fuzz_ptf_layernorm(m, c, wide, seed):
    _all_backends_agree(testing.layernorm_case(m, c, _gen(seed), wide_channels=wide))


@FUZZ
@given(m=st.integers(1, 40), c=st.integers(1, 300), wide=st.integers(0, 6), seed=seeds)
def test_fuzz_ptf_layernorm_dyadic(m, c, wide, seed):
    _all_backends_agree(testing.layernorm_dyadic_case(m, c, _gen(seed), wide_channels=wide))


@FUZZ
@given(rows=st.integers(1, 9), n=st.integers(1, 260), bits=st.integers(1, 8), seed=seeds)
def test_fuzz_log_int_softmax(rows, n, bits, seed):
    _all_backends_agree(testing.scores_case((rows, n), _gen(seed), bits=bits))


@pytest.mark.slow
@FUZZ
@given(b=st.integers(1, 2), h=st.integers(1, 3), n=st.integers(1, 40), d=st.sampled_from([8, 13, 32, 64]),
       seed=seeds)
def test_fuzz_int_attention_and_parts(b, h, n, d, seed):
    case = testing.attention_case(b, h, n, d, _gen(seed))
    _all_backends_agree(case)
    q, k, v, zp, s_mult, s_shift, s_zp, table = case.args[:8]
    _all_backends_agree(testing.OpCase("attention_scores", (q, k, zp, s_mult, s_shift, s_zp)))
    codes = ref.log_int_softmax(ref.attention_scores(q, k, zp, s_mult, s_shift, s_zp), table)
    _all_backends_agree(testing.OpCase("log_attn_v", (codes, v, zp)))


@FUZZ
@given(b=st.integers(1, 2), h=st.integers(1, 3), n=st.integers(1, 40), d=st.sampled_from([8, 13, 32, 64]),
       peak=st.sampled_from([0.05, 0.3, 1.0]), seed=seeds)
def test_fuzz_int_attention_uniform(b, h, n, d, peak, seed):
    _all_backends_agree(testing.attention_uniform_case(b, h, n, d, _gen(seed), peak=peak))
