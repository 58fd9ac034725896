"""FQ-ViT observers: running statistics during calibration, then ``(scale, zero_point)``.

Restated from the official ``models/ptq/observer/*.py`` (docs/fqvit.md §2.2–§3.2). Every
observer sees one tensor per calibration batch through :meth:`Observer.update`; on the last batch
the owner calls :meth:`Observer.compute` with that batch's tensor (OMSE and PTF search on it, the
others ignore it). Scales are float32 tensors, zero points float32 tensors holding integers in the
*unsigned* code domain (0..255 for uint8), exactly as the official code keeps them; conversion to
the stored int8 domain (``zp - 128``) happens in :mod:`fqvit_kernels.nn`.

Statistics are taken per channel (last dim for activations, dim 0 for weights) and, in layer-wise
mode, reduced to one scalar after every update, as ``BaseObserver`` does.
"""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np
import torch

from ..contract import MAX_PTF_ALPHA

__all__ = [
    "EPS",
    "Observer",
    "MinMaxObserver",
    "EmaObserver",
    "PercentileObserver",
    "OmseObserver",
    "PtfObserver",
    "asymmetric_params",
    "symmetric_params",
    "make_observer",
]

#: float32 machine epsilon: the smallest scale an observer returns.
EPS = float(torch.finfo(torch.float32).eps)

Params = Tuple[torch.Tensor, torch.Tensor]


def asymmetric_params(min_val: torch.Tensor, max_val: torch.Tensor, qmin: int = 0, qmax: int = 255) -> Params:
    """``s = max((max - min) / (qmax - qmin), eps)``, ``zp = clip(qmin - round(min / s), qmin, qmax)``.

    The range is not forced to contain 0 (a quirk of the official code, kept).
    """
    scale = ((max_val - min_val) / float(qmax - qmin)).to(torch.float32).clamp(min=EPS)
    zero_point = (qmin - torch.round(min_val / scale)).clamp(qmin, qmax)
    return scale, zero_point


def symmetric_params(min_val: torch.Tensor, max_val: torch.Tensor, qmin: int = -128, qmax: int = 127) -> Params:
    """``s = max(max(-min, max) / ((qmax - qmin) / 2), eps)`` (divisor 127.5 for int8), ``zp = 0``."""
    bound = torch.max(-min_val, max_val)
    scale = (bound / (float(qmax - qmin) / 2)).to(torch.float32).clamp(min=EPS)
    return scale, torch.zeros_like(scale)


def fake_quant(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, qmin: int, qmax: int) -> torch.Tensor:
    """FQ-ViT's ``UniformQuantizer`` forward: ``(clip(round(x / s + zp), qmin, qmax) - zp) * s``."""
    return (torch.round(x / scale + zero_point).clamp(qmin, qmax) - zero_point) * scale


class Observer:
    """Base class: running per-channel (or layer-wise) min/max of a tensor.

    Args:
        bits: bit width; ``signed`` picks int (symmetric) or uint (asymmetric) bounds.
        signed: True for weights (symmetric), False for activations (asymmetric).
        channel_wise: keep one statistic per channel instead of one per tensor.
        weight: the tensor is a weight (channels along dim 0) rather than an activation
            (channels along the last dim).
    """

    def __init__(self, bits: int = 8, signed: bool = False, channel_wise: bool = False, weight: bool = False):
        self.bits = bits
        self.signed = signed
        self.channel_wise = channel_wise
        self.weight = weight
        if signed:
            self.qmin, self.qmax = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
        else:
            self.qmin, self.qmax = 0, 2**bits - 1
        self.min_val: Optional[torch.Tensor] = None
        self.max_val: Optional[torch.Tensor] = None

    @property
    def initialized(self) -> bool:
        """Whether :meth:`update` has seen at least one tensor."""
        return self.max_val is not None

    def _current(self, v: torch.Tensor) -> Params:
        """Per-channel (or, layer-wise, whole-tensor) min and max of one tensor.

        Min/max are exact, so reducing over the whole tensor at once equals FQ-ViT's per-channel
        statistic followed by ``.min()`` / ``.max()``; the channel-wise case reduces over the
        contiguous ``[-1, C]`` layout instead of the transposed view (same values, much faster).
        """
        v = v.detach().to(torch.float32)
        if not self.channel_wise:
            lo, hi = torch.aminmax(v)
            return lo, hi
        if self.weight:
            lo, hi = torch.aminmax(v.reshape(v.shape[0], -1), dim=1)
            return lo, hi
        if v.dim() == 4:
            v = v.permute(0, 2, 3, 1)
        lo, hi = torch.aminmax(v.reshape(-1, v.shape[-1]), dim=0)
        return lo, hi

    def _reduce(self) -> None:
        if not self.channel_wise:
            self.max_val = self.max_val.max()
            self.min_val = self.min_val.min()

    def update(self, v: torch.Tensor) -> None:
        """Fold one calibration tensor into the running statistics."""
        cur_min, cur_max = self._current(v)
        if self.max_val is None:
            self.min_val, self.max_val = cur_min, cur_max
        else:
            self.min_val = torch.min(self.min_val, cur_min)
            self.max_val = torch.max(self.max_val, cur_max)
        self._reduce()

    def _check_ready(self) -> None:
        if self.max_val is None:
            raise RuntimeError(f"{type(self).__name__}.compute called before any update (no calibration data seen)")

    def compute(self, inputs: Optional[torch.Tensor] = None) -> Params:
        """``(scale, zero_point)`` from the statistics (``inputs`` = last calibration batch)."""
        self._check_ready()
        if self.signed:
            return symmetric_params(self.min_val, self.max_val, self.qmin, self.qmax)
        return asymmetric_params(self.min_val, self.max_val, self.qmin, self.qmax)


