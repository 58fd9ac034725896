// Log-Int-Softmax, shift-based attn @ V and the fused integer attention (reference.log_int_softmax,
// log_attn_v, attention_scores, int_attention).
//
// Work is split into tasks of (batch*head, block of query rows); each task holds only the scores
// of its own block, never the N x N scores of all heads. The two products go through oneDNN's
// exact int8 GEMM (at::_int_mm), everything between them is fused per row here:
//
// * Q K^T: (q - zp)(k - zp)^T = q k^T - zp * rowsum(k) - zp * rowsum(q) + D * zp^2, so the int8
//   GEMM runs on the raw codes and the zero point becomes a per-row and a per-column term.
// * LIS: per row the exponent is exp_table[max + 128][max - s_j], a 256-entry row of the table, and
//   the code is a monotone function of the exponent: per row, integer thresholds on the exponent (one per code
//   level) give the code of every distance to the row maximum, and each score is one look-up.
// * P @ V: the weight 2**(15 - k) of a code k is split into three int8 digits of base 2**7
//   (2**0..2**6 each), W = 2**14 * P2 + 2**7 * P1 + P0, and sum_j W_ij (v_jd - zp) =
//   2**14 P2 v + 2**7 P1 v + P0 v - zp * sum_j W_ij: three exact int8 GEMMs (a digit plane with
//   no entry in the block is skipped) and a per-row correction. A peaked softmax leaves most
//   codes masked (weight 0): a block with at most 1/8 weighted codes instead adds
//   (v_j - zp) << (15 - k) for its weighted codes only.
#include <ATen/Parallel.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstring>
#include <memory>
#include <vector>

#include "common.h"
#include "contract.h"
#include "fqvit_cpu.h"

