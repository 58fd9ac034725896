"""Quantized timm ViT modules: :class:`QuantTimmVitBlock` and whole-model conversion.

One concern per file: ``support`` (which timm models and blocks are supported, checked before
anything is built), ``layers`` (the quantizer ``QAct``, ``QuantLinear``, ``QuantLayerNorm``, mode
switching), ``block`` (the block's modules and their three forwards), ``model`` (the whole ViT,
``quantize_model``, checkpoints), ``calibration`` (FQ-ViT's calibration loop), ``convert`` (every
float scale → integer parameter of the int forward, and the frozen bundles of Python ints the
forwards read), ``adaround`` (learned weight rounding) and ``fidelity`` (per-stage agreement of the int and fake forwards).
"""

from .adaround import AdaRoundConfig
from .block import QuantizedLayer, QuantIntSoft, QuantTimmVitBlock, check_supported_block
from .layers import NotCalibratedError, QAct, QLayerNorm, QuantLayerNorm, QuantLinear, UnsupportedModelError, set_mode

__all__ = ["QuantTimmVitBlock", "check_supported_block", "QAct", "QuantLinear", "QuantLayerNorm", "set_mode",
           "NotCalibratedError", "UnsupportedModelError", "QLayerNorm", "QuantIntSoft", "QuantizedLayer",
           "AdaRoundConfig"]

from .model import QuantVisionTransformer, arch_config, load_quantized, quantize_model, save_quantized  # noqa: E402

__all__ += ["QuantVisionTransformer", "quantize_model", "save_quantized", "load_quantized", "arch_config"]
