// int8 GEMMs: oneDNN does the int8 x int8 -> int32 product (at::_int_mm), our code only runs the
// requantization epilogue of reference.int8_linear, fused into one pass over the int32 result.
#include <ATen/Parallel.h>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#endif

#include <cmath>
#include <memory>
#include <vector>

#include "common.h"
#include "contract.h"
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

constexpr int64_t kPanelRows = 2048;       // rows per GEMM panel of a tall product
constexpr int64_t kPanelMinColumns = 1024;  // only wide products are split

// One output row of each epilogue; n channels, acc is the int32 GEMM row. The arithmetic is int64
// as in the reference: acc * multiplier + bias (bias int64, added after the multiplication) needs
// up to 62 bits.

FQVIT_SIMD void row_plain(const int32_t* __restrict__ acc, const int64_t* __restrict__ bias,
                          const int32_t* __restrict__ mult,
                          const int32_t* __restrict__ shift, int64_t zp, int8_t* __restrict__ out, int64_t n) {
  for (int64_t j = 0; j < n; ++j) {
    const int64_t t = round_shift(int64_t(acc[j]) * mult[j] + bias[j], shift[j]) + zp;
    out[j] = int8_t(clamp64(t, -128, 127));
  }
}

// Pre-GELU grid index t, clamped to [-1, hi] (hi = L << cell_bits): the step table gives the same
// code for every t below 0 (cell 0, before any step) and above hi (the last cell, past any step),
// so the clamp changes nothing and keeps t in int32.
FQVIT_SIMD void row_gelu_index(const int32_t* __restrict__ acc, const int64_t* __restrict__ bias,
                               const int32_t* __restrict__ mult,
                               const int32_t* __restrict__ shift, int64_t zp, int64_t hi, int32_t* __restrict__ index,
                               int64_t n) {
  for (int64_t j = 0; j < n; ++j) {
    const int64_t t = round_shift(int64_t(acc[j]) * mult[j] + bias[j], shift[j]) + zp;
    index[j] = int32_t(clamp64(t, -1, hi));
  }
}

// The residual epilogue rounds like FQ-ViT's float32 quantizer (reference.float32_code) in float32
// hardware arithmetic (float32_code_hw, exact); scale and zp hold 2**-rshift per channel and
// final_zp + 128.
struct ResidualTerms {
  std::vector<float> scale;
  float zp;
  ResidualTerms(const int32_t* rshift, int64_t n, int64_t final_zp) : scale(n), zp(float(final_zp + 128)) {
    for (int64_t j = 0; j < n; ++j) scale[j] = float32_scale(rshift[j]);
  }
};

inline int64_t residual_mixed(int64_t acc, int64_t bias, int64_t mult, int64_t shift, int64_t zp, int64_t res,
                              int64_t res_zp, int64_t bmult, int64_t rmult) {
  const int64_t branch = clamp64(round_shift(acc * mult + bias, shift) + zp, -128, 127);
  return (branch - zp) * bmult + (res - res_zp) * rmult;
}

FQVIT_SIMD void row_residual(const int32_t* __restrict__ acc, const int64_t* __restrict__ bias,
                             const int32_t* __restrict__ mult,
                             const int32_t* __restrict__ shift, int64_t zp, const int8_t* __restrict__ res,
                             int64_t res_zp,
                             const int32_t* __restrict__ bmult, const int32_t* __restrict__ rmult,
                             const float* __restrict__ scale,
                             float final_zp, int8_t* __restrict__ out, int64_t n) {
  for (int64_t j = 0; j < n; ++j) {
    const int64_t mixed = residual_mixed(acc[j], bias[j], mult[j], shift[j], zp, res[j], res_zp, bmult[j], rmult[j]);
    out[j] = int8_t(float32_code_hw(mixed, scale[j], final_zp));
  }
}

