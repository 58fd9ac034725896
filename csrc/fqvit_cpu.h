// Declarations of the CPU kernels exposed by fqvit_kernels._C. Each takes the positional arguments
// of the torch.ops.fqvit op of the same name (see fqvit_kernels/ops.py); the Python wrapper has
// already validated them, the kernels only reshape/copy to the layouts they need.
#pragma once

#include <torch/extension.h>

#include <tuple>
#include <vector>

namespace fqvit {

using OptTensor = c10::optional<at::Tensor>;

at::Tensor int8_matmul(const at::Tensor& a, const at::Tensor& b);
at::Tensor int8_linear(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                       const at::Tensor& multiplier, const at::Tensor& shift, int64_t output_zero_point,
                       const OptTensor& gelu_table, int64_t gelu_cell_bits, const OptTensor& residual,
                       int64_t residual_zero_point,
                       const OptTensor& branch_multiplier, const OptTensor& residual_multiplier,
                       const OptTensor& residual_shift, int64_t final_zero_point);

at::Tensor ptf_layernorm(const at::Tensor& x, int64_t input_zero_point, const at::Tensor& ptf_alpha,
                         const at::Tensor& weight_multiplier, const at::Tensor& bias, const at::Tensor& shift,
                         int64_t output_zero_point, int64_t variance_offset);
at::Tensor ptf_layernorm_dyadic(const at::Tensor& x, int64_t input_zero_point, const at::Tensor& ptf_alpha,
                                const at::Tensor& gamma_multiplier, const at::Tensor& gamma_shift,
                                const at::Tensor& beta, int64_t output_zero_point);

at::Tensor log_int_softmax(const at::Tensor& scores, const at::Tensor& exp_table, int64_t bits);
at::Tensor log_attn_v(const at::Tensor& codes, const at::Tensor& v, int64_t v_zero_point);
at::Tensor attention_scores(const at::Tensor& q, const at::Tensor& k, int64_t qkv_zero_point,
                            int64_t score_multiplier, int64_t score_shift, int64_t score_zero_point);
at::Tensor int_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, int64_t qkv_zero_point,
                         int64_t score_multiplier, int64_t score_shift, int64_t score_zero_point,
                         const at::Tensor& exp_table, int64_t out_multiplier, int64_t out_shift,
                         int64_t out_zero_point);
at::Tensor int_attention_uniform(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                 int64_t qkv_zero_point, int64_t score_multiplier, int64_t score_shift,
                                 int64_t score_zero_point, const at::Tensor& exp_table,
                                 int64_t inv_softmax_multiplier, int64_t inv_softmax_shift,
                                 int64_t softmax_zero_point, int64_t out_multiplier, int64_t out_shift,
                                 int64_t out_zero_point);

// (P, S, inclusive) of every LIS code level (reference.lis_level_constants), for the tests.
std::vector<std::tuple<int64_t, int64_t, bool>> lis_level_constants();

at::Tensor quantize(const at::Tensor& x, const at::Tensor& scale, int64_t zero_point);
at::Tensor dequantize(const at::Tensor& x, const at::Tensor& scale, int64_t zero_point);

}  // namespace fqvit
