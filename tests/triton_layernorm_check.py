"""A test-only Triton kernel: the fast LayerNorm's integer square root and reciprocal
(``triton_kernels.layernorm._root_and_reciprocal``) applied to given values, so that tests can check
it at perfect squares and range edges that LayerNorm inputs rarely reach. Imported by
tests/ops/test_ptf_layernorm.py after the interpreter switch is set."""

import torch
import triton
import triton.language as tl

from triton_kernels import layernorm


@triton.jit
def _root_kernel(v_ptr, root_ptr, recip_ptr, BLOCK: tl.constexpr):
    offs = tl.arange(0, BLOCK)
    root, recip = layernorm._root_and_reciprocal(tl.load(v_ptr + offs))
    tl.store(root_ptr + offs, root)
    tl.store(recip_ptr + offs, recip)


def root_and_reciprocal(v: torch.Tensor):
    """``(floor(sqrt(v)), floor(2**62 / root))`` of int64 ``v`` in [2**60, 2**62), whose length is a
    power of two (one block)."""
    root, recip = torch.empty_like(v), torch.empty_like(v)
    _root_kernel[(1,)](v, root, recip, BLOCK=v.numel())
    return root, recip
