"""Block benchmark: ``QuantTimmVitBlock`` in ``int`` mode against timm's ``Block``.

Providers: timm fp32 (and on a GPU tf32, bf16 eager, bf16 ``torch.compile``), the int block
(``torch.ops.fqvit`` kernels; input and output int8 codes, so quantization at the model boundary is
not included) and the ``fake`` block (FQ-ViT-style float simulation). The block is calibrated on
random activations first; before timing, the int output is compared with the fake output and the
fraction within 1 LSB is reported in the row's note.
"""

from __future__ import annotations

import copy
import warnings
from typing import List

import torch

from common import Context, Row, time_fn
from shapes import CPU_MODELS, TOKENS


def _timm_block(dim: int, heads: int):
    from timm.models.vision_transformer import Block

    torch.manual_seed(0)
    return Block(dim, heads, mlp_ratio=4.0, qkv_bias=True).eval()


def _quant_block(block, dim: int, dev: str):
    from fqvit_kernels.nn import QuantTimmVitBlock

    gen = torch.Generator().manual_seed(1)
    batches = [torch.randn(4, TOKENS, dim, generator=gen) for _ in range(2)]
    qblock = QuantTimmVitBlock.from_float(block).eval()
    qblock.calibrate(batches, mode="int")
    return qblock.to(dev)


def _agreement(qblock, x_float: torch.Tensor) -> float:
    """Fraction of int outputs within 1 LSB of the fake outputs on the same input."""
    with torch.no_grad():
        x_int = qblock.input_quantizer.quantize_int(x_float)
        out_int = qblock.set_mode("int")(x_int)
        fake = qblock.set_mode("fake")(x_float)
        qblock.set_mode("int")
        fake_codes = qblock.qact4.quantize_int(fake)
    return float(((out_int.to(torch.int32) - fake_codes.to(torch.int32)).abs() <= 1).double().mean())


def run(ctx: Context) -> List[Row]:
    if not ctx.wants("block"):
        return []
    try:
        import timm  # noqa: F401
    except ImportError:
        print("[block] timm is not installed: skipped")
        return []
    dev = ctx.device
    rows: List[Row] = []
    if dev == "cuda":
        batch = 64
    else:
        batch = 1 if ctx.quick else 8
    models = CPU_MODELS[:1] if ctx.quick else CPU_MODELS
    for model, dim, heads, _, _ in models:
        kernel = f"block {model}"
        shape = f"B={batch} N={TOKENS} C={dim}"
        block = _timm_block(dim, heads)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            qblock = _quant_block(block, dim, dev)
        block = block.to(dev)
        x = torch.randn(batch, TOKENS, dim, device=dev)
        agree = _agreement(qblock, x)
        x_int = qblock.input_quantizer.quantize_int(x)
        baseline = "timm bf16 compile" if dev == "cuda" else "timm fp32"
        with torch.no_grad():
            rows.append(_timed(ctx, kernel, shape, "fqvit int", lambda: qblock(x_int), baseline,
                               f"int within 1 LSB of fake: {agree * 100:.2f} %"))
            rows.append(_timed(ctx, kernel, shape, "timm fp32", lambda: block(x)))
            if dev == "cuda":
                rows.extend(_gpu_baselines(ctx, kernel, shape, block, x))
            qblock.set_mode("fake")
            rows.append(_timed(ctx, kernel, shape, "fqvit fake (FQ-ViT style)", lambda: qblock(x), None))
            qblock.set_mode("int")
    return rows


def _timed(ctx, kernel, shape, provider, fn, baseline=None, note=""):
    med, p20, p80 = time_fn(ctx, fn)
    return Row("block", kernel, shape, provider, med, p20, p80, baseline, note=note)


def _gpu_baselines(ctx, kernel, shape, block, x) -> List[Row]:
    rows = []
    previous = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = True
    try:
        rows.append(_timed(ctx, kernel, shape, "timm tf32", lambda: block(x)))
    finally:
        torch.backends.cuda.matmul.allow_tf32 = previous
    block_bf16 = copy.deepcopy(block).to(torch.bfloat16)
    xb = x.to(torch.bfloat16)
    rows.append(_timed(ctx, kernel, shape, "timm bf16 eager", lambda: block_bf16(xb)))
    compiled = torch.compile(block_bf16)
    try:
        compiled(xb)
    except Exception as exc:  # report instead of losing the other rows
        nan = float("nan")
        rows.append(Row("block", kernel, shape, "timm bf16 compile", nan, nan, nan, note=f"failed: {exc}"[:80]))
        return rows
    rows.append(_timed(ctx, kernel, shape, "timm bf16 compile", lambda: compiled(xb)))
    return rows
