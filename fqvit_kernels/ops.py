"""The ``torch.ops.fqvit`` operators: schemas, input validation, fake kernels, default kernels.

Every op is declared once here with :func:`torch.library.custom_op`. Its default kernel (any
device) validates the inputs and runs the integer reference in :mod:`fqvit_kernels.reference`;
:mod:`fqvit_kernels.backends` replaces the CPU kernel by the C++ extension and the CUDA kernel by
Triton when those are available. The fake kernels run the same metadata validation, so shape
and dtype errors surface identically under ``torch.compile``.

Validation raises ``TypeError`` (wrong dtype / Python type) or ``ValueError`` (rank, shape, device,
layout, out-of-range values), always naming the argument. Checks that read tensor *values*
(parameter ranges, overflow headroom, NaN in float inputs) can be switched off with
:func:`value_checks` once the parameters are known good, e.g. inside a converted block; the switch
is per thread. Kernels stay free of undefined behaviour for any parameter values (they clamp shift
amounts and wrap integer overflow), so skipped checks can only cost meaningful results, never memory
safety.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Iterator, Optional

import torch
from torch.library import custom_op

from . import checks as chk
from . import reference as ref
from .params import MAX_VARIANCE_OFFSET, max_linear_bias

__all__ = [
    "OP_NAMES",
    "attention_output",
    "value_checks",
    "value_checks_enabled",
    "int8_matmul",
    "int8_linear",
    "ptf_layernorm",
    "ptf_layernorm_dyadic",
    "log_int_softmax",
    "log_attn_v",
    "attention_scores",
    "int_attention",
    "int_attention_uniform",
    "quantize",
    "dequantize",
]

#: Limits documented in docs/numerics.md (each keeps every intermediate inside its integer type),
#: owned by :mod:`fqvit_kernels.contract` and re-exported here.
from .contract import (  # noqa: E402,F401
    INT32_MAX, INT64_MAX, MAX_GELU_CELL_BITS, MAX_GELU_TABLE_LENGTH, MAX_GEMM_K, MAX_HEAD_DIM, MAX_LIS_ROW_SUM,
    MAX_LN_CHANNELS, MAX_PTF_ALPHA, MAX_UNIFORM_EXP, MAX_UNIFORM_KEYS,
)

# Per thread: a block that switches the checks off for its own calls must not switch them off for
# another thread calling at the same time.
_STATE = threading.local()


@contextlib.contextmanager
def value_checks(enabled: bool) -> Iterator[None]:
    """Context manager turning the value-reading checks on or off in this thread (metadata checks
    always run)."""
    previous = getattr(_STATE, "enabled", True)
    _STATE.enabled = bool(enabled)
    try:
        yield
    finally:
        _STATE.enabled = previous


def value_checks_enabled() -> bool:
    """Whether value-reading checks run now in this thread: not while compiling or capturing a CUDA
    graph. (Parameter tensors checked once before capture stay checked: see ``checks.once``.)
    """
    if not getattr(_STATE, "enabled", True) or torch.compiler.is_compiling():
        return False
    # is_initialized, not is_available: a graph capture needs an initialised CUDA context, and
    # is_available costs a driver/NVML query per call (six calls per op: ~10 us on a CPU-only host).
    return not (torch.cuda.is_initialized() and torch.cuda.is_current_stream_capturing())


def _multiplier(name: str, t: torch.Tensor, device, n: int, signed: bool = False) -> None:
    chk.tensor(name, t, torch.int32, 1, device)
    chk.shape(name, t, (n,))
    if value_checks_enabled() and not signed:
        chk.values_in_range(name, t, 0, INT32_MAX)


def _shift(name: str, t: torch.Tensor, device, n: int, max_shift: int = 62) -> None:
    chk.tensor(name, t, torch.int32, 1, device)
    chk.shape(name, t, (n,))
    if value_checks_enabled():
        chk.values_in_range(name, t, 1, max_shift)


def _scalar_requant(prefix: str, multiplier: int, shift: int) -> None:
    """Scalar requantization of the attention ops (FQ-ViT's float32 rounding, shift <= 52)."""
    chk.int_in_range(f"{prefix}_multiplier", multiplier, 0, INT32_MAX)
    chk.int_in_range(f"{prefix}_shift", shift, 1, ref.MAX_FLOAT32_REQUANT_SHIFT)


# ----------------------------------------------------------------------------------------------
# int8_matmul
# ----------------------------------------------------------------------------------------------


def _check_gemm_operands(a: torch.Tensor, b: torch.Tensor, a_name: str, b_name: str):
    chk.tensor(a_name, a, torch.int8, 2)
    chk.tensor(b_name, b, torch.int8, 2, a.device)
    chk.nonempty(a_name, a, (1,))
    chk.nonempty(b_name, b, (0,))
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"{a_name} has K={a.shape[1]} but {b_name} has K={b.shape[1]} (both are [*, K])")
    if a.shape[1] > MAX_GEMM_K:
        raise ValueError(f"K={a.shape[1]} exceeds {MAX_GEMM_K}: the int32 accumulator could overflow")
    return a.shape[0], b.shape[0], a.shape[1]


