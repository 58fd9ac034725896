// Shared helpers of the fqvit CPU kernels: the integer primitives of reference.py, the int8 GEMM
// entry point and the SIMD dispatch attribute.
//
// Threading: the kernels split rows / heads with at::parallel_for (OpenMP in torch's CPU builds)
// rather than a bare `#pragma omp parallel`, so that torch.set_num_threads governs them and a
// call made from inside another parallel region runs inline instead of oversubscribing.
#pragma once

#include <torch/extension.h>

#include <algorithm>
#include <cstdint>

namespace fqvit {

// Hot loops are compiled twice, for AVX-512 (x86-64-v4: 64-bit multiplies and per-lane variable
// shifts are single instructions there) and for the baseline ISA, and the loader picks the clone
// the CPU supports. setup.py builds without -march, so without this the epilogues stay SSE2.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define FQVIT_SIMD __attribute__((target_clones("arch=x86-64-v4", "default")))
#else
#define FQVIT_SIMD
#endif

// Output rows are int8 (a char type, which may alias anything): without restrict on the
// pointers of the hot loops GCC must assume aliasing and does not vectorize them.
#define FQVIT_R __restrict__

// reference.round_shift: floor((v + 2**(s-1)) / 2**s) for 1 <= s <= 62, computed as
// ((v >> (s-1)) + 1) >> 1. Same value: with v = q * 2**(s-1) + r, 0 <= r < 2**(s-1), both are
// floor((q + 1) / 2). This form cannot overflow and GCC vectorizes it (it does not vectorize the
// constant `1 << (s-1)` with a per-lane s). `>>` on a signed int64 is an arithmetic shift
// (floor division) with GCC/Clang, exactly like torch's `>>`.
inline int64_t clamp64(int64_t v, int64_t lo, int64_t hi) {
  return v < lo ? lo : (v > hi ? hi : v);
}

// Shift amounts taken from parameter tensors are clamped into the range where C++ defines the shift:
// valid parameters are never changed by it, tampered ones (value checks off) give defined results.
inline int64_t shift_amount(int64_t s, int64_t lo, int64_t hi) { return clamp64(s, lo, hi); }

inline int64_t round_shift(int64_t v, int64_t s) {
  s = shift_amount(s, 1, 63);
  return ((v >> (s - 1)) + 1) >> 1;
}

// reference.round_half_even_shift: round(v / 2**s) with ties to even, 0 <= s <= 62. Built on the
// half-up rounding of v >> (s - 1) and without `1 << s`, which GCC does not vectorize with a per-lane
// s: a tie is an odd h = v >> (s - 1) with nothing below it, where half up gave k + 1 for k + 1/2.
inline int64_t round_half_even_shift(int64_t v, int64_t s) {
  s = shift_amount(s, 0, 62);
  const int64_t s1 = s > 0 ? s - 1 : 0;
  const int64_t h = v >> s1;
  const int64_t up = (h + 1) >> 1;
  const int64_t tie = (h & 1) & (v == (h << s1) ? 1 : 0);
  const int64_t rounded = up - (tie & up & 1);
  return s > 0 ? rounded : v;
}

// reference.round_to_float32: v rounded to 24 significant bits, ties to even (float32's rounding).
inline int64_t round_to_float32(int64_t v) {
  const int64_t mag = v < 0 ? -v : v;
  const int64_t drop = std::max<int64_t>(64 - __builtin_clzll(uint64_t(mag) | 1) - 24, 0);
  const int64_t rounded = round_half_even_shift(mag, drop) << drop;
  return v < 0 ? -rounded : rounded;
}

// reference.float32_code: FQ-ViT's float32 quantizer round(x / s + zp) on the exact
// x / s = value * 2**-shift (shift <= 52, |value| < 2**62); stored int8 code.
inline int64_t float32_code(int64_t value, int64_t shift, int64_t zp) {
  shift = shift_amount(shift, 1, 52);
  const int64_t y = round_to_float32(value);
  const int64_t u = round_to_float32(y + ((zp + 128) << shift));
  return clamp64(round_half_even_shift(u, shift), 0, 255) - 128;
}

// The fast path of float32_code, for loops that must vectorize (two functions rather than a struct:
// GCC does not vectorize a loop over a struct-returning call). With p = value + (zp + 128) * 2**shift
// (u = p * 2**-shift, the unsigned pre-round value), half_unit = 2**(shift - 1) and window =
// 2**(shift - 15) (0 below shift 15): float32_code_half_up is the code of u rounded half up, and
// float32_near_tie is 1 when u lies within 2**-15 of a half-integer. Away from those, FQ-ViT's two
// float32 roundings (each moves |y| < 512, u < 256 by less than 2**-16) cannot change the code; near
// them the caller redoes float32_code.
inline int64_t float32_code_half_up(int64_t p, int64_t shift) {
  shift = shift_amount(shift, 1, 52);
  return clamp64(((p >> (shift - 1)) + 1) >> 1, 0, 255) - 128;
}
inline int64_t float32_near_tie(int64_t p, int64_t shift, int64_t half_unit, int64_t window) {
  shift = shift_amount(shift, 1, 52);
  const int64_t h = p >> (shift - 1);             // 2u, floored
  const int64_t below = p - (h << (shift - 1));   // [0, half_unit)
  const int64_t distance = (h & 1) ? below : half_unit - below;
  return distance <= window ? 1 : 0;
}

inline int64_t float32_window(int64_t shift) { return shift >= 15 ? int64_t(1) << (shift - 15) : 0; }

// reference.requantize_float32: float32_code of acc * mult.
inline int64_t requantize_float32(int64_t acc, int64_t mult, int64_t shift, int64_t zp) {
  return float32_code(acc * mult, shift, zp);
}

// Exact int8 GEMM a [M, K] @ b [K, N] -> int32 [M, N] (operands may be strided views).
// at::_int_mm reaches oneDNN's int8 kernels (VNNI/AMX). It has no shape constraints on CPU in the
// torch versions we support; should a build refuse a shape anyway, a plain int32 loop gives the
// same (exact) result, only slower.
at::Tensor int_mm(const at::Tensor& a, const at::Tensor& b);

// Same, written into a preallocated contiguous int32 [M, N] buffer.
void int_mm_into(const at::Tensor& a, const at::Tensor& b, at::Tensor& out);

}  // namespace fqvit
