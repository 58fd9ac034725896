"""Integer helpers shared by the Triton kernels, each mirroring its twin in fqvit_kernels.reference."""

import triton
import triton.language as tl


@triton.jit
def round_shift(value, shift):
    """``floor((value + 2**(shift-1)) / 2**shift)`` on int64 (arithmetic right shift), as the reference."""
    half = tl.full(value.shape, 1, tl.int64) << (shift - 1)
    return (value + half) >> shift


@triton.jit
def bit_length(value):
    """Significant bits of non-negative int64 ``value`` (0 for 0), binary search like the reference."""
    length = tl.zeros(value.shape, tl.int64)
    for step_log in tl.static_range(6):
        step = 32 >> step_log
        upper = value >> step
        has_upper = upper > 0
        length += tl.where(has_upper, step, 0)
        value = tl.where(has_upper, upper, value)
    return length + tl.where(value > 0, 1, 0)
