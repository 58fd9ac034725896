// The integer contract's constants the C++ kernels use: the same values as
// fqvit_kernels/contract.py (the only place that defines them; tests/test_contract_constants.py
// compares this list, exported as _C.contract_constants(), with contract.CPP_CONSTANTS).
#pragma once

#include <cstdint>

namespace fqvit {
namespace contract {

constexpr int64_t kLisMaskedCode = 255;                         // LIS_MASKED_CODE
constexpr int64_t kLisValueShift = 15;                          // LIS_VALUE_SHIFT
constexpr int kLisMaxLevel = 63;                                // LIS_MAX_LEVEL
constexpr int64_t kLisThresholdCap = (int64_t(1) << 62) - 1;    // LIS_THRESHOLD_CAP
constexpr int64_t kLnNormFracBits = 24;                         // LN_NORM_FRAC_BITS
constexpr int64_t kLnDyadicAFracBits = 24;                      // LN_DYADIC_A_FRAC_BITS
constexpr int64_t kLnDyadicMeanFracBits = 20;                   // LN_DYADIC_MEAN_FRAC_BITS
constexpr int64_t kLnDyadicBFracBits = 16;                      // LN_DYADIC_B_FRAC_BITS
constexpr int64_t kLnDyadicBetaFracBits = 47;                   // LN_DYADIC_BETA_FRAC_BITS
constexpr int64_t kMaxPtfAlpha = 3;                             // MAX_PTF_ALPHA
constexpr int32_t kGeluDirectionShift = 8;                      // GELU_DIRECTION_SHIFT
constexpr int32_t kGeluStepShift = 10;                          // GELU_STEP_SHIFT
constexpr int64_t kMaxFloat32RequantShift = 52;                 // MAX_FLOAT32_REQUANT_SHIFT

}  // namespace contract
}  // namespace fqvit