// reference.gelu_table_lookup on the clamped indices t: cell = clamp(t >> bits, 0, L - 1), entry
// = table[cell] packs below (bits 0..7), direction + 1 (bits 8..9) and the step (bits 10..30);
// code = below + direction * (t - (cell << bits) >= step). GCC does not vectorize the gather, so
// the AVX-512 path gathers 16 entries at a time.
void gelu_scalar(const int32_t* __restrict__ index, int64_t n, const int32_t* __restrict__ table, int32_t length,
                 int32_t bits,
                 int8_t* __restrict__ out) {
  for (int64_t j = 0; j < n; ++j) {
    const int32_t t = index[j];
    const int32_t cell = std::min((t < 0 ? 0 : t) >> bits, length - 1);
    const int32_t e = table[cell];
    const int32_t below = int32_t(int8_t(e & 0xFF));
    const int32_t direction = ((e >> contract::kGeluDirectionShift) & 3) - 1;
    out[j] = int8_t(below + (t - (cell << bits) >= (e >> contract::kGeluStepShift) ? direction : 0));
  }
}

#if defined(__x86_64__) && defined(__GNUC__)
__attribute__((target("avx512f"))) void gelu_avx512(const int32_t* __restrict__ index, int64_t n,
                                                    const int32_t* __restrict__ table, int32_t length, int32_t bits,
                                                    int8_t* __restrict__ out) {
  const __m512i zero = _mm512_setzero_si512(), last = _mm512_set1_epi32(length - 1), three = _mm512_set1_epi32(3),
                one = _mm512_set1_epi32(1);
  const __m128i count = _mm_cvtsi32_si128(bits);
  int64_t j = 0;
  for (; j + 16 <= n; j += 16) {
    const __m512i t = _mm512_loadu_si512(index + j);
    const __m512i cell = _mm512_min_epi32(_mm512_sra_epi32(_mm512_max_epi32(t, zero), count), last);
    // The masked forms avoid GCC 12's "maybe uninitialized" warnings on the unmasked intrinsics.
    const __m512i e = _mm512_mask_i32gather_epi32(zero, 0xFFFF, cell, table, 4);
    const __m512i pos = _mm512_sub_epi32(t, _mm512_sll_epi32(cell, count));
    const __m512i below = _mm512_srai_epi32(_mm512_slli_epi32(e, 24), 24);
    const __m512i direction = _mm512_sub_epi32(_mm512_and_si512(_mm512_srli_epi32(e, contract::kGeluDirectionShift), three), one);
    const __mmask16 up = _mm512_cmpge_epi32_mask(pos, _mm512_srli_epi32(e, contract::kGeluStepShift));
    _mm512_mask_cvtepi32_storeu_epi8(out + j, 0xFFFF, _mm512_mask_add_epi32(below, up, below, direction));
  }
  gelu_scalar(index + j, n - j, table, length, bits, out + j);
}

void gelu_lookup(const int32_t* index, int64_t n, const int32_t* table, int32_t length, int32_t bits, int8_t* out) {
  static const bool avx512 = __builtin_cpu_supports("avx512f");
  if (avx512)
    gelu_avx512(index, n, table, length, bits, out);
  else
    gelu_scalar(index, n, table, length, bits, out);
}
#else
void gelu_lookup(const int32_t* index, int64_t n, const int32_t* table, int32_t length, int32_t bits, int8_t* out) {
  gelu_scalar(index, n, table, length, bits, out);
}
#endif

const int32_t* i32(const at::Tensor& t) { return t.data_ptr<int32_t>(); }
const int64_t* i64(const at::Tensor& t) { return t.data_ptr<int64_t>(); }

}  // namespace

at::Tensor int8_matmul(const at::Tensor& a, const at::Tensor& b) {
  if (a.size(0) == 0) return at::empty({0, b.size(0)}, a.options().dtype(at::kInt));
  // b [N, K] transposed is a column-major [K, N] view: oneDNN reads it without a copy.
  return int_mm(a.contiguous(), b.contiguous().t());
}