class MinMaxObserver(Observer):
    """Running min/max over all calibration batches (``MinmaxObserver``)."""


class EmaObserver(Observer):
    """Exponential moving average of the per-batch min/max (``EmaObserver``, sigma 0.01)."""

    def __init__(self, *args, sigma: float = 0.01, **kwargs):
        super().__init__(*args, **kwargs)
        self.sigma = sigma

    def update(self, v: torch.Tensor) -> None:
        """First batch initialises; then ``stat += sigma * (batch stat - stat)``."""
        cur_min, cur_max = self._current(v)
        if self.max_val is None:
            self.min_val, self.max_val = cur_min, cur_max
        else:
            self.max_val = self.max_val + self.sigma * (cur_max - self.max_val)
            self.min_val = self.min_val + self.sigma * (cur_min - self.min_val)
        self._reduce()


class PercentileObserver(Observer):
    """Quantiles ``alpha`` / ``1 - alpha`` of the whole tensor, EMA across batches (layer-wise only)."""

    #: torch.quantile refuses inputs larger than this; the official code then falls back to numpy.
    TORCH_QUANTILE_LIMIT = 2**24

    def __init__(self, *args, alpha: float = 0.99999, sigma: float = 0.01, **kwargs):
        super().__init__(*args, **kwargs)
        if self.channel_wise:
            raise ValueError("PercentileObserver is layer-wise only (as in FQ-ViT)")
        self.alpha = alpha
        self.sigma = sigma

    def _quantiles(self, v: torch.Tensor) -> Params:
        flat = v.detach().to(torch.float32).reshape(-1)
        if flat.numel() <= self.TORCH_QUANTILE_LIMIT:
            hi = torch.quantile(flat, self.alpha)
            lo = torch.quantile(flat, 1.0 - self.alpha)
        else:
            data = flat.cpu().numpy()
            hi = torch.tensor(np.percentile(data, self.alpha * 100), dtype=torch.float32, device=flat.device)
            lo = torch.tensor(np.percentile(data, (1 - self.alpha) * 100), dtype=torch.float32, device=flat.device)
        return lo, hi

    def update(self, v: torch.Tensor) -> None:
        """EMA (``sigma``) of the whole-tensor quantiles ``1 - alpha`` and ``alpha``."""
        cur_min, cur_max = self._quantiles(v)
        if self.max_val is None:
            self.min_val, self.max_val = cur_min, cur_max
        else:
            self.max_val = self.max_val + self.sigma * (cur_max - self.max_val)
            self.min_val = self.min_val + self.sigma * (cur_min - self.min_val)


