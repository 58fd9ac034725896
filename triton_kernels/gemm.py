"""int8 GEMMs: ``int8_matmul`` (int32 out) and ``int8_linear`` (fused requantization epilogues).

One kernel serves both ops. Each program computes a ``BLOCK_M x BLOCK_N`` output tile: the K loop
feeds int8 tiles of ``x [M, K]`` and ``weight [N, K]`` (read K-major, as Hopper's int8 ``wgmma``
wants both operands) to ``tl.dot(..., out_dtype=tl.int32)``; the epilogue then works in int64
exactly like :func:`fqvit_kernels.reference.int8_linear`:

* ``EPILOGUE_INT32``: store the int32 accumulator (``int8_matmul``);
* ``EPILOGUE_PLAIN``: ``clamp(round_shift(acc * m[n] + bias[n], s[n]) + zp)`` to int8 (int64 bias);
* ``EPILOGUE_GELU``: the GELU step table: ``t`` clamped to ``[-1, L << cell_bits]`` (same codes,
  int32), one gather of the cell's entry, then ``below + direction * (position >= step)``;
* ``EPILOGUE_RESIDUAL``: clamp the branch, add the re-scaled residual and requantize onto the
  next PTF grid with the per-channel shared shift, rounding like FQ-ViT's float32 quantizer
  (:func:`fqvit_kernels.reference.float32_code`).

So no int32 tensor reaches memory between a linear layer and its int8 consumer. M and N tails
are handled by wrapping the row/column offsets (the extra rows are computed and not stored), the
K tail by masked loads filling zeros (which add nothing to the dot product).
"""

from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

from ._intmath import float32_code, float32_code_emulated, gather_i32, round_shift
from fqvit_kernels import checks, contract

from . import gluon_gemm, variants
from ._common import configs, device_guard, epilogue_operands, fast_paths_allowed, interpreting
from .spec import I8, I32, I64, CompileSpec

EPILOGUE_INT32 = 0
EPILOGUE_PLAIN = 1
EPILOGUE_GELU = 2
EPILOGUE_RESIDUAL = 3
# The same names inside the kernel (a jit function reads module globals only as constexprs).
_E_INT32 = tl.constexpr(EPILOGUE_INT32)
_E_GELU = tl.constexpr(EPILOGUE_GELU)
_E_RESIDUAL = tl.constexpr(EPILOGUE_RESIDUAL)
# The GELU step-table entry's fields (contract.py; reference.gelu_table_lookup).
_GELU_DIRECTION_SHIFT = tl.constexpr(contract.GELU_DIRECTION_SHIFT)
_GELU_STEP_SHIFT = tl.constexpr(contract.GELU_STEP_SHIFT)

# Hopper: BLOCK_M a multiple of 64 and num_warps a multiple of 4 (one warpgroup per 64 rows) let
# Triton lower tl.dot to wgmma with s8 operands. Candidates per epilogue, each compiled for sm_90
# without a register spill under Triton 3.8 and 3.6 (``python -m triton_kernels.compile_check
# --report``; a test checks it). The GELU epilogue's table gather is inline PTX (gather_i32), so it
# takes wide tiles too; 128x256x64 spills there (32 B with Triton 3.8).
def _config(bm, bn, bk, warps, stages):
    return triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "GROUP_M": 8}, num_warps=warps,
                         num_stages=stages)


_WIDE_TILES = [_config(64, 128, 128, 4, 3), _config(64, 256, 128, 8, 3), _config(128, 128, 128, 8, 3),
               _config(128, 256, 64, 8, 3)]