namespace fqvit {
namespace {

constexpr uint8_t kMaskedCode = uint8_t(contract::kLisMaskedCode);
constexpr int64_t kValueShift = contract::kLisValueShift;
constexpr int64_t kMaxBlockRows = 256;  // query rows per task

// LIS codes follow FQ-ViT's float32 arithmetic (reference.float32_ratio): R = round(fl32(fl32(E) /
// e)), code >= c iff R >= T_c (T_1 = 2, T_c = 3 * 2**(c - 2): floor(log2 R) rounded up at 1.5 *
// 2**m). R is a non-increasing function of e for a fixed row total E, so code >= c iff e <= U_c(E)
// with one threshold per row and level (reference.lis_level_constants / lis_level_thresholds):
// U_c = floor(fl32(E) * 2**S_c / P_c), minus one where the quotient must exceed L_c = P_c * 2**-S_c
// strictly and divides exactly. Per row that is a few 128-bit divisions instead of one per score.
struct LevelConstant {
  uint64_t numerator;  // P_c
  int shift;           // S_c (L_c = P_c * 2**-S_c)
  bool inclusive;      // quotient == L_c counts (the float32 tie rounds up to an even mantissa)
};

constexpr int kMaxLevel = contract::kLisMaxLevel;
constexpr int64_t kThresholdCap = contract::kLisThresholdCap;

uint64_t level_ratio(int level) { return level == 1 ? 2 : uint64_t(3) << (level - 2); }

// The smallest float32 V that rounds (half to even) to an integer >= T, the midpoint L between V
// and the float32 below it, and whether a quotient equal to L rounds up to V (V's mantissa even).
LevelConstant make_level_constant(int level) {
  const uint64_t target = level_ratio(level);
  float v;
  if (target < (uint64_t(1) << 23)) {
    const float half = float(target) - 0.5f;  // exact
    v = target % 2 == 0 ? half : std::nextafter(half, INFINITY);
  } else {
    v = float(target);  // round to nearest; step up if that went below T
    if (double(v) < double(target)) v = std::nextafter(v, INFINITY);
  }
  const float below = std::nextafter(v, 0.0f);
  double mid = (double(v) + double(below)) / 2;  // exact: two floats' midpoint has <= 26 bits
  int shift = 0;
  while (mid != std::floor(mid)) {
    mid *= 2;
    ++shift;
  }
  uint32_t bits;
  std::memcpy(&bits, &v, sizeof(bits));
  return LevelConstant{uint64_t(mid), shift, (bits & 1) == 0};
}

const LevelConstant* level_constants() {
  static const std::vector<LevelConstant> table = [] {
    std::vector<LevelConstant> t;
    for (int c = 1; c <= kMaxLevel; ++c) t.push_back(make_level_constant(c));
    return t;
  }();
  return table.data();
}

// U_c of a row total E: e <= U_c iff code(e) >= c, for 1 <= e <= E.
int64_t level_threshold(uint64_t total, const LevelConstant& k) {
  const uint64_t rounded = uint64_t(round_to_float32(int64_t(total)));  // E < 2**63 (validated)
  const unsigned __int128 scaled = (unsigned __int128)rounded << k.shift;
  unsigned __int128 u = scaled / k.numerator;
  if (!k.inclusive && u * k.numerator == scaled) u -= 1;
  return u > (unsigned __int128)kThresholdCap ? kThresholdCap : int64_t(u);
}

constexpr int kMaxLevels = 15;  // codes 1..15 of a 4-bit LIS

// Code of every distance 0..count-1 of a row from the exponent thresholds: level[c] is the
// threshold of code c + 1 (INT64_MIN beyond the used levels). Vectorizes over distances.
FQVIT_SIMD void code_table(const int64_t* __restrict__ table, int64_t count, const int64_t* __restrict__ level,
                           int64_t masked,
                           uint8_t* __restrict__ out) {
  for (int64_t d = 0; d < count; ++d) {
    const int64_t e = table[d];
    int32_t code = 0;
    for (int c = 0; c < kMaxLevels; ++c) code += e <= level[c];
    out[d] = e <= masked ? kMaskedCode : uint8_t(code);
  }
}

FQVIT_SIMD void row_range(const int8_t* __restrict__ s, int64_t n, int8_t* mx_out, int8_t* mn_out) {
  int8_t mx = s[0], mn = s[0];
  for (int64_t j = 1; j < n; ++j) {
    mx = s[j] > mx ? s[j] : mx;
    mn = s[j] < mn ? s[j] : mn;
  }
  *mx_out = mx;
  *mn_out = mn;
}

// Sum of the row's exponents; unsigned (wrapping) adds, <= 2**63 - 1 for validated tables.
FQVIT_SIMD uint64_t row_total(const int8_t* __restrict__ s, int64_t n, const int64_t* __restrict__ table, int mx) {
  uint64_t total = 0;
  for (int64_t j = 0; j < n; ++j) total += uint64_t(table[mx - int(s[j])]);
  return total;
}

// Number of distances 0..count-1 whose exponent is above the masked threshold, and one past the
// last of them (every distance from there on is masked).
FQVIT_SIMD int64_t count_above(const int64_t* __restrict__ table, int64_t count, int64_t threshold, int64_t* end) {
  int64_t above = 0, last = -1;
  for (int64_t d = 0; d < count; ++d) {
    above += table[d] > threshold;
    last = std::max(last, table[d] > threshold ? d : int64_t(-1));
  }
  *end = last + 1;
  return above;
}

// The float32 form of the same codes (FQ-ViT's own arithmetic, as the Triton fast path): when every
// exponent e of the table is a float32 integer (exps_are_float32, checked once per call; the ops
// require it), R = round_half_even(fl32(fl32(E) / e)) is one IEEE division (vdivps, 16 lanes) and
// code = msb(R) + the bit below it, read from R's exponent and top mantissa bit (code >= c iff
// R >= T_c: T_1 = 2, T_c = 3 * 2**(c - 2)), with no per-row 128-bit divisions for the thresholds.
// Otherwise (value checks off) lis_row takes the threshold form.
FQVIT_SIMD bool exps_are_float32(const int64_t* __restrict__ table, int64_t count) {
  int64_t inexact = 0;
  for (int64_t d = 0; d < count; ++d) {
    const int64_t e = table[d];
    inexact += (e < 0) | (int64_t(float(e)) != e);
  }
  return inexact == 0;
}

FQVIT_SIMD void code_table_float32(const int64_t* __restrict__ table, int64_t count, float total, int32_t mask_level,
                                   uint8_t* __restrict__ out) {
  constexpr float kRound = 8388608.0f;  // 2**23: q + 2**23 - 2**23 rounds q half to even (q < 2**23)
  for (int64_t d = 0; d < count; ++d) {
    const int64_t e = table[d];
    const float q = total / float(e > 0 ? e : 1);
    const float r = q < kRound ? (q + kRound) - kRound : q;
    const int32_t bits = __builtin_bit_cast(int32_t, r);
    const int32_t code = ((bits >> 23) - 127) + ((bits >> 22) & 1);
    out[d] = (e > 0 && code < mask_level) ? uint8_t(code < 0 ? 0 : code) : kMaskedCode;
  }
}

// LIS codes of one contiguous row of n int8 scores: a code per distance 0..max-min from the row's
// level thresholds, then one byte look-up per score. A distance whose exponent is at or below the
// masked threshold (or 0) is masked (most of a peaked row: LIS tables decrease with the distance,
// so the unmasked ones are a short prefix). Codes of up to 4 bits count 15 thresholds in one
// vectorized pass; wider codes (up to 62 levels) loop over their levels.
// float32_exps: exps_are_float32 of the whole table (checked once per call, not per row).
void lis_row(const int8_t* s, int64_t n, const int64_t* exp_table, int64_t bits, bool float32_exps, uint8_t* codes) {
  int8_t mx, mn;
  row_range(s, n, &mx, &mn);
  const int64_t* table = exp_table + (int64_t(mx) + 128) * 256;  // this row's exponents by distance
  const uint64_t total = row_total(s, n, table, mx);  // ops checks exp_table.max() * n < 2**63
  const LevelConstant* levels = level_constants();
  const int64_t mask_level = int64_t(1) << bits;  // code >= 2**bits is masked
  const int64_t threshold = mask_level <= kMaxLevel ? level_threshold(total, levels[mask_level - 1]) : 0;
  const int64_t code_levels = std::min<int64_t>(mask_level - 1, kMaxLevel);
  const int64_t count = int64_t(mx) - mn + 1;
  uint8_t by_distance[256];
  if (bits <= 4 && float32_exps) {
    // fl32(E): int64 -> float32 rounds to nearest even (E < 2**63, validated).
    code_table_float32(table, count, float(int64_t(total)), int32_t(int64_t(1) << bits), by_distance);
    for (int64_t j = 0; j < n; ++j) codes[j] = by_distance[int(mx) - int(s[j])];
    return;
  }
  int64_t end;
  count_above(table, count, threshold, &end);
  std::memset(by_distance + end, kMaskedCode, count - end);
  if (bits <= 4) {
    int64_t level[kMaxLevels];
    for (int c = 0; c < kMaxLevels; ++c) level[c] = c < code_levels ? level_threshold(total, levels[c]) : INT64_MIN;
    code_table(table, end, level, threshold, by_distance);
  } else {
    int64_t level[kMaxLevel];
    for (int64_t c = 0; c < code_levels; ++c) level[c] = level_threshold(total, levels[c]);
    for (int64_t d = 0; d < end; ++d) {
      const int64_t e = table[d];
      int64_t code = 0;
      for (int64_t c = 0; c < code_levels; ++c) code += e <= level[c];
      by_distance[d] = (e <= threshold || e <= 0) ? kMaskedCode : uint8_t(code);
    }
  }
  for (int64_t j = 0; j < n; ++j) codes[j] = by_distance[int(mx) - int(s[j])];
}

int64_t block_rows(int64_t n) {
  const int64_t blocks = (n + kMaxBlockRows - 1) / kMaxBlockRows;
  return (n + blocks - 1) / blocks;
}

// Scores block: acc = q_blk k^T (int32, raw codes), col_term_j = -zp * rowsum(k_j),
// row_term = D zp^2 - zp * rowsum(q_i); output int8 on the score grid, rounded like FQ-ViT's float32
// quantizer (float32_code_hw: exact, one vectorized pass).
FQVIT_SIMD void score_row(const int32_t* __restrict__ acc, const int64_t* __restrict__ col_term, int64_t row_term,
                          int64_t mult, float scale, float zp_f, int8_t* __restrict__ out, int64_t n) {
  for (int64_t j = 0; j < n; ++j) {
    const int64_t s = int64_t(acc[j]) + col_term[j] + row_term;  // |s| <= 255**2 * D < 2**31
    out[j] = int8_t(float32_code_hw(s * mult, scale, zp_f));
  }
}

FQVIT_SIMD void row_sums(const int8_t* __restrict__ x, int64_t rows, int64_t stride, int64_t d,
                         int64_t* __restrict__ out) {
  for (int64_t i = 0; i < rows; ++i) {
    int64_t s = 0;
    for (int64_t c = 0; c < d; ++c) s += x[i * stride + c];
    out[i] = s;
  }
}

// Per (batch*head) operands of the score GEMM: k transposed as a [D, Nk] view and the key term.
struct KeySide {
  at::Tensor kt;
  std::vector<int64_t> col_term;
  KeySide(const at::Tensor& k, int64_t zp) : kt(k.t()), col_term(k.size(0)) {
    row_sums(k.data_ptr<int8_t>(), k.size(0), k.stride(0), k.size(1), col_term.data());
    for (auto& t : col_term) t *= -zp;
  }
};

// int8 scores of the query rows q_blk [R, D] against all keys: out [R, Nk] (row stride Nk).
void scores_block(const at::Tensor& q_blk, const KeySide& keys, int64_t zp, int64_t mult, int64_t shift,
                  int64_t score_zp, at::Tensor& acc, int8_t* out) {
  const int64_t r = q_blk.size(0), d = q_blk.size(1), nk = keys.kt.size(1);
  at::Tensor acc_blk = acc.narrow(0, 0, r);
  int_mm_into(q_blk, keys.kt, acc_blk);
  std::vector<int64_t> qsum(r);
  row_sums(q_blk.data_ptr<int8_t>(), r, q_blk.stride(0), d, qsum.data());
  const int32_t* acc_p = acc_blk.data_ptr<int32_t>();
  for (int64_t i = 0; i < r; ++i)
    score_row(acc_p + i * nk, keys.col_term.data(), d * zp * zp - zp * qsum[i], mult, float32_scale(shift),
              float(score_zp + 128), out + i * nk, nk);
}

// attn @ V for the code rows codes [R, Nk] (row stride Nk) and v [Nk, D]: int32 context [R, D]
// (wrapped to int32 like the reference's .to(torch.int32)), written to ctx (row stride D).
struct PvWorkspace {
  at::Tensor planes[3], prods[3];
  std::vector<int64_t> wsum;
  std::vector<int32_t> centered;  // v - zp, [Nk, D], for the sparse path
  std::vector<uint32_t> acc;      // one context row, for the sparse path
  std::vector<int32_t> keys;      // the weighted keys of one row, for the sparse path
  PvWorkspace(int64_t rows, int64_t nk, int64_t d)
      : wsum(rows), centered(nk * d), acc(d), keys(nk) {
    for (int p = 0; p < 3; ++p) {
      planes[p] = at::empty({rows, nk}, at::kChar);
      prods[p] = at::empty({rows, d}, at::kInt);
    }
  }
};

// Digit planes and weight sum of one code row (arithmetic rather than table look-ups, so the
// loop vectorizes): e = 15 - k, plane e / 7 gets 2**(e mod 7).
FQVIT_SIMD int64_t code_digits(const uint8_t* __restrict__ codes, int64_t n, int8_t* __restrict__ d0,
                               int8_t* __restrict__ d1,
                               int8_t* __restrict__ d2) {
  int64_t wsum = 0;
  for (int64_t j = 0; j < n; ++j) {
    const int32_t k = codes[j];
    const int32_t e = int32_t(kValueShift) - (k > kValueShift ? int32_t(kValueShift) : k);
    const int32_t w = k > kValueShift ? 0 : (int32_t(1) << e);
    d0[j] = int8_t(e <= 6 ? w : 0);
    d1[j] = int8_t(e >= 7 && e <= 13 ? (w >> 7) : 0);
    d2[j] = int8_t(e >= 14 ? (w >> 14) : 0);
    wsum += w;
  }
  return wsum;
}

// context = P0 v + 2**7 P1 v + 2**14 P2 v - zp * wsum, wrapped to int32 like the reference's
// .to(torch.int32) (LIS codes keep it far inside int32 anyway).
FQVIT_SIMD void combine_row(const int32_t* __restrict__ p0, const int32_t* __restrict__ p1,
                            const int32_t* __restrict__ p2,
                            int64_t corr, int64_t d, int32_t* __restrict__ ctx) {
  for (int64_t c = 0; c < d; ++c) {
    const int64_t s = corr + int64_t(p0[c]) + (int64_t(p1[c]) << 7) + (int64_t(p2[c]) << 14);
    ctx[c] = int32_t(uint32_t(uint64_t(s)));
  }
}

// The context requantization, rounded like FQ-ViT's float32 quantizer (float32_code_hw, exact).
FQVIT_SIMD void requant_row(const int32_t* __restrict__ ctx, int64_t d, int64_t mult, float scale, float zp_f,
                            int8_t* __restrict__ out) {
  for (int64_t c = 0; c < d; ++c) out[c] = int8_t(float32_code_hw(int64_t(ctx[c]) * mult, scale, zp_f));
}

FQVIT_SIMD void center_rows(const int8_t* __restrict__ v, int64_t rows, int64_t stride, int64_t d, int32_t zp,
                            int32_t* __restrict__ out) {
  for (int64_t j = 0; j < rows; ++j)
    for (int64_t c = 0; c < d; ++c) out[j * d + c] = int32_t(v[j * stride + c]) - zp;
}

// Sparse attn @ V rows: most LIS codes of a peaked softmax are masked (weight 0); each unmasked
// code k adds (v_j - zp) << (15 - k) to its context row, modulo 2**32 like the reference's final
// .to(torch.int32) (unsigned, so that a wrap is defined behaviour).
// (no-loop-unroll-and-jam: at -O3 GCC 12 pairs two weighted keys into one scalar inner loop and
// leaves the vectorized one for an odd last key: 1.1x slower attention at ViT-B shapes.)
#if defined(__GNUC__) && !defined(__clang__)
__attribute__((optimize("no-loop-unroll-and-jam")))
#endif
FQVIT_SIMD void sparse_rows(const uint8_t* __restrict__ codes, int64_t r, int64_t nk,
                            const int32_t* __restrict__ centered,
                            int64_t d, uint32_t* __restrict__ acc, int32_t* __restrict__ keys,
                            int32_t* __restrict__ ctx) {
  for (int64_t i = 0; i < r; ++i) {
    for (int64_t c = 0; c < d; ++c) acc[c] = 0;
    const uint8_t* row = codes + i * nk;
    // The weighted keys first, without a branch per key (a peaked row's few weighted codes sit at
    // unpredictable places), then one vectorized row update per weighted key.
    int64_t count = 0;
    for (int64_t j = 0; j < nk; ++j) {
      keys[count] = int32_t(j);
      count += row[j] <= kValueShift;
    }
    for (int64_t t = 0; t < count; ++t) {
      const int64_t j = keys[t];
      const int shift = int(kValueShift) - row[j];
      const int32_t* vj = centered + j * d;
      for (int64_t c = 0; c < d; ++c) acc[c] += uint32_t(vj[c]) << shift;
    }
    for (int64_t c = 0; c < d; ++c) ctx[i * d + c] = int32_t(acc[c]);
  }
}

void pv_block_sparse(const uint8_t* codes, int64_t r, int64_t nk, const at::Tensor& v, int64_t zp, PvWorkspace& ws,
                     int32_t* ctx) {
  const int64_t d = v.size(1);
  center_rows(v.data_ptr<int8_t>(), nk, v.stride(0), d, int32_t(zp), ws.centered.data());
  sparse_rows(codes, r, nk, ws.centered.data(), d, ws.acc.data(), ws.keys.data(), ctx);
}

// attn @ V of one block: the sparse loop when at most 1/8 of the codes carry a weight, else the
// three digit-plane GEMMs (both exact; the choice only affects speed).
void pv_block(const uint8_t* codes, int64_t r, int64_t nk, const at::Tensor& v, int64_t zp, PvWorkspace& ws,
              int32_t* ctx) {
  const int64_t d = v.size(1);
  int64_t weighted = 0;
  for (int64_t e = 0; e < r * nk; ++e) weighted += codes[e] <= kValueShift;
  if (weighted * 8 <= r * nk) {
    pv_block_sparse(codes, r, nk, v, zp, ws, ctx);
    return;
  }
  int8_t* plane_p[3];
  for (int p = 0; p < 3; ++p) plane_p[p] = ws.planes[p].data_ptr<int8_t>();
  for (int64_t i = 0; i < r; ++i)
    ws.wsum[i] = code_digits(codes + i * nk, nk, plane_p[0] + i * nk, plane_p[1] + i * nk, plane_p[2] + i * nk);
  const int32_t* prod_p[3];
  for (int p = 0; p < 3; ++p) {
    at::Tensor out = ws.prods[p].narrow(0, 0, r);
    const int8_t* base = plane_p[p];
    // A plane without any nonzero digit in this block (e.g. no code <= 1) skips its GEMM.
    const bool used = std::any_of(base, base + r * nk, [](int8_t x) { return x != 0; });
    if (used)
      int_mm_into(ws.planes[p].narrow(0, 0, r), v, out);
    else
      out.zero_();
    prod_p[p] = out.data_ptr<int32_t>();
  }
  for (int64_t i = 0; i < r; ++i)
    combine_row(prod_p[0] + i * d, prod_p[1] + i * d, prod_p[2] + i * d, -zp * ws.wsum[i], d, ctx + i * d);
}

// Writes `fn` over a contiguous buffer into an output laid out like empty_like(input).
template <typename Fn>
at::Tensor like_input(const at::Tensor& input, at::ScalarType dtype, Fn fn) {
  at::Tensor out = at::empty_like(input, input.options().dtype(dtype));
  if (out.is_contiguous()) {
    fn(out);
    return out;
  }
  at::Tensor tmp = at::empty(input.sizes(), input.options().dtype(dtype));
  fn(tmp);
  out.copy_(tmp);
  return out;
}

// -- uniform (no-LIS) softmax: FQ-ViT's 8/8/8 attention (reference.int_attention_uniform) --------

// Weights w_j = code_j - zp of one row of scores: e_j = table[max - s_j], E = sum e_j, code_j =
// clamp(floor((2 e_j m + E 2**s) / (2 E 2**s)) + zp, 0, 255). The code depends on the score only
// through its distance to the row max, so it is computed once per distance present (at most 256
// int64 divisions per row, operands < 2**63 under the op's limits) and looked up per score.
// Returns sum_j w_j (for the zero point of v).
int64_t uniform_row(const int8_t* s, int64_t n, const int64_t* table, int64_t inv_mult, int64_t inv_shift, int64_t zp,
                    int16_t* w) {
  int8_t mx, mn;
  row_range(s, n, &mx, &mn);
  // Unsigned arithmetic: identical for validated parameters (every value below 2**63), and defined
  // (wrapping, no division by zero) for tampered ones with the value checks off.
  const uint64_t total = row_total(s, n, table, mx);
  const uint64_t den = total << std::min<int64_t>(std::max<int64_t>(inv_shift, 0), 63);
  const uint64_t den2 = std::max<uint64_t>(2 * den, 1);
  const int64_t count = int64_t(mx) - mn + 1;
  int16_t by_distance[256];
  for (int64_t d = 0; d < count; ++d) {
    const uint64_t quotient = (2 * uint64_t(table[d]) * uint64_t(inv_mult) + den) / den2;
    by_distance[d] = int16_t(std::min<int64_t>(int64_t(std::min<uint64_t>(quotient, 511)) + zp, 255) - zp);
  }
  int64_t sum = 0;
  for (int64_t j = 0; j < n; ++j) {
    w[j] = by_distance[int(mx) - int(s[j])];
    sum += w[j];
  }
  return sum;
}

// The weights as two int8 digit planes, w = 128 * hi + lo with lo = w & 127 in [0, 127] and
// hi = w >> 7 in [-2, 1]: exact int8 GEMM operands.
FQVIT_SIMD void uniform_digits(const int16_t* __restrict__ w, int64_t n, int8_t* __restrict__ lo,
                               int8_t* __restrict__ hi) {
  for (int64_t j = 0; j < n; ++j) {
    lo[j] = int8_t(w[j] & 127);
    hi[j] = int8_t(w[j] >> 7);
  }
}

// context = P_lo v + 128 P_hi v - zp * sum_j w_j; |context| <= 255 * 255 * N < 2**31 (validated).
FQVIT_SIMD void uniform_combine(const int32_t* __restrict__ p_lo, const int32_t* __restrict__ p_hi, int64_t corr,
                                int64_t d,
                                int32_t* __restrict__ ctx) {
  for (int64_t c = 0; c < d; ++c) ctx[c] = int32_t(corr + int64_t(p_lo[c]) + (int64_t(p_hi[c]) << 7));
}

}  // namespace

at::Tensor int_attention_uniform(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                 int64_t qkv_zero_point, int64_t score_multiplier, int64_t score_shift,
                                 int64_t score_zero_point, const at::Tensor& exp_table,
                                 int64_t inv_softmax_multiplier, int64_t inv_softmax_shift,
                                 int64_t softmax_zero_point, int64_t out_multiplier, int64_t out_shift,
                                 int64_t out_zero_point) {
  const int64_t bsz = q.size(0), heads = q.size(1), n = q.size(2), d = q.size(3);
  at::Tensor out = at::empty({bsz, n, heads, d}, q.options().dtype(at::kChar)).transpose(1, 2);
  const at::Tensor table = exp_table.contiguous();
  const int64_t* t_p = table.data_ptr<int64_t>();
  const int64_t rows = block_rows(n), blocks = (n + rows - 1) / rows;
  const float out_scale = float32_scale(out_shift), out_zp_f = float(out_zero_point + 128);
  int8_t* o_p = out.data_ptr<int8_t>();
  at::parallel_for(0, bsz * heads * blocks, 1, [&](int64_t begin, int64_t end) {
    at::Tensor acc = at::empty({rows, n}, at::kInt);
    std::vector<int8_t> scores(rows * n);
    std::vector<int16_t> weights(n);
    std::vector<int64_t> wsum(rows);
    at::Tensor lo = at::empty({rows, n}, at::kChar), hi = at::empty({rows, n}, at::kChar);
    at::Tensor p_lo = at::empty({rows, d}, at::kInt), p_hi = at::empty({rows, d}, at::kInt);
    std::vector<int32_t> ctx(rows * d);
    int64_t key_head = -1;
    std::unique_ptr<KeySide> keys;
    for (int64_t task = begin; task < end; ++task) {
      const int64_t bh = task / blocks, b = bh / heads, h = bh % heads;
      const int64_t q0 = (task % blocks) * rows, r = std::min(rows, n - q0);
      if (bh != key_head) {
        keys = std::make_unique<KeySide>(k[b][h], qkv_zero_point);
        key_head = bh;
      }
      scores_block(q[b][h].narrow(0, q0, r), *keys, qkv_zero_point, score_multiplier, score_shift,
                   score_zero_point, acc, scores.data());
      int8_t* lo_p = lo.data_ptr<int8_t>();
      int8_t* hi_p = hi.data_ptr<int8_t>();
      bool any_hi = false;
      for (int64_t i = 0; i < r; ++i) {
        wsum[i] = uniform_row(scores.data() + i * n, n, t_p, inv_softmax_multiplier, inv_softmax_shift,
                              softmax_zero_point, weights.data());
        uniform_digits(weights.data(), n, lo_p + i * n, hi_p + i * n);
        any_hi = any_hi || std::any_of(hi_p + i * n, hi_p + (i + 1) * n, [](int8_t x) { return x != 0; });
      }
      const at::Tensor vh = v[b][h];
      at::Tensor p_lo_blk = p_lo.narrow(0, 0, r), p_hi_blk = p_hi.narrow(0, 0, r);
      int_mm_into(lo.narrow(0, 0, r), vh, p_lo_blk);
      if (any_hi)  // only probabilities of at least 128 steps have a high digit
        int_mm_into(hi.narrow(0, 0, r), vh, p_hi_blk);
      else
        p_hi_blk.zero_();
      const int32_t* pl = p_lo_blk.data_ptr<int32_t>();
      const int32_t* ph = p_hi_blk.data_ptr<int32_t>();
      for (int64_t i = 0; i < r; ++i) {
        uniform_combine(pl + i * d, ph + i * d, -qkv_zero_point * wsum[i], d, ctx.data() + i * d);
        int8_t* o = o_p + ((b * n + q0 + i) * heads + h) * d;
        requant_row(ctx.data() + i * d, d, out_multiplier, out_scale, out_zp_f, o);
      }
    }
  });
  return out;
}

at::Tensor log_int_softmax(const at::Tensor& scores, const at::Tensor& exp_table, int64_t bits) {
  const at::Tensor s = scores.contiguous();
  const at::Tensor table = exp_table.contiguous();
  const int64_t n = s.size(-1), rows = n ? s.numel() / n : 0;
  return like_input(scores, at::kByte, [&](at::Tensor& out) {
    if (rows == 0) return;
    const int8_t* s_p = s.data_ptr<int8_t>();
    const int64_t* t_p = table.data_ptr<int64_t>();
    const bool float32_exps = exps_are_float32(t_p, table.numel());
    uint8_t* o_p = out.data_ptr<uint8_t>();
    at::parallel_for(0, rows, std::max<int64_t>(1, 4096 / n), [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) lis_row(s_p + i * n, n, t_p, bits, float32_exps, o_p + i * n);
    });
  });
}

