// PTF LayerNorms (reference.ptf_layernorm, reference.ptf_layernorm_dyadic) in one pass per row: the reference runs ~20 full-tensor
// int64 passes (shift, two sums, bit search, 31-step square root, ...); here a row is read once
// for its two sums, the per-row root and reciprocal are scalar integer code, and a second sweep
// over the row (still in cache) writes the int8 output.
#include <ATen/Parallel.h>

#include <vector>

#include "common.h"
#include "contract.h"
#include "fqvit_cpu.h"

namespace fqvit {
namespace {

constexpr int64_t kNormFracBits = contract::kLnNormFracBits;

// floor(sqrt(v)) for 0 <= v < 2**62, digit by digit as reference.isqrt (integer only).
int64_t isqrt64(int64_t v) {
  int64_t rest = v, root = 0;
  for (int64_t bit = int64_t(1) << 60; bit; bit >>= 2) {
    const int64_t trial = root + bit;
    if (rest >= trial) {
      rest -= trial;
      root = (root >> 1) + bit;
    } else {
      root >>= 1;
    }
  }
  return root;
}

// Channel sums of X_c = (x_c - zp) << alpha_c; |X_c| <= 255 * 8, so S2 <= 8192 * 2040**2 < 2**36.
FQVIT_SIMD void row_sums(const int8_t* __restrict__ x, const int32_t* __restrict__ alpha, int64_t zp, int64_t c,
                         int64_t* __restrict__ s1_out,
                         int64_t* __restrict__ s2_out) {
  int64_t s1 = 0, s2 = 0;
  for (int64_t j = 0; j < c; ++j) {
    const int64_t v = (int64_t(x[j]) - zp) << shift_amount(alpha[j], 0, contract::kMaxPtfAlpha);
    s1 += v;
    s2 += v * v;
  }
  *s1_out = s1;
  *s2_out = s2;
}

FQVIT_SIMD void row_output(const int8_t* __restrict__ x, const int32_t* __restrict__ alpha, int64_t zp, int64_t c,
                           int64_t s1,
                           int64_t reciprocal, int64_t norm_shift, const int32_t* __restrict__ wmult,
                           const int64_t* __restrict__ bias,
                           const int32_t* __restrict__ shift, int64_t out_zp, int8_t* __restrict__ out) {
  for (int64_t j = 0; j < c; ++j) {
    const int64_t dev = c * ((int64_t(x[j]) - zp) << shift_amount(alpha[j], 0, contract::kMaxPtfAlpha)) - s1;
    const int64_t norm = round_shift(dev * reciprocal, norm_shift);
    const int64_t affine = norm * wmult[j] + bias[j];
    out[j] = int8_t(clamp64(round_shift(affine, shift[j]) + out_zp, -128, 127));
  }
}

inline int64_t floor_div(int64_t a, int64_t b) {  // b > 0
  const int64_t q = a / b;
  return q - ((a % b != 0) && (a < 0));
}

constexpr int64_t kDyadicAFrac = contract::kLnDyadicAFracBits, kDyadicMeanFrac = contract::kLnDyadicMeanFracBits,
                  kDyadicBFrac = contract::kLnDyadicBFracBits, kDyadicBetaFrac = contract::kLnDyadicBetaFracBits;

// One row of reference.ptf_layernorm_dyadic (FQ-ViT's 8-bit dyadic factor M / 2**N per element).
// rho = C / sqrt(V) in fixed point (32 bits), e0 its binary exponent, mean = floor(S1 * 2**20 / C).
// Two loops over the row's channels: dyadic_factors derives each channel's signed M, N and bias
// term B for this row (int64 work), dyadic_apply then rounds M * x + B by N. (One fused loop was
// vectorized by GCC 12 with heavy register spilling: 1.7 ns per element at ViT-B shapes.)
FQVIT_SIMD void dyadic_factors(int64_t c, int64_t rho, int64_t e0, int64_t mean, const int32_t* __restrict__ gmult,
                               const int32_t* __restrict__ gshift, const int64_t* __restrict__ beta,
                               int32_t* __restrict__ m_out,
                               int32_t* __restrict__ n_out, int64_t* __restrict__ b_out) {
  for (int64_t j = 0; j < c; ++j) {
    const int64_t gm = gmult[j];
    const int64_t sign = gm < 0 ? -1 : 1;
    const int64_t magnitude = gm < 0 ? -gm : gm;  // 0 or in [2**30, 2**31) (validated)
    const int64_t prod = magnitude * rho;         // 0 or in [2**61, 2**63): its top bit is 61 or 62
    const int64_t e = e0 - gshift[j];
    const int64_t log2a = magnitude == 0 ? -(int64_t(1) << 20) : 61 + (prod >> 62) + e;
    const int64_t n = clamp64(7 - log2a, 0, 31);
    const int64_t m = log2a > 7 ? 255 : (prod >> clamp64(-(e + n), 0, 63));
    const int64_t frac = kDyadicAFrac - (log2a > 7 ? log2a - 7 : 0);
    const int64_t a_fixed = prod >> clamp64(-(e + n) - frac, 0, 63);  // < 2**32
    const int64_t mean_term = (sign * a_fixed * mean) >> shift_amount(frac + kDyadicMeanFrac - kDyadicBFrac, 0, 63);
    const int64_t beta_term = beta[j] >> (kDyadicBetaFrac - kDyadicBFrac - n);
    b_out[j] = round_half_even_shift(beta_term - mean_term, kDyadicBFrac);
    m_out[j] = int32_t(sign * m);  // |m| <= 255
    n_out[j] = int32_t(n);
  }
}

FQVIT_SIMD void dyadic_apply(const int8_t* __restrict__ x, const int32_t* __restrict__ alpha, int64_t zp, int64_t c,
                             const int32_t* __restrict__ m, const int32_t* __restrict__ n,
                             const int64_t* __restrict__ b,
                             int64_t out_zp, int8_t* __restrict__ out) {
  for (int64_t j = 0; j < c; ++j) {
    const int64_t xj = (int64_t(x[j]) - zp) << shift_amount(alpha[j], 0, contract::kMaxPtfAlpha);
    const int64_t y = round_half_even_shift(int64_t(m[j]) * xj + b[j], n[j]);
    out[j] = int8_t(clamp64(y + out_zp, -128, 127));
  }
}

}  // namespace

at::Tensor ptf_layernorm(const at::Tensor& x_t, int64_t input_zero_point, const at::Tensor& ptf_alpha,
                         const at::Tensor& weight_multiplier, const at::Tensor& bias_t, const at::Tensor& shift_t,
                         int64_t output_zero_point, int64_t variance_offset) {
  const at::Tensor x = x_t.contiguous();
  const at::Tensor alpha = ptf_alpha.contiguous(), wmult = weight_multiplier.contiguous(),
                   bias = bias_t.contiguous(), shift = shift_t.contiguous();
  const int64_t m = x.size(0), c = x.size(1);
  at::Tensor out = at::empty_like(x);
  const int8_t* x_p = x.data_ptr<int8_t>();
  int8_t* out_p = out.data_ptr<int8_t>();
  const int32_t* alpha_p = alpha.data_ptr<int32_t>();
  const int32_t* wmult_p = wmult.data_ptr<int32_t>();
  const int64_t* bias_p = bias.data_ptr<int64_t>();
  const int32_t* shift_p = shift.data_ptr<int32_t>();
  const int64_t grain = std::max<int64_t>(1, 8192 / c);
  at::parallel_for(0, m, grain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const int8_t* row = x_p + i * c;
      int64_t s1, s2;
      row_sums(row, alpha_p, input_zero_point, c, &s1, &s2);
      const int64_t var_num = c * s2 - s1 * s1 + variance_offset;  // C**2 * (variance + eps) < 2**62
      int64_t p = 0, reciprocal = 0;
      if (var_num > 0) {
        // p = (62 - bitlen(V)) // 2 puts V * 4**p in [2**60, 2**62): a 31-bit root.
        const int64_t bitlen = 64 - __builtin_clzll(uint64_t(var_num));
        p = (62 - bitlen) / 2;  // bitlen <= 49, so the operand is positive and / is floor
        const int64_t root = isqrt64(var_num << (2 * p));
        reciprocal = (int64_t(1) << 62) / root;
      }
      // A zero-variance row keeps reciprocal 0: norm = 0 and the output is the bias term alone.
      row_output(row, alpha_p, input_zero_point, c, s1, reciprocal, 62 - kNormFracBits - p, wmult_p, bias_p,
                 shift_p, output_zero_point, out_p + i * c);
    }
  });
  return out;
}

