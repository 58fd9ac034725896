"""GPU microbenchmarks: each fqvit op against the baselines a user would otherwise pick.

* ``int8_linear`` (plain / GELU table / residual epilogues) vs cuBLAS bf16 ``F.linear``,
  ``torch._int_mm`` followed by a separate requantization, and FP8 row-wise ``torch._scaled_mm``;
  the four ViT-S/B/L linears at batch 1, 64, 256 (M = batch·197).
* ``int_attention`` vs SDPA bf16 and vs the unfused fqvit ops, ViT-S/B/L heads, N = 197 and 577;
  ``int_attention_uniform`` (the 8/8/8 preset's) vs SDPA bf16 at the same shapes.
* ``ptf_layernorm_dyadic`` (the default, FQ-ViT's) and ``ptf_layernorm`` vs ``F.layer_norm`` bf16,
  in GB/s next to a measured device copy.
* ``log_int_softmax`` vs ``torch.softmax`` bf16.

Every fqvit kernel's output is checked against the reference on an independent slice (rows,
or one batch item) before it is timed. Inputs are already int8: quantization cost is excluded.
"""

from __future__ import annotations

from typing import Callable, List

import torch
import torch.nn.functional as F

from common import Context, Row, time_fn
from shapes import GPU_MODELS, TOKENS, TOKENS_384
from fqvit_kernels import reference as ref, testing

# (model, embed dim, heads, mlp dim)


def _linears(dim: int, mlp: int):
    return [("qkv", 3 * dim, dim, "plain"), ("proj", dim, dim, "residual"), ("fc1", mlp, dim, "gelu"),
            ("fc2", dim, mlp, "residual")]


def _check(name: str, actual: torch.Tensor, expected: torch.Tensor) -> None:
    testing.assert_equal(actual.cpu(), expected.cpu(), f"{name} before timing")


def _row(section, kernel, shape, provider, ctx, fn, baseline=None, work=None, unit=None, note=""):
    med, p20, p80 = time_fn(ctx, fn)
    return Row(section, kernel, shape, provider, med, p20, p80, baseline, work, unit, note)


def _first_rows(case: testing.OpCase, rows: int) -> tuple:
    """Arguments of the same op restricted to the first ``rows`` rows of x (and residual)."""
    args = list(case.args)
    args[0] = args[0][:rows]
    if len(args) > 7 and args[7] is not None:
        args[7] = args[7][:rows]
    return tuple(a.cpu() if isinstance(a, torch.Tensor) else a for a in args)


def _first_batch_item(case: testing.OpCase) -> tuple:
    """The case's arguments on the CPU with every 4-D tensor cut to its first batch item."""
    return tuple(a[:1].cpu() if isinstance(a, torch.Tensor) and a.dim() == 4 else
                 (a.cpu() if isinstance(a, torch.Tensor) else a) for a in case.args)


def linear_rows(ctx: Context, dev: str) -> List[Row]:
    rows: List[Row] = []
    batches = [1, 64] if ctx.quick else [1, 64, 256]
    models = GPU_MODELS[1:2] if ctx.quick else GPU_MODELS
    gen = torch.Generator().manual_seed(0)
    for model, dim, _, mlp, _ in models:
        for batch in batches:
            m = batch * TOKENS
            for layer, n, k, epilogue in _linears(dim, mlp):
                kernel = f"linear {model}.{layer}"
                if not ctx.wants(kernel) and not ctx.wants("linear"):
                    continue
                case = testing.linear_case(m, n, k, gen, epilogue).to(dev)
                shape = f"M={m} N={n} K={k}"
                out = case.run()
                _check(kernel, out[:64], ref.int8_linear(*_first_rows(case, 64)))
                ops = 2.0 * m * n * k
                x, w = case.args[0], case.args[1]
                ours = _row("linear", kernel, shape, f"fqvit int8 +{epilogue}", ctx, case.run, "cuBLAS bf16", ops, "op")
                peak = _int8_peak_tops()
                if peak:
                    ours.note = f"{ops / (ours.median_ms * 1e-3) / 1e12 / peak * 100:.0f} % of the {peak} TOP/s int8 peak"
                rows.append(ours)
                rows.extend(_gluon_row(ctx, kernel, shape, case, out, epilogue, ops))
                xb, wb = x.to(torch.bfloat16), w.to(torch.bfloat16)
                rows.append(_row("linear", kernel, shape, "cuBLAS bf16", ctx, lambda: F.linear(xb, wb), None, ops, "op"))
                rows.extend(_int_mm_row(ctx, kernel, shape, case, ops))
                rows.extend(_fp8_row(ctx, kernel, shape, x, w, ops))
    return rows


