"""Quantization settings: :class:`QuantConfig` (FQ-ViT's defaults) and the named presets.

FQ-ViT's ``Config(ptf, lis, quant_method)`` (docs/fqvit.md §1) fixes the bit types; the
fields here restate it:

* weights: int8, symmetric, per output channel, MinMax (divisor 127.5) — not configurable;
* ordinary activations: uint8, asymmetric, per tensor, observer ``observer``;
* LayerNorm inputs: PTF (per-channel ``s1 * 2**alpha``, shared zero point) when ``ptf`` is on,
  else the ordinary observer per tensor and a float LayerNorm in ``fake`` mode;
* softmax: Log-Int-Softmax with ``attn_bits``-bit log2 codes when ``lis`` is on, else float softmax
  followed by a uniform ``attn_bits``-bit quantizer (only 8 is supported there).
"""

from __future__ import annotations

import dataclasses
from typing import Dict

__all__ = ["QuantConfig", "PRESETS", "get_config", "OBSERVERS", "INT_LAYERNORMS", "MIN_WEIGHT_BITS"]

#: Names of the activation observers (docs/fqvit.md §2.3).
OBSERVERS = ("minmax", "ema", "percentile", "omse")
#: ``QuantConfig.int_layernorm`` choices.
INT_LAYERNORMS = ("fqvit", "exact")


#: Narrowest weights supported (int4; the int8 kernels run any width up to 8).
MIN_WEIGHT_BITS = 4


@dataclasses.dataclass(frozen=True)
class QuantConfig:
    """Bit widths and algorithm switches of a quantized ViT; defaults = FQ-ViT W8/A8/attn4.

    Attributes:
        weight_bits: weight bits, 4 to 8: symmetric per output channel on the signed range
            ``-2**(b-1) .. 2**(b-1) - 1`` (FQ-ViT's ``BitType(b, signed=True)``), stored in the int8
            weight tensors and run on the same int8 kernels (only the range changes).
        act_bits: activation bits (only 8: uint8 asymmetric, stored as int8 = code - 128).
        attn_bits: bits of the attention map: LIS code width (4 or 8) when ``lis``, else the
            uniform softmax quantizer width (8).
        observer: activation observer for the ordinary (non-PTF) activations: ``minmax``,
            ``ema``, ``percentile`` or ``omse``.
        ptf: power-of-two factor quantization of LayerNorm inputs plus FQ-ViT's integer-mode
            LayerNorm formula in ``fake`` mode.
        lis: Log-Int-Softmax on the attention map.
        int_layernorm: ``int`` mode only, with ``ptf``: ``"fqvit"`` (default) runs FQ-ViT's own
            integer LayerNorm (an 8-bit dyadic ``M / 2**N`` factor per element,
            ``torch.ops.fqvit.ptf_layernorm_dyadic``), which is what ``fake`` mode and the paper's
            numbers compute; ``"exact"`` runs an integer LayerNorm with a 31-bit root and
            reciprocal (``torch.ops.fqvit.ptf_layernorm``), closer to the float LayerNorm but
            no longer identical to ``fake``. Without ``ptf`` FQ-ViT uses a float LayerNorm and
            ``int`` mode always uses the exact one.
        ema_sigma: EMA momentum of the ``ema`` observer.
        percentile_alpha: quantile of the ``percentile`` observer.
        percentile_sigma: EMA momentum of the ``percentile`` observer across batches.
        omse_candidates: number of shrunken ranges the ``omse`` observer tries.
    """

    weight_bits: int = 8
    act_bits: int = 8
    attn_bits: int = 4
    observer: str = "minmax"
    ptf: bool = True
    lis: bool = True
    int_layernorm: str = "fqvit"
    ema_sigma: float = 0.01
    percentile_alpha: float = 0.99999
    percentile_sigma: float = 0.01
    omse_candidates: int = 90

    def __post_init__(self) -> None:
        if not isinstance(self.weight_bits, int) or isinstance(self.weight_bits, bool) \
                or not MIN_WEIGHT_BITS <= self.weight_bits <= 8:
            raise ValueError(f"weight_bits={self.weight_bits!r}: weights take {MIN_WEIGHT_BITS} to 8 bits")
        if self.act_bits != 8:
            raise ValueError(f"act_bits={self.act_bits}: only 8-bit activations are supported")
        if self.observer not in OBSERVERS:
            raise ValueError(f"observer={self.observer!r}: choose one of {OBSERVERS}")
        if self.lis and self.attn_bits not in (4, 8):
            raise ValueError(f"attn_bits={self.attn_bits}: Log-Int-Softmax supports 4 or 8 bits")
        if not self.lis and self.attn_bits != 8:
            raise ValueError(f"attn_bits={self.attn_bits}: the uniform softmax quantizer supports 8 bits only")
        if self.int_layernorm not in INT_LAYERNORMS:
            raise ValueError(f"int_layernorm={self.int_layernorm!r}: choose one of {INT_LAYERNORMS}")
        if not 1 <= self.omse_candidates <= 100:
            raise ValueError(f"omse_candidates={self.omse_candidates}: must lie in 1..100")

    @property
    def bits_label(self) -> str:
        """``W/A/Attn`` bits as in the paper's table, e.g. ``8/8/4``."""
        return f"{self.weight_bits}/{self.act_bits}/{self.attn_bits}"

    def to_dict(self) -> Dict[str, object]:
        """Plain dict (stored in checkpoints)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Dict[str, object]) -> "QuantConfig":
        """Inverse of :meth:`to_dict`; unknown keys raise ``ValueError``."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(values) - names
        if unknown:
            raise ValueError(f"unknown QuantConfig fields {sorted(unknown)}")
        return cls(**values)


