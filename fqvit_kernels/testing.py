"""Random but realistic inputs for every op, shared by the tests and the benchmarks.

Each ``*_case`` function draws float scales the way a calibrated ViT would have them, converts
them with :mod:`fqvit_kernels.params`, and returns an :class:`OpCase` whose ``args`` are the op's
positional arguments. The float quantities behind the integer parameters are kept in
``floats`` so tests can compare against the float operation an op replaces.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, Tuple

import torch

from . import params, reference

__all__ = [
    "OpCase",
    "linear_case",
    "matmul_case",
    "layernorm_case",
    "layernorm_dyadic_case",
    "random_step_table",
    "scores_case",
    "attention_case",
    "attention_uniform_case",
    "quantize_case",
    "ptf_activation",
    "small_cases",
    "assert_equal",
    "tensor_bytes",
]


@dataclasses.dataclass
class OpCase:
    """Positional ``args`` for ``torch.ops.fqvit.<name>`` plus the floats they were derived from."""

    name: str
    args: Tuple[Any, ...]
    floats: Dict[str, Any] = dataclasses.field(default_factory=dict)

    def to(self, device) -> "OpCase":
        moved = tuple(a.to(device) if isinstance(a, torch.Tensor) else a for a in self.args)
        return OpCase(self.name, moved, self.floats)

    def run(self, fn=None):
        """Call ``fn`` (default ``torch.ops.fqvit.<name>``) on the arguments."""
        if fn is None:
            fn = getattr(torch.ops.fqvit, self.name)
        return fn(*self.args)


def _uniform(gen: torch.Generator, lo: float, hi: float, size=()) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(size, generator=gen, dtype=torch.float64)


def _int8(gen: torch.Generator, *shape) -> torch.Tensor:
    return torch.randint(-128, 128, shape, generator=gen, dtype=torch.int8)


def _zero_point(gen: torch.Generator) -> int:
    return int(torch.randint(-128, 128, (), generator=gen))


def matmul_case(m: int, n: int, k: int, gen: torch.Generator) -> OpCase:
    return OpCase("int8_matmul", (_int8(gen, m, k), _int8(gen, n, k)))


def random_step_table(gen: torch.Generator, length: int, cell_bits: int) -> torch.Tensor:
    """A valid but arbitrary GELU step table (``reference.gelu_table_lookup``): random codes,
    directions and step positions, including steps at 0 and at ``2**cell_bits`` (never taken)."""
    below = torch.randint(-127, 127, (length,), generator=gen)
    direction = torch.randint(-1, 2, (length,), generator=gen)
    step = torch.randint(0, (1 << cell_bits) + 1, (length,), generator=gen)
    edge = torch.rand(length, generator=gen)
    step = torch.where(edge < 0.1, torch.zeros_like(step), torch.where(edge > 0.9, torch.full_like(step, 1 << cell_bits), step))
    entry = (step << reference.GELU_STEP_SHIFT) | ((direction + 1) << reference.GELU_DIRECTION_SHIFT) | (below & 0xFF)
    return entry.to(torch.int32)


def linear_case(m: int, n: int, k: int, gen: torch.Generator, epilogue: str = "plain") -> OpCase:
    """``int8_linear`` arguments; ``epilogue`` is ``plain``, ``gelu`` (FQ-ViT's quantized GELU as a
    step table, :func:`fqvit_kernels.params.gelu_table`), ``steps`` (a random step table on a
    random pre-GELU grid) or ``residual``."""
    x = _int8(gen, m, k)
    weight = _int8(gen, n, k)
    x_scale = float(_uniform(gen, 0.01, 0.1))
    x_zp = _zero_point(gen)
    w_scale = _uniform(gen, 0.002, 0.02, (n,))
    bias = torch.randn(n, generator=gen, dtype=torch.float64) * 0.5
    # Output scale: the float output's spread over ~25-50 LSB, as a calibrated observer would set.
    exact = (x.to(torch.int64) - x_zp).to(torch.float64) @ weight.to(torch.float64).t() * x_scale * w_scale
    # RMS rather than std: defined for a single output, and never below one accumulator step.
    acc_std = max(float((exact + bias).pow(2).mean().sqrt()), x_scale * float(w_scale.max()))
    out_scale = acc_std / float(_uniform(gen, 25.0, 50.0))
    floats = dict(x_scale=x_scale, x_zero_point=x_zp, weight_scale=w_scale, bias=bias, out_scale=out_scale)
    if epilogue == "gelu":
        gelu_scale = acc_std / float(_uniform(gen, 30.0, 60.0))
        gelu_zp = -128 + int(torch.randint(0, 40, (), generator=gen))
        table = params.gelu_table(gelu_scale, gelu_zp)
        folded, mult, shift = params.linear_params(weight, w_scale, x_scale, x_zp, table.pre_scale, bias)
        floats.update(gelu_scale=gelu_scale, gelu_zero_point=gelu_zp, pre_scale=table.pre_scale)
        return OpCase("int8_linear", (x, weight, folded, mult, shift, table.pre_zero_point, table.table,
                                      table.cell_bits), floats)
    if epilogue == "steps":
        length = int(torch.randint(1, 300, (), generator=gen))
        cell_bits = int(torch.randint(0, 21, (), generator=gen))
        while length << cell_bits > 1 << 30:
            cell_bits -= 1
        table = random_step_table(gen, length, cell_bits)
        span = length << cell_bits
        # The outputs' +-3 std cover 1.5x the table, so some fall outside it on both sides.
        pre_scale = 6 * acc_std / (1.5 * span)
        folded, mult, shift = params.linear_params(weight, w_scale, x_scale, x_zp, pre_scale, bias)
        return OpCase("int8_linear", (x, weight, folded, mult, shift, span // 2, table, cell_bits), floats)
    out_zp = _zero_point(gen)
    folded, mult, shift = params.linear_params(weight, w_scale, x_scale, x_zp, out_scale, bias)
    floats["out_zero_point"] = out_zp
    if epilogue == "plain":
        return OpCase("int8_linear", (x, weight, folded, mult, shift, out_zp), floats)
    assert epilogue == "residual", epilogue
    residual = _int8(gen, m, n)
    res_zp = _zero_point(gen) // 4
    res_scale = _ptf_scale(gen, n, out_scale / 8 * float(_uniform(gen, 1.0, 2.0)))
    final_scale = res_scale * float(_uniform(gen, 2.5, 4.0))  # the stream keeps its channel pattern
    final_zp = _zero_point(gen) // 4
    m_branch, m_res, r_shift = params.shared_shift_multipliers(
        out_scale / final_scale, res_scale / final_scale, ("branch ratio", "residual ratio"))
    floats.update(residual_scale=res_scale, residual_zero_point=res_zp, final_scale=final_scale,
                  final_zero_point=final_zp)
    return OpCase("int8_linear", (x, weight, folded, mult, shift, out_zp, None, 0, residual, res_zp,
                                  m_branch, m_res, r_shift, final_zp), floats)


def _ptf_scale(gen: torch.Generator, channels: int, base: float) -> torch.Tensor:
    alpha = torch.randint(0, 4, (channels,), generator=gen)
    return base * torch.pow(2.0, alpha.to(torch.float64))


def ptf_activation(m: int, c: int, gen: torch.Generator, wide_channels: int = 4,
                   wide_factor: float = 40.0):
    """Float LayerNorm input with strong inter-channel variation and its PTF quantization.

    Returns ``(x_int8, zero_point, alpha int32 [C], scale float64 [C], x_float)`` where the PTF
    parameters follow FQ-ViT: one ``s8 = range / 255``, ``s = s8 / 8 * 2**alpha``, zp from ``s8``;
    ``alpha`` per channel is the smallest that covers the channel's range.
    """
    spread = torch.ones(c, dtype=torch.float64)
    wide = torch.randperm(c, generator=gen)[: min(wide_channels, c)]
    spread[wide] = wide_factor
    offset = torch.randn(c, generator=gen, dtype=torch.float64) * 0.3
    x = torch.randn(m, c, generator=gen, dtype=torch.float64) * spread * 0.4 + offset
    lo, hi = float(x.min()), float(x.max())
    s8 = max(hi - lo, 1e-6) / 255.0
    zp_u = int(min(max(-round(lo / s8), 0), 255))
    s1 = s8 / 8.0
    # channel c needs (max|x_c - lo|) / (s1 * 2**a) <= 255.
    need = ((x - lo).abs().amax(dim=0) / (s1 * 255.0)).clamp(min=1.0)
    alpha = torch.clamp(torch.ceil(torch.log2(need)), 0, 3).to(torch.int32)
    scale = s1 * torch.pow(2.0, alpha.to(torch.float64))
    x_q = reference.quantize(x.to(torch.float32), scale.to(torch.float32), zp_u - 128)
    return x_q, zp_u - 128, alpha, scale, x


def layernorm_case(m: int, c: int, gen: torch.Generator, wide_channels: int = 4, eps: float = 0.0) -> OpCase:
    """``ptf_layernorm`` (the exact LayerNorm); with ``eps`` the ``variance_offset`` argument too."""
    x_q, zp, alpha, scale, _ = ptf_activation(m, c, gen, wide_channels)
    gamma = 1.0 + 0.3 * torch.randn(c, generator=gen, dtype=torch.float64)
    beta = 0.2 * torch.randn(c, generator=gen, dtype=torch.float64)
    out_scale = float(_uniform(gen, 0.02, 0.05))
    out_zp = _zero_point(gen) // 4
    weight_mult, bias, shift = params.layernorm_params(gamma, beta, out_scale)
    floats = dict(scale=scale, gamma=gamma, beta=beta, out_scale=out_scale, eps=eps)
    args = (x_q, zp, alpha, weight_mult, bias, shift, out_zp)
    if eps:
        grid = float(scale[0]) / 2.0 ** int(alpha[0])  # the grid X = (x - zp) << alpha lies on
        args += (params.layernorm_variance_offset(c, eps, grid),)
    return OpCase("ptf_layernorm", args, floats)


def layernorm_dyadic_case(m: int, c: int, gen: torch.Generator, wide_channels: int = 4) -> OpCase:
    """``ptf_layernorm_dyadic`` (FQ-ViT's integer LayerNorm) on the same kind of input; a few
    ``gamma`` are 0 or negative. ``alpha`` counts from the finest channel (``min(alpha) = 0``), as
    FQ-ViT's formula and :func:`fqvit_kernels.params.ptf_alpha` do."""
    x_q, zp, alpha, scale, _ = ptf_activation(m, c, gen, wide_channels)
    alpha = alpha - alpha.min()
    gamma = 1.0 + 0.3 * torch.randn(c, generator=gen, dtype=torch.float64)
    gamma[torch.rand(c, generator=gen) < 0.05] *= -1.0
    gamma[torch.rand(c, generator=gen) < 0.02] = 0.0
    beta = 0.2 * torch.randn(c, generator=gen, dtype=torch.float64)
    out_scale = float(_uniform(gen, 0.02, 0.05))
    out_zp = _zero_point(gen) // 4
    gm, gs, beta_fixed = params.layernorm_dyadic_params(gamma, beta, out_scale)
    floats = dict(scale=scale, gamma=gamma, beta=beta, out_scale=out_scale)
    return OpCase("ptf_layernorm_dyadic", (x_q, zp, alpha, gm, gs, beta_fixed, out_zp), floats)


def scores_case(shape, gen: torch.Generator, bits: int = 4) -> OpCase:
    """Random int8 score rows on a random grid scale (typical ViT range 0.02..0.3)."""
    score_scale = float(_uniform(gen, 0.02, 0.3))
    score_zp = _zero_point(gen) // 2
    scores = _int8(gen, *shape)
    table = params.lis_exp_table(score_scale, score_zp)
    return OpCase("log_int_softmax", (scores, table, bits), dict(score_scale=score_scale, score_zero_point=score_zp))


def attention_case(b: int, h: int, n: int, d: int, gen: torch.Generator) -> OpCase:
    q, k, v = (_int8(gen, b, h, n, d) for _ in range(3))
    qkv_scale = float(_uniform(gen, 0.02, 0.08))
    qkv_zp = _zero_point(gen) // 2
    # Scores (q-zp)(k-zp) spread ~ 74**2 * sqrt(D); map about 3 std onto the 8-bit grid.
    score_float_std = 74.0**2 * d**0.5 * qkv_scale**2 / d**0.5
    score_scale = 6 * score_float_std / 255
    score_mult, score_shift = params.fixed_point_multiplier(qkv_scale**2 / d**0.5 / score_scale, "score ratio")
    score_zp = _zero_point(gen) // 4
    table = params.lis_exp_table(score_scale, score_zp)
    out_scale = qkv_scale * float(_uniform(gen, 1.0, 2.0))
    out_mult, out_shift = params.fixed_point_multiplier(qkv_scale * 2.0**-15 / out_scale, "context ratio")
    out_zp = _zero_point(gen) // 4
    floats = dict(qkv_scale=qkv_scale, score_scale=score_scale, out_scale=out_scale)
    return OpCase("int_attention", (q, k, v, qkv_zp, score_mult, score_shift, score_zp, table, out_mult,
                                    out_shift, out_zp), floats)


def attention_uniform_case(b: int, h: int, n: int, d: int, gen: torch.Generator, peak: float = 1.0) -> OpCase:
    """``int_attention_uniform`` (FQ-ViT 8/8/8): the scores of :func:`attention_case`, a softmax
    scale ``s_sm = peak / 255`` (``peak``: the calibrated largest probability), a small random uint8
    zero point (FQ-ViT's is 0 for probabilities; others exercise the correction terms)."""
    base = attention_case(b, h, n, d, gen)
    q, k, v, qkv_zp, score_mult, score_shift, score_zp = base.args[:7]
    qkv_scale, score_scale = base.floats["qkv_scale"], base.floats["score_scale"]
    softmax_scale = peak / 255.0
    inv_mult, inv_shift = params.fixed_point_multiplier(1.0 / softmax_scale, "1 / softmax scale")
    softmax_zp = int(torch.randint(0, 12, (1,), generator=gen))
    out_scale = qkv_scale * float(_uniform(gen, 1.0, 2.0))
    out_mult, out_shift = params.fixed_point_multiplier(qkv_scale * softmax_scale / out_scale, "context ratio")
    out_zp = _zero_point(gen) // 4
    floats = dict(base.floats, softmax_scale=softmax_scale, out_scale=out_scale)
    return OpCase("int_attention_uniform", (q, k, v, qkv_zp, score_mult, score_shift, score_zp,
                                            params.uniform_exp_table(score_scale), inv_mult, inv_shift, softmax_zp,
                                            out_mult, out_shift, out_zp), floats)


def quantize_case(shape, gen: torch.Generator, per_channel: bool = False) -> OpCase:
    x = torch.randn(shape, generator=gen) * 2.0
    channels = shape[-1]
    if per_channel:
        scale = (0.005 * torch.pow(2.0, torch.randint(0, 4, (channels,), generator=gen).float()))
    else:
        scale = torch.tensor(0.02)
    return OpCase("quantize", (x, scale.to(torch.float32), _zero_point(gen)))


def small_cases(gen: torch.Generator):
    """One small case per op (every epilogue of ``int8_linear``), for opcheck and dispatch tests."""
    return [
        matmul_case(7, 9, 13, gen),
        linear_case(7, 24, 40, gen),
        linear_case(5, 16, 24, gen, "gelu"),
        linear_case(5, 16, 24, gen, "steps"),
        linear_case(3, 16, 24, gen, "residual"),
        layernorm_case(7, 33, gen, eps=1e-6),
        layernorm_dyadic_case(7, 33, gen),
        scores_case((2, 3, 7, 7), gen),
        OpCase("log_attn_v", (torch.randint(0, 16, (2, 3, 7, 7), generator=gen).to(torch.uint8),
                              _int8(gen, 2, 3, 7, 5), 3)),
        OpCase("attention_scores", (_int8(gen, 2, 7, 8), _int8(gen, 2, 9, 8), -3, 1 << 30, 40, 5)),
        attention_case(2, 2, 7, 16, gen),
        attention_uniform_case(2, 2, 7, 16, gen),
        quantize_case((3, 7, 10), gen, per_channel=True),
        OpCase("dequantize", (_int8(gen, 3, 10), torch.rand(10, generator=gen) + 0.1, 4)),
    ]


def assert_equal(actual: torch.Tensor, expected: torch.Tensor, what: str = "output", show: int = 5) -> None:
    """``torch.equal`` with a message listing the first mismatching positions and values."""
    if actual.shape != expected.shape or actual.dtype != expected.dtype:
        raise AssertionError(f"{what}: got {actual.dtype}{tuple(actual.shape)}, expected "
                             f"{expected.dtype}{tuple(expected.shape)}")
    if torch.equal(actual, expected):
        return
    diff = (actual.to(torch.int64) - expected.to(torch.int64)) if not actual.is_floating_point() else (actual - expected)
    where = torch.nonzero(diff != 0)
    rows = [f"  at {tuple(i.tolist())}: got {actual[tuple(i)].item()}, expected {expected[tuple(i)].item()}"
            for i in where[:show]]
    raise AssertionError(f"{what}: {where.shape[0]} of {actual.numel()} elements differ\n" + "\n".join(rows))


def tensor_bytes(module: torch.nn.Module) -> int:
    """Bytes of the distinct storages behind ``module``'s parameters and buffers (shared storage
    counted once): what the module keeps resident."""
    seen, total = set(), 0
    for t in list(module.parameters()) + list(module.buffers()):
        storage = t.untyped_storage()
        if storage.data_ptr() not in seen:
            seen.add(storage.data_ptr())
            total += storage.nbytes()
    return total
