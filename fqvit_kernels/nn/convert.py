"""Float → int conversion of the quantized modules: every place where calibrated float scales
become the integer parameters of the ``int``-mode ops.

The arithmetic itself (fixed-point multipliers, shifts, biases, tables) lives in
:mod:`fqvit_kernels.params`; this module decides *which* scales feed each op of a block or model
and writes the results into the modules' buffers (``convert_*``), then reads the buffers back as
plain Python ints once per conversion or load (``*_ints``), so that the int forwards read no
tensor on the host.

Which grid each op maps between follows FQ-ViT's quantizer placement (docs/fqvit.md §5.1);
``QuantTimmVitBlock.convert`` and ``QuantVisionTransformer.convert`` call :func:`convert_block`
and :func:`convert_head`.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from torch import nn

from .. import params
from ..contract import LIS_VALUE_SHIFT
from .layers import QAct, QuantLayerNorm, QuantLinear

if TYPE_CHECKING:  # the modules import this file; only their types are needed here
    from .block import QuantAttention, QuantMlp, QuantTimmVitBlock
    from .model import QuantVisionTransformer

__all__ = ["AttentionInts", "BlockInts", "HeadInts", "convert_linear", "convert_residual", "convert_layernorm",
           "convert_attention", "convert_mlp", "convert_block", "convert_head", "attention_ints", "block_ints",
           "head_ints", "release_float_weights"]


# -- the Python-int parameter bundles -------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class AttentionInts:
    """The attention core's integer parameters as Python ints (read once per conversion / load):
    zero points in the stored int8 domain, fixed-point multipliers and shifts."""

    qkv_zp: int
    score_multiplier: int
    score_shift: int
    score_zp: int
    out_multiplier: int
    out_shift: int
    out_zp: int
    softmax_zp: int
    inv_softmax_multiplier: int
    inv_softmax_shift: int


@dataclasses.dataclass(frozen=True)
class BlockInts(AttentionInts):
    """A whole block's integer parameters: the attention core's plus the zero points of every
    re-quantization point (input, qact1..4, the residual adds, the pre-GELU grid) and the GELU
    table's cell bits."""

    in_zp: int
    qact1_zp: int
    qact3_attn_zp: int
    qact2_zp: int
    qact3_zp: int
    pre_gelu_zp: int
    gelu_cell_bits: int
    mlp_qact2_zp: int
    qact4_zp: int


@dataclasses.dataclass(frozen=True)
class HeadInts:
    """The model head's integer parameters as Python ints: the final LayerNorm's input and output
    zero points and the head's output zero point (stored int8 domain)."""

    norm_in_zp: int
    qact2_zp: int
    out_zp: int


# -- one op each ----------------------------------------------------------------------------------

def _fixed(real: float, name: str):
    return params.fixed_point_multiplier(float(real), name)


def convert_linear(lin: QuantLinear, in_quantizer: QAct, out_scale: float, in_zp: int) -> None:
    """``lin``'s int32 bias (zero-point correction folded in), multipliers and shifts: int8 codes on
    ``in_quantizer``'s grid (stored zero point ``in_zp``) in, the output grid of scale ``out_scale``."""
    bias, mult, shift = params.linear_params(lin.weight_int8.cpu(), lin.weight_scale.cpu(), float(in_quantizer.scale),
                                             in_zp, out_scale, None if lin.bias is None else lin.bias.cpu())
    lin.int_bias.copy_(bias)
    lin.multiplier.copy_(mult)
    lin.shift.copy_(shift)


def convert_residual(lin: QuantLinear, branch: QAct, residual: QAct, out: QAct) -> None:
    """The residual epilogue of ``lin``: the branch (on ``branch``'s grid) and the residual (on
    ``residual``'s grid) rescaled onto ``out``'s grid with one shared shift per channel."""
    c = lin.out_features
    s_out = out.channel_scale(c)
    m_b, m_r, shift = params.shared_shift_multipliers(
        branch.channel_scale(c) / s_out, residual.channel_scale(c) / s_out, ("branch ratio", "residual ratio"))
    lin.branch_multiplier.copy_(m_b)
    lin.residual_multiplier.copy_(m_r)
    lin.residual_shift.copy_(shift)


def convert_layernorm(norm: QuantLayerNorm, in_quantizer: QAct, out_quantizer: QAct) -> None:
    """Integer LayerNorm parameters of ``norm`` between two calibrated quantizers (PTF input,
    per-tensor output): ``ptf_alpha`` and, by ``norm.kind``, the dyadic (FQ-ViT's formula) or the
    exact LayerNorm's multipliers."""
    c = norm.channels
    in_scale = in_quantizer.channel_scale(c)
    norm.ptf_alpha.copy_(params.ptf_alpha(in_scale))
    s_out = float(out_quantizer.scale)
    if norm.kind == "dyadic":
        gm, gs, beta = params.layernorm_dyadic_params(norm.weight.cpu(), norm.bias.cpu(), s_out)
        norm.gamma_multiplier.copy_(gm)
        norm.gamma_shift.copy_(gs)
        norm.beta_fixed.copy_(beta)
    else:
        wm, bias, shift = params.layernorm_params(norm.weight.cpu(), norm.bias.cpu(), s_out)
        norm.weight_multiplier.copy_(wm)
        norm.ln_bias.copy_(bias)
        norm.ln_shift.copy_(shift)
        # The float LayerNorm's epsilon (FQ-ViT's own integer LayerNorm has none: kind "dyadic").
        norm.variance_offset.fill_(params.layernorm_variance_offset(c, norm.eps, float(in_scale.min())))


