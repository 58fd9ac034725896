// PTF LayerNorm (reference.ptf_layernorm) in one pass per row: the reference runs ~20 full-tensor
// int64 passes (shift, two sums, bit search, 31-step square root, ...); here a row is read once
// for its two sums, the per-row root and reciprocal are scalar integer code, and a second sweep
// over the row (still in cache) writes the int8 output.
#include <ATen/Parallel.h>

#include "common.h"
#include "fqvit_cpu.h"

namespace fqvit {
namespace {

constexpr int64_t kNormFracBits = 16;  // reference.LN_NORM_FRAC_BITS

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
FQVIT_SIMD void row_sums(const int8_t* FQVIT_R x, const int32_t* FQVIT_R alpha, int64_t zp, int64_t c, int64_t* FQVIT_R s1_out,
                         int64_t* FQVIT_R s2_out) {
  int64_t s1 = 0, s2 = 0;
  for (int64_t j = 0; j < c; ++j) {
    const int64_t v = (int64_t(x[j]) - zp) << alpha[j];
    s1 += v;
    s2 += v * v;
  }
  *s1_out = s1;
  *s2_out = s2;
}

FQVIT_SIMD void row_output(const int8_t* FQVIT_R x, const int32_t* FQVIT_R alpha, int64_t zp, int64_t c, int64_t s1,
                           int64_t reciprocal, int64_t norm_shift, const int32_t* FQVIT_R wmult, const int64_t* FQVIT_R bias,
                           const int32_t* FQVIT_R shift, int64_t out_zp, int8_t* FQVIT_R out) {
  for (int64_t j = 0; j < c; ++j) {
    const int64_t dev = c * ((int64_t(x[j]) - zp) << alpha[j]) - s1;
    const int64_t norm = round_shift(dev * reciprocal, norm_shift);
    const int64_t affine = norm * wmult[j] + bias[j];
    out[j] = int8_t(clamp64(round_shift(affine, shift[j]) + out_zp, -128, 127));
  }
}

}  // namespace

at::Tensor ptf_layernorm(const at::Tensor& x_t, int64_t input_zero_point, const at::Tensor& ptf_alpha,
                         const at::Tensor& weight_multiplier, const at::Tensor& bias_t, const at::Tensor& shift_t,
                         int64_t output_zero_point) {
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
      const int64_t var_num = c * s2 - s1 * s1;  // C**2 * variance, < 2**49
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

}  // namespace fqvit
