"""Gluon variant of ``int8_linear`` for sm_90: persistent tiles, a TMA ring, asynchronous wgmma.

Plain Triton waits for every int32-accumulator ``wgmma`` before the next K step
(``wgmma.wait_group 0``), so the tensor cores drain at each step. Gluon
(``triton.experimental.gluon``) states layouts, shared memory and synchronisation explicitly, and
``warpgroup_mma_wait(num_outstanding=1)`` keeps one wgmma group in flight while the next TMA load
is issued. Per program:

* a persistent loop over output tiles (grid = number of SMs, or twice that for the candidate
  small enough for two programs per SM; grouped ordering as the Triton kernel's), flattened with
  the K steps into one stream of (tile, k) steps, so the TMA ring of ``STAGES`` buffers runs on
  across tile boundaries (the next tile's first loads are in flight during this tile's epilogue);
* per step: wait for the step's mbarrier, an asynchronous ``wgmma`` (s8 x s8 -> s32), wait until
  at most one group is outstanding, then refill the buffer the previous group has released;
* after a tile's last step, the int32 epilogue of the Triton fast path (the same arithmetic:
  :mod:`.gemm` with ``FAST=True``) applied in the wgmma register layout, then a TMA store.

TMA handles the ragged edges: loads past ``M``, ``N`` or ``K`` read zeros, stores past ``M`` and
``N`` are dropped. It needs 16-byte aligned bases and row strides and unit column strides; the
launcher (``gemm.int8_linear``, with :func:`unsupported_reason` and :mod:`.variants`) checks those
and the fast path's precondition on the host, and uses the Triton kernel otherwise. Gluon has no interpreter: on a CPU this module is compiled for
sm_90 offline (``compile_check``, the static report); its bits are checked on a GPU.
"""

from __future__ import annotations

from ._gluon import HAVE_GLUON, gl, gluon

if HAVE_GLUON:
    from triton.experimental.gluon.language.nvidia.hopper import (
        fence_async_shared, mbarrier, tma, warpgroup_mma, warpgroup_mma_wait)

    from ._gluon import cta_barrier, float32_code

EPILOGUE_PLAIN, EPILOGUE_GELU, EPILOGUE_RESIDUAL = 1, 2, 3  # as gemm.EPILOGUE_*

#: Autotune candidates (BLOCK_M, BLOCK_N, BLOCK_K, num_warps, STAGES, CTAs per SM): one warp group
#: per 64 rows; each compiles for sm_90 without a spill under Triton 3.8 and 3.6 (128 x 256 x 64
#: spills). The last runs two programs per SM (80 KiB of shared memory and <= 256 registers per
#: thread of one warp group each), so one's epilogue overlaps the other's main loop: the
#: co-residency form of the ping-pong that two consumer warp groups in one program would give.
CANDIDATES = (
    (128, 128, 128, 8, 4, 1),
    (64, 128, 128, 4, 5, 1),
    (128, 128, 64, 8, 6, 1),
    (64, 128, 128, 4, 3, 2),
)


def shared_bytes(config) -> int:
    """Shared memory a program of this candidate allocates: the ring, the output tile, barriers."""
    bm, bn, bk, _, stages, _ = config
    return stages * (bm + bn) * bk + bm * bn + 8 * stages


