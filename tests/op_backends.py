"""Every implementation of the integer ops, behind one interface, for tests that must hold on all.

``BACKENDS`` lists what this machine has: the reference (``fqvit_kernels.reference``), the C++
extension called directly, the dispatched op (``torch.ops.fqvit``, whichever kernel serves the
CPU), and the Triton kernels (on CUDA tensors with a GPU, else under ``TRITON_INTERPRET=1`` on
CPU tensors, which tests/conftest.py sets), twice: as dispatched (int32 fast paths where their
preconditions hold) and forced onto the general int64 paths (``triton-fallback``). A test in
tests/ops/ that takes a ``backend`` argument runs once per implementation (tests/ops/conftest.py;
``@pytest.mark.backends(...)`` narrows the set), so a case is written once and each implementation
is one test id (``[cpp]``, ``[triton]``, ...); ``on_every_backend`` does the same for a test elsewhere.
"""

from __future__ import annotations

import os
from typing import Callable, List, NamedTuple, Optional

import pytest
import torch

from fqvit_kernels import reference as ref

try:
    from fqvit_kernels import _C
except ImportError:  # test_cpp_backend reports the missing extension; here the leg is absent
    _C = None


class Backend(NamedTuple):
    name: str
    device: str
    kernels: Callable[[str], Callable]

    def has(self, op: str) -> bool:
        return self.kernels(op) is not None

    def run(self, op: str, *args) -> torch.Tensor:
        """``op(*args)`` on this backend: tensors moved to its device, the result back on the CPU."""
        kernel = self.kernels(op)
        if kernel is None:
            pytest.skip(f"{self.name} has no {op}")
        moved = [a.to(self.device) if isinstance(a, torch.Tensor) else a for a in args]
        return kernel(*moved).cpu()


CUDA = torch.cuda.is_available()
#: Where the Triton kernels run: CUDA tensors on a GPU, CPU tensors under the interpreter, else None.
TRITON_DEVICE: Optional[str] = "cuda" if CUDA else ("cpu" if os.environ.get("TRITON_INTERPRET") == "1" else None)


def _backends() -> List[Backend]:
    found = [Backend("reference", "cpu", lambda op: getattr(ref, op, None)),
             Backend("dispatch", "cpu", lambda op: getattr(torch.ops.fqvit, op))]
    if _C is not None:
        found.append(Backend("cpp", "cpu", lambda op: getattr(_C, op, None)))
    triton_device = TRITON_DEVICE
    if triton_device is not None:
        import triton_kernels

        kernels = triton_kernels.cuda_kernels()
        found.append(Backend("triton", triton_device, kernels.get))
        # The same kernels with every fast path switched off (FQVIT_TRITON_FALLBACK): both exact.
        found.append(Backend("triton-fallback", triton_device, lambda op: _forced_general(kernels.get(op))))
    if torch.cuda.is_available():
        found.append(Backend("dispatch-cuda", "cuda", lambda op: getattr(torch.ops.fqvit, op)))
        from triton_kernels import gluon_gemm

        if gluon_gemm.HAVE_GLUON and torch.cuda.get_device_capability() == (9, 0):
            gluon_ops = {"int8_linear": _gluon_linear, "int_attention": _gluon_attention}
            found.append(Backend("gluon", "cuda", gluon_ops.get))
    return found


def _gluon_linear(x, weight, bias, multiplier, shift, output_zero_point, *rest):
    """int8_linear on the Gluon kernel itself, never silently on the Triton one: a call it cannot
    take is skipped with the reason."""
    from triton_kernels import gemm, gluon_gemm

    reason = gluon_gemm.unsupported_reason(x, weight, rest[2] if len(rest) > 2 else None)
    if reason is None and not gemm.fast_epilogue(shift):
        reason = "a shift below 33 (the Gluon kernel has only the int32 epilogue)"
    if reason is not None:
        pytest.skip(f"gluon: {reason}")
    gelu_table = rest[0] if rest else None
    residual = rest[2] if len(rest) > 2 else None
    epilogue = gemm.EPILOGUE_GELU if gelu_table is not None else (
        gemm.EPILOGUE_RESIDUAL if residual is not None else gemm.EPILOGUE_PLAIN)
    out = torch.empty((x.shape[0], weight.shape[0]), dtype=torch.int8, device=x.device)
    # The first candidate (no first-call timing of all four per shape: compile time on the GPU run);
    # tests/ops/test_int8_linear.py runs every candidate on ragged shapes.
    return gluon_gemm.launch(x, weight, out, epilogue, bias, multiplier, shift, output_zero_point, *rest,
                             config=gluon_gemm.CANDIDATES[0])


def _gluon_attention(q, k, v, qkv_zero_point, score_multiplier, score_shift, score_zero_point, exp_table,
                     out_multiplier, out_shift, out_zero_point):
    """int_attention on the one-pass Gluon kernel itself; a call it cannot take is skipped."""
    from fqvit_kernels.ops import attention_output
    from triton_kernels import attention, gluon_attention

    reason = gluon_attention.unsupported_reason(q)
    if reason is None and not attention.fast_attention(exp_table):
        reason = "an exponent table that is not float32 integers (the kernel has only the fast path)"
    if reason is not None:
        pytest.skip(f"gluon: {reason}")
    q, k, v = (t if t.stride(-1) == 1 else t.contiguous() for t in (q, k, v))
    return gluon_attention.launch(q, k, v, attention_output(q), qkv_zero_point, score_multiplier, score_shift,
                                  score_zero_point, exp_table, out_multiplier, out_shift, out_zero_point)


def _forced_general(kernel):
    if kernel is None:
        return None

    def run(*args):
        from triton_kernels._common import force_paths

        with force_paths(False):
            return kernel(*args)
    return run


BACKENDS = _backends()

#: ``@on_every_backend`` gives the test a ``backend`` argument, one test id per implementation.
on_every_backend = pytest.mark.parametrize("backend", BACKENDS, ids=[b.name for b in BACKENDS])


def backend_params(names=None, exclude=()) -> list:
    """``BACKENDS`` (those named in ``names``, if given, less those in ``exclude``) as pytest params
    with ids; the Triton legs carry the ``interpreter`` marker (``pytest -m interpreter`` selects
    every Triton test)."""
    unknown = set(names or ()) | set(exclude)
    unknown -= {"reference", "dispatch", "cpp", "triton", "triton-fallback", "dispatch-cuda", "gluon"}
    if unknown:
        raise ValueError(f"unknown backend names {sorted(unknown)}")
    return [pytest.param(b, id=b.name, marks=[pytest.mark.interpreter] if b.name.startswith("triton") else [])
            for b in BACKENDS if (names is None or b.name in names) and b.name not in exclude
            and (b.name != "gluon" or (names is not None and "gluon" in names))]


def triton_only(test):
    """Marks a test that calls Triton kernels or helpers directly (not through a ``Backend``): the
    ``interpreter`` marker, and a skip where no Triton kernels run (no GPU and no interpreter)."""
    test = pytest.mark.interpreter(test)
    return pytest.mark.skipif(TRITON_DEVICE is None, reason="no GPU and TRITON_INTERPRET is not set")(test)


def all_agree(op: str, args, expected: torch.Tensor, skip=()) -> None:
    """Every backend (but those named in ``skip``) computes ``expected`` for ``op(*args)``."""
    from fqvit_kernels import testing

    for backend in BACKENDS:
        if backend.name not in skip and backend.has(op):
            testing.assert_equal(backend.run(op, *args), expected, f"{op} on {backend.name}")