at::Tensor log_attn_v(const at::Tensor& codes_t, const at::Tensor& v_t, int64_t v_zero_point) {
  const int64_t nq = codes_t.size(-2), nk = codes_t.size(-1), d = v_t.size(-1);
  std::vector<int64_t> out_shape(codes_t.sizes().begin(), codes_t.sizes().end());
  out_shape.back() = d;
  at::Tensor out = at::empty(out_shape, v_t.options().dtype(at::kInt));
  if (out.numel() == 0) return out;
  const int64_t batch = out.numel() / (nq * d);
  const at::Tensor codes = codes_t.contiguous().view({batch, nq, nk});
  const at::Tensor v = v_t.contiguous().view({batch, nk, d});
  const int64_t rows = block_rows(nq), blocks = (nq + rows - 1) / rows;
  const uint8_t* c_p = codes.data_ptr<uint8_t>();
  int32_t* o_p = out.data_ptr<int32_t>();
  at::parallel_for(0, batch * blocks, 1, [&](int64_t begin, int64_t end) {
    PvWorkspace ws(rows, nk, d);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / blocks, q0 = (task % blocks) * rows, r = std::min(rows, nq - q0);
      pv_block(c_p + (b * nq + q0) * nk, r, nk, v[b], v_zero_point, ws, o_p + (b * nq + q0) * d);
    }
  });
  return out;
}

