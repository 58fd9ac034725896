// int8 GEMMs: oneDNN does the int8 x int8 -> int32 product (at::_int_mm), our code only runs the
// requantization epilogue of reference.int8_linear, fused into one pass over the int32 result.
#include <ATen/Parallel.h>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#endif

#include "common.h"
#include "fqvit_cpu.h"

namespace fqvit {

namespace {

// at::_int_mm (torch 2.14, CPU) returns wrong results, silently, for operands that are neither a
// plain row-major nor a plain column-major matrix: a [1, N] view with strides (1, 1) (w.t() of a
// [N, 1] weight, K = 1; it counts as contiguous, so .contiguous() keeps it) or a stride-0
// (expanded) dimension. Such an operand is copied into a fresh row-major tensor first (for the
// vectors of the K = 1 case the copy is negligible).
at::Tensor gemm_operand(const at::Tensor& t) {
  const int64_t rows = t.size(0), cols = t.size(1);
  const bool standard = t.stride(1) == 1 && t.stride(0) == cols;
  const bool row_major = rows > 1 && cols > 1 && t.stride(1) == 1 && t.stride(0) >= cols;
  const bool col_major = rows > 1 && cols > 1 && t.stride(0) == 1 && t.stride(1) >= rows;
  if (standard || row_major || col_major) return t;
  return at::empty({rows, cols}, t.options()).copy_(t);
}

}  // namespace

at::Tensor int_mm(const at::Tensor& a_in, const at::Tensor& b_in) {
  const at::Tensor a = gemm_operand(a_in), b = gemm_operand(b_in);
  try {
    return at::_int_mm(a, b);
  } catch (const c10::Error&) {
    // K <= ops.MAX_GEMM_K keeps every int32 partial sum exact, so an int32 mm is the same GEMM.
    return at::mm(a.to(at::kInt), b.to(at::kInt));
  }
}

void int_mm_into(const at::Tensor& a_in, const at::Tensor& b_in, at::Tensor& out) {
  const at::Tensor a = gemm_operand(a_in), b = gemm_operand(b_in);
  try {
    at::_int_mm_out(out, a, b);
  } catch (const c10::Error&) {
    out.copy_(at::mm(a.to(at::kInt), b.to(at::kInt)));
  }
}

namespace {

// One output row of each epilogue; n channels, acc is the int32 GEMM row without the bias. The
// arithmetic is int64 as in the reference: acc + bias needs 33 bits when the bias has no headroom,
// and (acc + bias) * multiplier up to 62 bits.

FQVIT_SIMD void row_plain(const int32_t* FQVIT_R acc, const int32_t* FQVIT_R bias, const int32_t* FQVIT_R mult, const int32_t* FQVIT_R shift,
                          int64_t zp, int8_t* FQVIT_R out, int64_t n) {
  for (int64_t j = 0; j < n; ++j) {
    const int64_t a = int64_t(acc[j]) + bias[j];
    const int64_t t = round_shift(a * mult[j], shift[j]) + zp;
    out[j] = int8_t(clamp64(t, -128, 127));
  }
}

FQVIT_SIMD void row_index(const int32_t* FQVIT_R acc, const int32_t* FQVIT_R bias, const int32_t* FQVIT_R mult, const int32_t* FQVIT_R shift,
                          int64_t zp, int64_t top, int32_t* FQVIT_R index, int64_t n) {
  for (int64_t j = 0; j < n; ++j) {
    const int64_t a = int64_t(acc[j]) + bias[j];
    const int64_t t = round_shift(a * mult[j], shift[j]) + zp;
    index[j] = int32_t(clamp64(t, 0, top));
  }
}

FQVIT_SIMD void row_residual(const int32_t* FQVIT_R acc, const int32_t* FQVIT_R bias, const int32_t* FQVIT_R mult, const int32_t* FQVIT_R shift,
                             int64_t zp, const int8_t* FQVIT_R res, int64_t res_zp, const int32_t* FQVIT_R bmult,
                             const int32_t* FQVIT_R rmult, const int32_t* FQVIT_R rshift, int64_t final_zp, int8_t* FQVIT_R out,
                             int64_t n) {
  for (int64_t j = 0; j < n; ++j) {
    const int64_t a = int64_t(acc[j]) + bias[j];
    const int64_t branch = clamp64(round_shift(a * mult[j], shift[j]) + zp, -128, 127);
    const int64_t mixed = (branch - zp) * bmult[j] + (int64_t(res[j]) - res_zp) * rmult[j];
    out[j] = int8_t(clamp64(round_shift(mixed, rshift[j]) + final_zp, -128, 127));
  }
}

// out[j] = lut[index[j]] for the GELU table. GCC does not vectorize this look-up (no byte
// gather), so the AVX-512 path gathers 16 entries of an int32 copy of the table at a time.
void gather_scalar(const int32_t* FQVIT_R index, int64_t n, const int32_t* FQVIT_R lut, int8_t* FQVIT_R out) {
  for (int64_t j = 0; j < n; ++j) out[j] = int8_t(lut[index[j]]);
}

#if defined(__x86_64__) && defined(__GNUC__)
__attribute__((target("avx512f"))) void gather_avx512(const int32_t* FQVIT_R index, int64_t n,
                                                      const int32_t* FQVIT_R lut, int8_t* FQVIT_R out) {
  int64_t j = 0;
  for (; j + 16 <= n; j += 16) {
    const __m512i idx = _mm512_loadu_si512(index + j);
    // The masked forms avoid GCC 12's "maybe uninitialized" warnings on the unmasked intrinsics.
    const __m512i val = _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), 0xFFFF, idx, lut, 4);
    _mm512_mask_cvtepi32_storeu_epi8(out + j, 0xFFFF, val);
  }
  gather_scalar(index + j, n - j, lut, out + j);
}

