"""Whole-model benchmark: ``quantize_model`` (int mode, presets 8/8/4 and 8/8/8) against the timm float model.

Random weights (speed does not depend on them), images of 224 px. GPU: images/s at batch 64 and
256 against timm bf16 eager, and batch-1 latency eager and with CUDA graphs; CPU: images/s at
batch 1, 8 and 32 (and ViT-S at 384 px, batch 8) against timm bf16 autocast (the fast float path
on a CPU), with timm fp32 alongside. The quantized model's cost includes quantization at the boundary
(after the float patch embedding) and the float head. Before timing, the timed batch runs block by
block both ways (int and the fake FQ-ViT simulation) on the same input codes; the share of equal
block-output codes is in the note.
"""

from __future__ import annotations

import copy
import warnings
from typing import Callable, List

import torch

from common import Context, Row, time_fn
from shapes import MODEL_NAMES, VIT_S


#: Presets timmed in int mode: the LIS one (4-bit attention) and FQ-ViT's 8/8/8 (uniform softmax).
PRESETS = ["fqvit-8/8/4", "fqvit-8/8/8"]


def _quantized(vit, dev: str, preset: str, size: int = 224):
    from fqvit_kernels.nn import quantize_model

    gen = torch.Generator().manual_seed(0)
    calib = [torch.randn(4, 3, size, size, generator=gen) for _ in range(2)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        qvit = quantize_model(vit, calib, preset, progress=False)
    return qvit.to(dev)


def _agreement(qvit, images) -> float:
    """Share of block-output codes on which int equals fake (mean over blocks, same input codes).

    Top-1 agreement says little on random weights (near-tied logits; one image in quick mode)."""
    from fqvit_kernels.nn.fidelity import model_block_agreement

    with torch.no_grad():
        rows = model_block_agreement(qvit, images)
    qvit.set_mode("int")
    return sum(r["block"] for r in rows) / len(rows) / 100.0


def _graphed(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> Callable[[], torch.Tensor]:
    """Capture ``fn(x)`` in a CUDA graph (after warm-up on a side stream); returns the replay."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            fn(x)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn(x)
    return graph.replay


def _row(ctx, kernel, shape, provider, fn, batch, baseline=None, note=""):
    med, p20, p80 = time_fn(ctx, fn)
    return Row("model", kernel, shape, provider, med, p20, p80, baseline, float(batch), "img", note)


def _failed(kernel, shape, provider, exc) -> Row:
    nan = float("nan")
    return Row("model", kernel, shape, provider, nan, nan, nan, note=f"failed: {exc}"[:100])


def run(ctx: Context) -> List[Row]:
    if not ctx.wants("model"):
        return []
    try:
        import timm
    except ImportError:
        print("[models] timm is not installed: skipped")
        return []
    dev = ctx.device
    names = MODEL_NAMES[:1] if ctx.quick else MODEL_NAMES
    if dev == "cuda":
        batches = [64] if ctx.quick else [64, 256]
    else:
        batches = [1] if ctx.quick else [1, 8, 32]
    rows: List[Row] = []
    for name in names:
        rows.extend(_model_rows(ctx, timm, name, 224, batches))
    if dev == "cpu" and not ctx.quick:  # the 384 px variant (N = 577 tokens) of ViT-S
        rows.extend(_model_rows(ctx, timm, VIT_S.timm_model, 384, [8]))
    return rows


def _model_rows(ctx, timm, name: str, size: int, batches) -> List[Row]:
    dev = ctx.device
    torch.manual_seed(0)
    vit = timm.create_model(name, pretrained=False, img_size=size).eval()
    qvits = {preset: _quantized(vit, dev, preset, size) for preset in PRESETS}
    vit = vit.to(dev)
    # The fast float path a user has: bf16 weights on a GPU, bf16 autocast on a CPU.
    baseline = "timm bf16 eager" if dev == "cuda" else "timm bf16 autocast"
    vit_bf16 = copy.deepcopy(vit).to(torch.bfloat16) if dev == "cuda" else None
    label = name if size == 224 else f"{name} @ {size} px"
    rows: List[Row] = []
    agree = {}
    for batch in batches:
        images = torch.randn(batch, 3, size, size, device=dev)
        shape = f"batch {batch}"
        for preset, model in qvits.items():
            if preset not in agree:  # once per model: the block-by-block fake forward is slow
                agree[preset] = _agreement(model, images)
            with torch.no_grad():
                rows.append(_row(ctx, label, shape, f"fqvit int ({preset})", lambda: model(images), batch, baseline,
                                 f"includes boundary quantization; int/fake block codes {agree[preset] * 100:.3f} %"))
        with torch.no_grad():
            rows.append(_row(ctx, label, shape, "timm fp32", lambda: vit(images), batch))
            if vit_bf16 is not None:
                xb = images.to(torch.bfloat16)
                rows.append(_row(ctx, label, shape, "timm bf16 eager", lambda: vit_bf16(xb), batch))
            else:
                def autocast_bf16():
                    with torch.autocast("cpu", dtype=torch.bfloat16):
                        return vit(images)
                rows.append(_row(ctx, label, shape, "timm bf16 autocast", autocast_bf16, batch))
    if dev == "cuda":
        rows.extend(_latency_rows(ctx, name, qvits[PRESETS[0]], vit_bf16))
    return rows


def _latency_rows(ctx, name, qvit, vit_bf16) -> List[Row]:
    rows = []
    x = torch.randn(1, 3, 224, 224, device="cuda")
    xb = x.to(torch.bfloat16)
    shape = "batch 1 latency"
    with torch.no_grad():
        rows.append(_row(ctx, name, shape, "timm bf16 eager", lambda: vit_bf16(xb), 1))
        rows.append(_row(ctx, name, shape, "fqvit int eager", lambda: qvit(x), 1, "timm bf16 eager"))
        for provider, fn, inp, base in (("timm bf16 CUDA graph", vit_bf16, xb, None),
                                        ("fqvit int CUDA graph", qvit, x, "timm bf16 CUDA graph")):
            try:
                replay = _graphed(fn, inp)
            except Exception as exc:  # report, keep the other rows
                rows.append(_failed(name, shape, provider, exc))
                continue
            rows.append(_row(ctx, name, shape, provider, replay, 1, base))
    return rows