at::Tensor ptf_layernorm_dyadic(const at::Tensor& x_t, int64_t input_zero_point, const at::Tensor& ptf_alpha,
                                const at::Tensor& gamma_multiplier, const at::Tensor& gamma_shift,
                                const at::Tensor& beta_t, int64_t output_zero_point) {
  const at::Tensor x = x_t.contiguous();
  const at::Tensor alpha = ptf_alpha.contiguous(), gmult = gamma_multiplier.contiguous(),
                   gshift = gamma_shift.contiguous(), beta = beta_t.contiguous();
  const int64_t m = x.size(0), c = x.size(1);
  at::Tensor out = at::empty_like(x);
  const int8_t* x_p = x.data_ptr<int8_t>();
  int8_t* out_p = out.data_ptr<int8_t>();
  const int32_t* alpha_p = alpha.data_ptr<int32_t>();
  const int32_t* gmult_p = gmult.data_ptr<int32_t>();
  const int32_t* gshift_p = gshift.data_ptr<int32_t>();
  const int64_t* beta_p = beta.data_ptr<int64_t>();
  const int64_t grain = std::max<int64_t>(1, 8192 / c);
  at::parallel_for(0, m, grain, [&](int64_t begin, int64_t end) {
    std::vector<int32_t> m_buf(c), n_buf(c);  // per-channel factors of the current row
    std::vector<int64_t> b_buf(c);
    for (int64_t i = begin; i < end; ++i) {
      const int8_t* row = x_p + i * c;
      int8_t* o = out_p + i * c;
      int64_t s1, s2;
      row_sums(row, alpha_p, input_zero_point, c, &s1, &s2);
      const int64_t var_num = c * s2 - s1 * s1;
      if (var_num == 0) {  // constant row: the bias term alone
        for (int64_t j = 0; j < c; ++j)
          o[j] = int8_t(clamp64(round_half_even_shift(beta_p[j], kDyadicBetaFrac) + output_zero_point, -128, 127));
        continue;
      }
      const int64_t bitlen = 64 - __builtin_clzll(uint64_t(var_num));
      const int64_t p = (62 - bitlen) / 2;
      const int64_t root = isqrt64(var_num << (2 * p));
      const int64_t c_inv = c * ((int64_t(1) << 62) / root);  // < 2**45
      const int64_t sh = (64 - __builtin_clzll(uint64_t(c_inv))) - 32;
      const int64_t mean = floor_div(s1 * (int64_t(1) << kDyadicMeanFrac), c);
      dyadic_factors(c, c_inv >> sh, sh + p - 62, mean, gmult_p, gshift_p, beta_p, m_buf.data(), n_buf.data(),
                     b_buf.data());
      dyadic_apply(row, alpha_p, input_zero_point, c, m_buf.data(), n_buf.data(), b_buf.data(), output_zero_point, o);
    }
  });
  return out;
}

}  // namespace fqvit
