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
inline int64_t round_shift(int64_t v, int64_t s) {
  return ((v >> (s - 1)) + 1) >> 1;
}

inline int64_t clamp64(int64_t v, int64_t lo, int64_t hi) {
  return v < lo ? lo : (v > hi ? hi : v);
}

// Exact int8 GEMM a [M, K] @ b [K, N] -> int32 [M, N] (operands may be strided views).
// at::_int_mm reaches oneDNN's int8 kernels (VNNI/AMX). It has no shape constraints on CPU in the
// torch versions we support; should a build refuse a shape anyway, a plain int32 loop gives the
// same (exact) result, only slower.
at::Tensor int_mm(const at::Tensor& a, const at::Tensor& b);

// Same, written into a preallocated contiguous int32 [M, N] buffer.
void int_mm_into(const at::Tensor& a, const at::Tensor& b, at::Tensor& out);

}  // namespace fqvit
