"""Gluon variant of ``int_attention`` for sm_90 and N <= 1024: the score tiles computed once.

The Triton kernel (:mod:`.attention`) makes three passes over the key tiles and recomputes the
score tile (an int8 ``q kᵀ`` dot plus its float32 requantization) in each, because plain Triton
cannot keep the scores anywhere but registers. This kernel, one program per (64-query tile,
batch x head) with one warp group, keeps the requantized int8 scores of the whole row block in
shared memory (``64 x N`` bytes, 64 KiB at N = 1024):

1. per key tile: the K tile is staged in shared memory, ``q kᵀ`` runs as an s8 ``wgmma``, the
   zero-point terms and FQ-ViT's float32 requantization give the int8 scores, stored in shared
   memory; the row maximum is taken over the stored scores (equal to the Triton kernel's
   requantized maximum accumulator: the requantization is monotone);
2. per stored tile: ``E = Σ_j exp_table[max + 128, max - s_j]`` in int64;
3. per stored tile: the 4-bit LIS code of each score by FQ-ViT's float32 ``round(fl32(E) / e)``
   (the fast path of :mod:`.attention`; the launcher takes this kernel only where that path's
   precondition holds), the weights ``0x8000 >> code`` split into negated int8 halves and two s8
   ``wgmma`` against the transposed V tile, and the row sum of the weights for the zero point;

then the epilogue of the Triton kernel. Every arithmetic step is the Triton fast path's, in the
same order and types, so the bits are the same; the GPU tests compare both with the reference.
Gluon has no interpreter: on a CPU this is compiled for sm_90 (compile_check, static report).
"""

from __future__ import annotations

from ._gluon import HAVE_GLUON, gl, gluon

if HAVE_GLUON:
    from triton.experimental.gluon.language.nvidia.hopper import fence_async_shared, warpgroup_mma, warpgroup_mma_wait

    from ._gluon import cta_barrier, float32_code

#: Query rows per program (one warp group), keys per tile, and the largest sequence it takes.
BLOCK_M, BLOCK_N, MAX_N = 64, 64, 1024
NUM_WARPS = 4