@custom_op("fqvit::int8_matmul", mutates_args=())
def int8_matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """int8 ``a [M, K]`` @ int8 ``b [N, K]``ᵀ → int32 ``[M, N]``, exact (``K <= 131071``)."""
    _check_gemm_operands(a, b, "a", "b")
    return ref.int8_matmul(a, b)


@int8_matmul.register_fake
def _(a, b):
    m, n, _ = _check_gemm_operands(a, b, "a", "b")
    return a.new_empty((m, n), dtype=torch.int32)


# ----------------------------------------------------------------------------------------------
# int8_linear
# ----------------------------------------------------------------------------------------------


def _check_gelu_table(gelu_table, gelu_cell_bits, device) -> None:
    chk.tensor("gelu_table", gelu_table, torch.int32, 1, device)
    chk.int_in_range("gelu_cell_bits", gelu_cell_bits, 0, MAX_GELU_CELL_BITS)
    length = gelu_table.numel()
    if not 1 <= length <= MAX_GELU_TABLE_LENGTH:
        raise ValueError(f"gelu_table must have 1..{MAX_GELU_TABLE_LENGTH} entries, got {length}")
    if length << gelu_cell_bits > 1 << 30:
        raise ValueError(f"gelu_table covers {length} cells of 2**{gelu_cell_bits}: more than 2**30 pre-GELU steps")
    if value_checks_enabled():
        chk.once(gelu_table, ("gelu_table", gelu_cell_bits), lambda: _check_gelu_table_values(gelu_table, gelu_cell_bits))


def _check_gelu_table_values(table: torch.Tensor, cell_bits: int) -> None:
    entry = table.to(torch.int64)
    below = ((entry & 0xFF) ^ 0x80) - 0x80
    direction = ((entry >> ref.GELU_DIRECTION_SHIFT) & 3) - 1
    step = entry >> ref.GELU_STEP_SHIFT
    bad = (entry < 0) | (direction > 1) | (step > (1 << cell_bits)) | (below + direction < -128) \
        | (below + direction > 127)
    if bool(bad.any()):
        i = int(torch.nonzero(bad)[0])
        raise ValueError(f"gelu_table[{i}] = {int(entry[i])} is not a step-table entry (below int8, direction "
                         f"-1..1 with an int8 result, step 0..2**gelu_cell_bits; see reference.gelu_table_lookup)")


