"""AdaRound weight rounding (Nagel et al., ICML 2020, "Up or Down? Adaptive Rounding for
Post-Training Quantization"), layer by layer on the calibration images.

Round-to-nearest picks each weight code independently; AdaRound picks, per weight, floor or
ceiling so that the layer's *output* stays close to the float layer's. For one quantized linear
layer with float weight ``W``, per-row scale ``s`` and float bias ``b``:

* a continuous variable ``V`` per weight gives the rectified sigmoid
  ``h(V) = clip(sigmoid(V) * (zeta - gamma) + gamma, 0, 1)`` (``zeta = 1.1``, ``gamma = -0.1``)
  and the soft weight ``W~ = s * clip(floor(W / s) + h(V), qmin, qmax)``; ``V`` starts where
  ``h(V)`` equals the fractional part of ``W / s`` (so ``W~`` starts at ``W`` inside the range);
* the loss is ``mean_rows ||W~ x_q + b - (W x_f + b)||^2 + lambda * sum(1 - |2 h(V) - 1|^beta)``:
  ``x_q`` is the layer's input in the fake-quantized model (every earlier layer already rounded:
  the quantization error of the inputs is compensated, the paper's asymmetric reconstruction)
  and ``x_f`` the float model's input at the same token; the regularizer (off for the first
  ``warmup`` fraction of the iterations) pushes every ``h`` to 0 or 1 while ``beta`` decays
  linearly from 20 to 2;
* after ``iters`` Adam steps the codes are frozen at ``floor(W / s) + [V >= 0]``, clipped to the
  range: integers on the same scales, so ``fake`` mode, ``int`` mode and the int8 kernels are
  unchanged (only ``weight_int8`` differs from round-to-nearest).

Activation quantizers are calibrated in float mode first (as in FQ-ViT), so AdaRound changes
weights only. Deterministic under ``seed`` (token sampling and minibatch order). Because every
layer is fitted on its own, :func:`adaround_model` finally checks the whole model's output on the
calibration images against the float model's and keeps round-to-nearest if that is closer.
"""

from __future__ import annotations

import dataclasses
from typing import Dict, List, NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..quant.quantizers import weight_range
from .layers import QuantLinear, set_mode

__all__ = ["AdaRoundConfig", "AdaRoundResult", "adaround_layer", "adaround_model", "WEIGHT_ROUNDINGS"]

#: ``quantize_model(weight_rounding=...)``: round to nearest (FQ-ViT) or learned (AdaRound).
WEIGHT_ROUNDINGS = ("nearest", "adaround")

_ZETA, _GAMMA = 1.1, -0.1


@dataclasses.dataclass(frozen=True)
class AdaRoundConfig:
    """AdaRound's settings (the paper's defaults where it gives them).

    Attributes:
        iters: Adam steps per layer.
        rows: token rows sampled per layer from the calibration images (inputs kept in memory).
        batch_rows: rows per Adam step.
        lr: Adam learning rate on ``V``.
        reg_weight: ``lambda`` of the rounding regularizer.
        warmup: fraction of the iterations without the regularizer.
        beta: ``(start, end)`` of the regularizer's exponent, decayed linearly after the warmup.
        seed: seeds the token sampling and the minibatches.
    """

    iters: int = 1000
    rows: int = 8192
    batch_rows: int = 1024
    lr: float = 1e-3
    reg_weight: float = 0.01
    warmup: float = 0.2
    beta: tuple = (20.0, 2.0)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.iters < 1 or self.rows < 1 or self.batch_rows < 1:
            raise ValueError(f"AdaRound needs iters, rows and batch_rows >= 1, got {self.iters}, {self.rows}, "
                             f"{self.batch_rows}")
        if not 0.0 <= self.warmup < 1.0:
            raise ValueError(f"warmup must lie in [0, 1), got {self.warmup}")
        if not (self.lr > 0 and self.reg_weight >= 0):
            raise ValueError(f"lr must be > 0 and reg_weight >= 0, got {self.lr}, {self.reg_weight}")


def _rectified_sigmoid(v: torch.Tensor) -> torch.Tensor:
    return (torch.sigmoid(v) * (_ZETA - _GAMMA) + _GAMMA).clamp(0.0, 1.0)


