"""Building blocks of the quantized modules: the activation quantizer ``QAct``, ``QuantLinear``,
``QuantLayerNorm`` and the mode flags shared by all of them.

Every module here has three modes (docs/design.md §3):

* ``float`` — FP32 forward; while ``calibrating`` each observer records its tensor and, on the
  ``last_batch``, fixes its ``(scale, zero_point)`` (FQ-ViT ``calibrate`` / ``last_calibrate``);
* ``fake`` — float simulation of FQ-ViT (``quant = True``);
* ``int`` — handled by the owning block/model, which calls the ``torch.ops.fqvit`` kernels with
  integer parameters these modules hold as buffers.

Zero points are kept in FQ-ViT's unsigned code domain (``zero_point``, 0..255) next to the scale;
:attr:`QAct.stored_zero_point` gives the int8 storage domain used by the ops (``zp - 128``).
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..quant.config import QuantConfig
from ..quant.observers import Observer, make_observer
from ..quant.quantizers import fake_quantize, int_layernorm_float, quantize_weight, weight_range

__all__ = ["MODES", "QuantModule", "QAct", "QuantLinear", "QuantLayerNorm", "set_mode", "set_calibration", "track_buffers",
           "NotCalibratedError", "FloatWeightsUnavailableError", "UnsupportedModelError"]

MODES = ("float", "fake", "int")


class UnsupportedModelError(NotImplementedError):
    """A timm model, block variant or forward option that the quantized modules refuse to run
    rather than compute something else (qk_norm, layer scale, masks, distilled heads, ...)."""


class NotCalibratedError(RuntimeError):
    """A ``fake`` or ``int`` forward was asked of a module whose quantizers have no parameters yet."""


class FloatWeightsUnavailableError(RuntimeError):
    """``float`` mode (or calibration) was asked of a module that no longer holds its float weights:
    they are released at conversion (``keep_float_weights=False``) and a checkpoint holds int8 only."""


class QuantModule(nn.Module):
    """Mixin holding the mode and calibration flags (set model-wide by :func:`set_mode`).

    Quantized modules keep float32 scales and integer parameters: ``.half()``, ``.bfloat16()``,
    ``.double()`` and ``.to(dtype)`` raise ``TypeError`` instead of corrupting them; device moves
    (``.to(device)``, ``.cuda()``, ``.cpu()``) are fine and keep every bit.
    """

    def __init__(self) -> None:
        super().__init__()
        self.mode = "float"
        self.calibrating = False
        self.last_batch = False

    def _apply(self, fn, recurse=True):
        probe = fn(torch.zeros((), dtype=torch.float32))
        if isinstance(probe, torch.Tensor) and probe.dtype != torch.float32:
            raise TypeError(
                f"{type(self).__name__} keeps float32 scales and int8/int32/int64 integer parameters; a dtype "
                f"change (.half(), .bfloat16(), .double(), .to({probe.dtype})) would break them. Move it between "
                "devices with .to(device); give it inputs of any float dtype (images are converted to float32)")
        out = super()._apply(fn, recurse)
        track_buffers(self, recurse=False)  # the moved buffers are new tensors
        return out

    def __setstate__(self, state):
        super().__setstate__(state)
        track_buffers(self, recurse=False)  # copy.deepcopy, pickle: new tensors


def track_buffers(module: nn.Module, recurse: bool = True) -> None:
    """Let the op checks fingerprint ``module``'s buffers by version counter instead of a CRC of
    their contents (:func:`fqvit_kernels.checks.track_by_version`): a converted module's integer
    parameters are written only by in-place ops or loading, so its forwards then read no parameter
    on the host after their first call."""
    from ..checks import track_by_version

    track_by_version(module.buffers(recurse=recurse))


def set_mode(root: nn.Module, mode: str) -> None:
    """Put every :class:`QuantModule` under ``root`` (inclusive) in ``mode`` (float / fake / int).

    Raises :class:`FloatWeightsUnavailableError` for ``float`` when a linear layer has released its
    float weight (after conversion, or in a model loaded from a quantized checkpoint).
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if mode == "float":
        released = [name for name, m in root.named_modules() if isinstance(m, QuantLinear) and m.weight is None]
        if released:
            raise FloatWeightsUnavailableError(
                f"float mode needs the float weights, which {released[0]} (and {len(released) - 1} more) no longer "
                "holds: they are released at conversion and quantized checkpoints store int8 weights only. Use the "
                "float model itself, or quantize_model(..., keep_float_weights=True)")
    for m in root.modules():
        if isinstance(m, QuantModule):
            m.mode = mode