#: Named settings of the paper's table. ``fqvit-8/8/8`` is PTF with a float softmax quantized to
#: uint8 (no LIS): the author's issue #16 names both this and "LIS with 8-bit codes" as ways to get
#: 8/8/8; LIS rounds every probability to a power of two whatever its width, so the uniform 8-bit
#: softmax is the more accurate of the two, and it has an integer path here. LIS 8-bit is kept as
#: ``fqvit-8/8/8-lis8`` (fake mode only: the fused attention kernel takes 4-bit codes).
PRESETS: Dict[str, QuantConfig] = {
    "minmax-8/8/8": QuantConfig(attn_bits=8, observer="minmax", ptf=False, lis=False),
    "ema-8/8/8": QuantConfig(attn_bits=8, observer="ema", ptf=False, lis=False),
    "percentile-8/8/8": QuantConfig(attn_bits=8, observer="percentile", ptf=False, lis=False),
    "omse-8/8/8": QuantConfig(attn_bits=8, observer="omse", ptf=False, lis=False),
    "fqvit-8/8/8": QuantConfig(attn_bits=8, ptf=True, lis=False),
    "fqvit-8/8/8-lis8": QuantConfig(attn_bits=8, ptf=True, lis=True),
    "fqvit-8/8/4": QuantConfig(attn_bits=4, ptf=True, lis=True),
    "fqvit-4/8/4": QuantConfig(weight_bits=4, attn_bits=4, ptf=True, lis=True),
    # int mode with the exact integer LayerNorm instead of FQ-ViT's 8-bit dyadic one (fake unchanged).
    "fqvit-8/8/8-exactln": QuantConfig(attn_bits=8, ptf=True, lis=False, int_layernorm="exact"),
    "fqvit-8/8/4-exactln": QuantConfig(attn_bits=4, ptf=True, lis=True, int_layernorm="exact"),
}


def get_config(name: str) -> QuantConfig:
    """The preset called ``name`` (see :data:`PRESETS`); ``ValueError`` listing the names otherwise."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown quantization preset {name!r}; choose one of {sorted(PRESETS)}") from None
