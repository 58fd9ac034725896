"""What the Gluon kernels share: the guarded import, a CTA barrier under both Triton versions, and
FQ-ViT's float32 rounding written in Gluon (Gluon functions cannot call ``@triton.jit`` ones).

Gluon (``triton.experimental.gluon``) is experimental: the kernels are checked with Triton 3.6 (the
GPU machines') and 3.8 (CI's); ``HAVE_GLUON`` is False where it cannot be imported, and the
launchers then never select a Gluon kernel.
"""

from __future__ import annotations

try:
    from triton.experimental import gluon
    from triton.experimental.gluon import language as gl
    HAVE_GLUON = True
except ImportError:  # pragma: no cover - depends on the installed Triton
    gluon = gl = None
    HAVE_GLUON = False

if HAVE_GLUON:
    # The CTA-wide barrier is gl.barrier in Triton 3.8 and gl.thread_barrier in 3.6.
    cta_barrier = getattr(gl, "barrier", None) or getattr(gl, "thread_barrier")

    _RNE_MAGIC = gl.constexpr(12582912.0)      # 1.5 * 2**23, as _intmath.float32_code
    _RNE_MAGIC_BITS = gl.constexpr(0x4B400000)

    @gluon.jit
    def float32_code(value, shift, zero_point):
        """_intmath.float32_code (FQ-ViT's float32 rounding in float32 hardware), step for step."""
        shift = gl.minimum(gl.maximum(shift, 1), 52).to(gl.int32)
        scale = ((127 - shift) << 23).to(gl.float32, bitcast=True)
        u = value.to(gl.float32) * scale + (zero_point + 128).to(gl.float32)
        u = gl.minimum(gl.maximum(u, 0.0), 255.0)
        return (u + _RNE_MAGIC).to(gl.int32, bitcast=True) - (_RNE_MAGIC_BITS + 128)
