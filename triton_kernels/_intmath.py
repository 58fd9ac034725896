"""Integer helpers shared by the Triton kernels, each mirroring its twin in fqvit_kernels.reference.

Shift amounts that come from parameter tensors are clamped into the range the reference allows
(LLVM makes an out-of-range shift poison): valid parameters are unchanged, tampered ones (value
checks off) give defined results.
"""

import triton
import triton.language as tl

from ._common import interpreting

# On a GPU, small-table gathers go through inline PTX (see gather_i32); the interpreter cannot run
# PTX, so it keeps tl.load (the same values: both read one int32 per pointer).
_PTX_GATHER = tl.constexpr(not interpreting())


@triton.jit
def round_shift(value, shift):
    """``floor((value + 2**(shift-1)) / 2**shift)`` on int64 (arithmetic right shift), as the reference."""
    shift = tl.minimum(tl.maximum(shift, 1), 63)
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


@triton.jit
def round_half_even_shift(value, shift):
    """``round(value / 2**shift)`` with ties to even on int64, ``shift >= 0``, as the reference."""
    shift = tl.minimum(tl.maximum(shift, 0), 62)
    quot = value >> shift
    rem = value - (quot << shift)
    half = tl.where(shift > 0, tl.full(value.shape, 1, tl.int64) << tl.maximum(shift - 1, 0), 0)
    up = (shift > 0) & ((rem > half) | ((rem == half) & ((quot & 1) == 1)))
    return quot + tl.where(up, 1, 0)


@triton.jit
def round_half_even_shift_add(value, shift):
    """:func:`round_half_even_shift` as one addition before the shift: ``(v + 2**(s-1) - 1 +
    bit_s(v)) >> s`` (the quotient's low bit breaks the tie), ``0 <= shift <= 62``. Fewer
    instructions for the same result (a test compares them)."""
    shift = tl.minimum(tl.maximum(shift, 0), 62)
    one = tl.full(value.shape, 1, tl.int64)
    add = tl.where(shift > 0, ((one << shift) >> 1) - 1 + ((value >> shift) & 1), 0)
    return (value + add) >> shift


@triton.jit
def floor_div(value, divisor):
    """``floor(value / divisor)`` for ``divisor > 0`` (Triton's ``//`` truncates toward zero)."""
    quot = value // divisor
    return quot - tl.where((value % divisor != 0) & (value < 0), 1, 0)


@triton.jit
def round_to_float32(value):
    """int64 ``value`` rounded to 24 significant bits, ties to even (reference.round_to_float32)."""
    negative = value < 0
    magnitude = tl.where(negative, -value, value)
    drop = tl.maximum(bit_length(magnitude) - 24, 0)
    rounded = round_half_even_shift(magnitude, drop) << drop
    return tl.where(negative, -rounded, rounded)


@triton.jit
def float32_code_emulated(value, shift, zero_point):
    """reference.float32_code on int64 ``value`` in integer arithmetic (the fallback; about 100
    instructions): FQ-ViT's float32 ``round(x / s + zp)`` of the exact ``x / s = value * 2**-shift``;
    stored int8 codes (int64)."""
    shift = tl.minimum(tl.maximum(shift, 1), 52)
    y = round_to_float32(value)
    u = round_to_float32(y + (tl.full(value.shape, 1, tl.int64) * (zero_point + 128) << shift))
    code = round_half_even_shift(u, shift)
    return tl.minimum(tl.maximum(code, 0), 255) - 128


# 1.5 * 2**23: adding it to a float32 in [0, 2**22] leaves the integer nearest the value (ties to
# even, by the addition's own rounding) in the low mantissa bits of the sum.
_RNE_MAGIC = tl.constexpr(12582912.0)
_RNE_MAGIC_BITS = tl.constexpr(0x4B400000)


@triton.jit
def float32_code(value, shift, zero_point):
    """reference.float32_code evaluated the way FQ-ViT does, in float32 hardware arithmetic (exact):

    ``fl32(value * 2**-shift) = fl32(value) * 2**-shift`` (the integer -> float32 conversion rounds to
    nearest even, and the power-of-two scale is exact: no underflow for shift <= 52), then the
    float32 addition of the zero point rounds like FQ-ViT's (a fused multiply-add rounds the same,
    its product being exact), then round-half-even to an integer. ``value`` int32 or int64.
    Clamping to the code range before rounding equals clamping after (rounding is monotone and
    the bounds are integers). About six instructions instead of :func:`float32_code_emulated`'s
    hundred. int8 codes as int32.
    """
    shift = tl.minimum(tl.maximum(shift, 1), 52).to(tl.int32)
    scale = ((127 - shift) << 23).to(tl.float32, bitcast=True)  # 2**-shift
    u = value.to(tl.float32) * scale + (zero_point + 128).to(tl.float32)
    u = tl.minimum(tl.maximum(u, 0.0), 255.0)
    return (u + _RNE_MAGIC).to(tl.int32, bitcast=True) - (_RNE_MAGIC_BITS + 128)


@triton.jit
def requantize_float32(acc, multiplier, shift, zero_point):
    """reference.requantize_float32: :func:`float32_code` of ``acc * multiplier`` (int64 ``acc``)."""
    return float32_code(acc * multiplier, shift, zero_point)


@triton.jit
def gather_i32(pointers):
    """``tl.load(pointers)`` for a gather from a small read-only table (every pointer valid).

    Triton's coalescing pass gives every ``tl.load`` a blocked layout; a gather indexed by an MMA
    accumulator then moves each 64-bit pointer from the accumulator layout through shared memory
    and back (about ten instructions per element). A load written as inline PTX is elementwise in
    whatever layout its operand has, so it stays in the accumulator's registers: one ``ld.global.nc``
    per element, served by the read-only cache.
    """
    if _PTX_GATHER:
        return tl.inline_asm_elementwise("ld.global.nc.b32 $0, [$1];", "=r,l", [pointers],
                                         dtype=tl.int32, is_pure=True, pack=1)
    else:
        return tl.load(pointers)

