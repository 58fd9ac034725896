"""Quantized timm ViT modules: :class:`QuantTimmVitBlock` and whole-model conversion."""

from .block import QuantTimmVitBlock, check_supported_block
from .layers import NotCalibratedError, QAct, QuantLayerNorm, QuantLinear, UnsupportedModelError, set_mode

__all__ = ["QuantTimmVitBlock", "check_supported_block", "QAct", "QuantLinear", "QuantLayerNorm", "set_mode",
           "NotCalibratedError", "UnsupportedModelError"]

from .model import QuantVisionTransformer, arch_config, load_quantized, quantize_model, save_quantized  # noqa: E402

__all__ += ["QuantVisionTransformer", "quantize_model", "save_quantized", "load_quantized", "arch_config"]