def _gluon_row(ctx, kernel, shape, case, triton_out, epilogue, ops) -> List[Row]:
    """The same op on the Gluon kernel (triton_kernels/gluon_gemm.py), where it applies; its output
    must equal the Triton kernel's (bit-exact) before it is timed."""
    from triton_kernels import gemm, gluon_gemm, variants

    x, w = case.args[0], case.args[1]
    residual = case.args[8] if len(case.args) > 8 else None
    if gluon_gemm.unsupported_reason(x, w, residual) is not None or not gemm.fast_epilogue(case.args[4]):
        return []
    with variants.force("gluon"):
        _check(f"{kernel} gluon", case.run(), triton_out)
        return [_row("linear", kernel, shape, f"fqvit int8 +{epilogue} gluon", ctx, case.run, "cuBLAS bf16", ops, "op")]


def _int8_peak_tops():
    """Dense int8 tensor-core peak (datasheet, TOP/s) of the current GPU, when known."""
    name = torch.cuda.get_device_name() if torch.cuda.is_available() else ""
    if "H100" in name and "PCIe" in name:
        return 1513
    if "H100" in name or "H200" in name:
        return 1979
    return None


def _int_mm_row(ctx, kernel, shape, case, ops) -> List[Row]:
    x, w, bias, mult, shift, zp = case.args[:6]
    def int_mm_then_requant():
        acc = torch._int_mm(x, w.t()) + bias  # w.t(): [K, N] column-major, cuBLASLt's int8 layout
        scaled = (acc.to(torch.int64) * mult + (1 << (shift.to(torch.int64) - 1))) >> shift
        return torch.clamp(scaled + zp, -128, 127).to(torch.int8)

    try:
        int_mm_then_requant()
    except RuntimeError as exc:  # shape constraints of _int_mm (M > 16, K and N multiples of 8)
        return [Row("linear", kernel, shape, "torch._int_mm +requant", float("nan"), float("nan"), float("nan"),
                    note=f"unsupported: {str(exc)[:60]}")]
    return [_row("linear", kernel, shape, "torch._int_mm +requant", ctx, int_mm_then_requant, None, ops, "op")]


def _fp8_row(ctx, kernel, shape, x, w, ops) -> List[Row]:
    if not hasattr(torch, "float8_e4m3fn") or x.device.type != "cuda":
        return []
    xf = x.to(torch.float32).to(torch.float8_e4m3fn)
    wf = w.to(torch.float32).to(torch.float8_e4m3fn)
    sx = torch.ones(x.shape[0], 1, device=x.device)
    sw = torch.ones(1, w.shape[0], device=x.device)

    def fp8():
        return torch._scaled_mm(xf, wf.t(), scale_a=sx, scale_b=sw, out_dtype=torch.bfloat16)

    try:
        fp8()
    except RuntimeError as exc:
        return [Row("linear", kernel, shape, "FP8 rowwise _scaled_mm", float("nan"), float("nan"), float("nan"),
                    note=f"unsupported: {str(exc)[:60]}")]
    return [_row("linear", kernel, shape, "FP8 rowwise _scaled_mm", ctx, fp8, None, ops, "op")]


def attention_rows(ctx: Context, dev: str) -> List[Row]:
    rows: List[Row] = []
    if not ctx.wants("attention"):
        return rows
    gen = torch.Generator().manual_seed(1)
    batch = 8 if ctx.quick else 64
    models = GPU_MODELS[1:2] if ctx.quick else GPU_MODELS
    for model, dim, heads, _, _ in models:
        d = dim // heads
        for n in ([TOKENS] if ctx.quick else [TOKENS, TOKENS_384]):
            case = testing.attention_case(batch, heads, n, d, gen).to(dev)
            kernel = f"attention {model}"
            shape = f"B={batch} H={heads} N={n} D={d}"
            out = case.run()
            one = _first_batch_item(case)
            _check(kernel, out[:1], ref.int_attention(*one))
            rows.append(_row("attention", kernel, shape, "fqvit int_attention", ctx, case.run, "SDPA bf16"))
            rows.extend(_gluon_attention_row(ctx, kernel, shape, case, out))
            q, k, v = (t.to(torch.bfloat16) for t in case.args[:3])
            rows.append(_row("attention", kernel, shape, "SDPA bf16", ctx,
                             lambda: F.scaled_dot_product_attention(q, k, v)))
            rows.append(_row("attention", kernel, shape, "fqvit unfused ops", ctx, _unfused(case), "SDPA bf16"))
            uniform = testing.attention_uniform_case(batch, heads, n, d, gen).to(dev)
            _check(kernel, uniform.run()[:1], ref.int_attention_uniform(*_first_batch_item(uniform)))
            rows.append(_row("attention", kernel, shape, "fqvit int_attention_uniform (8/8/8)", ctx, uniform.run,
                             "SDPA bf16"))
    return rows