at::Tensor int8_linear(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias_t,
                       const at::Tensor& multiplier_t, const at::Tensor& shift_t, int64_t output_zero_point,
                       const OptTensor& gelu_table, int64_t gelu_cell_bits, const OptTensor& residual,
                       int64_t residual_zero_point, const OptTensor& branch_multiplier,
                       const OptTensor& residual_multiplier, const OptTensor& residual_shift,
                       int64_t final_zero_point) {
  const int64_t m = x.size(0), n = weight.size(0);
  at::Tensor out = at::empty({m, n}, x.options().dtype(at::kChar));
  if (m == 0) return out;
  const at::Tensor xc = x.contiguous(), wt = weight.contiguous().t();
  const at::Tensor bias = bias_t.contiguous(), mult = multiplier_t.contiguous(), shift = shift_t.contiguous();
  const at::Tensor table = gelu_table.has_value() ? gelu_table->contiguous() : at::Tensor();
  const at::Tensor res = residual.has_value() ? residual->contiguous() : at::Tensor();
  at::Tensor bm, rm, rs;
  std::unique_ptr<ResidualTerms> terms;
  if (residual.has_value()) {
    bm = branch_multiplier->contiguous();
    rm = residual_multiplier->contiguous();
    rs = residual_shift->contiguous();
    terms = std::make_unique<ResidualTerms>(i32(rs), n, final_zero_point);
  }
  int8_t* out_p = out.data_ptr<int8_t>();
  const int32_t table_length = table.defined() ? int32_t(table.numel()) : 0;
  const int64_t index_top = int64_t(table_length) << gelu_cell_bits;  // <= 2**30 (validated)

  // The epilogue of rows [r0, r0 + r) whose int32 products are in acc (row stride n).
  auto epilogue = [&](const int32_t* acc, int64_t r0, int64_t r, int32_t* index) {
    for (int64_t i = 0; i < r; ++i) {
      const int32_t* a = acc + i * n;
      int8_t* o = out_p + (r0 + i) * n;
      if (table.defined()) {
        row_gelu_index(a, i64(bias), i32(mult), i32(shift), output_zero_point, index_top, index, n);
        gelu_lookup(index, n, i32(table), table_length, int32_t(gelu_cell_bits), o);
      } else if (res.defined()) {
        row_residual(a, i64(bias), i32(mult), i32(shift), output_zero_point, res.data_ptr<int8_t>() + (r0 + i) * n,
                     residual_zero_point, i32(bm), i32(rm), terms->scale.data(), terms->zp, o, n);
      } else {
        row_plain(a, i64(bias), i32(mult), i32(shift), output_zero_point, o, n);
      }
    }
  };

  // Multi-threaded oneDNN GEMMs on row panels, each followed by the epilogue over its rows in
  // parallel. One panel up to kPanelRows rows; taller wide products (batch 32 of ViT-S/B: M = 6304,
  // N >= 1024) are split into equal panels: oneDNN's int8 GEMM of the whole product ran at 360-600
  // instead of 750-870 GOP/s there (2 AVX-512 VNNI threads, torch 2.14), and the epilogue then reads
  // a panel still in cache. Narrow products (N < 1024, fc2/proj) keep one GEMM: panels cost ~3 %.
  // (Tried before: per-thread blocks of ~96 rows, no faster: oneDNN re-packs the weight per call.)
  const int64_t panels = (m > kPanelRows && n >= kPanelMinColumns) ? (m + kPanelRows - 1) / kPanelRows : 1;
  const int64_t rows = (m + panels - 1) / panels;
  const at::Tensor panel = panels > 1 ? at::empty({rows, n}, x.options().dtype(at::kInt)) : at::Tensor();
  const int64_t grain = std::max<int64_t>(1, 16384 / n);  // >= ~16K outputs per chunk
  for (int64_t r0 = 0; r0 < m; r0 += rows) {
    const int64_t r = std::min(rows, m - r0);
    at::Tensor acc;
    if (panels == 1) {
      acc = int_mm(xc, wt);
    } else {
      acc = panel.narrow(0, 0, r);
      int_mm_into(xc.narrow(0, r0, r), wt, acc);
    }
    const int32_t* acc_p = acc.data_ptr<int32_t>();
    at::parallel_for(0, r, grain, [&](int64_t begin, int64_t end) {
      std::vector<int32_t> index(table.defined() ? n : 0);
      epilogue(acc_p + begin * n, r0 + begin, end - begin, index.data());
    });
  }
  return out;
}

}  // namespace fqvit
