// Shared helpers of the fqvit CPU kernels: the integer primitives of reference.py, the int8 GEMM
// entry point and the SIMD dispatch attribute.
//
// Threading: the kernels split rows / heads with at::parallel_for (OpenMP in torch's CPU builds)
// rather than a bare `#pragma omp parallel`, so that torch.set_num_threads governs them and a
// call made from inside another parallel region runs inline instead of oversubscribing.
#pragma once

#include <torch/extension.h>

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "contract.h"

namespace fqvit {

// Hot loops are compiled twice, for AVX-512 (x86-64-v4: 64-bit multiplies and per-lane variable
// shifts are single instructions there) and for the baseline ISA, and the loader picks the clone
// the CPU supports. setup.py builds without -march, so without this the epilogues stay SSE2.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define FQVIT_SIMD __attribute__((target_clones("arch=x86-64-v4", "default")))
#else
#define FQVIT_SIMD
#endif

// The hot loops' pointers are __restrict__: output rows are int8 (a char type, which may alias
// anything), and without restrict GCC must assume aliasing and does not vectorize them.

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

// reference.float32_code in float32 hardware arithmetic (exact, and vectorizable): the int64 ->
// float32 conversion rounds to nearest even like round_to_float32, the power-of-two scale 2**-shift
// (shift <= 52, so no underflow for |value| >= 1) is exact, the float32 addition of zp + 128 rounds
// like FQ-ViT's (a contracted multiply-add rounds the same: its product is exact), clamping to
// [0, 255] before rounding equals clamping after (rounding is monotone, the bounds are integers),
// and adding 2**23 rounds half to even. scale = float32_scale(shift), zp_f = zp + 128.
inline float float32_scale(int64_t shift) {
  return std::ldexp(1.0f, -int(shift_amount(shift, 1, contract::kMaxFloat32RequantShift)));
}
inline int32_t float32_code_hw(int64_t value, float scale, float zp_f) {
  constexpr float kRound = 8388608.0f;  // 2**23
  float u = float(value) * scale + zp_f;
  u = u < 0.0f ? 0.0f : (u > 255.0f ? 255.0f : u);
  return int32_t((u + kRound) - kRound) - 128;
}

// Exact int8 GEMM a [M, K] @ b [K, N] -> int32 [M, N] (operands may be strided views).
// at::_int_mm reaches oneDNN's int8 kernels (VNNI/AMX). It has no shape constraints on CPU in the
// torch versions we support; should a build refuse a shape anyway, a plain int32 loop gives the
// same (exact) result, only slower.
at::Tensor int_mm(const at::Tensor& a, const at::Tensor& b);

// Same, written into a preallocated contiguous int32 [M, N] buffer.
void int_mm_into(const at::Tensor& a, const at::Tensor& b, at::Tensor& out);

}  // namespace fqvit
