"""FQ-ViT quantization algorithms: observers, quantizers, PTF, LIS and the configuration.

* :mod:`.config` — :class:`QuantConfig` (FQ-ViT defaults W8/A8/attn4, PTF, LIS, MinMax) and presets;
* :mod:`.observers` — MinMax, EMA, Percentile, OMSE and PTF observers;
* :mod:`.quantizers` — weight / activation quantizers, float32 LIS and integer-mode LayerNorm.

The modules that use them on a timm ViT live in :mod:`fqvit_kernels.nn`.
"""

from .config import PRESETS, QuantConfig, get_config
from .observers import (EmaObserver, MinMaxObserver, Observer, OmseObserver, PercentileObserver,
                        PtfObserver, make_observer)
from .quantizers import (fake_quantize, int_layernorm_float, log_int_softmax_float, quantize_codes,
                         quantize_weight)

__all__ = [
    "QuantConfig",
    "PRESETS",
    "get_config",
    "Observer",
    "MinMaxObserver",
    "EmaObserver",
    "PercentileObserver",
    "OmseObserver",
    "PtfObserver",
    "make_observer",
    "quantize_weight",
    "fake_quantize",
    "quantize_codes",
    "log_int_softmax_float",
    "int_layernorm_float",
]
