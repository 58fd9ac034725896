// Model-boundary conversions (reference.quantize / dequantize) in one pass each. The arithmetic is
// float32 in the reference's order (divide, then add, then round half to even), so the same
// IEEE operations give the same bits; no reciprocal multiply, no fused multiply-add.
#include <ATen/Parallel.h>

#include <cmath>

#include "common.h"
#include "fqvit_cpu.h"

namespace fqvit {
namespace {

// x [rows, c] row-major; scale has c entries (per channel) or one (scale_step 0).
FQVIT_SIMD void quantize_rows(const float* __restrict__ x, const float* __restrict__ scale, int64_t scale_step,
                              float offset, int64_t rows,
                              int64_t c, int8_t* __restrict__ out) {
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < c; ++j) {
      const float q = x[i * c + j] / scale[j * scale_step];
      const float code = std::nearbyint(q + offset);  // default rounding mode: half to even
      const float clamped = code < 0.0f ? 0.0f : (code > 255.0f ? 255.0f : code);
      out[i * c + j] = int8_t(int32_t(clamped) - 128);
    }
}

FQVIT_SIMD void dequantize_rows(const int8_t* __restrict__ x, const float* __restrict__ scale, int64_t scale_step,
                                int32_t zp, int64_t rows,
                                int64_t c, float* __restrict__ out) {
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < c; ++j) out[i * c + j] = float(int32_t(x[i * c + j]) - zp) * scale[j * scale_step];
}

// Runs fn(x_contiguous, out_contiguous, rows, c) and returns a result laid out like
// empty_like(x), as the op's fake kernel promises.
template <typename Fn>
at::Tensor elementwise(const at::Tensor& x, at::ScalarType in_type, at::ScalarType out_type, Fn fn) {
  at::Tensor out = at::empty_like(x, x.options().dtype(out_type));
  if (x.numel() == 0) return out;
  const at::Tensor xc = x.to(in_type).contiguous();
  const int64_t c = x.dim() ? x.size(-1) : 1, rows = x.numel() / c;
  at::Tensor dst = out.is_contiguous() ? out : at::empty(x.sizes(), x.options().dtype(out_type));
  const int64_t grain = std::max<int64_t>(1, 32768 / c);
  at::parallel_for(0, rows, grain, [&](int64_t begin, int64_t end) { fn(xc, dst, begin, end, c); });
  if (!dst.is_same(out)) out.copy_(dst);
  return out;
}

}  // namespace

at::Tensor quantize(const at::Tensor& x, const at::Tensor& scale_t, int64_t zero_point) {
  const at::Tensor scale = scale_t.contiguous();
  const int64_t step = scale.numel() == 1 ? 0 : 1;
  // float(zero_point + 128) is an integer in [0, 255]: exact in float32, as torch casts it.
  const float offset = float(zero_point + 128);
  return elementwise(x, at::kFloat, at::kChar, [&](const at::Tensor& xc, at::Tensor& dst, int64_t b, int64_t e,
                                                   int64_t c) {
    quantize_rows(xc.data_ptr<float>() + b * c, scale.data_ptr<float>(), step, offset, e - b, c,
                  dst.data_ptr<int8_t>() + b * c);
  });
}

at::Tensor dequantize(const at::Tensor& x, const at::Tensor& scale_t, int64_t zero_point) {
  const at::Tensor scale = scale_t.contiguous();
  const int64_t step = scale.numel() == 1 ? 0 : 1;
  return elementwise(x, at::kChar, at::kFloat, [&](const at::Tensor& xc, at::Tensor& dst, int64_t b, int64_t e,
                                                   int64_t c) {
    dequantize_rows(xc.data_ptr<int8_t>() + b * c, scale.data_ptr<float>(), step, int32_t(zero_point), e - b, c,
                    dst.data_ptr<float>() + b * c);
  });
}

}  // namespace fqvit