_EPILOGUE_CONFIGS = {
    EPILOGUE_INT32: _WIDE_TILES,
    EPILOGUE_PLAIN: _WIDE_TILES,
    EPILOGUE_GELU: [_config(64, 128, 128, 4, 3), _config(64, 256, 128, 8, 3), _config(128, 128, 128, 8, 3),
                    _config(64, 128, 128, 8, 3)],
    EPILOGUE_RESIDUAL: [_config(64, 128, 128, 4, 3), _config(64, 256, 128, 8, 3), _config(128, 128, 128, 8, 3),
                        _config(64, 128, 128, 8, 3)],
}
_GPU_CONFIGS = []  # the union, in first-seen order (the autotuner's list; pruned per epilogue)
for _candidates in _EPILOGUE_CONFIGS.values():
    for _c in _candidates:
        if not any(str(_c) == str(g) for g in _GPU_CONFIGS):
            _GPU_CONFIGS.append(_c)


def configs_for(epilogue: int):
    """The autotune candidates of one epilogue (at most 4)."""
    return _EPILOGUE_CONFIGS[epilogue]


def _prune(configs_, named_args, **kwargs):
    allowed = {str(c) for c in _EPILOGUE_CONFIGS[kwargs["EPILOGUE"]]}
    return [c for c in configs_ if str(c) in allowed]


# Under the interpreter the cost is per program: one large tile covers the small test shapes.
_INTERPRETER_CONFIG = triton.Config({"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_K": 64, "GROUP_M": 8},
                                    num_warps=4, num_stages=1)
#: The tile :func:`gemm_ptx` compiles (one of the autotune candidates).
PTX_CONFIG = dict(BLOCK_M=64, BLOCK_N=128, BLOCK_K=128, GROUP_M=8, num_warps=4, num_stages=3)