at::Tensor attention_scores(const at::Tensor& q_t, const at::Tensor& k_t, int64_t qkv_zero_point,
                            int64_t score_multiplier, int64_t score_shift, int64_t score_zero_point) {
  const int64_t nq = q_t.size(-2), nk = k_t.size(-2), d = q_t.size(-1);
  std::vector<int64_t> out_shape(q_t.sizes().begin(), q_t.sizes().end());
  out_shape.back() = nk;
  at::Tensor out = at::empty(out_shape, q_t.options().dtype(at::kChar));
  const int64_t batch = out.numel() / (nq * nk);
  const at::Tensor q = q_t.contiguous().view({batch, nq, d});
  const at::Tensor k = k_t.contiguous().view({batch, nk, d});
  const int64_t rows = block_rows(nq), blocks = (nq + rows - 1) / rows;
  int8_t* o_p = out.data_ptr<int8_t>();
  at::parallel_for(0, batch * blocks, 1, [&](int64_t begin, int64_t end) {
    at::Tensor acc = at::empty({rows, nk}, at::kInt);
    int64_t key_batch = -1;
    std::unique_ptr<KeySide> keys;
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / blocks, q0 = (task % blocks) * rows, r = std::min(rows, nq - q0);
      if (b != key_batch) {
        keys = std::make_unique<KeySide>(k[b], qkv_zero_point);
        key_batch = b;
      }
      scores_block(q[b].narrow(0, q0, r), *keys, qkv_zero_point, score_multiplier, score_shift,
                   score_zero_point, acc, o_p + (b * nq + q0) * nk);
    }
  });
  return out;
}

