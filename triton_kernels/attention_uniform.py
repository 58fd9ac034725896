"""``int_attention_uniform``: FQ-ViT's 8/8/8 attention (uniform uint8 softmax, no LIS), fused.

One program per (query tile of ``BLOCK_M`` rows, batch x head), three passes over the key tiles
like :mod:`.attention` (the score tile is recomputed, never written to memory):

1. the row max, as the requantized max of the int32 accumulators (the requantization is monotone);
2. ``E = sum_j exp_table[max - s_j]`` in int64 (a gather from the 256-entry table);
3. per score the uint8 code ``clamp(floor((2 e m + E 2**s) / (2 E 2**s)) + zp, 0, 255)`` by one
   int64 division (operands below 2**63 under the op's limits), the weight ``w = code - zp`` in
   ``[-255, 255]`` split exactly into int8 digits ``w = 128 hi + lo`` (``lo = w & 127``,
   ``hi = w >> 7``) for two tensor-core dots with the stored ``v``, and the row sum of ``w`` for
   v's zero point.

The int32 context (``|.| <= 255 * 255 * N < 2**31``, validated) is requantized like FQ-ViT's float32
quantizer and stored into the ``[B, N, H, D]`` memory of :func:`fqvit_kernels.ops.attention_output`.
Keys past ``N`` have ``e = 0``, hence code ``zp`` and weight 0.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from fqvit_kernels.ops import attention_output

from ._common import configs, device_guard
from .spec import CompileSpec
from ._intmath import requantize_float32
from .attention import ARG_TYPES as ATTENTION_ARG_TYPES
from .attention import (_GPU_CONFIGS, _INTERPRETER_CONFIG, _query_tile, _score_row_max, _score_tile, _unit_last_stride,
                        head_block)


@triton.jit
def _key_tile_uniform_exps(q, q_corr, k_base, keys, n_ok, offs_d, d_ok, stride_kn, zero_point, score_mult,
                           score_shift, score_zero_point, table_ptr, row_max):
    """``exp_table[row_max - score]`` of one key tile; keys past N get 0."""
    kt = tl.load(k_base + keys.to(tl.int64)[None, :] * stride_kn + offs_d[:, None],
                 mask=d_ok[:, None] & n_ok[None, :], other=0)
    k_sum = tl.sum(kt.to(tl.int32), axis=0)
    s = _score_tile(q, q_corr, kt, k_sum, zero_point, score_mult, score_shift, score_zero_point)
    return tl.load(table_ptr + (row_max[:, None] - s), mask=n_ok[None, :], other=0)


@triton.jit
def _int_attention_uniform_kernel(
    q_ptr, k_ptr, v_ptr, out_ptr, table_ptr,
    H, N, D,
    stride_qb, stride_qh, stride_qn, stride_kb, stride_kh, stride_kn,
    stride_vb, stride_vh, stride_vn, stride_ob, stride_oh, stride_on,
    zero_point, score_mult, score_shift, score_zero_point, inv_mult, inv_shift, softmax_zero_point,
    out_mult, out_shift, out_zero_point,
    BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    b, h, k_base, v_base, offs_m, offs_n, offs_d, m_ok, d_ok, q, q_corr = _query_tile(
        q_ptr, k_ptr, v_ptr, H, N, D, stride_qb, stride_qh, stride_qn, stride_kb, stride_kh, stride_vb, stride_vh,
        zero_point, BLOCK_M, BLOCK_N, BLOCK_D)

    # Pass 1: row max of the int32 accumulators, requantized once per row.
    row_max = _score_row_max(q, q_corr, k_base, N, offs_n, offs_d, d_ok, stride_kn, zero_point, score_mult,
                             score_shift, score_zero_point, BLOCK_M, BLOCK_N)

    # Pass 2: E = sum_j e_j (int64; at most N * 2**20).
    total = tl.zeros((BLOCK_M,), tl.int64)
    for n0 in range(0, N, BLOCK_N):
        keys = n0 + offs_n
        n_ok = keys < N
        e = _key_tile_uniform_exps(q, q_corr, k_base, keys, n_ok, offs_d, d_ok, stride_kn, zero_point,
                                   score_mult, score_shift, score_zero_point, table_ptr, row_max)
        total += tl.sum(e, axis=1)

    # Pass 3: uint8 codes by one division per score, exact P@V as two int8 digit dots.
    # (The shift is clamped and the divisor kept >= 1 so that tampered parameters with the value
    # checks off stay defined.)
    den = total << tl.minimum(tl.maximum(inv_shift, 0), 62).to(tl.int64)
    den2 = tl.maximum(2 * den, 1)
    acc_hi = tl.zeros((BLOCK_M, BLOCK_D), tl.int32)
    acc_lo = tl.zeros((BLOCK_M, BLOCK_D), tl.int32)
    weight_sum = tl.zeros((BLOCK_M,), tl.int32)
    for n0 in range(0, N, BLOCK_N):
        keys = n0 + offs_n
        n_ok = keys < N
        e = _key_tile_uniform_exps(q, q_corr, k_base, keys, n_ok, offs_d, d_ok, stride_kn, zero_point,
                                   score_mult, score_shift, score_zero_point, table_ptr, row_max)
        quotient = (2 * e * inv_mult + den[:, None]) // den2[:, None]  # non-negative: floor
        weight = (tl.minimum(quotient, 511).to(tl.int32) + softmax_zero_point)
        weight = tl.minimum(weight, 255) - softmax_zero_point
        weight_sum += tl.sum(weight, axis=1)
        lo = (weight & 127).to(tl.int8)
        hi = (weight >> 7).to(tl.int8)
        v = tl.load(v_base + keys.to(tl.int64)[:, None] * stride_vn + offs_d[None, :],
                    mask=n_ok[:, None] & d_ok[None, :], other=0)
        acc_hi = tl.dot(hi, v, acc_hi, out_dtype=tl.int32)
        acc_lo = tl.dot(lo, v, acc_lo, out_dtype=tl.int32)

    context = acc_hi * 128 + acc_lo - zero_point * weight_sum[:, None]
    out = requantize_float32(context.to(tl.int64), out_mult, out_shift, out_zero_point).to(tl.int8)
    out_ptrs = out_ptr + b * stride_ob + h * stride_oh + offs_m.to(tl.int64)[:, None] * stride_on + offs_d[None, :]
    tl.store(out_ptrs, out, mask=m_ok[:, None] & d_ok[None, :])


_int_attention_uniform_tuned = triton.autotune(configs(_GPU_CONFIGS, _INTERPRETER_CONFIG),
                                               key=["N", "BLOCK_D"])(_int_attention_uniform_kernel)


def int_attention_uniform(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, qkv_zero_point: int,
                          score_multiplier: int, score_shift: int, score_zero_point: int, exp_table: torch.Tensor,
                          inv_softmax_multiplier: int, inv_softmax_shift: int, softmax_zero_point: int,
                          out_multiplier: int, out_shift: int, out_zero_point: int) -> torch.Tensor:
    """Launcher of ``fqvit::int_attention_uniform``: int8 ``[B, H, N, D]`` → int8 ``[B, H, N, D]``
    (memory ``[B, N, H, D]``)."""
    q, k, v = (_unit_last_stride(t) for t in (q, k, v))
    batch, heads, n, d = q.shape
    out = attention_output(q)
    with device_guard(q):
        _int_attention_uniform_tuned[lambda meta: (triton.cdiv(n, meta["BLOCK_M"]) * batch * heads,)](
            q, k, v, out, exp_table.contiguous(), heads, n, d,
            q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
            v.stride(0), v.stride(1), v.stride(2), out.stride(0), out.stride(1), out.stride(2),
            int(qkv_zero_point), int(score_multiplier), int(score_shift), int(score_zero_point),
            int(inv_softmax_multiplier), int(inv_softmax_shift), int(softmax_zero_point),
            int(out_multiplier), int(out_shift), int(out_zero_point),
            BLOCK_D=head_block(d),
        )
    return out


# -- ahead-of-time compile specs (compile_check, static report) ----------------------------------

#: The fused attention kernels share their argument types (no ``levels_ptr`` here).
ARG_TYPES = {name: kind for name, kind in ATTENTION_ARG_TYPES.items() if name != "levels_ptr"}


def compile_specs(all_configs: bool = False):
    """The uniform-softmax attention per head dim x autotune candidate (the first only unless
    ``all_configs``)."""
    for head_dim in (32, 64, 80, 128):
        for cfg in _GPU_CONFIGS if all_configs else _GPU_CONFIGS[:1]:
            consts = dict(cfg.kwargs, BLOCK_D=head_block(head_dim))
            label = (f"int_attention_uniform D={head_dim} {cfg.kwargs['BLOCK_M']}x{cfg.kwargs['BLOCK_N']} "
                     f"w{cfg.num_warps}")
            yield CompileSpec(label, _int_attention_uniform_kernel, ARG_TYPES, consts, cfg.num_warps, cfg.num_stages)