def _gluon_attention_row(ctx, kernel, shape, case, triton_out) -> List[Row]:
    """The one-pass Gluon attention (triton_kernels/gluon_attention.py) where it applies, checked
    bit-identical to the Triton kernel's output first."""
    from triton_kernels import attention, gluon_attention, variants

    if gluon_attention.unsupported_reason(case.args[0]) is not None or not attention.fast_attention(case.args[7]):
        return []
    with variants.force("gluon"):
        _check(f"{kernel} gluon", case.run(), triton_out)
        return [_row("attention", kernel, shape, "fqvit int_attention gluon", ctx, case.run, "SDPA bf16")]


def _unfused(case: testing.OpCase) -> Callable[[], torch.Tensor]:
    q, k, v, zp, s_mult, s_shift, s_zp, table, o_mult, o_shift, o_zp = case.args

    def run():
        scores = torch.ops.fqvit.attention_scores(q, k, zp, s_mult, s_shift, s_zp)
        codes = torch.ops.fqvit.log_int_softmax(scores, table, 4)
        context = torch.ops.fqvit.log_attn_v(codes, v, zp)
        return ref.requantize(context, o_mult, o_shift, o_zp)

    return run


def norm_softmax_rows(ctx: Context, dev: str) -> List[Row]:
    rows: List[Row] = []
    gen = torch.Generator().manual_seed(2)
    batch = 8 if ctx.quick else 64
    models = GPU_MODELS[1:2] if ctx.quick else GPU_MODELS
    if ctx.wants("layernorm"):
        big = torch.empty(256 * 2**20, dtype=torch.uint8, device=dev)
        dst = torch.empty_like(big)
        rows.append(_row("norm", "device copy", "256 MiB", "copy_", ctx, lambda: dst.copy_(big), None,
                         2.0 * big.numel(), "B"))
        del big, dst
        for model, dim, _, _, _ in models:
            m = batch * TOKENS
            kernel = f"layernorm {model}"
            shape = f"M={m} C={dim}"
            for case in (testing.layernorm_dyadic_case(m, dim, gen).to(dev), testing.layernorm_case(m, dim, gen).to(dev)):
                out = case.run()
                _check(kernel, out[:64], getattr(ref, case.name)(*_first_rows(case, 64)))
                rows.append(_row("norm", kernel, shape, f"fqvit {case.name}", ctx, case.run, "F.layer_norm bf16",
                                 2.0 * m * dim, "B"))
            xb = torch.randn(m, dim, device=dev, dtype=torch.bfloat16)
            wb = torch.ones(dim, device=dev, dtype=torch.bfloat16)
            rows.append(_row("norm", kernel, shape, "F.layer_norm bf16", ctx,
                             lambda: F.layer_norm(xb, (dim,), wb, wb), None, 4.0 * m * dim, "B"))
    if ctx.wants("softmax"):
        for model, dim, heads, _, _ in models:
            case = testing.scores_case((batch, heads, TOKENS, TOKENS), gen).to(dev)
            kernel = f"softmax {model}"
            shape = f"B={batch} H={heads} N={TOKENS}"
            out = case.run()
            one = _first_batch_item(case)
            _check(kernel, out[:1], ref.log_int_softmax(*one))
            rows.append(_row("softmax", kernel, shape, "fqvit log_int_softmax", ctx, case.run, "softmax bf16",
                             2.0 * out.numel(), "B"))
            sb = case.args[0].to(torch.bfloat16)
            rows.append(_row("softmax", kernel, shape, "softmax bf16", ctx, lambda: torch.softmax(sb, -1), None,
                             4.0 * out.numel(), "B"))
    return rows


def run(ctx: Context) -> List[Row]:
    dev = ctx.device
    return linear_rows(ctx, dev) + attention_rows(ctx, dev) + norm_softmax_rows(ctx, dev)