@triton.jit
def _gemm_kernel(
    a_ptr, b_ptr, out_ptr,
    bias_ptr, mult_ptr, shift_ptr, table_ptr,
    res_ptr, branch_mult_ptr, res_mult_ptr, res_shift_ptr,
    M, N, K,
    stride_am, stride_ak, stride_bn, stride_bk, stride_om, stride_on, stride_rm, stride_rn,
    output_zero_point, table_length, cell_bits, residual_zero_point, final_zero_point,
    EPILOGUE: tl.constexpr, FAST: tl.constexpr, EVEN_K: tl.constexpr, OFFSETS_64: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):
    pid = tl.program_id(0)
    num_pid_m = tl.cdiv(M, BLOCK_M)
    num_pid_n = tl.cdiv(N, BLOCK_N)
    # Grouped ordering: GROUP_M row tiles share the weight tiles while they are in L2.
    group_size = GROUP_M * num_pid_n
    group_id = pid // group_size
    first_m = group_id * GROUP_M
    rows_in_group = tl.minimum(num_pid_m - first_m, GROUP_M)
    pid_m = first_m + (pid % group_size) % rows_in_group
    pid_n = (pid % group_size) // rows_in_group

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    # Wrapped row/column indices keep the loads in bounds without masks; stores are masked.
    rows = offs_m % M
    cols = offs_n % N
    if OFFSETS_64:  # some tensor spans 2**31 elements or more
        rows = rows.to(tl.int64)
        cols = cols.to(tl.int64)
    offs_k = tl.arange(0, BLOCK_K)
    a_ptrs = a_ptr + rows[:, None] * stride_am + offs_k[None, :] * stride_ak
    b_ptrs = b_ptr + offs_k[:, None] * stride_bk + cols[None, :] * stride_bn

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.int32)
    for k0 in range(0, K, BLOCK_K):
        if EVEN_K:  # K % BLOCK_K == 0: no load masks
            a = tl.load(a_ptrs)
            b = tl.load(b_ptrs)
        else:
            k_left = K - k0
            a = tl.load(a_ptrs, mask=offs_k[None, :] < k_left, other=0)
            b = tl.load(b_ptrs, mask=offs_k[:, None] < k_left, other=0)
        acc = tl.dot(a, b, acc, out_dtype=tl.int32)
        a_ptrs += BLOCK_K * stride_ak
        b_ptrs += BLOCK_K * stride_bk

    out_mask = (offs_m[:, None] < M) & (offs_n[None, :] < N)
    if OFFSETS_64:
        out_ptrs = out_ptr + offs_m.to(tl.int64)[:, None] * stride_om + offs_n.to(tl.int64)[None, :] * stride_on
    else:
        out_ptrs = out_ptr + offs_m[:, None] * stride_om + offs_n[None, :] * stride_on
    if EPILOGUE == _E_INT32:
        tl.store(out_ptrs, acc, mask=out_mask)
    else:
        bias = tl.load(bias_ptr + cols)
        mult = tl.load(mult_ptr + cols)
        shift = tl.load(shift_ptr + cols)
        if FAST:
            # Every shift in [33, 62] (checked on the host): floor(p / 2**s) is the high word of p
            # shifted by s - 32 >= 1, so t fits int32 with any zero point below 2**30. The
            # rounding half rides in the per-column int64 constant: per output one widening
            # multiply-add, one 32-bit shift and the zero point.
            shift = tl.minimum(tl.maximum(shift, 33), 62)
            rounding = bias + (tl.full(bias.shape, 1, tl.int64) << (shift - 1).to(tl.int64))
            # (Both factors widened right at the product, so it compiles to one 32x32->64 multiply.)
            p = acc.to(tl.int64) * mult[None, :].to(tl.int64) + rounding[None, :]
            t = ((p >> 32).to(tl.int32) >> (shift - 32)[None, :]) + output_zero_point
        else:
            t = round_shift(acc.to(tl.int64) * mult.to(tl.int64)[None, :] + bias[None, :], shift.to(tl.int64)[None, :]) \
                + output_zero_point
        if EPILOGUE == _E_GELU:
            # Below 0 and past the table every t has the same code: clamping keeps it int32.
            tc = tl.minimum(tl.maximum(t, -1), table_length << cell_bits).to(tl.int32)
            cell = tl.minimum(tl.maximum(tc, 0) >> cell_bits, table_length - 1)
            entry = gather_i32(table_ptr + cell)  # cell is clamped into the table: no mask
            below = (entry << 24) >> 24  # the int8 in bits 0..7, sign-extended
            direction = ((entry >> _GELU_DIRECTION_SHIFT) & 3) - 1
            out = (below + tl.where(tc - (cell << cell_bits) >= (entry >> _GELU_STEP_SHIFT), direction, 0)).to(tl.int8)
        else:
            branch = tl.minimum(tl.maximum(t, -128), 127)
            if EPILOGUE == _E_RESIDUAL:
                res_ptrs = res_ptr + rows[:, None] * stride_rm + cols[None, :] * stride_rn
                residual = tl.load(res_ptrs)
                branch_mult = tl.load(branch_mult_ptr + cols)
                res_mult = tl.load(res_mult_ptr + cols)
                res_shift = tl.load(res_shift_ptr + cols)
                if FAST:
                    # The zero points folded into one per-column constant: two widening
                    # multiply-adds, then FQ-ViT's float32 rounding in float32 hardware.
                    offset = -(output_zero_point * branch_mult.to(tl.int64) + residual_zero_point * res_mult.to(tl.int64))
                    from_branch = branch.to(tl.int64) * branch_mult[None, :].to(tl.int64)
                    from_residual = residual.to(tl.int32).to(tl.int64) * res_mult[None, :].to(tl.int64)
                    mixed = from_branch + from_residual + offset[None, :]
                    branch = float32_code(mixed, res_shift[None, :], final_zero_point)
                else:
                    mixed = (branch - output_zero_point) * branch_mult.to(tl.int64)[None, :] \
                        + (residual.to(tl.int64) - residual_zero_point) * res_mult.to(tl.int64)[None, :]
                    branch = float32_code_emulated(mixed, res_shift[None, :], final_zero_point)
            out = branch.to(tl.int8)
        tl.store(out_ptrs, out, mask=out_mask)


_gemm_tuned = triton.autotune(configs(_GPU_CONFIGS, _INTERPRETER_CONFIG), key=["M", "N", "K", "EPILOGUE", "FAST"],
                              prune_configs_by={"early_config_prune": _prune})(
    triton.heuristics({"EVEN_K": lambda args: args["K"] % args["BLOCK_K"] == 0})(_gemm_kernel))

