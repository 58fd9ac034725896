"""Which kernel variant serves an op on a GPU architecture, and the measurement behind the choice.

An op may have several bit-identical GPU kernels: the Triton kernel (every architecture, and the
interpreter) and a Gluon kernel written for one architecture (:mod:`.gluon_gemm`: Hopper wgmma
kept in flight, TMA; :mod:`.gluon_attention`: the scores computed once and kept in shared memory). The Triton kernel is the default until a GPU run shows the other both
bit-exact (the GPU tests run both) and faster (``scripts/gpu_check.sh`` times both side by side);
:data:`DEFAULTS` then records the winner with :data:`EVIDENCE`, the run that justified it.

``FQVIT_GLUON=1`` selects the Gluon kernels wherever they apply, ``FQVIT_GLUON=0`` never (unset:
:data:`DEFAULTS`). A call the Gluon kernel cannot take (another GPU, operands TMA cannot address,
parameters outside the int32 fast path) runs the Triton kernel whatever the setting;
:func:`triton_kernels.gluon_gemm.unsupported_reason` says why.
"""

from __future__ import annotations

import contextlib
import os
from typing import Dict, Optional, Tuple

import torch

VARIANT_ENV = "FQVIT_GLUON"

#: (compute capability) -> {op: variant}. Ops not listed run the Triton kernel.
DEFAULTS: Dict[Tuple[int, int], Dict[str, str]] = {
    (9, 0): {"int8_linear": "triton", "int_attention": "triton"},
}
#: Why each default is what it is.
EVIDENCE: Dict[Tuple[int, int], str] = {
    (9, 0): "int8_linear: Triton until measured. The Gluon kernel compiles for sm_90 under Triton 3.6 and "
            "3.8 with wgmma.wait_group 1 in its loop (bench/results/sm90_static_*.txt), but no GPU run has "
            "checked its bits or timed it yet (2026-11-28). int_attention: Triton until measured, likewise "
            "(the one-pass Gluon kernel, gluon_attention.py, compiles spill-free for head dims up to 64).",
}
_forced: Optional[str] = None


@contextlib.contextmanager
def force(variant: Optional[str]):
    """Within the block, select ``"gluon"`` or ``"triton"`` wherever a choice exists (``None``:
    the environment / defaults again). For tests and side-by-side timing."""
    global _forced
    if variant not in (None, "gluon", "triton"):
        raise ValueError(f"unknown variant {variant!r} (expected 'gluon' or 'triton')")
    previous, _forced = _forced, variant
    try:
        yield
    finally:
        _forced = previous


def selected(op: str, device: torch.device) -> str:
    """The variant asked for ``op`` on ``device``: ``"gluon"`` or ``"triton"`` (CPU: always Triton)."""
    if device.type != "cuda":
        return "triton"
    if _forced is not None:
        return _forced
    env = os.environ.get(VARIANT_ENV, "")
    if env not in ("", "0", "1"):
        raise ValueError(f"{VARIANT_ENV}={env!r}: expected 0 or 1")
    if env:
        return "gluon" if env == "1" else "triton"
    return DEFAULTS.get(torch.cuda.get_device_capability(device), {}).get(op, "triton")