def _check_int8_linear(x, weight, bias, multiplier, shift, output_zero_point, gelu_table, gelu_cell_bits, residual,
                       residual_zero_point, branch_multiplier, residual_multiplier, residual_shift,
                       final_zero_point):
    m, n, k = _check_gemm_operands(x, weight, "x", "weight")
    dev = x.device
    chk.tensor("bias", bias, torch.int64, 1, dev)
    chk.shape("bias", bias, (n,))
    _multiplier("multiplier", multiplier, dev, n)
    _shift("shift", shift, dev, n)
    chk.int_in_range("output_zero_point", output_zero_point, -(2**31), INT32_MAX)
    if value_checks_enabled():
        headroom = max_linear_bias(k)
        chk.values_in_range("bias", bias, -headroom, headroom)
    if gelu_table is not None:
        if residual is not None:
            raise ValueError("gelu_table and residual are exclusive epilogues (fc1 uses the table, proj/fc2 the residual)")
        _check_gelu_table(gelu_table, gelu_cell_bits, dev)
        # With a table, output_zero_point is the pre-GELU grid's zero point: the code of the value 0,
        # which lies inside the staircase the table spans (params.gelu_table puts it there).
        span = gelu_table.numel() << gelu_cell_bits
        if not 0 <= output_zero_point <= span:
            raise ValueError(f"output_zero_point (the pre-GELU zero point) must be in [0, {span}] for a gelu_table of "
                             f"{gelu_table.numel()} cells of 2**{gelu_cell_bits}, got {output_zero_point}")
    else:
        if gelu_cell_bits != 0:
            raise ValueError(f"gelu_cell_bits={gelu_cell_bits!r} needs a gelu_table")
        chk.zero_point("output_zero_point", output_zero_point)
    residual_parts = (branch_multiplier, residual_multiplier, residual_shift)
    if residual is None:
        if any(p is not None for p in residual_parts):
            raise ValueError("branch_multiplier, residual_multiplier and residual_shift need a residual tensor")
    else:
        chk.tensor("residual", residual, torch.int8, 2, dev)
        chk.shape("residual", residual, (m, n))
        if any(p is None for p in residual_parts):
            raise ValueError("residual needs branch_multiplier, residual_multiplier and residual_shift")
        chk.zero_point("residual_zero_point", residual_zero_point)
        chk.zero_point("final_zero_point", final_zero_point)
        _multiplier("branch_multiplier", branch_multiplier, dev, n)
        _multiplier("residual_multiplier", residual_multiplier, dev, n)
        _shift("residual_shift", residual_shift, dev, n, ref.MAX_FLOAT32_REQUANT_SHIFT)
    return m, n


@custom_op("fqvit::int8_linear", mutates_args=())
def int8_linear(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    multiplier: torch.Tensor,
    shift: torch.Tensor,
    output_zero_point: int,
    gelu_table: Optional[torch.Tensor] = None,
    gelu_cell_bits: int = 0,
    residual: Optional[torch.Tensor] = None,
    residual_zero_point: int = 0,
    branch_multiplier: Optional[torch.Tensor] = None,
    residual_multiplier: Optional[torch.Tensor] = None,
    residual_shift: Optional[torch.Tensor] = None,
    final_zero_point: int = 0,
) -> torch.Tensor:
    """Quantized linear with fused requantization (+ GELU step table or residual); see reference."""
    _check_int8_linear(x, weight, bias, multiplier, shift, output_zero_point, gelu_table, gelu_cell_bits, residual,
                       residual_zero_point, branch_multiplier, residual_multiplier, residual_shift,
                       final_zero_point)
    return ref.int8_linear(x, weight, bias, multiplier, shift, output_zero_point, gelu_table, gelu_cell_bits,
                           residual, residual_zero_point, branch_multiplier, residual_multiplier, residual_shift,
                           final_zero_point)


@int8_linear.register_fake
def _(x, weight, bias, multiplier, shift, output_zero_point, gelu_table=None, gelu_cell_bits=0, residual=None,
      residual_zero_point=0, branch_multiplier=None, residual_multiplier=None, residual_shift=None,
      final_zero_point=0):
    m, n = _check_int8_linear(x, weight, bias, multiplier, shift, output_zero_point, gelu_table, gelu_cell_bits,
                              residual, residual_zero_point, branch_multiplier, residual_multiplier,
                              residual_shift, final_zero_point)
    return x.new_empty((m, n), dtype=torch.int8)


# ----------------------------------------------------------------------------------------------
# ptf_layernorm
# ----------------------------------------------------------------------------------------------


def _check_ptf_layernorm(x, input_zero_point, ptf_alpha, weight_multiplier, bias, shift, output_zero_point,
                         variance_offset=0):
    c = _check_layernorm_input(x, input_zero_point, ptf_alpha, output_zero_point)
    chk.int_in_range("variance_offset", variance_offset, 0, MAX_VARIANCE_OFFSET)
    dev = x.device
    _multiplier("weight_multiplier", weight_multiplier, dev, c, signed=True)
    chk.tensor("bias", bias, torch.int64, 1, dev)
    chk.shape("bias", bias, (c,))
    _shift("shift", shift, dev, c)
    if value_checks_enabled():
        chk.values_in_range("bias", bias, -(2**60), 2**60)
    return x.shape


