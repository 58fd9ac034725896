"""CPU microbenchmarks: each C++ kernel (``fqvit_kernels._C``) against the integer reference and
the float operation it replaces, at ViT-S (C=384, H=6) and ViT-B (C=768, H=12) shapes with
M = batch * 197 tokens (batch 8; quick mode: batch 1).

Float baselines: ``F.linear`` fp32 for the GEMMs, ``F.layer_norm`` fp32, ``torch.softmax`` fp32,
``torch.matmul`` fp32 for the score and attn@V products, ``F.scaled_dot_product_attention`` fp32
for the fused attentions (``int_attention_uniform`` also against the int64 PyTorch composition
the 8/8/8 block used before it); at the model boundary ``torch.fake_quantize_per_tensor_affine`` (float
fake quantization) and ``x.float()`` (plain int8 -> float conversion). Each row's ``baseline`` is
the float provider; the note gives the speed-up over the reference. The fqvit row times
``torch.ops.fqvit.<op>``, what users call (dispatch and argument validation included); a second
row, labelled ``_C raw``, times the extension function alone, to show what the Python side costs.
Both outputs are compared with the reference (``torch.equal``) before timing. In quick mode a
reference taking over 2 s per call is not timed.
"""

from __future__ import annotations

import time
from typing import List, Optional

import torch
import torch.nn.functional as F

from common import Context, Row, time_cpu, time_fn
from shapes import CPU_MODELS, TOKENS
from fqvit_kernels import backends, reference as ref, testing

# (model, embed dim, heads, mlp dim)
SLOW_REFERENCE_S = 2.0

CPP = "fqvit op"  # torch.ops.fqvit.<op> served by the C++ backend
RAW = "_C raw"    # the extension function without dispatch or validation
REF = "reference"


def _extension():
    try:
        from fqvit_kernels import _C
    except ImportError:
        return None
    return _C


class _Bench:
    def __init__(self, ctx: Context, ext):
        self.ctx, self.ext, self.rows = ctx, ext, []

    def _row(self, kernel, shape, provider, stats, baseline=None, work=None, unit=None, note=""):
        med, p20, p80 = stats
        self.rows.append(Row("cpu_ops", kernel, shape, provider, med, p20, p80, baseline, work, unit, note))

    def op(self, name: str, kernel: str, shape: str, args: tuple, floats: List[tuple], work=None,
           unit=None, suffix: str = "") -> None:
        """Time ``torch.ops.fqvit.<name>`` (checked against the reference first), the raw C++
        function, the reference and the float providers ``(label, fn)``."""
        baseline = floats[0][0]
        ref_fn = lambda: getattr(ref, name)(*args)  # noqa: E731
        start = time.perf_counter()
        expected = ref_fn()
        first_s = time.perf_counter() - start
        ref_ms: Optional[float] = None
        if self.ext is not None:
            op_fn = getattr(torch.ops.fqvit, name)
            raw_fn = getattr(self.ext, name)
            testing.assert_equal(op_fn(*args), expected, f"{kernel} (torch.ops.fqvit) before timing")
            testing.assert_equal(raw_fn(*args), expected, f"{kernel} (C++) before timing")
        del expected
        if self.ctx.quick and first_s > SLOW_REFERENCE_S:
            note = f"reference not timed in quick mode ({first_s:.1f} s per call)"
        else:
            stats = time_cpu(ref_fn, warmup=0, reps=3) if first_s > 0.5 else time_fn(self.ctx, ref_fn)
            ref_ms = stats[0]
            self._row(kernel, shape, REF, stats, baseline, work, unit)
            note = ""
        if self.ext is not None:
            stats = time_fn(self.ctx, lambda: op_fn(*args))
            if ref_ms is not None:
                note = f"{ref_ms / stats[0]:.1f}x reference"
            self._row(kernel, shape, CPP + suffix, stats, baseline, work, unit, note)
            # (No baseline: the speed-up column and the plot are for what users call.)
            self._row(kernel, shape, RAW + suffix, time_fn(self.ctx, lambda: raw_fn(*args)), None, work, unit,
                      "no dispatch, no argument checks")
        for provider, fn in floats:
            self._row(kernel, shape, provider, time_fn(self.ctx, fn), None, work, unit)


def _uniform_attention_before(q, k, v, zp, score_mult, score_shift, score_zp, table, inv_mult, inv_shift, softmax_zp,
                              out_mult, out_shift, out_zp):
    """How the 8/8/8 block ran its attention before ``int_attention_uniform`` existed: the scores
    op, then int64 PyTorch tensor code on the N x N codes (kept here as the comparison row)."""
    scores = torch.ops.fqvit.attention_scores(q, k, zp, score_mult, score_shift, score_zp)
    codes = ref.uniform_softmax_codes(scores, table, inv_mult, inv_shift, softmax_zp).to(torch.int64) - softmax_zp
    context = torch.matmul(codes, v.to(torch.int64) - zp)
    return ref.requantize_float32(context, out_mult, out_shift, out_zp).to(torch.int8)


def _linears(dim: int, mlp: int):
    return [("qkv", 3 * dim, dim, "plain"), ("proj", dim, dim, "residual"), ("fc1", mlp, dim, "gelu"),
            ("fc2", dim, mlp, "residual")]


def run(ctx: Context) -> List[Row]:
    if ctx.device != "cpu":
        return []
    ext = _extension()
    if ext is None:
        print(f"[cpu_ops] C++ extension not loaded ({backends.cpu_extension_error()}): "
              "timing the reference and float baselines only")
    threads = torch.get_num_threads()
    torch.set_num_threads(ctx.threads)
    try:
        return _run(ctx, ext)
    finally:
        torch.set_num_threads(threads)


