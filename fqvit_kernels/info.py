"""``python -m fqvit_kernels.info``: which backend serves each op, and why.

Prints the implementation registered for every ``torch.ops.fqvit`` op on CPU and CUDA
(``fqvit_kernels.backends.BACKEND``), the torch and Triton versions, whether CUDA and Triton are usable
here, and the reason the C++ extension is not in use when it is not. Triton is optional: its
import is guarded and only reported.
"""

from __future__ import annotations

import sys
from typing import List, Optional, Tuple


def _triton_status() -> Tuple[Optional[str], str]:
    """(version or None, one-line status)."""
    try:
        import triton
    except Exception as exc:  # not installed, or broken install
        return None, f"not importable ({type(exc).__name__}: {exc})"
    return getattr(triton, "__version__", "unknown"), "importable"


def report() -> List[str]:
    import torch

    # `python -m fqvit_kernels.info` has imported the package (and shown its one warning when
    # the extension is missing) before this runs; the reason is repeated below.
    import fqvit_kernels
    from fqvit_kernels import backends, ops

    triton_version, triton_state = _triton_status()
    cuda = torch.cuda.is_available()
    lines = [
        f"fqvit-kernels {fqvit_kernels.__version__}",
        f"torch {torch.__version__} (CPU capability {torch.backends.cpu.get_cpu_capability()}, "
        f"{torch.get_num_threads()} threads)",
        f"triton {triton_version or 'not installed'}",
        f"CUDA usable: {'yes, ' + torch.cuda.get_device_name() if cuda else 'no'}",
        f"Triton usable: {'yes' if triton_version and cuda else 'no'} "
        f"({triton_state}{'' if cuda else '; it needs a CUDA device outside the interpreter'})",
    ]
    import os

    fallback = os.environ.get("FQVIT_TRITON_FALLBACK", "0") not in ("", "0")
    lines.append("Triton fast paths: " + ("off (FQVIT_TRITON_FALLBACK set: general int64 paths)" if fallback else
                                          "on where their preconditions hold (FQVIT_TRITON_FALLBACK=1 turns them off; "
                                          "docs/gpu.md)"))
    lines.append("GPU int8_linear variant: " + _gluon_status(cuda))
    error = backends.cpu_extension_error()
    lines.append("C++ extension fqvit_kernels._C: " + ("loaded" if error is None else f"not loaded: {error}"))
    width = max(len(name) for name in ops.OP_NAMES)
    lines.append("")
    lines.append(f"{'op':<{width}}  {'cpu':<10} cuda")
    for name in ops.OP_NAMES:
        lines.append(f"{name:<{width}}  {backends.BACKEND[name]['cpu']:<10} {backends.BACKEND[name]['cuda']}")
    return lines


def _gluon_status(cuda: bool) -> str:
    """Which int8_linear kernel a CUDA call gets here (triton_kernels/variants.py)."""
    import torch

    try:
        from triton_kernels import gluon_gemm, variants
    except ImportError:
        return "Triton (triton_kernels not importable)"
    if not gluon_gemm.HAVE_GLUON:
        return "Triton (this Triton has no Gluon)"
    if not cuda:
        return "Triton; the Gluon kernel needs an sm_90 GPU (FQVIT_GLUON=1 selects it there)"
    choice = variants.selected("int8_linear", torch.device("cuda"))
    return f"{choice} (FQVIT_GLUON=0/1 forces one; Gluon applies on sm_90 to TMA-ready operands)"


def main() -> int:
    print("\n".join(report()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