@custom_op("fqvit::ptf_layernorm", mutates_args=())
def ptf_layernorm(
    x: torch.Tensor,
    input_zero_point: int,
    ptf_alpha: torch.Tensor,
    weight_multiplier: torch.Tensor,
    bias: torch.Tensor,
    shift: torch.Tensor,
    output_zero_point: int,
    variance_offset: int = 0,
) -> torch.Tensor:
    """Exact integer LayerNorm of PTF-quantized int8 rows ``[M, C]`` → int8 ``[M, C]``; see reference."""
    _check_ptf_layernorm(x, input_zero_point, ptf_alpha, weight_multiplier, bias, shift, output_zero_point,
                         variance_offset)
    return ref.ptf_layernorm(x, input_zero_point, ptf_alpha, weight_multiplier, bias, shift, output_zero_point,
                             variance_offset)


@ptf_layernorm.register_fake
def _(x, input_zero_point, ptf_alpha, weight_multiplier, bias, shift, output_zero_point, variance_offset=0):
    _check_ptf_layernorm(x, input_zero_point, ptf_alpha, weight_multiplier, bias, shift, output_zero_point,
                         variance_offset)
    return torch.empty_like(x)


def _check_layernorm_input(x, input_zero_point, ptf_alpha, output_zero_point) -> int:
    chk.tensor("x", x, torch.int8, 2)
    chk.nonempty("x", x, (1,))
    chk.contiguous("x", x)
    c = x.shape[1]
    if c > MAX_LN_CHANNELS:
        raise ValueError(f"x has C={c} channels; the LayerNorm ops support at most {MAX_LN_CHANNELS}")
    chk.zero_point("input_zero_point", input_zero_point)
    chk.zero_point("output_zero_point", output_zero_point)
    chk.tensor("ptf_alpha", ptf_alpha, torch.int32, 1, x.device)
    chk.shape("ptf_alpha", ptf_alpha, (c,))
    if value_checks_enabled():
        chk.values_in_range("ptf_alpha", ptf_alpha, 0, MAX_PTF_ALPHA)
    return c


def _check_ptf_layernorm_dyadic(x, input_zero_point, ptf_alpha, gamma_multiplier, gamma_shift, beta,
                                output_zero_point):
    c = _check_layernorm_input(x, input_zero_point, ptf_alpha, output_zero_point)
    dev = x.device
    chk.tensor("gamma_multiplier", gamma_multiplier, torch.int32, 1, dev)
    chk.shape("gamma_multiplier", gamma_multiplier, (c,))
    chk.tensor("gamma_shift", gamma_shift, torch.int32, 1, dev)
    chk.shape("gamma_shift", gamma_shift, (c,))
    chk.tensor("beta", beta, torch.int64, 1, dev)
    chk.shape("beta", beta, (c,))
    if value_checks_enabled():
        chk.values_in_range("gamma_multiplier", gamma_multiplier, -INT32_MAX, INT32_MAX)
        chk.once(gamma_multiplier, "normalised", lambda: _check_normalised_multipliers(gamma_multiplier))
        chk.values_in_range("gamma_shift", gamma_shift, ref.LN_DYADIC_MIN_GAMMA_SHIFT, ref.LN_DYADIC_MAX_GAMMA_SHIFT)
        chk.values_in_range("beta", beta, -(2**62), 2**62)
    return x.shape


def _check_normalised_multipliers(t: torch.Tensor) -> None:
    magnitude = t.to(torch.int64).abs()
    bad = (magnitude != 0) & (magnitude < 2**30)
    if bool(bad.any()):
        raise ValueError(f"gamma_multiplier values must be 0 or have |value| in [2**30, 2**31) (31-bit mantissas), "
                         f"got {int(t[torch.nonzero(bad)[0]])}")


