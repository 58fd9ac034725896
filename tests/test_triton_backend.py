"""The Triton backend (``triton_kernels``) as a whole: its kernel table covers every integer op, the
fast-path switch, the shared integer helpers, ahead-of-time compilation for sm_90 (no GPU needed),
and on a GPU opcheck through the registered CUDA kernels and the Hopper PTX check.

The per-op cases are in tests/ops/test_<op>.py, on the ``triton`` and ``triton-fallback`` backends
(and ``test_triton_*`` tests there for each kernel's own paths). Without a GPU they run on CPU
tensors under the Triton interpreter (``TRITON_INTERPRET=1``, set by tests/conftest.py before Triton
is imported); ``pytest -m interpreter`` selects every Triton test.
"""

import os
import pathlib
import subprocess
import sys

import pytest
import torch

CUDA = torch.cuda.is_available()
if not CUDA:
    os.environ.setdefault("TRITON_INTERPRET", "1")  # must precede the first import of triton

pytest.importorskip("triton")
import triton  # noqa: E402
import triton.language as tl  # noqa: E402
from triton.runtime.interpreter import InterpretedFunction  # noqa: E402

import triton_kernels  # noqa: E402
from triton_kernels import gemm  # noqa: E402
from triton_kernels._common import FALLBACK_ENV, fast_paths_allowed, force_paths  # noqa: E402
from triton_kernels._intmath import round_half_even_shift_add  # noqa: E402

from fqvit_kernels import reference as ref, testing  # noqa: E402

DEVICE = "cuda" if CUDA else "cpu"
# Triton builds its own @jit library functions (tl.sum, tl.cdiv, ...) for the interpreter only if
# TRITON_INTERPRET was set when triton was first imported. If something imported triton first, the
# interpreter cannot run in this process: tests/conftest.py skips the ``interpreter`` tests, and
# test_interpreter_suite_in_fresh_process re-runs them in a fresh one.
IN_PROCESS = CUDA or isinstance(tl.standard.sum, InterpretedFunction)
pytestmark = pytest.mark.interpreter
needs_gpu = pytest.mark.gpu  # skipped without CUDA by conftest.py


@pytest.mark.skipif(IN_PROCESS, reason="the interpreter runs in this process")
def test_interpreter_suite_in_fresh_process():
    env = dict(os.environ, TRITON_INTERPRET="1")
    tests = pathlib.Path(__file__).resolve().parent
    res = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "interpreter",
                          str(tests)], capture_output=True, text=True, env=env, cwd=tests.parent, timeout=1800)
    assert res.returncode == 0, res.stdout[-6000:] + res.stderr[-2000:]


def test_cuda_kernels_cover_every_integer_op():
    kernels = triton_kernels.cuda_kernels()
    assert set(kernels) == {"int8_matmul", "int8_linear", "ptf_layernorm", "ptf_layernorm_dyadic", "log_int_softmax",
                            "log_attn_v", "attention_scores", "int_attention", "int_attention_uniform"}
    assert triton_kernels.__fqvit_kernels__ is True


def test_fallback_environment_variable(monkeypatch):
    monkeypatch.delenv(FALLBACK_ENV, raising=False)
    assert fast_paths_allowed()
    monkeypatch.setenv(FALLBACK_ENV, "1")
    assert not fast_paths_allowed()
    assert not gemm.fast_epilogue(torch.full((3,), 40, dtype=torch.int32, device=DEVICE))
    with force_paths(True):  # the test switch wins over the environment
        assert fast_paths_allowed()
    monkeypatch.setenv(FALLBACK_ENV, "0")
    assert fast_paths_allowed()


@triton.jit
def _rhe_kernel(v_ptr, s_ptr, out_ptr, BLOCK: tl.constexpr):
    offs = tl.arange(0, BLOCK)
    tl.store(out_ptr + offs, round_half_even_shift_add(tl.load(v_ptr + offs), tl.load(s_ptr + offs)))


