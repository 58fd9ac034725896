"""``log_attn_v``: ``sum_j (v_j - zp) * 2**(15 - k_ij)`` exactly, on int8 tensor cores.

The weight ``2**(15 - k)`` (0 for codes above 15) is split as ``2**8 * P_hi + P_lo`` with
``P_hi = 2**(7 - k)`` for ``k <= 7`` and ``P_lo = 2**(15 - k)`` for ``8 <= k <= 15``. Both reach 128,
which int8 cannot hold, so the kernel feeds the *negated* halves (``-128..0``) to
``tl.dot(..., out_dtype=tl.int32)`` against the stored int8 ``v`` and flips the sign back; the zero
point is folded as ``- zp * sum_j 2**(15 - k_ij)`` (a per-row int32 sum). All int32, exact (the
reference's int64 result is cast to int32, so wrap-around, if any, is the same).

Each program owns a ``BLOCK_M x BLOCK_D`` output tile of one batch entry and loops over the keys.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._common import device_guard, pow2_at_least
from .spec import I8, I32, U8, CompileSpec


@triton.jit
def _lis_pv_weights(code):
    """Negated int8 halves and the int32 weight of codes (any int32 >= 0; > 15 weighs 0).

    ``w = 0x8000 >> code`` is ``2**(15 - code)`` for codes up to 15 and 0 for 16 and above (the
    shift is capped at 16); its high byte is the weight of codes 0-7, its low byte that of codes
    8-15, each at most 128, so their negations fit int8.
    """
    weight = 0x8000 >> tl.minimum(code, 16)
    neg_hi = (-(weight >> 8)).to(tl.int8)
    neg_lo = (-(weight & 0xFF)).to(tl.int8)
    return neg_hi, neg_lo, weight


@triton.jit
def _log_attn_v_kernel(
    codes_ptr, v_ptr, out_ptr, NQ, NK, D, v_zero_point,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):
    # 1-D grid (CUDA limits grid dims 1 and 2 to 65535): query tiles fastest, then D tiles, batch.
    pid = tl.program_id(0)
    num_m = tl.cdiv(NQ, BLOCK_M)
    num_d = tl.cdiv(D, BLOCK_D)
    pid_m = pid % num_m
    pid_d = (pid // num_m) % num_d
    batch = (pid // (num_m * num_d)).to(tl.int64)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    offs_n = tl.arange(0, BLOCK_N)
    m_ok = offs_m < NQ
    d_ok = offs_d < D
    codes_base = codes_ptr + batch * NQ * NK + offs_m.to(tl.int64)[:, None] * NK
    v_base = v_ptr + batch * NK * D + offs_d[None, :]

    acc_hi = tl.zeros((BLOCK_M, BLOCK_D), tl.int32)
    acc_lo = tl.zeros((BLOCK_M, BLOCK_D), tl.int32)
    weight_sum = tl.zeros((BLOCK_M,), tl.int32)
    for n0 in range(0, NK, BLOCK_N):
        keys = n0 + offs_n
        n_ok = keys < NK
        code = tl.load(codes_base + keys[None, :], mask=m_ok[:, None] & n_ok[None, :], other=255).to(tl.int32)
        neg_hi, neg_lo, weight = _lis_pv_weights(code)
        weight_sum += tl.sum(weight, axis=1)
        v = tl.load(v_base + keys.to(tl.int64)[:, None] * D, mask=n_ok[:, None] & d_ok[None, :], other=0)
        acc_hi = tl.dot(neg_hi, v, acc_hi, out_dtype=tl.int32)
        acc_lo = tl.dot(neg_lo, v, acc_lo, out_dtype=tl.int32)

    out = -(acc_hi * 256 + acc_lo) - v_zero_point * weight_sum[:, None]
    out_ptrs = out_ptr + batch * NQ * D + offs_m.to(tl.int64)[:, None] * D + offs_d[None, :]
    tl.store(out_ptrs, out, mask=m_ok[:, None] & d_ok[None, :])


def launch_config(head_dim: int):
    """``(BLOCK_M, BLOCK_N, BLOCK_D, num_warps)``: BLOCK_N is the int8 dot's K (>= 32)."""
    return 64, 64, min(pow2_at_least(head_dim, 16), 128), 4


def log_attn_v(codes: torch.Tensor, v: torch.Tensor, v_zero_point: int) -> torch.Tensor:
    """Launcher of ``fqvit::log_attn_v``: uint8 ``codes [..., Nq, Nk]``, int8 ``v [..., Nk, D]`` → int32."""
    nq, nk = codes.shape[-2:]
    d = v.shape[-1]
    out = torch.empty((*codes.shape[:-1], d), dtype=torch.int32, device=codes.device)
    if out.numel() == 0:
        return out
    codes3 = codes.contiguous().view(-1, nq, nk)
    v3 = v.contiguous().view(-1, nk, d)
    batch = codes3.shape[0]
    block_m, block_n, block_d, num_warps = launch_config(d)
    grid = (triton.cdiv(nq, block_m) * triton.cdiv(d, block_d) * batch,)
    with device_guard(codes):
        _log_attn_v_kernel[grid](codes3, v3, out, nq, nk, d, int(v_zero_point),
                                 BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_D=block_d, num_warps=num_warps)
    return out


# -- ahead-of-time compile specs (compile_check) --------------------------------------------------

#: Argument types of ``_log_attn_v_kernel`` besides the ``i32`` sizes and zero point.
ARG_TYPES = dict(codes_ptr=U8, v_ptr=I8, out_ptr=I32)


def compile_specs(all_configs: bool = False):
    """Small, ViT and non-power-of-two head dims (one launch config per head dim)."""
    for head_dim in (8, 64, 80):
        block_m, block_n, block_d, warps = launch_config(head_dim)
        yield CompileSpec(f"log_attn_v D={head_dim}", _log_attn_v_kernel, ARG_TYPES,
                          dict(BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_D=block_d), warps)
