"""How closely ``int`` mode reproduces ``fake`` mode (FQ-ViT's own numerics), stage by stage.

``fake`` mode is the float32 simulation that reproduces the official FQ-ViT code; ``int`` mode runs
the integer kernels. Both produce codes on the same quantization grids, so they can be compared
code for code:

* :func:`stage_codes` feeds every stage of a block (norm1, qkv, attention, proj + residual, norm2,
  fc1 + GELU, fc2 + residual) the *same* input codes in both modes (the int path's own codes from
  the previous stage) and returns both outputs as int8 codes;
* :func:`block_codes` runs the whole block both ways on the same block input;
* :func:`model_block_agreement` does that for every block of a :class:`QuantVisionTransformer` on
  the block inputs the ``fake`` model produces for some images;
* :func:`fake_noise_floor` compares ``fake`` with itself evaluated in another, equally valid float
  order (GEMM sums accumulated in float64): FQ-ViT's codes are only defined up to that float32
  noise, so no integer implementation can agree with ``fake`` much more closely than this.

A fake-mode activation is a float on its quantizer's grid; :func:`grid_codes` turns it back into the
stored int8 code (``round(x / s + zp) - 128``).
"""

from __future__ import annotations

import contextlib
from typing import Dict, Iterator, List, Tuple

import torch
import torch.nn.functional as F

from .block import QuantTimmVitBlock, layernorm_int, linear_int
from .layers import QAct, set_mode

__all__ = ["STAGES", "grid_codes", "stage_codes", "block_codes", "agreement", "model_block_agreement", "model_block_counts",
           "fake_noise_floor"]

#: The stages of a block, in execution order.
STAGES = ("norm1", "qkv", "attention", "proj+residual", "norm2", "fc1+gelu", "fc2+residual")


def grid_codes(x: torch.Tensor, quantizer: QAct) -> torch.Tensor:
    """Stored int8 codes of a fake-mode activation ``x`` on ``quantizer``'s grid."""
    scale = quantizer.scale.to(x.device)
    zero_point = quantizer.zero_point.to(x.device)
    return (torch.round(x / scale + zero_point).clamp(0, 255) - 128).to(torch.int8)


def agreement(pairs: Dict[str, Tuple[torch.Tensor, torch.Tensor]]) -> Dict[str, float]:
    """Percentage of identical codes per entry of ``{name: (int codes, fake codes)}``."""
    return {name: 100.0 * (a == b).double().mean().item() for name, (a, b) in pairs.items()}


@contextlib.contextmanager
def _mode(block: QuantTimmVitBlock, mode: str) -> Iterator[None]:
    """Run ``block`` (and its input quantizer) in ``mode`` inside the ``with``; restore after."""
    previous = block.mode
    set_mode(block, mode)
    set_mode(block.input_quantizer, mode)
    try:
        yield
    finally:
        set_mode(block, previous)
        set_mode(block.input_quantizer, previous)


def _linear(lin, x: torch.Tensor, float64: bool) -> torch.Tensor:
    """Fake-mode ``QuantLinear`` (float32 GEMM), or the same GEMM accumulated in float64."""
    if not float64:
        return lin(x)
    bias = None if lin.bias is None else lin.bias.double()
    return F.linear(x.double(), lin.fake_weight().double(), bias).float()


def _matmul(a: torch.Tensor, b: torch.Tensor, float64: bool) -> torch.Tensor:
    return (a.double() @ b.double()).float() if float64 else a @ b


