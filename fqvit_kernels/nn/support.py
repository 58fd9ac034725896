"""Which timm Vision Transformers the package supports, checked in one place: the model
(:func:`check_supported_vit`, used by ``quantize_model`` and ``load_quantized``) and each block
(:func:`check_supported_block`, used by ``QuantTimmVitBlock``). Each check raises
:class:`~fqvit_kernels.nn.layers.UnsupportedModelError` naming the first unsupported feature."""

from __future__ import annotations

from torch import nn

from .layers import UnsupportedModelError

__all__ = ["check_supported_block", "check_supported_vit"]


def _timm_classes():
    from timm.layers import Mlp
    from timm.models.vision_transformer import Attention, Block
    return Block, Attention, Mlp


def _is_identity(m) -> bool:
    return m is None or isinstance(m, nn.Identity)


def check_supported_block(block: nn.Module) -> None:
    """Raise :class:`UnsupportedModelError` (a ``NotImplementedError``) naming the first feature of
    ``block`` that is not supported."""
    Block, Attention, Mlp = _timm_classes()
    if type(block) is not Block:
        raise UnsupportedModelError(f"only timm.models.vision_transformer.Block is supported, got {type(block).__name__}")
    attn, mlp = block.attn, block.mlp
    if type(attn) is not Attention:
        raise UnsupportedModelError(f"attention variant {type(attn).__name__} is not supported (plain timm Attention only)")
    if not (_is_identity(getattr(attn, "q_norm", None)) and _is_identity(getattr(attn, "k_norm", None))):
        raise UnsupportedModelError("qk_norm (LayerNorm on q and k) is not supported")
    if not _is_identity(getattr(attn, "norm", None)):
        raise UnsupportedModelError("scale_attn_norm (LayerNorm on the attention output) is not supported")
    if getattr(attn, "gate", None) is not None:
        raise UnsupportedModelError("gated attention (attn.gate) is not supported")
    if getattr(attn, "attn_dim", attn.num_heads * attn.head_dim) != attn.qkv.in_features or \
            attn.proj.out_features != attn.qkv.in_features:
        raise UnsupportedModelError("attention with attn_head_dim / dim_out different from dim is not supported")
    if not (_is_identity(block.ls1) and _is_identity(block.ls2)):
        raise UnsupportedModelError("layer scale (init_values / ls1, ls2) is not supported")
    if type(mlp) is not Mlp:
        raise UnsupportedModelError(f"MLP variant {type(mlp).__name__} is not supported (fused/gated MLPs such as "
                                  "GluMlp/SwiGLU are refused; plain timm Mlp only)")
    if not (isinstance(mlp.fc1, nn.Linear) and isinstance(mlp.fc2, nn.Linear)):
        raise UnsupportedModelError("convolutional MLP (use_conv) is not supported")
    if not _is_identity(getattr(mlp, "norm", None)):
        raise UnsupportedModelError("scale_mlp_norm (LayerNorm inside the MLP) is not supported")
    act = mlp.act
    if type(act) is not nn.GELU or getattr(act, "approximate", "none") != "none":
        raise UnsupportedModelError(f"activation {act!r} is not supported (exact nn.GELU only)")
    for name in ("norm1", "norm2"):
        norm = getattr(block, name)
        if not isinstance(norm, nn.LayerNorm) or norm.weight is None or norm.bias is None:
            raise UnsupportedModelError(f"{name} must be an affine nn.LayerNorm, got {type(norm).__name__}")


def check_supported_vit(vit: nn.Module) -> None:
    """Raise :class:`UnsupportedModelError` naming the first feature of ``vit`` that quantize_model
    does not support (its blocks are checked by :func:`check_supported_block`)."""
    from timm.models.vision_transformer import VisionTransformer

    if not isinstance(vit, VisionTransformer):
        raise UnsupportedModelError(f"quantize_model supports timm VisionTransformer (vit_*, deit_*), got {type(vit).__name__}")
    if hasattr(vit, "dist_token") or hasattr(vit, "head_dist"):
        raise UnsupportedModelError("distilled DeiT models (dist_token / head_dist) are not supported; use the "
                                  "non-distilled deit_* models")
    if getattr(vit, "global_pool", "token") != "token" or vit.cls_token is None:
        raise UnsupportedModelError(f"only class-token pooling is supported (global_pool='token'), got "
                                  f"{getattr(vit, 'global_pool', None)!r}")
    if getattr(vit, "reg_token", None) is not None:
        raise UnsupportedModelError("register tokens (reg_tokens) are not supported")
    if getattr(vit, "dynamic_img_size", False):
        raise UnsupportedModelError("dynamic_img_size is not supported")
    if vit.pos_embed is None:
        raise UnsupportedModelError("models without a learned absolute position embedding are not supported")
    for name in ("norm_pre", "fc_norm"):
        if not isinstance(getattr(vit, name, nn.Identity()), nn.Identity):
            raise UnsupportedModelError(f"{name} (pre_norm / fc_norm) is not supported")
    if getattr(vit, "attn_pool", None) is not None:
        raise UnsupportedModelError("attention pooling (global_pool='map') is not supported")
    if not isinstance(vit.norm, nn.LayerNorm):
        raise UnsupportedModelError("the final norm must be a LayerNorm (final_norm=True)")
    if not isinstance(vit.head, nn.Linear):
        raise UnsupportedModelError("a linear classification head is required (num_classes > 0)")