def set_calibration(root: nn.Module, calibrating: bool, last_batch: bool = False) -> None:
    """Switch observers on/off (``calibrating``) and mark the last calibration batch."""
    for m in root.modules():
        if isinstance(m, QuantModule):
            m.calibrating = calibrating
            m.last_batch = last_batch


class QAct(QuantModule):
    """FQ-ViT ``QAct``: uint8 asymmetric quantizer of an activation (per tensor, or PTF per channel).

    Args:
        channels: channel count (last dim) of the tensor; the PTF scale has that length.
        kind: ``act`` (observer ``config.observer``, per tensor), ``ptf`` (PtfObserver) or
            ``minmax`` (per-tensor MinMax regardless of the config).
        config: the :class:`QuantConfig`.
        name: dotted name used in error messages.
    """

    def __init__(self, channels: int, kind: str, config: QuantConfig, name: str = "qact") -> None:
        super().__init__()
        self.kind = kind
        self.name = name
        self.bits = config.act_bits
        observer_kind = {"act": config.observer, "ptf": "ptf", "minmax": "minmax"}[kind]
        self.observer: Observer = make_observer(observer_kind, self.bits, config)
        self.register_buffer("scale", torch.ones(channels if kind == "ptf" else 1, dtype=torch.float32))
        self.register_buffer("zero_point", torch.zeros((), dtype=torch.float32))
        self.register_buffer("calibrated", torch.zeros((), dtype=torch.bool))
        # The same state as Python values, read by the forwards: no tensor is read on the host there
        # (torch.compile(fullgraph=True), torch.export and CUDA graphs need that). Kept in step with
        # the buffers by set_params and after load_state_dict.
        self.is_calibrated = False
        self.code_zero_point = 0
        self.register_load_state_dict_post_hook(_sync_qact)

    @property
    def per_channel(self) -> bool:
        """Whether this is a PTF quantizer (one scale per channel)."""
        return self.kind == "ptf"

    @property
    def stored_zero_point(self) -> int:
        """The zero point in the int8 storage domain of the ops (``code - 128``)."""
        return self.code_zero_point - 2 ** (self.bits - 1)

    def sync_python_state(self) -> None:
        """Read ``calibrated`` and ``zero_point`` from the buffers into :attr:`is_calibrated` and
        :attr:`code_zero_point` (done after ``load_state_dict``; call it after writing the buffers
        directly)."""
        self.is_calibrated = bool(self.calibrated)
        self.code_zero_point = int(self.zero_point.item())

    def channel_scale(self, channels: int) -> torch.Tensor:
        """The scale as a float64 vector of length ``channels`` (a scalar scale is repeated)."""
        s = self.scale.detach().to("cpu", torch.float64)
        return s.expand(channels).clone() if s.numel() == 1 else s

    def require_calibrated(self) -> None:
        """Raise :class:`NotCalibratedError` if the parameters are not set yet."""
        if not self.is_calibrated:
            raise NotCalibratedError(f"{self.name} has no quantization parameters: calibrate the model "
                                     "(quantize_model / QuantTimmVitBlock.calibrate) before a fake or int forward")

    def set_params(self, scale: torch.Tensor, zero_point: torch.Tensor) -> None:
        """Fix ``(scale, zero_point)`` (zero point in the unsigned code domain)."""
        scale = scale.detach().to(torch.float32).reshape(-1)
        if scale.numel() != self.scale.numel():
            scale = scale.expand(self.scale.numel())
        self.scale.copy_(scale)
        self.zero_point.copy_(zero_point.detach().to(torch.float32).reshape(()))
        self.calibrated.fill_(True)
        self.sync_python_state()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Observe (while calibrating); fake-quantize in ``fake`` mode, identity in ``float``."""
        if self.calibrating:
            self.observer.update(x)
            if self.last_batch:
                self.set_params(*self.observer.compute(x))
        if self.mode == "float":
            return x
        self.require_calibrated()
        return fake_quantize(x, self.scale, self.zero_point, self.bits)

    def quantize_int(self, x: torch.Tensor) -> torch.Tensor:
        """Float → int8 codes on this grid with ``torch.ops.fqvit.quantize``."""
        self.require_calibrated()
        # The scale buffer itself (one value, or one per channel), not a view: the op's check of it
        # is then remembered across calls (a new view each call would be checked each time).
        return torch.ops.fqvit.quantize(x.detach().contiguous(), self.scale.to(x.device), self.stored_zero_point)

    def dequantize_int(self, x: torch.Tensor) -> torch.Tensor:
        """int8 codes on this grid → float32 with ``torch.ops.fqvit.dequantize``."""
        self.require_calibrated()
        return torch.ops.fqvit.dequantize(x.contiguous(), self.scale.to(x.device), self.stored_zero_point)

    def extra_repr(self) -> str:
        return f"kind={self.kind}, bits={self.bits}, channels={self.scale.numel()}"


def _sync_qact(module: "QAct", incompatible_keys) -> None:
    # A module-level function, not a lambda: quantized modules stay picklable (torch.save).
    module.sync_python_state()


class QuantLinear(QuantModule):
    """FQ-ViT ``QLinear``: ``weight_bits``-bit (4..8, stored as int8) symmetric per-output-channel
    weight, float bias in ``fake`` mode.

    The float weight is a non-persistent buffer that shares the float model's storage (no copy) and
    serves ``float`` mode and calibration only; :meth:`release_float_weight` drops it at conversion.
    The checkpoint keeps ``weight_int8`` and ``weight_scale``, from which ``fake`` mode rebuilds
    FQ-ViT's fake-quantized weight ``q * s`` exactly. The integer-op parameters (``int_bias``, ``multiplier``, ``shift`` and,
    for the residual epilogue, ``branch_multiplier``, ``residual_multiplier``, ``residual_shift``)
    are filled by the owning block at conversion.
    """

    def __init__(self, linear: nn.Linear, residual: bool = False, weight_bits: int = 8) -> None:
        super().__init__()
        if not isinstance(linear, nn.Linear):
            raise UnsupportedModelError(f"expected nn.Linear, got {type(linear).__name__}")
        n, k = linear.weight.shape
        self.in_features, self.out_features = k, n
        self.weight_bits = int(weight_bits)
        self.register_buffer("weight", linear.weight.detach().float(), persistent=False)
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().clone().float())
        codes, scale = quantize_weight(linear.weight, self.weight_bits)
        self.register_buffer("weight_int8", codes)
        self.register_buffer("weight_scale", scale)
        self.register_buffer("int_bias", torch.zeros(n, dtype=torch.int64))
        self.register_buffer("multiplier", torch.zeros(n, dtype=torch.int32))
        self.register_buffer("shift", torch.ones(n, dtype=torch.int32))
        if residual:
            self.register_buffer("branch_multiplier", torch.zeros(n, dtype=torch.int32))
            self.register_buffer("residual_multiplier", torch.zeros(n, dtype=torch.int32))
            self.register_buffer("residual_shift", torch.ones(n, dtype=torch.int32))

    def fake_weight(self) -> torch.Tensor:
        """FQ-ViT's fake-quantized weight ``q * s`` (float32)."""
        return self.weight_int8.to(torch.float32) * self.weight_scale.reshape(-1, 1)

    def release_float_weight(self) -> None:
        """Drop the float weight (``float`` mode then refuses; ``fake``/``int`` use the int8 weight)."""
        self.weight = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``F.linear`` with the float (``float`` mode) or fake-quantized weight and the float bias."""
        if self.mode == "float":
            if self.weight is None:
                raise FloatWeightsUnavailableError("this layer's float weight was released; float mode is unavailable")
            return F.linear(x, self.weight, self.bias)
        return F.linear(x, self.fake_weight(), self.bias)

    def set_weight_codes(self, codes: torch.Tensor) -> None:
        """Replace the integer weight (e.g. AdaRound's rounding) on the same scales; the codes must be
        integers of this layer's ``weight_bits`` range. The owning module must be converted again."""
        qmin, qmax = weight_range(self.weight_bits)
        if codes.shape != self.weight_int8.shape:
            raise ValueError(f"weight codes must have shape {tuple(self.weight_int8.shape)}, got {tuple(codes.shape)}")
        if codes.is_floating_point() and not bool((codes == codes.round()).all()):
            raise ValueError("weight codes must be integers")
        if bool((codes < qmin).any()) or bool((codes > qmax).any()):
            raise ValueError(f"{self.weight_bits}-bit weight codes must lie in {qmin}..{qmax}")
        self.weight_int8.copy_(codes.to(torch.int8))

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
                f"weight_bits={self.weight_bits}")