def adaround_layer(lin: QuantLinear, x_quant: torch.Tensor, x_float: torch.Tensor,
                   config: AdaRoundConfig = AdaRoundConfig(), generator: Optional[torch.Generator] = None) -> Dict[str, float]:
    """Learn the rounding of ``lin``'s weight from matching input rows ``x_quant`` (fake-quantized
    model) and ``x_float`` (float model), ``[rows, in_features]``, then set its integer weight.

    Needs the float weight (before conversion releases it). Returns the reconstruction error
    (mean squared output difference per row) with nearest and with learned rounding on the rows,
    and the fraction of codes that differ from round-to-nearest.
    """
    if lin.weight is None:
        raise ValueError("AdaRound needs the layer's float weight: run it before convert() releases it")
    if x_quant.shape != x_float.shape or x_quant.dim() != 2 or x_quant.shape[1] != lin.in_features:
        raise ValueError(f"expected matching inputs [rows, {lin.in_features}], got {tuple(x_quant.shape)} and "
                         f"{tuple(x_float.shape)}")
    gen = generator or torch.Generator().manual_seed(config.seed)
    w = lin.weight.detach().float()
    scale = lin.weight_scale.detach().float().reshape(-1, 1)
    bias = None if lin.bias is None else lin.bias.detach().float()
    qmin, qmax = weight_range(lin.weight_bits)
    floor = torch.floor(w / scale)
    rest = (w / scale - floor).clamp(0.0, 1.0)
    # h(V) = rest at the start: sigmoid(V) = (rest - gamma) / (zeta - gamma), strictly inside (0, 1).
    v = torch.logit((rest - _GAMMA) / (_ZETA - _GAMMA)).detach().requires_grad_(True)
    x_quant = x_quant.detach().float().to(w.device)  # the rows stay on the layer's device (GPU-ready)
    x_float = x_float.detach().float().to(w.device)
    with torch.no_grad():
        target = F.linear(x_float, w, bias)

    def error(codes: torch.Tensor) -> float:
        with torch.no_grad():
            return float((F.linear(x_quant, codes * scale, bias) - target).pow(2).sum(-1).mean())

    nearest = torch.round(w / scale).clamp(qmin, qmax)
    before = error(nearest)
    optimizer = torch.optim.Adam([v], lr=config.lr)
    rows = x_quant.shape[0]
    warm = int(config.warmup * config.iters)
    beta_start, beta_end = config.beta
    with torch.enable_grad():
        for it in range(config.iters):
            # Drawn on the CPU generator (the same minibatches on every device), used where the rows live.
            idx = torch.randint(rows, (min(config.batch_rows, rows),), generator=gen).to(x_quant.device)
            h = _rectified_sigmoid(v)
            w_soft = (floor + h).clamp(qmin, qmax) * scale
            loss = (F.linear(x_quant[idx], w_soft, bias) - target[idx]).pow(2).sum(-1).mean()
            if it >= warm:
                progress = (it - warm) / max(1, config.iters - warm)
                beta = beta_end + (beta_start - beta_end) * (1.0 - progress)
                loss = loss + config.reg_weight * (1.0 - (2.0 * h - 1.0).abs().pow(beta)).sum()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    codes = (floor + (v.detach() >= 0).to(floor.dtype)).clamp(qmin, qmax)
    lin.set_weight_codes(codes)
    return dict(nearest_error=before, adaround_error=error(codes),
                changed=float((codes != nearest).float().mean()))


class _Captured(Exception):
    """Stops a forward pass once the hooked layer's input has been recorded."""


def _each_input(model: nn.Module, lin: QuantLinear, batches: List[torch.Tensor], forward, mode: str, record) -> None:
    """``record(x)`` with ``lin``'s input on every batch, ``model`` in ``mode``; each forward stops at ``lin``."""
    def hook(module, args):
        record(args[0].detach())
        raise _Captured

    handle = lin.register_forward_pre_hook(hook)
    set_mode(model, mode)
    try:
        for batch in batches:
            try:
                forward(batch)
            except _Captured:
                pass
    finally:
        handle.remove()