void gather_lut(const int32_t* index, int64_t n, const int32_t* lut, int8_t* out) {
  static const bool avx512 = __builtin_cpu_supports("avx512f");
  if (avx512)
    gather_avx512(index, n, lut, out);
  else
    gather_scalar(index, n, lut, out);
}
#else
void gather_lut(const int32_t* index, int64_t n, const int32_t* lut, int8_t* out) {
  gather_scalar(index, n, lut, out);
}
#endif

const int32_t* i32(const at::Tensor& t) { return t.data_ptr<int32_t>(); }

}  // namespace

at::Tensor int8_matmul(const at::Tensor& a, const at::Tensor& b) {
  if (a.size(0) == 0) return at::empty({0, b.size(0)}, a.options().dtype(at::kInt));
  // b [N, K] transposed is a column-major [K, N] view: oneDNN reads it without a copy.
  return int_mm(a.contiguous(), b.contiguous().t());
}

at::Tensor int8_linear(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias_t,
                       const at::Tensor& multiplier_t, const at::Tensor& shift_t, int64_t output_zero_point,
                       const OptTensor& gelu_lut, const OptTensor& residual, int64_t residual_zero_point,
                       const OptTensor& branch_multiplier, const OptTensor& residual_multiplier,
                       const OptTensor& residual_shift, int64_t final_zero_point) {
  const int64_t m = x.size(0), n = weight.size(0);
  at::Tensor out = at::empty({m, n}, x.options().dtype(at::kChar));
  if (m == 0) return out;
  const at::Tensor xc = x.contiguous(), wt = weight.contiguous().t();
  const at::Tensor bias = bias_t.contiguous(), mult = multiplier_t.contiguous(), shift = shift_t.contiguous();
  const at::Tensor lut = gelu_lut.has_value() ? gelu_lut->to(at::kInt).contiguous() : at::Tensor();
  const at::Tensor res = residual.has_value() ? residual->contiguous() : at::Tensor();
  at::Tensor bm, rm, rs;
  if (residual.has_value()) {
    bm = branch_multiplier->contiguous();
    rm = residual_multiplier->contiguous();
    rs = residual_shift->contiguous();
  }
  int8_t* out_p = out.data_ptr<int8_t>();

  // The epilogue of rows [r0, r0 + r) whose int32 products are in acc (row stride n).
  auto epilogue = [&](const int32_t* acc, int64_t r0, int64_t r, int32_t* index) {
    for (int64_t i = 0; i < r; ++i) {
      const int32_t* a = acc + i * n;
      int8_t* o = out_p + (r0 + i) * n;
      if (lut.defined()) {
        row_index(a, i32(bias), i32(mult), i32(shift), output_zero_point, lut.numel() - 1, index, n);
        gather_lut(index, n, i32(lut), o);
      } else if (res.defined()) {
        row_residual(a, i32(bias), i32(mult), i32(shift), output_zero_point, res.data_ptr<int8_t>() + (r0 + i) * n,
                     residual_zero_point, i32(bm), i32(rm), i32(rs), final_zero_point, o, n);
      } else {
        row_plain(a, i32(bias), i32(mult), i32(shift), output_zero_point, o, n);
      }
    }
  };

  // One multi-threaded oneDNN GEMM for the whole [M, N] int32 product, then the epilogue over
  // row chunks in parallel. Tried: per-thread blocks of ~96 rows (GEMM + epilogue while the
  // block is in L2) was no faster here; oneDNN re-packs the weight for every block call.
  const at::Tensor acc = int_mm(xc, wt);
  const int32_t* acc_p = acc.data_ptr<int32_t>();
  const int64_t grain = std::max<int64_t>(1, 16384 / n);  // >= ~16K outputs per chunk
  at::parallel_for(0, m, grain, [&](int64_t begin, int64_t end) {
    std::vector<int32_t> index(lut.defined() ? n : 0);
    epilogue(acc_p + begin * n, begin, end - begin, index.data());
  });
  return out;
}

}  // namespace fqvit