@custom_op("fqvit::ptf_layernorm_dyadic", mutates_args=())
def ptf_layernorm_dyadic(
    x: torch.Tensor,
    input_zero_point: int,
    ptf_alpha: torch.Tensor,
    gamma_multiplier: torch.Tensor,
    gamma_shift: torch.Tensor,
    beta: torch.Tensor,
    output_zero_point: int,
) -> torch.Tensor:
    """FQ-ViT's integer LayerNorm (8-bit dyadic ``M / 2**N`` factor) of PTF int8 rows; see reference."""
    _check_ptf_layernorm_dyadic(x, input_zero_point, ptf_alpha, gamma_multiplier, gamma_shift, beta,
                                output_zero_point)
    return ref.ptf_layernorm_dyadic(x, input_zero_point, ptf_alpha, gamma_multiplier, gamma_shift, beta,
                                    output_zero_point)


@ptf_layernorm_dyadic.register_fake
def _(x, input_zero_point, ptf_alpha, gamma_multiplier, gamma_shift, beta, output_zero_point):
    _check_ptf_layernorm_dyadic(x, input_zero_point, ptf_alpha, gamma_multiplier, gamma_shift, beta,
                                output_zero_point)
    return torch.empty_like(x)


# ----------------------------------------------------------------------------------------------
# log_int_softmax, log_attn_v, attention_scores, int_attention
# ----------------------------------------------------------------------------------------------


def _check_exp_table(exp_table: torch.Tensor, device, row_length: int) -> None:
    chk.tensor("exp_table", exp_table, torch.int64, 2, device)
    chk.shape("exp_table", exp_table, (256, 256))
    if value_checks_enabled():
        chk.values_in_range("exp_table", exp_table, 0, INT64_MAX)
        chk.once(exp_table, ("exp_table", row_length), lambda: _check_exp_table_values(exp_table, row_length))


def _check_exp_table_values(exp_table: torch.Tensor, row_length: int) -> None:
    if not bool(torch.equal(ref.round_to_float32(exp_table), exp_table.to(torch.int64))):
        raise ValueError("exp_table entries must be float32-representable integers (at most 24 significant bits), "
                         "as FQ-ViT's float32 exponents are (see params.lis_exp_table)")
    top = int(exp_table.max())
    if top * row_length > MAX_LIS_ROW_SUM:
        raise ValueError(
            f"exp_table max {top} times {row_length} keys overflows int64 (the row sum and its float32 "
            "rounding must stay below 2**63): the score scale is too small for this sequence length "
            "(see docs/numerics.md)"
        )
    if int(exp_table[:, 0].min()) <= 0:
        raise ValueError("exp_table[:, 0] (the row maximum's own exponent) must be > 0")


def _check_log_int_softmax(scores, exp_table, bits):
    chk.tensor("scores", scores, torch.int8)
    if scores.dim() < 1:
        raise ValueError("scores must have rank >= 1 (softmax runs along the last dim)")
    chk.nonempty("scores", scores, (-1,))
    _check_exp_table(exp_table, scores.device, scores.shape[-1])
    chk.int_in_range("bits", bits, 1, 8)


@custom_op("fqvit::log_int_softmax", mutates_args=())
def log_int_softmax(scores: torch.Tensor, exp_table: torch.Tensor, bits: int = 4) -> torch.Tensor:
    """FQ-ViT Log-Int-Softmax along the last dim: int8 scores → uint8 codes (255 = masked)."""
    _check_log_int_softmax(scores, exp_table, bits)
    return ref.log_int_softmax(scores, exp_table, bits)


@log_int_softmax.register_fake
def _(scores, exp_table, bits=4):
    _check_log_int_softmax(scores, exp_table, bits)
    return torch.empty_like(scores, dtype=torch.uint8)


def _check_log_attn_v(codes, v, v_zero_point):
    chk.tensor("codes", codes, torch.uint8)
    chk.tensor("v", v, torch.int8, None, codes.device)
    if codes.dim() < 2 or v.dim() != codes.dim():
        raise ValueError(f"codes [..., Nq, Nk] and v [..., Nk, D] must have the same rank >= 2, "
                         f"got {tuple(codes.shape)} and {tuple(v.shape)}")
    if codes.shape[:-2] != v.shape[:-2] or codes.shape[-1] != v.shape[-2]:
        raise ValueError(f"codes {tuple(codes.shape)} and v {tuple(v.shape)} do not match as [..., Nq, Nk] @ [..., Nk, D]")
    chk.nonempty("codes", codes, (-1,))
    chk.nonempty("v", v, (-1,))
    chk.zero_point("v_zero_point", v_zero_point)
    if value_checks_enabled() and chk._readable(codes) and codes.numel():
        # |out| <= 255 * sum_j 2**(15 - k_ij); LIS codes keep that sum below 3 * 2**15.
        weight_sum = ref._lis_weights(codes).sum(dim=-1).max()
        if int(weight_sum) * 255 > INT32_MAX:
            raise ValueError("codes give attention weights summing past 2**31 / 255: not LIS codes "
                             "(sum_j 2**-k must stay below 256), the int32 output would overflow")
    return (*codes.shape[:-1], v.shape[-1])


