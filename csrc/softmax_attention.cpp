// Log-Int-Softmax, shift-based attn @ V and the fused integer attention (reference.log_int_softmax,
// log_attn_v, attention_scores, int_attention).
//
// Work is split into tasks of (batch*head, block of query rows); each task holds only the scores
// of its own block, never the N x N scores of all heads. The two products go through oneDNN's
// exact int8 GEMM (at::_int_mm), everything between them is fused per row here:
//
// * Q K^T: (q - zp)(k - zp)^T = q k^T - zp * rowsum(k) - zp * rowsum(q) + D * zp^2, so the int8
//   GEMM runs on the raw codes and the zero point becomes a per-row and a per-column term.
// * LIS: per row the exponent is exp_table[max - s_j], a 256-entry table, and the code is a
//   monotone function of the exponent: per row, integer thresholds on the exponent (one per code
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
#include <cstring>
#include <memory>
#include <vector>

#include "common.h"
#include "fqvit_cpu.h"

namespace fqvit {
namespace {

constexpr uint8_t kMaskedCode = 255;    // reference.LIS_MASKED_CODE
constexpr int64_t kValueShift = 15;     // reference.LIS_VALUE_SHIFT
constexpr int64_t kMaxBlockRows = 256;  // query rows per task

// Code of one score from its exponent e and the row total E (reference.log_int_softmax).
inline uint8_t lis_code(uint64_t total, int64_t e, int64_t limit) {
  if (e <= 0) return kMaskedCode;
  const uint64_t den = uint64_t(e);
  const uint64_t quot = total / den;
  const uint64_t twice_rem = 2 * (total - quot * den);  // < 2 * den <= 2**64 - 2: no wrap
  const uint64_t ratio = quot + ((twice_rem > den) || (twice_rem == den && (quot & 1)));  // half to even
  // ratio >= 1 because E includes e itself.
  const int64_t msb = 63 - __builtin_clzll(ratio);
  const int64_t code = msb + (msb >= 1 ? int64_t((ratio >> (msb - 1)) & 1) : 0);
  return code < limit ? uint8_t(code) : kMaskedCode;
}

// The code of a score is a non-increasing function of its exponent e (for a fixed row total E):
// code >= c <=> R = round_half_even(E / e) >= T_c, with T_1 = 2 and T_c = 3 * 2**(c - 2) for
// c >= 2 (the code is floor(log2 R) rounded up at 1.5 * 2**m). And R >= T <=> 2E > (2T - 1) e,
// or 2E == (2T - 1) e with T even (a tie rounds half to even), i.e.
//   e <= floor(2E / (2T - 1)) (T even),  e <= floor((2E - 1) / (2T - 1)) (T odd).
// So per row, thresholds on e replace the per-score division.
int64_t ratio_threshold(uint64_t total, unsigned __int128 t) {
  const unsigned __int128 den = 2 * t - 1;
  const unsigned __int128 twice = (unsigned __int128)total * 2;
  return int64_t(((t & 1) == 0 ? twice : twice - 1) / den);  // <= 2E / 3 < 2**63
}

unsigned __int128 code_ratio(int64_t c) { return c == 1 ? 2 : (unsigned __int128)3 << (c - 2); }

// Largest exponent whose code is masked (code >= 2**bits). For bits >= 7, T exceeds any possible
// R (< 2**63): only e <= 0 is masked.
int64_t masked_threshold(uint64_t total, int64_t bits) {
  return bits >= 7 ? 0 : ratio_threshold(total, code_ratio(int64_t(1) << bits));
}

constexpr int kMaxLevels = 15;  // codes 1..15 of a 4-bit LIS

// Code of every distance 0..count-1 of a row from the exponent thresholds: level[c] is the
// threshold of code c + 1 (INT64_MIN beyond the used levels). Vectorizes over distances.
FQVIT_SIMD void code_table(const int64_t* FQVIT_R table, int64_t count, const int64_t* FQVIT_R level, int64_t masked,
                           uint8_t* FQVIT_R out) {
  for (int64_t d = 0; d < count; ++d) {
    const int64_t e = table[d];
    int32_t code = 0;
    for (int c = 0; c < kMaxLevels; ++c) code += e <= level[c];
    out[d] = e <= masked ? kMaskedCode : uint8_t(code);
  }
}

FQVIT_SIMD void row_range(const int8_t* FQVIT_R s, int64_t n, int8_t* mx_out, int8_t* mn_out) {
  int8_t mx = s[0], mn = s[0];
  for (int64_t j = 1; j < n; ++j) {
    mx = s[j] > mx ? s[j] : mx;
    mn = s[j] < mn ? s[j] : mn;
  }
  *mx_out = mx;
  *mn_out = mn;
}

// Sum of the row's exponents; unsigned (wrapping) adds, <= 2**63 - 1 for validated tables.
FQVIT_SIMD uint64_t row_total(const int8_t* FQVIT_R s, int64_t n, const int64_t* FQVIT_R table, int mx) {
  uint64_t total = 0;
  for (int64_t j = 0; j < n; ++j) total += uint64_t(table[mx - int(s[j])]);
  return total;
}

// Number of distances 0..count-1 whose exponent is above the masked threshold, and one past the
// last of them (every distance from there on is masked).
FQVIT_SIMD int64_t count_above(const int64_t* FQVIT_R table, int64_t count, int64_t threshold, int64_t* end) {
  int64_t above = 0, last = -1;
  for (int64_t d = 0; d < count; ++d) {
    above += table[d] > threshold;
    last = std::max(last, table[d] > threshold ? d : int64_t(-1));
  }
  *end = last + 1;
  return above;
}

// LIS codes of one contiguous row of n int8 scores.
// * bits <= 4 (LIS as used by int_attention): a code per distance 0..max-min, then one byte
//   look-up per score. A distance whose exponent is at most the masked threshold is masked (most
//   of a peaked row); when more than 16 distances are not, the 15 per-level thresholds give all
//   codes in one vectorized pass, otherwise one division per unmasked distance is cheaper.
// * wider codes: one comparison with the masked threshold settles the masked scores; the others
//   need the rounded ratio, computed once per distinct distance present in the row.
void lis_row(const int8_t* s, int64_t n, const int64_t* table, int64_t bits, uint8_t* codes) {
  int8_t mx, mn;
  row_range(s, n, &mx, &mn);
  const uint64_t total = row_total(s, n, table, mx);  // ops checks exp_table.max() * n < 2**63
  const int64_t threshold = masked_threshold(total, bits);
  if (bits <= 4) {
    const int64_t count = int64_t(mx) - mn + 1;
    uint8_t by_distance[256];
    int64_t end;  // LIS tables decrease with the distance: the unmasked ones are a short prefix
    const int64_t above = count_above(table, count, threshold, &end);
    std::memset(by_distance + end, kMaskedCode, count - end);
    if (above > 16) {
      int64_t level[kMaxLevels];
      const int64_t levels = (int64_t(1) << bits) - 1;
      for (int c = 0; c < kMaxLevels; ++c)
        level[c] = c < levels ? ratio_threshold(total, code_ratio(c + 1)) : INT64_MIN;
      code_table(table, end, level, threshold, by_distance);
    } else {
      for (int64_t d = 0; d < end; ++d)
        by_distance[d] = table[d] <= threshold ? kMaskedCode : lis_code(total, table[d], int64_t(1) << bits);
    }
    for (int64_t j = 0; j < n; ++j) codes[j] = by_distance[int(mx) - int(s[j])];
    return;
  }
  const int64_t limit = int64_t(1) << bits;
  constexpr uint8_t kUnknown = 254;  // never a code: codes are <= 63 or 255
  uint8_t cache[256];
  std::memset(cache, kUnknown, sizeof(cache));
  for (int64_t j = 0; j < n; ++j) {
    const int d = int(mx) - int(s[j]);
    const int64_t e = table[d];
    if (e <= threshold) {
      codes[j] = kMaskedCode;
      continue;
    }
    uint8_t c = cache[d];
    if (c == kUnknown) c = cache[d] = lis_code(total, e, limit);
    codes[j] = c;
  }
}

int64_t block_rows(int64_t n) {
  const int64_t blocks = (n + kMaxBlockRows - 1) / kMaxBlockRows;
  return (n + blocks - 1) / blocks;
}

// Scores block: acc = q_blk k^T (int32, raw codes), col_term_j = -zp * rowsum(k_j),
// row_term = D zp^2 - zp * rowsum(q_i); output int8 on the score grid.
FQVIT_SIMD void score_row(const int32_t* FQVIT_R acc, const int64_t* FQVIT_R col_term, int64_t row_term, int64_t mult,
                          int64_t shift, int64_t zp, int8_t* FQVIT_R out, int64_t n) {
  for (int64_t j = 0; j < n; ++j) {
    const int64_t s = int64_t(acc[j]) + col_term[j] + row_term;  // |s| <= 255**2 * D < 2**31
    out[j] = int8_t(clamp64(round_shift(s * mult, shift) + zp, -128, 127));
  }
}

FQVIT_SIMD void row_sums(const int8_t* FQVIT_R x, int64_t rows, int64_t stride, int64_t d, int64_t* FQVIT_R out) {
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
    score_row(acc_p + i * nk, keys.col_term.data(), d * zp * zp - zp * qsum[i], mult, shift, score_zp,
              out + i * nk, nk);
}

// attn @ V for the code rows codes [R, Nk] (row stride Nk) and v [Nk, D]: int32 context [R, D]
// (wrapped to int32 like the reference's .to(torch.int32)), written to ctx (row stride D).
struct PvWorkspace {
  at::Tensor planes[3], prods[3];
  std::vector<int64_t> wsum;
  std::vector<int32_t> centered;  // v - zp, [Nk, D], for the sparse path
  std::vector<uint32_t> acc;      // one context row, for the sparse path
  PvWorkspace(int64_t rows, int64_t nk, int64_t d)
      : wsum(rows), centered(nk * d), acc(d) {
    for (int p = 0; p < 3; ++p) {
      planes[p] = at::empty({rows, nk}, at::kChar);
      prods[p] = at::empty({rows, d}, at::kInt);
    }
  }
};

// Digit planes and weight sum of one code row (arithmetic rather than table look-ups, so the
// loop vectorizes): e = 15 - k, plane e / 7 gets 2**(e mod 7).
FQVIT_SIMD int64_t code_digits(const uint8_t* FQVIT_R codes, int64_t n, int8_t* FQVIT_R d0, int8_t* FQVIT_R d1,
                               int8_t* FQVIT_R d2) {
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
FQVIT_SIMD void combine_row(const int32_t* FQVIT_R p0, const int32_t* FQVIT_R p1, const int32_t* FQVIT_R p2,
                            int64_t corr, int64_t d, int32_t* FQVIT_R ctx) {
  for (int64_t c = 0; c < d; ++c) {
    const int64_t s = corr + int64_t(p0[c]) + (int64_t(p1[c]) << 7) + (int64_t(p2[c]) << 14);
    ctx[c] = int32_t(uint32_t(uint64_t(s)));
  }
}

FQVIT_SIMD void requant_row(const int32_t* FQVIT_R ctx, int64_t d, int64_t mult, int64_t shift, int64_t zp,
                            int8_t* FQVIT_R out) {
  for (int64_t c = 0; c < d; ++c) out[c] = int8_t(clamp64(round_shift(int64_t(ctx[c]) * mult, shift) + zp, -128, 127));
}

FQVIT_SIMD void center_rows(const int8_t* FQVIT_R v, int64_t rows, int64_t stride, int64_t d, int32_t zp,
                            int32_t* FQVIT_R out) {
  for (int64_t j = 0; j < rows; ++j)
    for (int64_t c = 0; c < d; ++c) out[j * d + c] = int32_t(v[j * stride + c]) - zp;
}

// Sparse attn @ V rows: most LIS codes of a peaked softmax are masked (weight 0); each unmasked
// code k adds (v_j - zp) << (15 - k) to its context row, modulo 2**32 like the reference's final
// .to(torch.int32) (unsigned, so that a wrap is defined behaviour).
FQVIT_SIMD void sparse_rows(const uint8_t* FQVIT_R codes, int64_t r, int64_t nk, const int32_t* FQVIT_R centered,
                            int64_t d, uint32_t* FQVIT_R acc, int32_t* FQVIT_R ctx) {
  for (int64_t i = 0; i < r; ++i) {
    for (int64_t c = 0; c < d; ++c) acc[c] = 0;
    const uint8_t* row = codes + i * nk;
    for (int64_t j = 0; j < nk; ++j) {
      if (row[j] > kValueShift) continue;
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
  sparse_rows(codes, r, nk, ws.centered.data(), d, ws.acc.data(), ctx);
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

}  // namespace

at::Tensor log_int_softmax(const at::Tensor& scores, const at::Tensor& exp_table, int64_t bits) {
  const at::Tensor s = scores.contiguous();
  const at::Tensor table = exp_table.contiguous();
  const int64_t n = s.size(-1), rows = n ? s.numel() / n : 0;
  return like_input(scores, at::kByte, [&](at::Tensor& out) {
    if (rows == 0) return;
    const int8_t* s_p = s.data_ptr<int8_t>();
    const int64_t* t_p = table.data_ptr<int64_t>();
    uint8_t* o_p = out.data_ptr<uint8_t>();
    at::parallel_for(0, rows, std::max<int64_t>(1, 4096 / n), [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) lis_row(s_p + i * n, n, t_p, bits, o_p + i * n);
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
  // Shape [B, H, N, D], memory [B, N, H, D] (ops._attention_output): the proj GEMM reads it as
  // [B*N, H*D] without a copy.
  at::Tensor out = at::empty({bsz, n, heads, d}, q.options().dtype(at::kChar)).transpose(1, 2);
  const at::Tensor table = exp_table.contiguous();
  const int64_t* t_p = table.data_ptr<int64_t>();
  const int64_t rows = block_rows(n), blocks = (n + rows - 1) / rows;
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
      for (int64_t i = 0; i < r; ++i) lis_row(scores.data() + i * n, n, t_p, 4, codes.data() + i * n);
      pv_block(codes.data(), r, n, v[b][h], qkv_zero_point, ws, ctx.data());
      for (int64_t i = 0; i < r; ++i) {
        int8_t* o = o_p + ((b * n + q0 + i) * heads + h) * d;
        requant_row(ctx.data() + i * d, d, out_multiplier, out_shift, out_zero_point, o);
      }
    }
  });
  return out;
}

}  // namespace fqvit