def _run(ctx: Context, ext) -> List[Row]:
    bench = _Bench(ctx, ext)
    batch = 1 if ctx.quick else 8
    m = batch * TOKENS
    gen = torch.Generator().manual_seed(0)
    for model, dim, heads, mlp, _ in CPU_MODELS:
        for layer, n, k, epilogue in _linears(dim, mlp):
            kernel = f"int8_linear {model}.{layer}"
            if not ctx.wants(kernel):
                continue
            case = testing.linear_case(m, n, k, gen, epilogue)
            xf, wf = case.args[0].float(), case.args[1].float()
            bf = case.floats["bias"].float()
            bench.op("int8_linear", kernel, f"M={m} N={n} K={k}", case.args,
                     [("F.linear fp32", lambda: F.linear(xf, wf, bf))], 2.0 * m * n * k, "op",
                     suffix=f" +{epilogue}")

        kernel = f"int8_matmul {model}.qkv"
        if ctx.wants(kernel):
            case = testing.matmul_case(m, 3 * dim, dim, gen)
            af, bfl = case.args[0].float(), case.args[1].float()
            a, b = case.args
            bench.op("int8_matmul", kernel, f"M={m} N={3 * dim} K={dim}", case.args,
                     [("F.linear fp32", lambda: F.linear(af, bfl)), ("torch._int_mm", lambda: torch._int_mm(a, b.t()))],
                     2.0 * m * 3 * dim * dim, "op")

        for ln_op, make in (("ptf_layernorm", testing.layernorm_case), ("ptf_layernorm_dyadic", testing.layernorm_dyadic_case)):
            kernel = f"{ln_op} {model}"
            if ctx.wants(kernel):
                case = make(m, dim, gen)
                xf = torch.randn(m, dim, generator=gen)
                gamma, beta = torch.ones(dim), torch.zeros(dim)
                bench.op(ln_op, kernel, f"M={m} C={dim}", case.args,
                         [("F.layer_norm fp32", lambda: F.layer_norm(xf, (dim,), gamma, beta))], 2.0 * m * dim, "B")

        d = dim // heads
        kernel = f"log_int_softmax {model}"
        if ctx.wants(kernel):
            case = testing.scores_case((batch, heads, TOKENS, TOKENS), gen)
            sf = case.args[0].float()
            bench.op("log_int_softmax", kernel, f"B={batch} H={heads} N={TOKENS}", case.args,
                     [("torch.softmax fp32", lambda: torch.softmax(sf, dim=-1))], 2.0 * case.args[0].numel(), "B")

        att = testing.attention_case(batch, heads, TOKENS, d, gen)
        q, k, v = att.args[:3]
        qf, kf, vf = q.float(), k.float(), v.float()
        shape = f"B={batch} H={heads} N={TOKENS} D={d}"
        kernel = f"attention_scores {model}"
        if ctx.wants(kernel):
            bench.op("attention_scores", kernel, shape, (q, k) + att.args[3:7],
                     [("torch.matmul fp32", lambda: torch.matmul(qf, kf.transpose(-1, -2)))],
                     2.0 * batch * heads * TOKENS * TOKENS * d, "op")
        kernel = f"log_attn_v {model}"
        if ctx.wants(kernel):
            scores = ref.attention_scores(q, k, *att.args[3:7])
            codes = ref.log_int_softmax(scores, att.args[7], 4)
            pf = torch.softmax(scores.float(), dim=-1)
            bench.op("log_attn_v", kernel, shape, (codes, v, att.args[3]),
                     [("torch.matmul fp32", lambda: torch.matmul(pf, vf))],
                     2.0 * batch * heads * TOKENS * TOKENS * d, "op")
        kernel = f"int_attention {model}"
        if ctx.wants(kernel):
            bench.op("int_attention", kernel, shape, att.args,
                     [("SDPA fp32", lambda: F.scaled_dot_product_attention(qf, kf, vf))],
                     4.0 * batch * heads * TOKENS * TOKENS * d, "op")

        kernel = f"int_attention_uniform {model}"
        if ctx.wants(kernel):
            uni = testing.attention_uniform_case(batch, heads, TOKENS, d, gen)
            uq, uk, uv = (t.float() for t in uni.args[:3])
            bench.op("int_attention_uniform", kernel, shape, uni.args,
                     [("SDPA fp32", lambda: F.scaled_dot_product_attention(uq, uk, uv)),
                      ("scores op + int64 torch (before)", lambda: _uniform_attention_before(*uni.args))],
                     4.0 * batch * heads * TOKENS * TOKENS * d, "op")

        kernel = f"quantize {model}"
        if ctx.wants(kernel):
            case = testing.quantize_case((m, dim), gen)
            x, scale, zp = case.args
            bench.op("quantize", kernel, f"M={m} C={dim}", case.args,
                     [("fake_quantize fp32", lambda: torch.fake_quantize_per_tensor_affine(x, float(scale), zp + 128,
                                                                                          0, 255))],
                     5.0 * x.numel(), "B")
        kernel = f"dequantize {model}"
        if ctx.wants(kernel):
            xq = torch.randint(-128, 128, (m, dim), generator=gen, dtype=torch.int8)
            scale = torch.rand(dim, generator=gen) * 0.05 + 0.01
            bench.op("dequantize", kernel, f"M={m} C={dim}", (xq, scale, 3),
                     [("int8->fp32 x.float()", xq.float)], 5.0 * xq.numel(), "B")
    return bench.rows