#: Smallest shift of the int32 epilogue (its high-word form needs ``shift - 32 >= 1``).
FAST_MIN_SHIFT = 33


def fast_epilogue(shift: torch.Tensor) -> bool:
    """Whether ``int8_linear`` with these per-channel shifts takes the int32 epilogue.

    Needs every shift >= :data:`FAST_MIN_SHIFT` (conversion gives 41-46 on ViT layers), read once
    per shift tensor and remembered until it changes; ``False`` when fast paths are switched off
    (``FQVIT_TRITON_FALLBACK=1``) or the values cannot be read (CUDA graph capture of a new tensor).
    """
    if not fast_paths_allowed() or shift.numel() == 0:
        return False
    return bool(checks.cached_fact(shift, ("min_shift", FAST_MIN_SHIFT),
                                    lambda: int(shift.min()) >= FAST_MIN_SHIFT))


def _needs_64bit_offsets(*tensors: Optional[torch.Tensor]) -> bool:
    """True when an element offset of some operand, or of a padded row/column of the last tile
    (up to 256 past the end), reaches 2**31: int32 address arithmetic would wrap."""
    for t in tensors:
        if t is not None and t.numel() and sum((n + 255) * abs(st) for n, st in zip(t.shape, t.stride())) >= 2**31:
            return True
    return False


def _grid(meta, m, n):
    return (triton.cdiv(m, meta["BLOCK_M"]) * triton.cdiv(n, meta["BLOCK_N"]),)


def _launch(a, b, out, epilogue, bias=None, multiplier=None, shift=None, output_zero_point=0,
            gelu_table=None, gelu_cell_bits=0, residual=None, residual_zero_point=0, branch_multiplier=None,
            residual_multiplier=None, residual_shift=None, final_zero_point=0):
    m, k = a.shape
    n = b.shape[0]
    if m == 0:
        return out
    operands = epilogue_operands(out, bias, multiplier, shift, gelu_table, residual, branch_multiplier,
                                 residual_multiplier, residual_shift)
    res = operands[4]
    with device_guard(a):
        _gemm_tuned[lambda meta: _grid(meta, m, n)](
            a, b, out, *operands,
            m, n, k,
            a.stride(0), a.stride(1), b.stride(0), b.stride(1), out.stride(0), out.stride(1),
            res.stride(0), res.stride(1),
            int(output_zero_point), gelu_table.numel() if gelu_table is not None else 1, int(gelu_cell_bits),
            int(residual_zero_point), int(final_zero_point),
            EPILOGUE=epilogue, FAST=epilogue != EPILOGUE_INT32 and fast_epilogue(shift),
            OFFSETS_64=_needs_64bit_offsets(a, b, out, residual),
        )
    return out


