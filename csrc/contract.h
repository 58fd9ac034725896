// The integer contract's constants the C++ kernels use: the same values as
// fqvit_kernels/contract.py (the only place that defines them). One list, expanded twice: into the
// constexprs below and, in module.cpp, into _C.contract_constants(), which
// tests/test_contract_constants.py compares with contract.CPP_CONSTANTS.
#pragma once

#include <cstdint>

// X(Python name, C++ name, type, value)
#define FQVIT_CONTRACT_CONSTANTS(X)                                   \
  X(LIS_MASKED_CODE, kLisMaskedCode, int64_t, 255)                    \
  X(LIS_VALUE_SHIFT, kLisValueShift, int64_t, 15)                     \
  X(LIS_MAX_LEVEL, kLisMaxLevel, int, 63)                             \
  X(LIS_THRESHOLD_CAP, kLisThresholdCap, int64_t, (int64_t(1) << 62) - 1) \
  X(LN_NORM_FRAC_BITS, kLnNormFracBits, int64_t, 24)                  \
  X(LN_DYADIC_A_FRAC_BITS, kLnDyadicAFracBits, int64_t, 24)           \
  X(LN_DYADIC_MEAN_FRAC_BITS, kLnDyadicMeanFracBits, int64_t, 20)     \
  X(LN_DYADIC_B_FRAC_BITS, kLnDyadicBFracBits, int64_t, 16)           \
  X(LN_DYADIC_BETA_FRAC_BITS, kLnDyadicBetaFracBits, int64_t, 47)     \
  X(MAX_PTF_ALPHA, kMaxPtfAlpha, int64_t, 3)                          \
  X(GELU_DIRECTION_SHIFT, kGeluDirectionShift, int32_t, 8)            \
  X(GELU_STEP_SHIFT, kGeluStepShift, int32_t, 10)                     \
  X(MAX_FLOAT32_REQUANT_SHIFT, kMaxFloat32RequantShift, int64_t, 52)

namespace fqvit {
namespace contract {

#define FQVIT_CONTRACT_DECLARE(py_name, cpp_name, type, value) constexpr type cpp_name = value;
FQVIT_CONTRACT_CONSTANTS(FQVIT_CONTRACT_DECLARE)
#undef FQVIT_CONTRACT_DECLARE

}  // namespace contract
}  // namespace fqvit