def convert_attention(attn: "QuantAttention") -> None:
    """The attention core: score requantization (``d**-0.5`` folded in), the softmax's exponent
    table (LIS, or the uniform softmax's ``exp(-d * s_score)`` with ``1 / s_softmax``) and the
    context requantization onto ``attn.qact2``."""
    s_qkv = float(attn.qact1.scale)
    s_score = float(attn.qact_attn1.scale)
    s_ctx = float(attn.qact2.scale)
    m, s = _fixed(s_qkv * s_qkv * attn.scale / s_score, "score ratio s_qkv**2 / sqrt(d) / s_score")
    attn.score_multiplier.fill_(m)
    attn.score_shift.fill_(s)
    if attn.lis:
        attn.exp_table.copy_(params.lis_exp_table(s_score, attn.qact_attn1.stored_zero_point))
        m, s = _fixed(s_qkv * 2.0**-LIS_VALUE_SHIFT / s_ctx, "context ratio s_qkv * 2**-15 / s_ctx")
    else:
        attn.exp_table.copy_(params.uniform_exp_table(s_score))
        s_sm = float(attn.softmax.qact.scale)
        mi, si = _fixed(1.0 / s_sm, "1 / softmax scale")
        attn.inv_softmax_multiplier.fill_(mi)
        attn.inv_softmax_shift.fill_(si)
        m, s = _fixed(s_qkv * s_sm / s_ctx, "context ratio s_qkv * s_softmax / s_ctx")
    attn.out_multiplier.fill_(m)
    attn.out_shift.fill_(s)


def convert_mlp(mlp: "QuantMlp", in_quantizer: QAct) -> None:
    """The GELU step table for ``mlp.qact1``'s grid, fc1's requantization onto its pre-GELU grid
    (input on ``in_quantizer``'s grid) and fc2's onto ``mlp.qact2`` (its residual epilogue is the
    block's: :func:`convert_block`)."""
    table = params.gelu_table(float(mlp.qact1.scale), mlp.qact1.stored_zero_point)
    mlp.gelu_table = table.table.to(mlp.gelu_table.device)
    mlp.gelu_cell_bits.fill_(table.cell_bits)
    mlp.gelu_pre_zero_point.fill_(table.pre_zero_point)
    convert_linear(mlp.fc1, in_quantizer, table.pre_scale, in_zp=in_quantizer.stored_zero_point)
    convert_linear(mlp.fc2, mlp.qact1, float(mlp.qact2.scale), mlp.qact1.stored_zero_point)


# -- whole block / model --------------------------------------------------------------------------

def convert_block(block: "QuantTimmVitBlock") -> None:
    """Every int-mode parameter of a calibrated block, in data-flow order (seven ops)."""
    in_q, attn, mlp = block.input_quantizer, block.attn, block.mlp
    convert_layernorm(block.norm1, in_q, block.qact1)
    convert_linear(attn.qkv, block.qact1, float(attn.qact1.scale), block.qact1.stored_zero_point)
    convert_attention(attn)
    convert_linear(attn.proj, attn.qact2, float(attn.qact3.scale), attn.qact2.stored_zero_point)
    convert_residual(attn.proj, attn.qact3, in_q, block.qact2)
    convert_layernorm(block.norm2, block.qact2, block.qact3)
    convert_mlp(mlp, block.qact3)
    convert_residual(mlp.fc2, mlp.qact2, block.qact2, block.qact4)


def convert_head(model: "QuantVisionTransformer") -> None:
    """The model's final LayerNorm (class token, onto ``qact2``) and classifier head (onto ``act_out``)."""
    convert_layernorm(model.norm, model.blocks[-1].qact4, model.qact2)
    convert_linear(model.head, model.qact2, float(model.act_out.scale), model.qact2.stored_zero_point)


def release_float_weights(root: nn.Module) -> None:
    """Drop the float weights of every ``QuantLinear`` under ``root`` (kept only for float mode)."""
    for m in root.modules():
        if isinstance(m, QuantLinear):
            m.release_float_weight()


# -- buffers → Python ints ------------------------------------------------------------------------

def attention_ints(attn: "QuantAttention") -> AttentionInts:
    """Python ints of the attention core (read once per conversion / load)."""
    return AttentionInts(
        qkv_zp=attn.qact1.stored_zero_point,
        score_multiplier=int(attn.score_multiplier), score_shift=int(attn.score_shift),
        score_zp=attn.qact_attn1.stored_zero_point,
        out_multiplier=int(attn.out_multiplier), out_shift=int(attn.out_shift),
        out_zp=attn.qact2.stored_zero_point,
        softmax_zp=attn.softmax.qact.code_zero_point,
        inv_softmax_multiplier=int(attn.inv_softmax_multiplier), inv_softmax_shift=int(attn.inv_softmax_shift),
    )


def block_ints(block: "QuantTimmVitBlock") -> BlockInts:
    """Python ints of a whole block: the attention core's and every requantization point's zero point."""
    return BlockInts(**dataclasses.asdict(attention_ints(block.attn)),
                     in_zp=block.input_quantizer.stored_zero_point, qact1_zp=block.qact1.stored_zero_point,
                     qact3_attn_zp=block.attn.qact3.stored_zero_point, qact2_zp=block.qact2.stored_zero_point,
                     qact3_zp=block.qact3.stored_zero_point, pre_gelu_zp=int(block.mlp.gelu_pre_zero_point),
                     gelu_cell_bits=int(block.mlp.gelu_cell_bits),
                     mlp_qact2_zp=block.mlp.qact2.stored_zero_point, qact4_zp=block.qact4.stored_zero_point)


def head_ints(model: "QuantVisionTransformer") -> HeadInts:
    """Python ints of the model head."""
    return HeadInts(norm_in_zp=model.blocks[-1].qact4.stored_zero_point,
                    qact2_zp=model.qact2.stored_zero_point, out_zp=model.act_out.stored_zero_point)