class OmseObserver(Observer):
    """MinMax statistics, then the range ``(1 - 0.01 i) * [min, max]``, ``i < 90``, of least MSE.

    The MSE is taken over the whole last-batch tensor; a strictly smaller score wins, so ties keep
    the widest range. Always asymmetric.
    """

    def __init__(self, *args, candidates: int = 90, **kwargs):
        super().__init__(*args, **kwargs)
        self.candidates = candidates

    def compute(self, inputs: Optional[torch.Tensor] = None) -> Params:
        """Grid search on ``inputs`` (the last calibration batch); asymmetric parameters."""
        self._check_ready()
        if inputs is None:
            raise ValueError("OmseObserver.compute needs the last calibration batch as inputs")
        x = inputs.detach().to(torch.float32)
        best_score, best = 1e10, None
        for i in range(self.candidates):
            new_max = self.max_val * (1.0 - i * 0.01)
            new_min = self.min_val * (1.0 - i * 0.01)
            scale, zp = asymmetric_params(new_min, new_max, self.qmin, self.qmax)
            score = (x - fake_quant(x, scale, zp, self.qmin, self.qmax)).abs().pow(2.0).mean()
            if best is None or score < best_score:
                best_score, best = score, (new_min, new_max)
        return asymmetric_params(best[0], best[1], self.qmin, self.qmax)


class PtfObserver(Observer):
    """Power-of-two factor observer for LayerNorm inputs (``PtfObserver``, docs/fqvit.md §3.2).

    Per-channel running min/max; at the end ``s8 = (max_t - min_t) / 255`` over all channels,
    candidates ``s8 / 8 * 2**a`` for ``a`` in 0..3, one zero point computed with ``s8``, and for
    every channel the ``a`` of least MSE on the last calibration batch (ties: smallest ``a``).
    Returns a length-C scale vector and a scalar zero point.
    """

    #: K of the paper: factors 2**0 .. 2**K over the finest scale (``compute`` tries exactly these).
    FACTORS = MAX_PTF_ALPHA

    def __init__(self, bits: int = 8, **kwargs):
        kwargs.pop("channel_wise", None)
        super().__init__(bits, signed=False, channel_wise=True, **kwargs)
        self.alpha: Optional[torch.Tensor] = None

    def compute(self, inputs: Optional[torch.Tensor] = None) -> Params:
        """PTF search on ``inputs [..., C]``; sets :attr:`alpha`, returns (scale ``[C]``, zero point)."""
        self._check_ready()
        if inputs is None or inputs.dim() < 2:
            raise ValueError("PtfObserver.compute needs the last calibration batch [..., C] as inputs")
        qmin, qmax = self.qmin, self.qmax
        max_t, min_t = self.max_val.max(), self.min_val.min()
        scale8 = ((max_t - min_t) / float(qmax - qmin)).clamp(min=EPS)
        candidates = [scale8 / 8, scale8 / 4, scale8 / 2, scale8]
        zero_point = (qmin - torch.round(min_t / scale8)).clamp(qmin, qmax)
        x = inputs.detach().to(torch.float32)
        channels = x.shape[-1]
        alpha = torch.zeros(channels, dtype=torch.int64)
        for c in range(channels):
            data = x[..., c].unsqueeze(-1)
            scores = [(data - fake_quant(data, s, zero_point, qmin, qmax)).abs().pow(2.0).mean() for s in candidates]
            best = min(scores)
            alpha[c] = scores.index(best)
        self.alpha = alpha
        scale = candidates[0] * torch.pow(2.0, alpha.to(torch.float32)).to(scale8.device)
        return scale.to(torch.float32), zero_point


def make_observer(kind: str, bits: int = 8, config=None) -> Observer:
    """Activation observer by name: ``minmax``, ``ema``, ``percentile``, ``omse`` (layer-wise) or ``ptf``.

    ``config`` (a :class:`~fqvit_kernels.quant.config.QuantConfig`) supplies the EMA / percentile /
    OMSE constants; FQ-ViT's defaults are used without it.
    """
    sigma = getattr(config, "ema_sigma", 0.01)
    if kind == "minmax":
        return MinMaxObserver(bits)
    if kind == "ema":
        return EmaObserver(bits, sigma=sigma)
    if kind == "percentile":
        return PercentileObserver(bits, alpha=getattr(config, "percentile_alpha", 0.99999),
                                  sigma=getattr(config, "percentile_sigma", 0.01))
    if kind == "omse":
        return OmseObserver(bits, candidates=getattr(config, "omse_candidates", 90))
    if kind == "ptf":
        return PtfObserver(bits)
    raise ValueError(f"unknown observer {kind!r}")