@custom_op("fqvit::log_attn_v", mutates_args=())
def log_attn_v(codes: torch.Tensor, v: torch.Tensor, v_zero_point: int) -> torch.Tensor:
    """``sum_j (v_j - zp) * 2**(15 - k_ij)``: log2-coded attention times int8 V → int32."""
    _check_log_attn_v(codes, v, v_zero_point)
    return ref.log_attn_v(codes, v, v_zero_point)


@log_attn_v.register_fake
def _(codes, v, v_zero_point):
    return v.new_empty(_check_log_attn_v(codes, v, v_zero_point), dtype=torch.int32)


def _check_qk(q, k, names=("q", "k")):
    chk.tensor(names[0], q, torch.int8)
    chk.tensor(names[1], k, torch.int8, None, q.device)
    if q.dim() < 2 or k.dim() != q.dim():
        raise ValueError(f"{names[0]} and {names[1]} must have the same rank >= 2, got {tuple(q.shape)} and {tuple(k.shape)}")
    if q.shape[:-2] != k.shape[:-2] or q.shape[-1] != k.shape[-1]:
        raise ValueError(f"{names[0]} {tuple(q.shape)} and {names[1]} {tuple(k.shape)} must share batch dims and head dim")
    chk.nonempty(names[0], q, range(q.dim()))
    chk.nonempty(names[1], k, range(k.dim()))
    if q.shape[-1] > MAX_HEAD_DIM:
        raise ValueError(f"head dim {q.shape[-1]} exceeds {MAX_HEAD_DIM}: q·k could overflow int32")


def _check_attention_scores(q, k, qkv_zero_point, score_multiplier, score_shift, score_zero_point):
    _check_qk(q, k)
    chk.zero_point("qkv_zero_point", qkv_zero_point)
    chk.zero_point("score_zero_point", score_zero_point)
    _scalar_requant("score", score_multiplier, score_shift)
    return (*q.shape[:-1], k.shape[-2])


@custom_op("fqvit::attention_scores", mutates_args=())
def attention_scores(q: torch.Tensor, k: torch.Tensor, qkv_zero_point: int, score_multiplier: int,
                     score_shift: int, score_zero_point: int) -> torch.Tensor:
    """int8 attention scores ``[..., Nq, Nk]`` on the LIS input grid (FQ-ViT ``qact_attn1``)."""
    _check_attention_scores(q, k, qkv_zero_point, score_multiplier, score_shift, score_zero_point)
    return ref.attention_scores(q, k, qkv_zero_point, score_multiplier, score_shift, score_zero_point)


@attention_scores.register_fake
def _(q, k, qkv_zero_point, score_multiplier, score_shift, score_zero_point):
    out_shape = _check_attention_scores(q, k, qkv_zero_point, score_multiplier, score_shift, score_zero_point)
    return q.new_empty(out_shape, dtype=torch.int8)


def _check_int_attention(q, k, v, qkv_zero_point, score_multiplier, score_shift, score_zero_point,
                         exp_table, out_multiplier, out_shift, out_zero_point):
    for name, t in (("q", q), ("k", k), ("v", v)):
        chk.tensor(name, t, torch.int8, 4, q.device if name != "q" else None)
        chk.last_dim_contiguous(name, t)
    if not q.shape == k.shape == v.shape:
        raise ValueError(f"q, k, v must share one shape [B, H, N, D], got {tuple(q.shape)}, "
                         f"{tuple(k.shape)}, {tuple(v.shape)}")
    _check_attention_scores(q, k, qkv_zero_point, score_multiplier, score_shift, score_zero_point)
    if exp_table is not None:  # (None: the caller checks its own kind of table)
        _check_exp_table(exp_table, q.device, q.shape[2])
    _scalar_requant("out", out_multiplier, out_shift)
    chk.zero_point("out_zero_point", out_zero_point)
    return q.shape