def int8_matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Launcher of ``fqvit::int8_matmul``: int8 ``a [M, K]`` @ ``b [N, K]``ᵀ → int32 ``[M, N]``."""
    out = torch.empty((a.shape[0], b.shape[0]), dtype=torch.int32, device=a.device)
    return _launch(a, b, out, EPILOGUE_INT32)


def int8_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, multiplier: torch.Tensor,
                shift: torch.Tensor, output_zero_point: int, gelu_table: Optional[torch.Tensor] = None,
                gelu_cell_bits: int = 0, residual: Optional[torch.Tensor] = None, residual_zero_point: int = 0,
                branch_multiplier: Optional[torch.Tensor] = None,
                residual_multiplier: Optional[torch.Tensor] = None,
                residual_shift: Optional[torch.Tensor] = None, final_zero_point: int = 0) -> torch.Tensor:
    """Launcher of ``fqvit::int8_linear`` (arguments as the op schema); int8 ``[M, N]``."""
    out = torch.empty((x.shape[0], weight.shape[0]), dtype=torch.int8, device=x.device)
    if gelu_table is not None:
        epilogue = EPILOGUE_GELU
    elif residual is not None:
        epilogue = EPILOGUE_RESIDUAL
    else:
        epilogue = EPILOGUE_PLAIN
    launch = _launch
    if _gluon_applies(x, weight, residual, shift):
        launch = gluon_gemm.launch
    return launch(x, weight, out, epilogue, bias, multiplier, shift, output_zero_point, gelu_table,
                  gelu_cell_bits, residual, residual_zero_point, branch_multiplier, residual_multiplier,
                  residual_shift, final_zero_point)


def _gluon_applies(x, weight, residual, shift) -> bool:
    """Whether this call runs the Gluon kernel: selected (:mod:`.variants`), supported, and on the
    int32 fast path (the only epilogue it has)."""
    return (variants.selected("int8_linear", x.device) == "gluon"
            and gluon_gemm.unsupported_reason(x, weight, residual) is None and fast_epilogue(shift))


def gemm_ptx(m: int = 512, n: int = 512, k: int = 512, device: str = "cuda") -> str:
    """PTX of the GEMM kernel compiled for the current GPU with :data:`PTX_CONFIG` (CUDA only).

    On sm_90 it should contain ``wgmma`` instructions with ``.s8`` operands.
    """
    if interpreting():
        raise RuntimeError("gemm_ptx needs a real GPU (TRITON_INTERPRET is set)")
    a = torch.zeros((m, k), dtype=torch.int8, device=device)
    b = torch.zeros((n, k), dtype=torch.int8, device=device)
    out = torch.empty((m, n), dtype=torch.int32, device=device)
    meta = dict(PTX_CONFIG)
    grid = (triton.cdiv(m, meta["BLOCK_M"]) * triton.cdiv(n, meta["BLOCK_N"]),)
    with device_guard(a):
        compiled = _gemm_kernel[grid](
            a, b, out, out, out, out, out, out, out, out, out, m, n, k,
            a.stride(0), a.stride(1), b.stride(0), b.stride(1), out.stride(0), out.stride(1),
            out.stride(0), out.stride(1), 0, 1, 0, 0, 0, EPILOGUE=EPILOGUE_INT32, FAST=False,
            EVEN_K=k % meta["BLOCK_K"] == 0, OFFSETS_64=False, **meta)
    return compiled.asm["ptx"]


# -- ahead-of-time compile specs (compile_check, static report) ----------------------------------

#: Argument types of ``_gemm_kernel`` besides the ``i32`` sizes, strides and zero points.
ARG_TYPES = dict(a_ptr=I8, b_ptr=I8, out_ptr=I8, bias_ptr=I64, mult_ptr=I32, shift_ptr=I32, table_ptr=I32,
                 res_ptr=I8, branch_mult_ptr=I32, res_mult_ptr=I32, res_shift_ptr=I32)


def compile_specs(all_configs: bool = False):
    """Each epilogue x autotune candidate (the first only unless ``all_configs``): the general path
    with everything general (K masks, 64-bit offsets) and, for the requantizing epilogues, the fast
    one as at ViT shapes."""
    for epilogue in (EPILOGUE_INT32, EPILOGUE_PLAIN, EPILOGUE_GELU, EPILOGUE_RESIDUAL):
        candidates = configs_for(epilogue)
        types = dict(ARG_TYPES, out_ptr=I32 if epilogue == EPILOGUE_INT32 else I8)
        for cfg in candidates if all_configs else candidates[:1]:
            for fast in ((False,) if epilogue == EPILOGUE_INT32 else (False, True)):
                consts = dict(cfg.kwargs, EPILOGUE=epilogue, FAST=fast, EVEN_K=fast, OFFSETS_64=not fast)
                label = (f"gemm epilogue={epilogue}{' fast' if fast else ''} "
                         f"{cfg.kwargs['BLOCK_M']}x{cfg.kwargs['BLOCK_N']}x{cfg.kwargs['BLOCK_K']}")
                yield CompileSpec(label, _gemm_kernel, types, consts, cfg.num_warps, cfg.num_stages)