if HAVE_GLUON:
    from fqvit_kernels import contract

    _E_GELU = gl.constexpr(EPILOGUE_GELU)
    _E_RESIDUAL = gl.constexpr(EPILOGUE_RESIDUAL)
    _GELU_DIRECTION_SHIFT = gl.constexpr(contract.GELU_DIRECTION_SHIFT)
    _GELU_STEP_SHIFT = gl.constexpr(contract.GELU_STEP_SHIFT)

    @gluon.jit
    def _tile_coords(tile, num_pid_m, num_pid_n, GROUP_M: gl.constexpr):
        """(pid_m, pid_n) of a tile in the Triton kernel's grouped order."""
        group_size = GROUP_M * num_pid_n
        first_m = (tile // group_size) * GROUP_M
        rows_in_group = gl.minimum(num_pid_m - first_m, GROUP_M)
        pid_m = first_m + (tile % group_size) % rows_in_group
        pid_n = (tile % group_size) // rows_in_group
        return pid_m, pid_n

    @gluon.jit
    def _issue_load(step, a_desc, b_desc, a_bufs, b_bufs, bars, pid, nprog, k_tiles, num_pid_m, num_pid_n,
                    STAGES: gl.constexpr, GROUP_M: gl.constexpr):
        """TMA loads of flattened step ``step`` (this program's tile ``step // k_tiles``) into
        ring slot ``step % STAGES``, completing on that slot's mbarrier."""
        BLOCK_M: gl.constexpr = a_desc.block_type.shape[0]
        BLOCK_N: gl.constexpr = b_desc.block_type.shape[0]
        BLOCK_K: gl.constexpr = a_desc.block_type.shape[1]
        tile = pid + (step // k_tiles) * nprog
        pid_m, pid_n = _tile_coords(tile, num_pid_m, num_pid_n, GROUP_M)
        k = (step % k_tiles) * BLOCK_K
        slot = step % STAGES
        mbarrier.expect(bars.index(slot), a_desc.block_type.nbytes + b_desc.block_type.nbytes)
        tma.async_copy_global_to_shared(a_desc, [pid_m * BLOCK_M, k], bars.index(slot), a_bufs.index(slot))
        tma.async_copy_global_to_shared(b_desc, [pid_n * BLOCK_N, k], bars.index(slot), b_bufs.index(slot))


    @gluon.jit
    def _epilogue(acc, off_m, off_n, M, N, bias_ptr, mult_ptr, shift_ptr, table_ptr, res_ptr, branch_mult_ptr,
                  res_mult_ptr, res_shift_ptr, stride_rm, output_zero_point, table_length, cell_bits,
                  residual_zero_point, final_zero_point, EPILOGUE: gl.constexpr, layout: gl.constexpr):
        """int8 codes of one int32 accumulator tile: gemm._gemm_kernel's FAST epilogue, op for op."""
        BLOCK_M: gl.constexpr = acc.shape[0]
        BLOCK_N: gl.constexpr = acc.shape[1]
        col_layout: gl.constexpr = gl.SliceLayout(0, layout)
        row_layout: gl.constexpr = gl.SliceLayout(1, layout)
        # Columns past N read column N - 1 (valid memory; TMA drops those outputs).
        cols = gl.minimum(off_n + gl.arange(0, BLOCK_N, layout=col_layout), N - 1)
        bias = gl.load(bias_ptr + cols)
        mult = gl.load(mult_ptr + cols)
        shift = gl.minimum(gl.maximum(gl.load(shift_ptr + cols), 33), 62)
        rounding = bias + (gl.full(bias.shape, 1, gl.int64, layout=col_layout) << (shift - 1).to(gl.int64))
        p = acc.to(gl.int64) * gl.expand_dims(mult.to(gl.int64), 0) + gl.expand_dims(rounding, 0)
        t = ((p >> 32).to(gl.int32) >> gl.expand_dims(shift - 32, 0)) + output_zero_point
        if EPILOGUE == _E_GELU:
            tc = gl.minimum(gl.maximum(t, -1), table_length << cell_bits).to(gl.int32)
            cell = gl.minimum(gl.maximum(tc, 0) >> cell_bits, table_length - 1)
            entry = gl.load(table_ptr + cell)  # an explicit layout: it stays in the wgmma registers
            below = (entry << 24) >> 24
            direction = ((entry >> _GELU_DIRECTION_SHIFT) & 3) - 1
            step_up = tc - (cell << cell_bits) >= (entry >> _GELU_STEP_SHIFT)
            out = (below + gl.where(step_up, direction, 0)).to(gl.int8)
        else:
            branch = gl.minimum(gl.maximum(t, -128), 127)
            if EPILOGUE == _E_RESIDUAL:
                rows = gl.minimum(off_m + gl.arange(0, BLOCK_M, layout=row_layout), M - 1)
                res_ptrs = res_ptr + gl.expand_dims(rows.to(gl.int64) * stride_rm, 1) + gl.expand_dims(cols, 0)
                residual = gl.load(res_ptrs)
                branch_mult = gl.load(branch_mult_ptr + cols)
                res_mult = gl.load(res_mult_ptr + cols)
                res_shift = gl.load(res_shift_ptr + cols)
                offset = -(output_zero_point * branch_mult.to(gl.int64) + residual_zero_point * res_mult.to(gl.int64))
                mixed = branch.to(gl.int64) * gl.expand_dims(branch_mult.to(gl.int64), 0) \
                    + residual.to(gl.int32).to(gl.int64) * gl.expand_dims(res_mult.to(gl.int64), 0) \
                    + gl.expand_dims(offset, 0)
                branch = float32_code(mixed, gl.expand_dims(res_shift, 0), final_zero_point)
            out = branch.to(gl.int8)
        return out

    @gluon.jit
    def _gluon_gemm_kernel(
        a_desc, b_desc, c_desc,
        bias_ptr, mult_ptr, shift_ptr, table_ptr,
        res_ptr, branch_mult_ptr, res_mult_ptr, res_shift_ptr,
        M, N, K, stride_rm,
        output_zero_point, table_length, cell_bits, residual_zero_point, final_zero_point,
        EPILOGUE: gl.constexpr, STAGES: gl.constexpr, GROUP_M: gl.constexpr,
    ):
        BLOCK_M: gl.constexpr = c_desc.block_type.shape[0]
        BLOCK_N: gl.constexpr = c_desc.block_type.shape[1]
        BLOCK_K: gl.constexpr = a_desc.block_type.shape[1]
        gl.static_assert(STAGES >= 2, "the ring refills the slot of the previous step: STAGES >= 2")
        # One warp group per 64 rows; Triton's s8 wgmma lowering takes N <= 128 per instruction.
        INSTR_N: gl.constexpr = 128 if BLOCK_N > 128 else BLOCK_N
        layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[gl.num_warps(), 1],
                                                         instr_shape=[16, INSTR_N, 32])
        pid = gl.program_id(0)
        nprog = gl.num_programs(0)
        num_pid_m = gl.cdiv(M, BLOCK_M)
        num_pid_n = gl.cdiv(N, BLOCK_N)
        k_tiles = gl.cdiv(K, BLOCK_K)
        my_tiles = gl.cdiv(num_pid_m * num_pid_n - pid, nprog)
        steps = my_tiles * k_tiles

        a_bufs = gl.allocate_shared_memory(a_desc.dtype, [STAGES] + a_desc.block_type.shape, a_desc.layout)
        b_bufs = gl.allocate_shared_memory(b_desc.dtype, [STAGES] + b_desc.block_type.shape, b_desc.layout)
        c_smem = gl.allocate_shared_memory(c_desc.dtype, c_desc.block_type.shape, c_desc.layout)
        bars = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
        for i in gl.static_range(STAGES):
            mbarrier.init(bars.index(i), count=1)
        fence_async_shared()

        for i in gl.static_range(STAGES - 1):  # prologue: STAGES - 1 steps in flight
            if i < steps:
                _issue_load(i, a_desc, b_desc, a_bufs, b_bufs, bars, pid, nprog, k_tiles, num_pid_m, num_pid_n,
                            STAGES, GROUP_M)

        acc = gl.zeros((BLOCK_M, BLOCK_N), dtype=gl.int32, layout=layout)
        for step in range(steps):
            slot = step % STAGES
            kk = step % k_tiles
            mbarrier.wait(bars.index(slot), phase=(step // STAGES) & 1)
            acc = warpgroup_mma(a_bufs.index(slot), b_bufs.index(slot).permute((1, 0)), acc, is_async=True)
            # At most one group in flight: group step - 1 is done, so its slot may be refilled.
            acc, _a, _b = warpgroup_mma_wait(num_outstanding=1, deps=(acc, a_bufs.index(slot), b_bufs.index(slot)))
            # Every warp group is past its wait before the refill is issued (by one thread). Triton's
            # barrier pass inserts this too (checked in the 3.8 PTX); stated here so it does not
            # depend on that pass.
            cta_barrier()
            refill = step + STAGES - 1
            if refill < steps:
                _issue_load(refill, a_desc, b_desc, a_bufs, b_bufs, bars, pid, nprog, k_tiles, num_pid_m,
                            num_pid_n, STAGES, GROUP_M)
            if kk == k_tiles - 1:
                acc = warpgroup_mma_wait(num_outstanding=0, deps=(acc,))
                pid_m, pid_n = _tile_coords(pid + (step // k_tiles) * nprog, num_pid_m, num_pid_n, GROUP_M)
                out = _epilogue(acc, pid_m * BLOCK_M, pid_n * BLOCK_N, M, N, bias_ptr, mult_ptr, shift_ptr,
                                table_ptr, res_ptr, branch_mult_ptr, res_mult_ptr, res_shift_ptr, stride_rm,
                                output_zero_point, table_length, cell_bits, residual_zero_point,
                                final_zero_point, EPILOGUE, layout)
                tma.store_wait(pendings=0)  # the previous tile's store has left c_smem ...
                cta_barrier()  # ... and every thread knows it before writing c_smem again
                c_smem.store(out)
                fence_async_shared()
                cta_barrier()  # every thread's part of the tile is in c_smem before one thread stores it
                tma.async_copy_shared_to_global(c_desc, [pid_m * BLOCK_M, pid_n * BLOCK_N], c_smem)
                acc = gl.zeros((BLOCK_M, BLOCK_N), dtype=gl.int32, layout=layout)
        tma.store_wait(pendings=0)
        for i in gl.static_range(STAGES):
            mbarrier.invalidate(bars.index(i))


# -- host side: eligibility, tuning, launch ---------------------------------------------------------

import os  # noqa: E402  (kept below the kernels, which are the point of this module)
from typing import Dict, Optional, Tuple  # noqa: E402

import torch  # noqa: E402
import triton  # noqa: E402

from ._common import device_guard, epilogue_operands, interpreting  # noqa: E402
from .spec import I8, I32, I64, CompileSpec  # noqa: E402

_GROUP_M = 8
_SMS: Dict[int, int] = {}
_TUNED: Dict[Tuple, Tuple[int, int, int, int, int, int]] = {}


def _tma_ready(t: torch.Tensor) -> bool:
    """TMA's requirements on a 2-D operand: unit last stride, 16-byte aligned base and row stride."""
    return t.dim() == 2 and t.stride(1) == 1 and t.data_ptr() % 16 == 0 and t.stride(0) % 16 == 0


def unsupported_reason(x: torch.Tensor, weight: torch.Tensor, residual: Optional[torch.Tensor] = None) -> Optional[str]:
    """Why this call cannot take the Gluon kernel (``None`` if it can). The epilogue's fast-path
    precondition (every shift >= 33) is checked by the caller, as for the Triton fast path."""
    if not HAVE_GLUON:
        return "this Triton has no triton.experimental.gluon"
    if interpreting():
        return "Gluon kernels do not run under TRITON_INTERPRET"
    if x.device.type != "cuda":
        return "not a CUDA tensor"
    if torch.cuda.get_device_capability(x.device) != (9, 0):
        return "not an sm_90 GPU (the kernel uses Hopper wgmma and TMA)"
    return layout_reason(x, weight, residual)


def layout_reason(x: torch.Tensor, weight: torch.Tensor, residual: Optional[torch.Tensor] = None) -> Optional[str]:
    """What TMA cannot address in these operands (``None``: all fine): it needs unit column
    strides and 16-byte aligned bases and row strides, of ``x [M, K]``, ``weight [N, K]`` and the
    dense output ``[M, N]`` (so K and N multiples of 16); the residual is read with plain loads."""
    if x.shape[1] == 0:
        return "K = 0 (TMA descriptors need non-empty dimensions)"
    if not (_tma_ready(x) and _tma_ready(weight)):
        return "x or weight not TMA-ready (unit last stride, 16-byte aligned base and row stride)"
    if weight.shape[0] % 16:
        return "N not a multiple of 16 (the output's row stride must be 16-byte aligned)"
    if residual is not None and residual.stride(1) != 1:
        return "residual has a non-unit column stride"
    return None


def _descriptor(t: torch.Tensor, block):
    from triton.experimental.gluon.nvidia.hopper import TensorDescriptor

    layout = gl.NVMMASharedLayout.get_default_for(list(block), gl.int8)
    return TensorDescriptor(t, list(t.shape), list(t.stride()), list(block), layout)


def persistent_grid(m: int, n: int, block_m: int, block_n: int, slots: int) -> Tuple[int]:
    """One program per resident slot (SMs x programs per SM), or per tile when there are fewer."""
    return (max(1, min(slots, triton.cdiv(m, block_m) * triton.cdiv(n, block_n))),)


def _sm_count(device: torch.device) -> int:
    index = device.index if device.index is not None else torch.cuda.current_device()
    if index not in _SMS:
        _SMS[index] = torch.cuda.get_device_properties(index).multi_processor_count
    return _SMS[index]


def _run(config, a, b, out, args, epilogue):
    bm, bn, bk, warps, stages, per_sm = config
    a_desc, b_desc, c_desc = _descriptor(a, (bm, bk)), _descriptor(b, (bn, bk)), _descriptor(out, (bm, bn))
    sms = _sm_count(a.device) if a.device.type == "cuda" else 132
    grid = persistent_grid(a.shape[0], b.shape[0], bm, bn, per_sm * sms)
    _gluon_gemm_kernel[grid](a_desc, b_desc, c_desc, *args, EPILOGUE=epilogue, STAGES=stages, GROUP_M=_GROUP_M,
                             num_warps=warps)


def _choose(key, run) -> Tuple[int, int, int, int, int, int]:
    """The candidate for this shape: the first with ``FQVIT_TRITON_SINGLE_CONFIG=1`` or under CUDA
    graph capture, else the fastest of :data:`CANDIDATES` by median CUDA-event time over five runs,
    timed once per key."""
    if key in _TUNED:
        return _TUNED[key]
    if torch.cuda.is_current_stream_capturing():
        return CANDIDATES[0]  # no timing inside a CUDA graph capture (and nothing remembered)
    if os.environ.get("FQVIT_TRITON_SINGLE_CONFIG", "0") not in ("", "0"):
        _TUNED[key] = CANDIDATES[0]
        return CANDIDATES[0]
    times = []
    for config in CANDIDATES:
        run(config)  # compile and warm up
        events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(5)]
        for start, end in events:
            start.record()
            run(config)
            end.record()
        torch.cuda.synchronize()
        times.append((sorted(s.elapsed_time(e) for s, e in events)[2], config))
    _TUNED[key] = min(times)[1]
    return _TUNED[key]


def launch(x, weight, out, epilogue, bias, multiplier, shift, output_zero_point, gelu_table=None,
           gelu_cell_bits=0, residual=None, residual_zero_point=0, branch_multiplier=None,
           residual_multiplier=None, residual_shift=None, final_zero_point=0, config=None):
    """Run the Gluon kernel into ``out`` (int8 ``[M, N]``); the arguments are ``gemm._launch``'s.

    The caller has checked :func:`unsupported_reason` and the fast-path precondition.
    """
    m, k = x.shape
    n = weight.shape[0]
    if m == 0:
        return out
    operands = epilogue_operands(out, bias, multiplier, shift, gelu_table, residual, branch_multiplier,
                                 residual_multiplier, residual_shift)
    res = operands[4]
    args = (*operands,
            m, n, k, res.stride(0),
            int(output_zero_point), gelu_table.numel() if gelu_table is not None else 1, int(gelu_cell_bits),
            int(residual_zero_point), int(final_zero_point))
    with device_guard(x):
        if config is None:
            config = _choose((m, n, k, epilogue, x.device.index), lambda c: _run(c, x, weight, out, args, epilogue))
        _run(config, x, weight, out, args, epilogue)
    return out


# -- ahead-of-time compile specs (compile_check, static report) ------------------------------------

def descriptor_type(block) -> str:
    """The signature string Triton gives a Gluon int8 ``TensorDescriptor`` with this block shape."""
    layout = gl.NVMMASharedLayout.get_default_for(list(block), gl.int8)
    return f"tensordesc<i8[{', '.join(str(b) for b in block)}],{layout!r}>"


def arg_types(block_m: int, block_n: int, block_k: int) -> Dict[str, str]:
    """Argument types of ``_gluon_gemm_kernel`` for one tile shape (the rest is ``i32``)."""
    return dict(a_desc=descriptor_type((block_m, block_k)), b_desc=descriptor_type((block_n, block_k)),
                c_desc=descriptor_type((block_m, block_n)), bias_ptr=I64, mult_ptr=I32, shift_ptr=I32,
                table_ptr=I32, res_ptr=I8, branch_mult_ptr=I32, res_mult_ptr=I32, res_shift_ptr=I32)


def compile_specs(all_configs: bool = False):
    """Each epilogue x candidate (the first only unless ``all_configs``); none without Gluon."""
    if not HAVE_GLUON:
        return
    for epilogue in (EPILOGUE_PLAIN, EPILOGUE_GELU, EPILOGUE_RESIDUAL):
        for bm, bn, bk, warps, stages, per_sm in CANDIDATES if all_configs else CANDIDATES[:1]:
            yield CompileSpec(f"gluon_gemm epilogue={epilogue} {bm}x{bn}x{bk} w{warps} s{stages} x{per_sm}", _gluon_gemm_kernel,
                              arg_types(bm, bn, bk), dict(EPILOGUE=epilogue, STAGES=stages, GROUP_M=_GROUP_M),
                              warps, 1)
