"""``attention_scores`` and the fused ``int_attention`` kernel.

Score tile (both kernels): ``q`` and ``k`` stay int8 for ``tl.dot(..., out_dtype=tl.int32)``; the
zero point is applied afterwards with row sums, ``(q - zp)(k - zp)ᵀ = q kᵀ - zp (Σq + Σk) + D zp²``
(int32, wrap-around consistent), then requantized onto the 8-bit score grid in int64 exactly like
:func:`fqvit_kernels.reference.attention_scores` (FQ-ViT's float32 rounding,
:func:`fqvit_kernels.reference.requantize_float32`). Head dims are padded to a power of two
``BLOCK_D >= 32`` (the K of an int8 dot must be >= 32 on GPUs) with masked (zero) loads, which
change neither the dot product nor the row sums.

``int_attention``: one program per (query tile of ``BLOCK_M`` rows, batch x head). The LIS code
of a score needs the row max and the exponent sum over *all* keys, and FQ-ViT's integer exponent
has no exact rescaling, so the kernel makes three passes over the key tiles, recomputing the
(cheap, ``D``-deep) score tile each time and never writing scores to memory:

1. row max of the scores (as the requantized max of the int32 accumulators: the requantization
   is monotone);
2. ``E = Σ_j exp_table[max + 128, max - s_j]`` in int64 (a gather from the row maximum's row);
3. per row the 16 thresholds ``U_c(E)`` of FQ-ViT's float32 ``round(E / e)`` (outside the loop,
   :mod:`.softmax`), per score the 4-bit code as the count of ``e_j <= U_c`` (no division), the weights ``2**(15 - k)`` split into negated int8 halves for
   two tensor-core dots with the stored ``v`` (see :mod:`.attn_v`), plus the per-row weight sum
   for the zero point.

The int32 context is requantized in the epilogue and stored through the output's strides, i.e.
into the ``[B, N, H, D]`` memory of :func:`fqvit_kernels.ops.attention_output`.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from fqvit_kernels import checks
from fqvit_kernels.ops import attention_output

from . import gluon_attention, variants
from ._common import configs, device_guard, fast_paths_allowed, pow2_at_least
from .spec import I8, I64, CompileSpec
from ._intmath import requantize_float32
from .attn_v import _lis_pv_weights
from .softmax import _lis_code4, _lis_thresholds, level_table


@triton.jit
def _score_tile(q, q_corr, kt, k_sum, zero_point, score_mult, score_shift, score_zero_point):
    """int32 scores ``[BM, BN]`` on the 8-bit grid from int8 ``q [BM, BD]`` and ``kᵀ [BD, BN]``.

    ``q_corr = D zp² - zp Σq`` per query row; ``k_sum = Σk`` per key.
    """
    acc = tl.dot(q, kt, out_dtype=tl.int32)
    acc = acc + q_corr[:, None] - zero_point * k_sum[None, :]
    return requantize_float32(acc.to(tl.int64), score_mult, score_shift, score_zero_point).to(tl.int32)


@triton.jit
def _key_tile_exps(q, q_corr, k_base, keys, n_ok, offs_d, d_ok, stride_kn, zero_point, score_mult,
                   score_shift, score_zero_point, table_ptr, row_max):
    """LIS exponents ``exp_table[row_max + 128, row_max - score]`` of one key tile (passes 2 and 3
    recompute them rather than keep the N x N scores); keys past N get 0."""
    kt = tl.load(k_base + keys.to(tl.int64)[None, :] * stride_kn + offs_d[:, None],
                 mask=d_ok[:, None] & n_ok[None, :], other=0)
    k_sum = tl.sum(kt.to(tl.int32), axis=0)
    s = _score_tile(q, q_corr, kt, k_sum, zero_point, score_mult, score_shift, score_zero_point)
    return tl.load(table_ptr + (row_max[:, None] + 128) * 256 + (row_max[:, None] - s), mask=n_ok[None, :], other=0)


@triton.jit
def _query_tile(q_ptr, k_ptr, v_ptr, H, N, D, stride_qb, stride_qh, stride_qn, stride_kb, stride_kh, stride_vb,
                stride_vh, zero_point, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
    """This program's (batch, head), its K and V bases, the offsets and masks, the int8 query tile
    and its zero-point term ``D zp**2 - zp * sum(q)`` (shared by the fused attentions). The 1-D grid
    keeps the query tiles of one (batch, head) adjacent so they share its K/V in L2; B * H may
    exceed CUDA's 65535 limit on grid dims 1 and 2."""
    pid = tl.program_id(0)
    num_m = tl.cdiv(N, BLOCK_M)
    pid_m = pid % num_m
    pid_bh = pid // num_m
    b = (pid_bh // H).to(tl.int64)
    h = (pid_bh % H).to(tl.int64)
    q_base = q_ptr + b * stride_qb + h * stride_qh
    k_base = k_ptr + b * stride_kb + h * stride_kh
    v_base = v_ptr + b * stride_vb + h * stride_vh
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    m_ok = offs_m < N
    d_ok = offs_d < D
    q = tl.load(q_base + offs_m.to(tl.int64)[:, None] * stride_qn + offs_d[None, :],
                mask=m_ok[:, None] & d_ok[None, :], other=0)
    q_corr = D * zero_point * zero_point - zero_point * tl.sum(q.to(tl.int32), axis=1)
    return b, h, k_base, v_base, offs_m, offs_n, offs_d, m_ok, d_ok, q, q_corr


@triton.jit
def _score_row_max(q, q_corr, k_base, N, offs_n, offs_d, d_ok, stride_kn, zero_point, score_mult, score_shift,
                   score_zero_point, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """Pass 1 of the fused attentions: the row max of the scores over all key tiles. The score
    requantization is monotone non-decreasing in the accumulator (multiplier >= 0, and every
    rounding step is monotone), so max_j s_ij = requant(max_j acc_ij): an int32 max per score and
    one int64 requantization per row."""
    acc_floor = tl.full((BLOCK_M,), -2147483648, tl.int32)
    acc_max = acc_floor
    for n0 in range(0, N, BLOCK_N):
        keys = n0 + offs_n
        n_ok = keys < N
        kt = tl.load(k_base + keys.to(tl.int64)[None, :] * stride_kn + offs_d[:, None],
                     mask=d_ok[:, None] & n_ok[None, :], other=0)
        acc = tl.dot(q, kt, out_dtype=tl.int32) - zero_point * tl.sum(kt.to(tl.int32), axis=0)[None, :]
        acc = tl.where(n_ok[None, :], acc, acc_floor[:, None])
        acc_max = tl.maximum(acc_max, tl.max(acc, axis=1))
    return requantize_float32((acc_max + q_corr).to(tl.int64), score_mult, score_shift,
                              score_zero_point).to(tl.int32)


@triton.jit
def _lis_code4_float32(exps, total_f32):
    """4-bit LIS code (16: masked) the way FQ-ViT computes it, in float32 hardware: ``R =
    round(fl32(E) / e)`` with IEEE division (exact when every exponent is a float32 integer, which
    the launcher checks), then ``code = msb(R) + the bit below it`` read from R's exponent and top
    mantissa bit. About 20 instructions per score and no per-row thresholds."""
    e = tl.where(exps > 0, exps, 1).to(tl.float32)  # exact: a float32 integer (0 is masked below)
    q = tl.div_rn(total_f32[:, None] + tl.zeros_like(e), e)
    # round half to even: adding 2**23 leaves the rounded integer in the last place (q >= 1)
    r = tl.where(q < 8388608.0, (q + 8388608.0) - 8388608.0, q)
    bits = r.to(tl.int32, bitcast=True)
    code = ((bits >> 23) - 127) + ((bits >> 22) & 1)
    return tl.where((exps > 0) & (code < 16), code, 16)


@triton.jit
def _attention_scores_kernel(
    q_ptr, k_ptr, out_ptr, NQ, NK, D,
    zero_point, score_mult, score_shift, score_zero_point,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):
    # 1-D grid (CUDA limits grid dims 1 and 2 to 65535): query tiles fastest, then key tiles, batch.
    pid = tl.program_id(0)
    num_m = tl.cdiv(NQ, BLOCK_M)
    num_n = tl.cdiv(NK, BLOCK_N)
    pid_m = pid % num_m
    pid_n = (pid // num_m) % num_n
    batch = (pid // (num_m * num_n)).to(tl.int64)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    m_ok = offs_m < NQ
    n_ok = offs_n < NK
    d_ok = offs_d < D
    q = tl.load(q_ptr + batch * NQ * D + offs_m.to(tl.int64)[:, None] * D + offs_d[None, :],
                mask=m_ok[:, None] & d_ok[None, :], other=0)
    kt = tl.load(k_ptr + batch * NK * D + offs_n.to(tl.int64)[None, :] * D + offs_d[:, None],
                 mask=d_ok[:, None] & n_ok[None, :], other=0)
    q_corr = D * zero_point * zero_point - zero_point * tl.sum(q.to(tl.int32), axis=1)
    k_sum = tl.sum(kt.to(tl.int32), axis=0)
    s = _score_tile(q, q_corr, kt, k_sum, zero_point, score_mult, score_shift, score_zero_point)
    out_ptrs = out_ptr + batch * NQ * NK + offs_m.to(tl.int64)[:, None] * NK + offs_n[None, :]
    tl.store(out_ptrs, s.to(tl.int8), mask=m_ok[:, None] & n_ok[None, :])


def head_block(head_dim: int) -> int:
    """Padded head dim: a power of two >= 32 (the K of the int8 score dot must be >= 32 on GPUs)."""
    return pow2_at_least(head_dim, 32)


def scores_launch_config(head_dim: int):
    """``(BLOCK_M, BLOCK_N, BLOCK_D, num_warps)`` of the attention_scores kernel."""
    return 64, 64, head_block(head_dim), 4


def attention_scores(q: torch.Tensor, k: torch.Tensor, qkv_zero_point: int, score_multiplier: int,
                     score_shift: int, score_zero_point: int) -> torch.Tensor:
    """Launcher of ``fqvit::attention_scores``: int8 ``q [..., Nq, D]``, ``k [..., Nk, D]`` → int8 scores."""
    nq, d = q.shape[-2:]
    nk = k.shape[-2]
    out = torch.empty((*q.shape[:-1], nk), dtype=torch.int8, device=q.device)
    q3 = q.contiguous().view(-1, nq, d)
    k3 = k.contiguous().view(-1, nk, d)
    block_m, block_n, block_d, num_warps = scores_launch_config(d)
    grid = (triton.cdiv(nq, block_m) * triton.cdiv(nk, block_n) * q3.shape[0],)
    with device_guard(q):
        _attention_scores_kernel[grid](q3, k3, out, nq, nk, d, int(qkv_zero_point), int(score_multiplier),
                                       int(score_shift), int(score_zero_point),
                                       BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_D=block_d, num_warps=num_warps)
    return out


# num_stages=1: Triton's software pipeliner cannot predicate the score tile's warp-group dot in
# these three-pass loops (checked by compiling for sm_90 with Triton 3.8), so the loops run
# unpipelined; BLOCK_M is a multiple of 64 and num_warps of 4 so that both dots use wgmma.
# Fast path at ViT-B shapes (compile_check --report, sm_90, 2026-11-28), hot SASS per score and
# spills with Triton 3.8 / 3.6: 128x64 w8 111 / 118, 64x64 w4 117 / 126, 64x64 w8 140 / 176, none
# spilling; 128x64 w4 (536 B), 128x128 w8 (400 B) and 64x128 w8 (177 per score) are left out. The
# general path (per-row int64 thresholds) spills 0-48 B with these tiles (Triton 3.8).
_GPU_CONFIGS = [
    triton.Config({"BLOCK_M": 128, "BLOCK_N": 64}, num_warps=8, num_stages=1),
    triton.Config({"BLOCK_M": 64, "BLOCK_N": 64}, num_warps=4, num_stages=1),
    triton.Config({"BLOCK_M": 64, "BLOCK_N": 64}, num_warps=8, num_stages=1),
]
_INTERPRETER_CONFIG = triton.Config({"BLOCK_M": 64, "BLOCK_N": 64}, num_warps=4, num_stages=1)


@triton.jit
def _int_attention_kernel(
    q_ptr, k_ptr, v_ptr, out_ptr, table_ptr, levels_ptr,
    H, N, D,
    stride_qb, stride_qh, stride_qn, stride_kb, stride_kh, stride_kn,
    stride_vb, stride_vh, stride_vn, stride_ob, stride_oh, stride_on,
    zero_point, score_mult, score_shift, score_zero_point, out_mult, out_shift, out_zero_point,
    BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, FAST: tl.constexpr,
):
    b, h, k_base, v_base, offs_m, offs_n, offs_d, m_ok, d_ok, q, q_corr = _query_tile(
        q_ptr, k_ptr, v_ptr, H, N, D, stride_qb, stride_qh, stride_qn, stride_kb, stride_kh, stride_vb, stride_vh,
        zero_point, BLOCK_M, BLOCK_N, BLOCK_D)

    # Pass 1: row max.
    row_max = _score_row_max(q, q_corr, k_base, N, offs_n, offs_d, d_ok, stride_kn, zero_point, score_mult,
                             score_shift, score_zero_point, BLOCK_M, BLOCK_N)

    # Pass 2: the int64 exponent sum.
    total = tl.zeros((BLOCK_M,), tl.int64)
    for n0 in range(0, N, BLOCK_N):
        keys = n0 + offs_n
        n_ok = keys < N
        e = _key_tile_exps(q, q_corr, k_base, keys, n_ok, offs_d, d_ok, stride_kn, zero_point, score_mult,
                           score_shift, score_zero_point, table_ptr, row_max)
        total += tl.sum(e, axis=1)

    # Pass 3: codes (by a float32 division per score on the fast path, else by counting the row's
    # 16 thresholds), exact P@V on tensor cores.
    if FAST:
        total_f32 = total.to(tl.float32)  # fl32(E): the int64 -> float32 conversion rounds to nearest even
    else:
        thresholds = _lis_thresholds(total, levels_ptr)
    acc_hi = tl.zeros((BLOCK_M, BLOCK_D), tl.int32)
    acc_lo = tl.zeros((BLOCK_M, BLOCK_D), tl.int32)
    weight_sum = tl.zeros((BLOCK_M,), tl.int32)
    for n0 in range(0, N, BLOCK_N):
        keys = n0 + offs_n
        n_ok = keys < N
        e = _key_tile_exps(q, q_corr, k_base, keys, n_ok, offs_d, d_ok, stride_kn, zero_point, score_mult,
                           score_shift, score_zero_point, table_ptr, row_max)
        if FAST:
            code = _lis_code4_float32(e, total_f32)  # keys past N have e == 0: code 16, weight 0
        else:
            code = _lis_code4(e, thresholds)
        neg_hi, neg_lo, weight = _lis_pv_weights(code)
        weight_sum += tl.sum(weight, axis=1)
        v = tl.load(v_base + keys.to(tl.int64)[:, None] * stride_vn + offs_d[None, :],
                    mask=n_ok[:, None] & d_ok[None, :], other=0)
        acc_hi = tl.dot(neg_hi, v, acc_hi, out_dtype=tl.int32)
        acc_lo = tl.dot(neg_lo, v, acc_lo, out_dtype=tl.int32)

    context = -(acc_hi * 256 + acc_lo) - zero_point * weight_sum[:, None]
    out = requantize_float32(context.to(tl.int64), out_mult, out_shift, out_zero_point).to(tl.int8)
    out_ptrs = out_ptr + b * stride_ob + h * stride_oh + offs_m.to(tl.int64)[:, None] * stride_on + offs_d[None, :]
    tl.store(out_ptrs, out, mask=m_ok[:, None] & d_ok[None, :])


_int_attention_tuned = triton.autotune(configs(_GPU_CONFIGS, _INTERPRETER_CONFIG),
                                       key=["N", "BLOCK_D", "FAST"])(_int_attention_kernel)


def fast_attention(exp_table: torch.Tensor) -> bool:
    """Whether ``int_attention`` takes its fast path: every exponent a non-negative float32 integer
    (FQ-ViT computes them in float32, so its tables are; read once per table and remembered)."""
    if not fast_paths_allowed():
        return False
    t = exp_table
    return bool(checks.cached_fact(t, "float32 integers",
                                    lambda: bool(((t >= 0) & (t.to(torch.float32).to(torch.int64) == t)).all())))


def _unit_last_stride(t: torch.Tensor) -> torch.Tensor:
    return t if t.stride(-1) == 1 else t.contiguous()


def int_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, qkv_zero_point: int,
                  score_multiplier: int, score_shift: int, score_zero_point: int, exp_table: torch.Tensor,
                  out_multiplier: int, out_shift: int, out_zero_point: int) -> torch.Tensor:
    """Launcher of ``fqvit::int_attention``: int8 ``[B, H, N, D]`` → int8 ``[B, H, N, D]`` (memory ``[B, N, H, D]``)."""
    q, k, v = (_unit_last_stride(t) for t in (q, k, v))
    batch, heads, n, d = q.shape
    out = attention_output(q)
    if _gluon_applies(q, exp_table):
        return gluon_attention.launch(q, k, v, out, qkv_zero_point, score_multiplier, score_shift,
                                      score_zero_point, exp_table, out_multiplier, out_shift, out_zero_point)
    block_d = head_block(d)
    with device_guard(q):
        _int_attention_tuned[lambda meta: (triton.cdiv(n, meta["BLOCK_M"]) * batch * heads,)](
            q, k, v, out, exp_table.contiguous(), level_table(q.device), heads, n, d,
            q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
            v.stride(0), v.stride(1), v.stride(2), out.stride(0), out.stride(1), out.stride(2),
            int(qkv_zero_point), int(score_multiplier), int(score_shift), int(score_zero_point),
            int(out_multiplier), int(out_shift), int(out_zero_point),
            BLOCK_D=block_d, FAST=fast_attention(exp_table),
        )
    return out


def _gluon_applies(q: torch.Tensor, exp_table: torch.Tensor) -> bool:
    """Whether this call runs the one-pass Gluon kernel: selected (:mod:`.variants`), supported, and
    on the fast path (the float32 division it shares with this kernel's FAST path)."""
    return (variants.selected("int_attention", q.device) == "gluon"
            and gluon_attention.unsupported_reason(q) is None and fast_attention(exp_table))


# -- ahead-of-time compile specs (compile_check, static report) ----------------------------------

#: Argument types of ``_attention_scores_kernel`` besides the ``i32`` sizes and parameters.
SCORES_ARG_TYPES = dict(q_ptr=I8, k_ptr=I8, out_ptr=I8)
#: Argument types of the fused attention kernels (this one and attention_uniform's).
ARG_TYPES = dict(q_ptr=I8, k_ptr=I8, v_ptr=I8, out_ptr=I8, table_ptr=I64, levels_ptr=I64)


def compile_specs(all_configs: bool = False):
    """attention_scores per head dim; the fused LIS attention per head dim x autotune candidate (the
    first only unless ``all_configs``), general and fast."""
    for head_dim in (8, 64, 80):
        block_m, block_n, block_d, warps = scores_launch_config(head_dim)
        yield CompileSpec(f"attention_scores D={head_dim}", _attention_scores_kernel, SCORES_ARG_TYPES,
                          dict(BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_D=block_d), warps)
    candidates = _GPU_CONFIGS if all_configs else _GPU_CONFIGS[:1]
    for head_dim in (32, 64, 80, 128):
        for cfg, fast in ((c, f) for c in candidates for f in (False, True)):
            consts = dict(cfg.kwargs, BLOCK_D=head_block(head_dim), FAST=fast)
            label = (f"int_attention{' fast' if fast else ''} D={head_dim} {cfg.kwargs['BLOCK_M']}x{cfg.kwargs['BLOCK_N']} "
                     f"w{cfg.num_warps}")
            yield CompileSpec(label, _int_attention_kernel, ARG_TYPES, consts, cfg.num_warps, cfg.num_stages)