def _row_counts(model: nn.Module, lin: QuantLinear, batches: List[torch.Tensor], forward) -> List[int]:
    """Token rows that reach ``lin`` per batch."""
    counts: List[int] = []
    _each_input(model, lin, batches, forward, "float", lambda x: counts.append(x.numel() // x.shape[-1]))
    return counts


def _layer_inputs(model: nn.Module, lin: QuantLinear, batches: List[torch.Tensor], forward, mode: str,
                  picks: List[torch.Tensor]) -> torch.Tensor:
    """``lin``'s input rows ``picks[i]`` (token-row indices) of every batch, with ``model`` in ``mode``."""
    rows: List[torch.Tensor] = []
    _each_input(model, lin, batches, forward, mode,
                lambda x: rows.append(x.reshape(-1, x.shape[-1])[picks[len(rows)].to(x.device)].float()))
    if len(rows) != len(batches):
        raise RuntimeError("AdaRound: the layer did not run on every calibration batch")
    return torch.cat(rows)


class AdaRoundResult(NamedTuple):
    """What :func:`adaround_model` did: per layer :func:`adaround_layer`'s report, the model output's
    mean squared error against the float model on the calibration images with round-to-nearest and
    with the learned rounding, and which rounding the model kept (``"adaround"`` or ``"nearest"``)."""

    layers: Dict[str, Dict[str, float]]
    output_error_nearest: float
    output_error_adaround: float
    kept: str


def _output_error(model: nn.Module, batches: List[torch.Tensor], forward, reference: List[torch.Tensor]) -> float:
    set_mode(model, "fake")
    total, count = 0.0, 0
    for batch, ref in zip(batches, reference):
        out = forward(batch).float()
        total += float((out - ref).pow(2).sum())
        count += out.numel()
    return total / max(1, count)


@torch.no_grad()
def adaround_model(model: nn.Module, batches: List[torch.Tensor], forward, config: AdaRoundConfig = AdaRoundConfig(),
                   progress: bool = False) -> AdaRoundResult:
    """AdaRound every layer of ``model.get_quantized_layers()`` in order, on ``batches`` run through
    ``forward(batch)``; the model must be calibrated and still hold its float weights. Leaves the
    model in float mode; convert it afterwards.

    Layer-wise reconstruction does not see the model's output; as a guard (no labels needed), the
    fake-quantized model's output on the calibration images is compared with the float model's
    before and after, and the round-to-nearest codes are restored if AdaRound moved the output
    further from the float model's (:attr:`AdaRoundResult.kept` says which).
    """
    from tqdm.auto import tqdm

    layers = model.get_quantized_layers()
    nearest_codes = {name: layer.linear.weight_int8.clone() for name, layer in layers.items()}
    set_mode(model, "float")
    reference = [forward(batch).float() for batch in batches]
    error_nearest = _output_error(model, batches, forward, reference)
    gen = torch.Generator().manual_seed(config.seed)
    report: Dict[str, Dict[str, float]] = {}
    bar = tqdm(layers.items(), desc="AdaRound", disable=not progress, total=len(layers))
    for name, layer in bar:
        lin = layer.linear
        # Token rows per batch, drawn once per layer (the same rows in both passes).
        sizes = _row_counts(model, lin, batches, forward)
        total = sum(sizes)
        keep = min(config.rows, total)
        chosen = torch.randperm(total, generator=gen)[:keep].sort().values
        picks, start = [], 0
        for n in sizes:
            picks.append(chosen[(chosen >= start) & (chosen < start + n)] - start)
            start += n
        x_float = _layer_inputs(model, lin, batches, forward, "float", picks)
        x_quant = _layer_inputs(model, lin, batches, forward, "fake", picks)
        report[name] = adaround_layer(lin, x_quant, x_float, config, gen)
        bar.set_postfix(layer=name, err=f"{report[name]['nearest_error']:.3g}->{report[name]['adaround_error']:.3g}")
    error_adaround = _output_error(model, batches, forward, reference)
    kept = "adaround"
    if error_adaround > error_nearest:
        for name, layer in layers.items():
            layer.linear.set_weight_codes(nearest_codes[name])
        kept = "nearest"
    set_mode(model, "float")
    return AdaRoundResult(report, error_nearest, error_adaround, kept)