def test_round_half_even_by_one_addition_matches_the_reference(gen):
    shifts = torch.arange(0, 63, dtype=torch.int32).repeat(16)
    quot = torch.randint(-2**20, 2**20, (shifts.numel(),), generator=gen, dtype=torch.int64)
    one = torch.ones_like(quot)
    half = torch.where(shifts > 0, (one << shifts.to(torch.int64)) >> 1, torch.zeros_like(quot))
    rem = [half, half - 1, half + 1, torch.zeros_like(quot)]  # ties, either side, exact
    values = torch.cat([(quot << torch.clamp(shifts.to(torch.int64), max=40)) + r for r in rem] +
                       [torch.randint(-2**62, 2**62, (shifts.numel(),), generator=gen, dtype=torch.int64)])
    shifts = shifts.repeat(5)
    n = 1 << (values.numel() - 1).bit_length()
    v = torch.zeros(n, dtype=torch.int64)
    s = torch.zeros(n, dtype=torch.int32)
    v[:values.numel()], s[:values.numel()] = values, shifts
    out = torch.empty_like(v).to(DEVICE)
    _rhe_kernel[(1,)](v.to(DEVICE), s.to(DEVICE), out, BLOCK=n)
    testing.assert_equal(out.cpu(), ref.round_half_even_shift(v, s.to(torch.int64)), "round half even")


# ---------------------------------------------------------------------------------------------
# Ahead-of-time compilation for sm_90 (no GPU needed): what the interpreter cannot check
# ---------------------------------------------------------------------------------------------


def test_every_kernel_family_compiles_for_sm90():
    """Lower one specialisation per kernel through Triton's CUDA pipeline to PTX (driverless).

    Catches GPU-compiler-only errors (int8 dot tile limits, globals, pipeliner) and checks that
    the GEMM and attention dots become Hopper wgmma with s8 operands.
    """
    pytest.importorskip("triton.backends.nvidia.compiler")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    res = subprocess.run([sys.executable, "-m", "triton_kernels.compile_check", "--quick"], capture_output=True,
                         text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr[-3000:]
    lines = {line.split("wgmma.s8=")[0].strip(): int(line.split("wgmma.s8=")[1].split()[0])
             for line in res.stdout.splitlines() if "wgmma.s8=" in line}
    for label, count in lines.items():
        if label.split()[1].startswith(("gemm", "log_attn_v", "attention_scores", "int_attention")):
            assert count > 0, f"{label}: no s8 wgmma in the PTX"


# ---------------------------------------------------------------------------------------------
# GPU only: opcheck on CUDA, Hopper PTX (the per-op model sizes: tests/ops/, test_gpu_*)
# ---------------------------------------------------------------------------------------------


@needs_gpu
def test_gpu_opcheck_every_integer_op(gen):
    from fqvit_kernels import backends

    assert all(backends.BACKEND[name]["cuda"] == "triton" for name in triton_kernels.cuda_kernels())
    cases = [c for c in testing.small_cases(gen) if c.name in triton_kernels.cuda_kernels()]
    for case in cases:
        cuda_case = case.to("cuda")
        torch.library.opcheck(getattr(torch.ops.fqvit, case.name).default, cuda_case.args)
        testing.assert_equal(cuda_case.run().cpu(), getattr(ref, case.name)(*case.args), case.name)


@needs_gpu
@pytest.mark.skipif(CUDA and torch.cuda.get_device_capability() != (9, 0), reason="wgmma is sm_90 only")
def test_gpu_gemm_ptx_uses_wgmma_s8():
    ptx = triton_kernels.gemm_ptx()
    assert "wgmma" in ptx, "the int8 GEMM did not lower to Hopper wgmma"
    wgmma_lines = [line for line in ptx.splitlines() if "wgmma.mma_async" in line]
    assert any(".s8" in line for line in wgmma_lines), wgmma_lines[:3]