@torch.no_grad()
def stage_codes(block: QuantTimmVitBlock, x_int: torch.Tensor,
                float64_gemms: bool = False) -> Dict[str, Tuple[torch.Tensor, torch.Tensor]]:
    """``{stage: (int codes, fake codes)}`` with both modes fed the same input codes per stage.

    ``x_int`` are int8 block-input codes ``[B, N, C]`` on the block's input grid. Each stage's input
    is the int path's output of the previous stage, dequantized for the fake path.
    ``float64_gemms`` accumulates the fake path's GEMMs in float64 (rounded back to float32).
    """
    wide = float64_gemms
    ints = block._int_params()
    attn, mlp, in_q = block.attn, block.mlp, block.input_quantizer
    b, n, c = x_int.shape
    x2 = x_int.reshape(b * n, c).contiguous()
    out = {}
    with _mode(block, "fake"):
        xf = in_q.dequantize_int(x2).reshape(b, n, c)
        h = layernorm_int(block.norm1, x2, ints.in_zp, ints.qact1_zp)
        out["norm1"] = (h, grid_codes(block.qact1(block.norm1(xf, in_q, block.qact1)), block.qact1).reshape(b * n, c))

        hf = block.qact1.dequantize_int(h).reshape(b, n, c)
        qkv = linear_int(attn.qkv, h, ints.qkv_zp)
        out["qkv"] = (qkv, grid_codes(attn.qact1(_linear(attn.qkv, hf, wide)), attn.qact1).reshape(b * n, -1))

        ctx = attn.int_core(qkv, b, n, ints)
        parts = attn.qact1.dequantize_int(qkv).reshape(b, n, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
        scores = attn.qact_attn1(_matmul(parts[0], parts[1].transpose(-2, -1), wide) * attn.scale)
        probs = attn.softmax(scores, attn.qact_attn1)
        ctx_f = attn.qact2(_matmul(probs, parts[2], wide).transpose(1, 2).reshape(b, n, c))
        out["attention"] = (ctx, grid_codes(ctx_f, attn.qact2).reshape(b * n, c))

        xm = linear_int(attn.proj, ctx, ints.qact3_attn_zp, residual=x2, residual_zero_point=ints.in_zp,
                        final_zero_point=ints.qact2_zp)
        ctx_in = attn.qact2.dequantize_int(ctx).reshape(b, n, c)
        xm_f = block.qact2(xf + attn.qact3(_linear(attn.proj, ctx_in, wide)))
        out["proj+residual"] = (xm, grid_codes(xm_f, block.qact2).reshape(b * n, c))

        xmf = block.qact2.dequantize_int(xm).reshape(b, n, c)
        h2 = layernorm_int(block.norm2, xm, ints.qact2_zp, ints.qact3_zp)
        out["norm2"] = (h2, grid_codes(block.qact3(block.norm2(xmf, block.qact2, block.qact3)), block.qact3)
                        .reshape(b * n, c))

        g = linear_int(mlp.fc1, h2, ints.pre_gelu_zp, gelu_table=mlp.gelu_table,
                       gelu_cell_bits=ints.gelu_cell_bits)
        g_f = mlp.qact1(F.gelu(_linear(mlp.fc1, block.qact3.dequantize_int(h2).reshape(b, n, c), wide)))
        out["fc1+gelu"] = (g, grid_codes(g_f, mlp.qact1).reshape(b * n, -1))

        o = linear_int(mlp.fc2, g, ints.mlp_qact2_zp, residual=xm, residual_zero_point=ints.qact2_zp,
                       final_zero_point=ints.qact4_zp)
        o_f = block.qact4(xmf + mlp.qact2(_linear(mlp.fc2, mlp.qact1.dequantize_int(g).reshape(b, n, -1), wide)))
        out["fc2+residual"] = (o, grid_codes(o_f, block.qact4).reshape(b * n, c))
    return out


@torch.no_grad()
def fake_noise_floor(block: QuantTimmVitBlock, x_int: torch.Tensor) -> Dict[str, Tuple[torch.Tensor, torch.Tensor]]:
    """``{stage: (fake codes, fake codes with float64 GEMM sums)}`` on the inputs of :func:`stage_codes`.

    FQ-ViT's ``fake`` (and official) numerics depend on the order of its float32 GEMM sums, which
    differs between devices and libraries; where a value lies within that noise of a rounding
    boundary, two equally valid evaluations give different codes. How often they do is the floor
    below which ``int`` vs ``fake`` differences cannot be pushed.
    """
    plain = stage_codes(block, x_int)
    wide = stage_codes(block, x_int, float64_gemms=True)
    return {stage: (plain[stage][1], wide[stage][1]) for stage in STAGES}


@torch.no_grad()
def block_codes(block: QuantTimmVitBlock, x_int: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(int codes, fake codes)`` of a whole block's output for the same input codes ``x_int``."""
    previous_io = block.float_io
    block.float_io = False
    try:
        with _mode(block, "fake"):
            fake = grid_codes(block(block.input_quantizer.dequantize_int(x_int)), block.qact4)
        with _mode(block, "int"):
            got = block(x_int)
    finally:
        block.float_io = previous_io
    return got, fake


@torch.no_grad()
def model_block_counts(model, images: torch.Tensor) -> List[Tuple[int, int]]:
    """Per block of ``model``: ``(equal, total)`` block-output codes of ``int`` vs ``fake`` on
    ``images`` (integer counts, which sum exactly across batches and processes)."""
    return [(int((got == fake).sum()), got.numel()) for got, fake in _block_pairs(model, images)]


def _block_pairs(model, images: torch.Tensor, stages: bool = False):
    """``(int codes, fake codes[, stage codes])`` per block, all blocks fed the fake model's inputs."""
    previous = model.mode
    inputs: List[torch.Tensor] = []
    hooks = [blk.register_forward_pre_hook(lambda module, args: inputs.append(args[0].detach()))
             for blk in model.blocks]
    try:
        model.set_mode("fake")
        model(images)
    finally:
        for hook in hooks:
            hook.remove()
    try:
        for blk, x in zip(model.blocks, inputs):
            x_int = blk.input_quantizer.quantize_int(x)
            got, fake = block_codes(blk, x_int)
            yield (got, fake, stage_codes(blk, x_int)) if stages else (got, fake)
    finally:
        model.set_mode(previous)


@torch.no_grad()
def model_block_agreement(model, images: torch.Tensor, stages: bool = False) -> List[Dict[str, float]]:
    """Per block of ``model`` (a calibrated ``QuantVisionTransformer``): the percentage of block-output
    codes (and, with ``stages``, of each stage's codes) on which ``int`` equals ``fake``.

    The block inputs are those of the ``fake`` model on ``images``, quantized onto each block's
    input grid; every block then runs both ways on the same codes.
    """
    results = []
    for pair in _block_pairs(model, images, stages):
        got, fake = pair[0], pair[1]
        row = {"block": 100.0 * (got == fake).double().mean().item()}
        if stages:
            row.update(agreement(pair[2]))
        results.append(row)
    return results