def attention_output(q: torch.Tensor) -> torch.Tensor:
    """An empty int8 output for int_attention: shape [B, H, N, D], memory [B, N, H, D] (ready for the
    proj GEMM); the C++ and Triton backends allocate it this way, as the fake kernel says."""
    b, h, n, d = q.shape
    return q.new_empty((b, n, h, d), dtype=torch.int8).transpose(1, 2)


@custom_op("fqvit::int_attention", mutates_args=())
def int_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    qkv_zero_point: int,
    score_multiplier: int,
    score_shift: int,
    score_zero_point: int,
    exp_table: torch.Tensor,
    out_multiplier: int,
    out_shift: int,
    out_zero_point: int,
) -> torch.Tensor:
    """Fused integer attention (scores → 4-bit LIS → shift P@V → requant) of int8 ``[B, H, N, D]``."""
    _check_int_attention(q, k, v, qkv_zero_point, score_multiplier, score_shift, score_zero_point,
                         exp_table, out_multiplier, out_shift, out_zero_point)
    return ref.int_attention(q, k, v, qkv_zero_point, score_multiplier, score_shift, score_zero_point,
                             exp_table, out_multiplier, out_shift, out_zero_point)


@int_attention.register_fake
def _(q, k, v, qkv_zero_point, score_multiplier, score_shift, score_zero_point, exp_table,
      out_multiplier, out_shift, out_zero_point):
    _check_int_attention(q, k, v, qkv_zero_point, score_multiplier, score_shift, score_zero_point,
                         exp_table, out_multiplier, out_shift, out_zero_point)
    return attention_output(q)


def _check_uniform_exp_table(exp_table: torch.Tensor, device) -> None:
    chk.tensor("exp_table", exp_table, torch.int64, 1, device)
    chk.shape("exp_table", exp_table, (256,))
    if value_checks_enabled():
        chk.values_in_range("exp_table", exp_table, 0, MAX_UNIFORM_EXP)
        chk.once(exp_table, "uniform exp_table", lambda: _check_uniform_exp_head(exp_table))


def _check_uniform_exp_head(exp_table: torch.Tensor) -> None:
    if int(exp_table[0]) <= 0:
        raise ValueError("exp_table[0] (the row maximum's own exponent) must be > 0")


def _check_int_attention_uniform(q, k, v, qkv_zero_point, score_multiplier, score_shift, score_zero_point,
                                 exp_table, inv_softmax_multiplier, inv_softmax_shift, softmax_zero_point,
                                 out_multiplier, out_shift, out_zero_point):
    _check_int_attention(q, k, v, qkv_zero_point, score_multiplier, score_shift, score_zero_point, None,
                         out_multiplier, out_shift, out_zero_point)
    n = q.shape[2]
    if n > MAX_UNIFORM_KEYS:
        raise ValueError(f"sequence length {n} exceeds {MAX_UNIFORM_KEYS}: the int32 context "
                         "sum_j (code - zp)(v - zp) could overflow (docs/numerics.md)")
    _check_uniform_exp_table(exp_table, q.device)
    chk.int_in_range("inv_softmax_multiplier", inv_softmax_multiplier, 1, INT32_MAX)
    chk.int_in_range("inv_softmax_shift", inv_softmax_shift, 1, 62)
    # 2 * E * 2**s with E <= N * 2**20 must stay below 2**62 (docs/numerics.md).
    if n << (MAX_UNIFORM_EXP.bit_length() + inv_softmax_shift) > 2**62:
        raise ValueError(f"inv_softmax_shift={inv_softmax_shift} with {n} keys overflows int64 in the softmax "
                         f"division: at most {62 - MAX_UNIFORM_EXP.bit_length() - (n - 1).bit_length()} "
                         "(a softmax scale far below 1/255?)")
    chk.int_in_range("softmax_zero_point", softmax_zero_point, 0, 255)
    return q.shape