if HAVE_GLUON:
    @gluon.jit
    def _lis_code4_float32(exps, total_f32):
        """attention._lis_code4_float32: the 4-bit code (16: masked) from ``round(fl32(E) / e)``."""
        e = gl.where(exps > 0, exps, 1).to(gl.float32)
        q = gl.div_rn(gl.expand_dims(total_f32, 1) + gl.zeros_like(e), e)
        r = gl.where(q < 8388608.0, (q + 8388608.0) - 8388608.0, q)
        bits = r.to(gl.int32, bitcast=True)
        code = ((bits >> 23) - 127) + ((bits >> 22) & 1)
        return gl.where((exps > 0) & (code < 16), code, 16)

    @gluon.jit
    def _tile_exps(s_smem, tile, row_max, table_ptr, N, BLOCK_N: gl.constexpr, layout: gl.constexpr):
        """LIS exponents of one stored score tile (int64; keys past N get 0), as attention._key_tile_exps."""
        s = s_smem.index(tile).load(layout).to(gl.int32)
        keys = tile * BLOCK_N + gl.arange(0, BLOCK_N, layout=gl.SliceLayout(0, layout))
        ok = gl.expand_dims(keys < N, 0) & (s < 128)  # (the second term only broadcasts the mask)
        index = gl.expand_dims((row_max + 128) * 256 + row_max, 1) - s
        return gl.load(table_ptr + index, mask=ok, other=0)

    @gluon.jit
    def _gluon_attention_kernel(
        q_ptr, k_ptr, v_ptr, out_ptr, table_ptr,
        H, N, D,
        stride_qb, stride_qh, stride_qn, stride_kb, stride_kh, stride_kn,
        stride_vb, stride_vh, stride_vn, stride_ob, stride_oh, stride_on,
        zero_point, score_mult, score_shift, score_zero_point, out_mult, out_shift, out_zero_point,
        BLOCK_D: gl.constexpr, N_TILES: gl.constexpr,
    ):
        BM: gl.constexpr = 64
        BN: gl.constexpr = 64
        # Registers: loads row-major (16 bytes per thread), the two wgmma accumulators.
        load_layout: gl.constexpr = gl.BlockedLayout([1, 16], [8, 4], [gl.num_warps(), 1], [1, 0])
        s_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[gl.num_warps(), 1],
                                                           instr_shape=[16, BN, 32])
        o_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[gl.num_warps(), 1],
                                                           instr_shape=[16, BLOCK_D, 32])
        # Shared memory: wgmma operands (both K-major, as s8 wgmma needs) and the stored scores.
        SW_D: gl.constexpr = 128 if BLOCK_D >= 128 else BLOCK_D
        op_d: gl.constexpr = gl.NVMMASharedLayout(swizzle_byte_width=SW_D, element_bitwidth=8, rank=2)
        op_n: gl.constexpr = gl.NVMMASharedLayout(swizzle_byte_width=BN, element_bitwidth=8, rank=2)
        plain: gl.constexpr = gl.SwizzledSharedLayout(1, 1, 1, order=[1, 0])
        q_smem = gl.allocate_shared_memory(gl.int8, [BM, BLOCK_D], op_d)
        k_smem = gl.allocate_shared_memory(gl.int8, [BN, BLOCK_D], op_d)
        vt_smem = gl.allocate_shared_memory(gl.int8, [BLOCK_D, BN], op_n)
        hi_smem = gl.allocate_shared_memory(gl.int8, [BM, BN], op_n)
        lo_smem = gl.allocate_shared_memory(gl.int8, [BM, BN], op_n)
        s_smem = gl.allocate_shared_memory(gl.int8, [N_TILES, BM, BN], plain)

        pid = gl.program_id(0)
        num_m = gl.cdiv(N, BM)
        pid_m = pid % num_m
        pid_bh = pid // num_m
        b = (pid_bh // H).to(gl.int64)
        h = (pid_bh % H).to(gl.int64)
        q_base = q_ptr + b * stride_qb + h * stride_qh
        k_base = k_ptr + b * stride_kb + h * stride_kh
        v_base = v_ptr + b * stride_vb + h * stride_vh

        ld_rows: gl.constexpr = gl.SliceLayout(1, load_layout)
        ld_cols: gl.constexpr = gl.SliceLayout(0, load_layout)
        offs_d = gl.arange(0, BLOCK_D, layout=ld_cols)
        d_ok = offs_d < D
        offs_m = pid_m * BM + gl.arange(0, BM, layout=ld_rows)
        q = gl.load(q_base + gl.expand_dims(offs_m.to(gl.int64) * stride_qn, 1) + gl.expand_dims(offs_d, 0),
                    mask=gl.expand_dims(offs_m < N, 1) & gl.expand_dims(d_ok, 0), other=0)
        q_corr = D * zero_point * zero_point - zero_point * gl.sum(q.to(gl.int32), axis=1)
        q_corr = gl.convert_layout(q_corr, gl.SliceLayout(1, s_layout))
        q_smem.store(q)

        # Pass 1: every score tile once, stored as int8; the row maximum over valid keys.
        s_cols: gl.constexpr = gl.SliceLayout(0, s_layout)
        row_max = gl.full((BM,), -129, gl.int32, layout=gl.SliceLayout(1, s_layout))
        for tile in range(N_TILES):
            keys = tile * BN + gl.arange(0, BN, layout=ld_rows)
            kt = gl.load(k_base + gl.expand_dims(keys.to(gl.int64) * stride_kn, 1) + gl.expand_dims(offs_d, 0),
                         mask=gl.expand_dims(keys < N, 1) & gl.expand_dims(d_ok, 0), other=0)
            k_sum = gl.convert_layout(gl.sum(kt.to(gl.int32), axis=1), s_cols)
            cta_barrier()  # the previous tile's wgmma has read k_smem (each warp waited for it)
            k_smem.store(kt)
            fence_async_shared()
            cta_barrier()
            acc = warpgroup_mma(q_smem, k_smem.permute((1, 0)), gl.zeros((BM, BN), gl.int32, layout=s_layout))
            acc = acc + gl.expand_dims(q_corr, 1) - zero_point * gl.expand_dims(k_sum, 0)
            s = float32_code(acc.to(gl.int64) * score_mult, score_shift, score_zero_point)
            s_smem.index(tile).store(s.to(gl.int8))
            key_ok = gl.expand_dims(tile * BN + gl.arange(0, BN, layout=s_cols) < N, 0)
            row_max = gl.maximum(row_max, gl.max(gl.where(key_ok, s, -129), axis=1))

        # Pass 2: the int64 exponent sum.
        total = gl.zeros((BM,), gl.int64, layout=gl.SliceLayout(1, s_layout))
        for tile in range(N_TILES):
            total += gl.sum(_tile_exps(s_smem, tile, row_max, table_ptr, N, BN, s_layout), axis=1)

        # Pass 3: codes, weights, exact P@V on tensor cores.
        total_f32 = total.to(gl.float32)
        acc_hi = gl.zeros((BM, BLOCK_D), gl.int32, layout=o_layout)
        acc_lo = gl.zeros((BM, BLOCK_D), gl.int32, layout=o_layout)
        weight_sum = gl.zeros((BM,), gl.int32, layout=gl.SliceLayout(1, s_layout))
        for tile in range(N_TILES):
            e = _tile_exps(s_smem, tile, row_max, table_ptr, N, BN, s_layout)
            code = _lis_code4_float32(e, total_f32)
            weight = 0x8000 >> gl.minimum(code, 16)
            weight_sum += gl.sum(weight, axis=1)
            keys = tile * BN + gl.arange(0, BN, layout=ld_rows)
            v = gl.load(v_base + gl.expand_dims(keys.to(gl.int64) * stride_vn, 1) + gl.expand_dims(offs_d, 0),
                        mask=gl.expand_dims(keys < N, 1) & gl.expand_dims(d_ok, 0), other=0)
            cta_barrier()  # the previous tile's wgmmas have read hi/lo/vt
            hi_smem.store((-(weight >> 8)).to(gl.int8))
            lo_smem.store((-(weight & 0xFF)).to(gl.int8))
            vt_smem.store(gl.permute(v, (1, 0)))
            fence_async_shared()
            cta_barrier()
            acc_hi = warpgroup_mma(hi_smem, vt_smem.permute((1, 0)), acc_hi, is_async=True)
            acc_lo = warpgroup_mma(lo_smem, vt_smem.permute((1, 0)), acc_lo, is_async=True)
            acc_hi, acc_lo = warpgroup_mma_wait(num_outstanding=0, deps=(acc_hi, acc_lo))

        weight_sum = gl.convert_layout(weight_sum, gl.SliceLayout(1, o_layout))
        context = -(acc_hi * 256 + acc_lo) - zero_point * gl.expand_dims(weight_sum, 1)
        out = float32_code(context.to(gl.int64) * out_mult, out_shift, out_zero_point).to(gl.int8)
        o_rows = pid_m * BM + gl.arange(0, BM, layout=gl.SliceLayout(1, o_layout))
        o_cols = gl.arange(0, BLOCK_D, layout=gl.SliceLayout(0, o_layout))
        out_ptrs = out_ptr + b * stride_ob + h * stride_oh + gl.expand_dims(o_rows.to(gl.int64) * stride_on, 1) \
            + gl.expand_dims(o_cols, 0)
        gl.store(out_ptrs, out, mask=gl.expand_dims(o_rows < N, 1) & gl.expand_dims(o_cols < D, 0))


# -- host side: eligibility, launch ----------------------------------------------------------------

from typing import Optional  # noqa: E402  (kept below the kernels, which are the point of this module)

import torch  # noqa: E402
import triton  # noqa: E402

from ._common import device_guard, interpreting, pow2_at_least  # noqa: E402
from .spec import I8, I64, CompileSpec  # noqa: E402

#: Largest head dim: 128-wide heads spill (160 B with Triton 3.8); ViT-S/B/L heads are 64.
MAX_HEAD_DIM = 64


def shape_reason(n: int, head_dim: int) -> Optional[str]:
    """What this kernel cannot take in these sizes (``None``: it can)."""
    if n > MAX_N:
        return f"N = {n} > {MAX_N} (the row block's scores must fit in shared memory)"
    if head_dim > MAX_HEAD_DIM:
        return f"head dim {head_dim} > {MAX_HEAD_DIM}"
    return None


def unsupported_reason(q: torch.Tensor) -> Optional[str]:
    """Why a call with these queries cannot take the Gluon kernel (``None`` if it can). The fast
    path's precondition on the exponent table is checked by the caller."""
    if not HAVE_GLUON:
        return "this Triton has no triton.experimental.gluon"
    if interpreting():
        return "Gluon kernels do not run under TRITON_INTERPRET"
    if q.device.type != "cuda":
        return "not a CUDA tensor"
    if torch.cuda.get_device_capability(q.device) != (9, 0):
        return "not an sm_90 GPU (the kernel uses Hopper wgmma)"
    return shape_reason(q.shape[2], q.shape[3])


def launch(q, k, v, out, qkv_zero_point, score_multiplier, score_shift, score_zero_point, exp_table,
           out_multiplier, out_shift, out_zero_point):
    """Run the kernel into ``out``; the other arguments are ``attention.int_attention``'s, in its
    order (q, k, v with unit last strides), the caller having checked :func:`unsupported_reason` and the fast-path precondition."""
    batch, heads, n, d = q.shape
    grid = (triton.cdiv(n, BLOCK_M) * batch * heads,)
    with device_guard(q):
        _gluon_attention_kernel[grid](
            q, k, v, out, exp_table.contiguous(), heads, n, d,
            q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
            v.stride(0), v.stride(1), v.stride(2), out.stride(0), out.stride(1), out.stride(2),
            int(qkv_zero_point), int(score_multiplier), int(score_shift), int(score_zero_point),
            int(out_multiplier), int(out_shift), int(out_zero_point),
            BLOCK_D=pow2_at_least(d, 32), N_TILES=triton.cdiv(n, BLOCK_N), num_warps=NUM_WARPS)
    return out


# -- ahead-of-time compile specs (compile_check, static report) ------------------------------------

ARG_TYPES = dict(q_ptr=I8, k_ptr=I8, v_ptr=I8, out_ptr=I8, table_ptr=I64)


def compile_specs(all_configs: bool = False):
    """Head dims 32 and 64 at N = 197, 577 and 1024 (the first only unless ``all_configs``)."""
    if not HAVE_GLUON:
        return
    cases = [(64, 197), (32, 197), (64, 577), (64, 1024)]
    for head_dim, n in cases if all_configs else cases[:1]:
        consts = dict(BLOCK_D=pow2_at_least(head_dim, 32), N_TILES=triton.cdiv(n, BLOCK_N))
        yield CompileSpec(f"gluon_attention D={head_dim} N={n}", _gluon_attention_kernel, ARG_TYPES, consts,
                          NUM_WARPS, 1)