at::Tensor int_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, int64_t qkv_zero_point,
                         int64_t score_multiplier, int64_t score_shift, int64_t score_zero_point,
                         const at::Tensor& exp_table, int64_t out_multiplier, int64_t out_shift,
                         int64_t out_zero_point) {
  const int64_t bsz = q.size(0), heads = q.size(1), n = q.size(2), d = q.size(3);
  // Shape [B, H, N, D], memory [B, N, H, D] (ops.attention_output): the proj GEMM reads it as
  // [B*N, H*D] without a copy.
  at::Tensor out = at::empty({bsz, n, heads, d}, q.options().dtype(at::kChar)).transpose(1, 2);
  const at::Tensor table = exp_table.contiguous();
  const int64_t* t_p = table.data_ptr<int64_t>();
  const bool float32_exps = exps_are_float32(t_p, table.numel());
  const int64_t rows = block_rows(n), blocks = (n + rows - 1) / rows;
  const float out_scale = float32_scale(out_shift), out_zp_f = float(out_zero_point + 128);
  int8_t* o_p = out.data_ptr<int8_t>();
  at::parallel_for(0, bsz * heads * blocks, 1, [&](int64_t begin, int64_t end) {
    at::Tensor acc = at::empty({rows, n}, at::kInt);
    std::vector<int8_t> scores(rows * n);
    std::vector<uint8_t> codes(rows * n);
    std::vector<int32_t> ctx(rows * d);
    PvWorkspace ws(rows, n, d);
    int64_t key_head = -1;
    std::unique_ptr<KeySide> keys;
    for (int64_t task = begin; task < end; ++task) {
      const int64_t bh = task / blocks, b = bh / heads, h = bh % heads;
      const int64_t q0 = (task % blocks) * rows, r = std::min(rows, n - q0);
      if (bh != key_head) {
        keys = std::make_unique<KeySide>(k[b][h], qkv_zero_point);
        key_head = bh;
      }
      scores_block(q[b][h].narrow(0, q0, r), *keys, qkv_zero_point, score_multiplier, score_shift,
                   score_zero_point, acc, scores.data());
      for (int64_t i = 0; i < r; ++i) lis_row(scores.data() + i * n, n, t_p, 4, float32_exps, codes.data() + i * n);
      pv_block(codes.data(), r, n, v[b][h], qkv_zero_point, ws, ctx.data());
      for (int64_t i = 0; i < r; ++i) {
        int8_t* o = o_p + ((b * n + q0 + i) * heads + h) * d;
        requant_row(ctx.data() + i * d, d, out_multiplier, out_scale, out_zp_f, o);
      }
    }
  });
  return out;
}

}  // namespace fqvit

namespace fqvit {

std::vector<std::tuple<int64_t, int64_t, bool>> lis_level_constants() {
  std::vector<std::tuple<int64_t, int64_t, bool>> out;
  const LevelConstant* levels = level_constants();
  for (int c = 0; c < kMaxLevel; ++c) out.emplace_back(int64_t(levels[c].numerator), levels[c].shift, levels[c].inclusive);
  return out;
}

}  // namespace fqvit
