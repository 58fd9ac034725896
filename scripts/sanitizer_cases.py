"""One small case per Triton kernel, for ``compute-sanitizer --tool memcheck`` (CUDA only).

Each launcher runs once on CUDA tensors with ragged shapes (tails in every tiled dimension) and
its output is compared with the CPU reference. Exit status 0 when every kernel matched.
Run with ``FQVIT_TRITON_SINGLE_CONFIG=1`` under the sanitizer so no autotuning happens there (the
Gluon GEMM honours it too).
"""

import sys

import torch

from fqvit_kernels import reference as ref, testing
from triton_kernels import attention, attention_uniform, attn_v, gemm, layernorm, softmax, variants


def _gluon_linear(*args):
    """int8_linear with the Gluon kernel selected (sm_90; elsewhere the Triton kernel runs)."""
    with variants.force("gluon"):
        return gemm.int8_linear(*args)


def _gluon_attention(*args):
    """int_attention with the one-pass Gluon kernel selected (sm_90; elsewhere the Triton kernel)."""
    with variants.force("gluon"):
        return attention.int_attention(*args)


def _cases(gen):
    codes_case = testing.scores_case((2, 9, 37), gen)
    v = torch.randint(-128, 128, (2, 37, 80), generator=gen, dtype=torch.int8)
    attn = testing.attention_case(1, 2, 67, 80, gen)
    return [
        ("int8_matmul", gemm.int8_matmul, testing.matmul_case(33, 50, 40, gen)),
        ("int8_linear plain", gemm.int8_linear, testing.linear_case(33, 50, 40, gen)),
        ("int8_linear gelu", gemm.int8_linear, testing.linear_case(7, 70, 13, gen, "gelu")),
        ("int8_linear steps", gemm.int8_linear, testing.linear_case(9, 70, 13, gen, "steps")),
        ("int8_linear residual", gemm.int8_linear, testing.linear_case(65, 130, 72, gen, "residual")),
        # The Gluon kernel: N and K multiples of 16 (TMA), every tile dimension ragged.
        ("gluon int8_linear plain", _gluon_linear, testing.linear_case(65, 144, 48, gen)),
        ("gluon int8_linear gelu", _gluon_linear, testing.linear_case(7, 160, 208, gen, "gelu")),
        ("gluon int8_linear residual", _gluon_linear, testing.linear_case(130, 272, 80, gen, "residual")),
        ("gluon int_attention", _gluon_attention, testing.attention_case(1, 2, 67, 40, gen)),
        ("ptf_layernorm", layernorm.ptf_layernorm, testing.layernorm_case(37, 200, gen)),
        ("ptf_layernorm_dyadic", layernorm.ptf_layernorm_dyadic, testing.layernorm_dyadic_case(37, 200, gen)),
        ("log_int_softmax", softmax.log_int_softmax, codes_case),
        ("log_attn_v", attn_v.log_attn_v,
         testing.OpCase("log_attn_v", (ref.log_int_softmax(*codes_case.args), v, 5))),
        ("attention_scores", attention.attention_scores, testing.OpCase("attention_scores", attn.args[:2] + attn.args[3:7])),
        ("int_attention", attention.int_attention, attn),
        ("int_attention_uniform", attention_uniform.int_attention_uniform,
         testing.attention_uniform_case(1, 2, 67, 80, gen, peak=0.05)),
    ]


def main() -> int:
    if not torch.cuda.is_available():
        print("sanitizer_cases: no CUDA device")
        return 2
    gen = torch.Generator().manual_seed(1234)
    failures = 0
    for label, launcher, case in _cases(gen):
        got = launcher(*case.to("cuda").args)
        torch.cuda.synchronize()
        try:
            testing.assert_equal(got.cpu(), getattr(ref, case.name)(*case.args), label)
            print(f"ok   {label}")
        except AssertionError as exc:
            failures += 1
            print(f"FAIL {label}: {exc}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