class QuantLayerNorm(QuantModule):
    """FQ-ViT ``QIntLayerNorm``: float LayerNorm while calibrating; in ``fake`` mode the integer-mode
    formula of docs/fqvit.md §3.3 when PTF is on, else the float LayerNorm on the fake-quantized
    input. ``int`` mode runs ``torch.ops.fqvit.ptf_layernorm_dyadic`` (``kind == "dyadic"``: PTF with
    ``int_layernorm="fqvit"``, FQ-ViT's own formula) with ``gamma_multiplier``, ``gamma_shift``,
    ``beta_fixed``, or ``torch.ops.fqvit.ptf_layernorm`` (``kind == "exact"``: the exact LayerNorm
    with the float one's epsilon) with ``weight_multiplier``, ``ln_bias``, ``ln_shift``,
    ``variance_offset``; ``ptf_alpha`` serves both. The owning block fills them at conversion.
    """

    def __init__(self, norm: nn.LayerNorm, config: QuantConfig) -> None:
        super().__init__()
        if not isinstance(norm, nn.LayerNorm) or norm.weight is None or norm.bias is None:
            raise UnsupportedModelError(f"only affine nn.LayerNorm is supported, got {type(norm).__name__}")
        if len(norm.normalized_shape) != 1:
            raise UnsupportedModelError("only LayerNorm over the last dim is supported")
        c = norm.normalized_shape[0]
        self.channels = c
        self.eps = norm.eps
        self.int_norm = config.ptf
        self.kind = "dyadic" if config.ptf and config.int_layernorm == "fqvit" else "exact"
        self.register_buffer("weight", norm.weight.detach().clone().float())
        self.register_buffer("bias", norm.bias.detach().clone().float())
        self.register_buffer("ptf_alpha", torch.zeros(c, dtype=torch.int32))
        if self.kind == "dyadic":
            self.register_buffer("gamma_multiplier", torch.zeros(c, dtype=torch.int32))
            self.register_buffer("gamma_shift", torch.full((c,), 31, dtype=torch.int32))
            self.register_buffer("beta_fixed", torch.zeros(c, dtype=torch.int64))
        else:
            self.register_buffer("weight_multiplier", torch.zeros(c, dtype=torch.int32))
            self.register_buffer("ln_bias", torch.zeros(c, dtype=torch.int64))
            self.register_buffer("ln_shift", torch.ones(c, dtype=torch.int32))
            self.register_buffer("variance_offset", torch.zeros((), dtype=torch.int64))

    def forward(self, x: torch.Tensor, in_quantizer: Optional[QAct] = None,
                out_quantizer: Optional[QAct] = None) -> torch.Tensor:
        """LayerNorm of ``x``; ``in_quantizer`` / ``out_quantizer`` give the PTF input and output grids."""
        if self.mode == "float" or not self.int_norm:
            return F.layer_norm(x, (self.channels,), self.weight, self.bias, self.eps)
        in_quantizer.require_calibrated()
        out_quantizer.require_calibrated()
        return int_layernorm_float(x, in_quantizer.scale, out_quantizer.scale, self.weight, self.bias)

    def convert(self, in_quantizer: QAct, out_quantizer: QAct) -> None:
        """Integer parameters between two calibrated quantizers (:func:`~.convert.convert_layernorm`)."""
        from .convert import convert_layernorm  # convert imports this module

        convert_layernorm(self, in_quantizer, out_quantizer)

    def forward_int(self, x: torch.Tensor, in_zp: int, out_zp: int) -> torch.Tensor:
        """The integer LayerNorm op on int8 rows ``[M, C]`` (stored zero points)."""
        if self.kind == "dyadic":
            return torch.ops.fqvit.ptf_layernorm_dyadic(x, in_zp, self.ptf_alpha, self.gamma_multiplier,
                                                        self.gamma_shift, self.beta_fixed, out_zp)
        return torch.ops.fqvit.ptf_layernorm(x, in_zp, self.ptf_alpha, self.weight_multiplier, self.ln_bias,
                                             self.ln_shift, out_zp, int(self.variance_offset))

    def extra_repr(self) -> str:
        return f"channels={self.channels}, eps={self.eps}, int_norm={self.int_norm}, kind={self.kind}"


#: The block guide's name for the integer-mode LayerNorm module (FQ-ViT's ``QIntLayerNorm``).
QLayerNorm = QuantLayerNorm