@custom_op("fqvit::int_attention_uniform", mutates_args=())
def int_attention_uniform(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    qkv_zero_point: int,
    score_multiplier: int,
    score_shift: int,
    score_zero_point: int,
    exp_table: torch.Tensor,
    inv_softmax_multiplier: int,
    inv_softmax_shift: int,
    softmax_zero_point: int,
    out_multiplier: int,
    out_shift: int,
    out_zero_point: int,
) -> torch.Tensor:
    """Fused integer attention with a uniform uint8 softmax (scores → exp table → uint8 codes →
    exact P@V → requant) of int8 ``[B, H, N, D]``; FQ-ViT's 8/8/8 setting (no LIS)."""
    args = (q, k, v, qkv_zero_point, score_multiplier, score_shift, score_zero_point, exp_table,
            inv_softmax_multiplier, inv_softmax_shift, softmax_zero_point, out_multiplier, out_shift, out_zero_point)
    _check_int_attention_uniform(*args)
    return ref.int_attention_uniform(*args)


@int_attention_uniform.register_fake
def _(q, k, v, qkv_zero_point, score_multiplier, score_shift, score_zero_point, exp_table,
      inv_softmax_multiplier, inv_softmax_shift, softmax_zero_point, out_multiplier, out_shift, out_zero_point):
    _check_int_attention_uniform(q, k, v, qkv_zero_point, score_multiplier, score_shift, score_zero_point,
                                 exp_table, inv_softmax_multiplier, inv_softmax_shift, softmax_zero_point,
                                 out_multiplier, out_shift, out_zero_point)
    return attention_output(q)


# ----------------------------------------------------------------------------------------------
# quantize / dequantize (model boundary)
# ----------------------------------------------------------------------------------------------

_FLOAT_TYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def _check_scale(scale: torch.Tensor, x: torch.Tensor) -> None:
    chk.tensor("scale", scale, torch.float32, None, x.device)
    channels = x.shape[-1] if x.dim() else 1
    if scale.numel() != 1 and (scale.dim() != 1 or scale.numel() != channels):
        raise ValueError(f"scale must have one value or one per channel ({channels}), got shape {tuple(scale.shape)}")
    if value_checks_enabled():
        chk.positive_finite("scale", scale)


def _check_quantize(x, scale, zero_point):
    chk.tensor("x", x, _FLOAT_TYPES)
    _check_scale(scale, x)
    chk.zero_point("zero_point", zero_point)
    if value_checks_enabled():
        chk.finite("x", x)


@custom_op("fqvit::quantize", mutates_args=())
def quantize(x: torch.Tensor, scale: torch.Tensor, zero_point: int) -> torch.Tensor:
    """Float → int8 like FQ-ViT's uint8 quantizer (stored as code - 128); per-tensor or PTF scale."""
    _check_quantize(x, scale, zero_point)
    return ref.quantize(x, scale, zero_point)


@quantize.register_fake
def _(x, scale, zero_point):
    _check_quantize(x, scale, zero_point)
    return torch.empty_like(x, dtype=torch.int8)


def _check_dequantize(x, scale, zero_point):
    chk.tensor("x", x, torch.int8)
    _check_scale(scale, x)
    chk.zero_point("zero_point", zero_point)


@custom_op("fqvit::dequantize", mutates_args=())
def dequantize(x: torch.Tensor, scale: torch.Tensor, zero_point: int) -> torch.Tensor:
    """int8 → float32 ``(x - zero_point) * scale``; per-tensor or per-channel (last dim) scale."""
    _check_dequantize(x, scale, zero_point)
    return ref.dequantize(x, scale, zero_point)


@dequantize.register_fake
def _(x, scale, zero_point):
    _check_dequantize(x, scale, zero_point)
    return torch.empty_like(x, dtype=torch.float32)


#: Every op of the ``fqvit`` namespace, by name.
OPS = {
    "int8_matmul": int8_matmul,
    "int8_linear": int8_linear,
    "ptf_layernorm": ptf_layernorm,
    "ptf_layernorm_dyadic": ptf_layernorm_dyadic,
    "log_int_softmax": log_int_softmax,
    "log_attn_v": log_attn_v,
    "attention_scores": attention_scores,
    "int_attention": int_attention,
    "int_attention_uniform": int_attention_uniform,
    "quantize": quantize,
    "dequantize": dequantize,
}
OP_NAMES = tuple(OPS)
