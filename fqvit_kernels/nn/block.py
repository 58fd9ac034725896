"""``QuantTimmVitBlock``: a timm ViT ``Block`` quantized the FQ-ViT way, in float / fake / int mode.

Quantizer placement follows FQ-ViT's ``Block`` / ``Attention`` / ``Mlp`` (docs/fqvit.md §5.1)
with timm's attribute names::

    x (PTF grid of the input quantizer)
    norm1 -> qact1 -> attn.qkv -> attn.qact1 -> q k^T d^-1/2 -> attn.qact_attn1 -> softmax (LIS or
    uniform, attn.softmax) -> @ v -> attn.qact2 -> attn.proj -> attn.qact3 -> (+ x) -> qact2 (PTF)
    norm2 -> qact3 -> mlp.fc1 -> GELU -> mlp.qact1 -> mlp.fc2 -> mlp.qact2 -> (+) -> qact4 (PTF)

``int`` mode runs seven ``torch.ops.fqvit`` calls per block: the integer LayerNorm (norm1 onto qact1;
``ptf_layernorm_dyadic``, FQ-ViT's own formula, or ``ptf_layernorm``, see ``QuantConfig.int_layernorm``),
``int8_linear`` (qkv onto attn.qact1), ``int_attention`` (scores on attn.qact_attn1's grid with
``d**-0.5`` folded into the score multiplier, 4-bit LIS, context onto attn.qact2), ``int8_linear``
with the residual epilogue (proj: branch on attn.qact3, residual on the input grid, result on
qact2), the integer LayerNorm (norm2 onto qact3), ``int8_linear`` with the GELU step table (fc1:
the pre-GELU value on a grid much finer than one mlp.qact1 step, then the exact steps of
``qact1(GELU(.))``, :func:`fqvit_kernels.params.gelu_table`) and ``int8_linear`` with the residual
epilogue (fc2: branch on mlp.qact2, result on qact4). Without LIS (uniform 8-bit softmax) the attention
core is ``torch.ops.fqvit.int_attention_uniform``.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Iterable, NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..quant.config import QuantConfig
from ..quant.quantizers import log_int_softmax_float
from .calibration import run_calibration
from .convert import (AttentionInts, BlockInts, attention_ints, block_ints, convert_attention, convert_block,
                      convert_mlp, release_float_weights)
from .support import check_supported_block  # noqa: F401 (re-exported: nn.check_supported_block)
from .layers import (NotCalibratedError, QAct, QuantLayerNorm, QuantLinear, QuantModule, UnsupportedModelError,
                     set_mode, track_buffers)

__all__ = ["QuantTimmVitBlock", "QuantAttention", "QuantMlp", "QuantSoftmax", "QuantIntSoft", "QuantizedLayer",
           "check_supported_block", "linear_int", "layernorm_int"]


class QuantizedLayer(NamedTuple):
    """One quantized linear layer and the activation quantizers around it (:meth:`get_quantized_layers`).

    ``linear`` holds the float weight (until conversion releases it), ``weight_int8``,
    ``weight_scale`` and ``weight_bits``; ``input_quantizer`` is the grid of its input and
    ``output_quantizer`` the quantizer of its output (for fc1, of ``GELU(fc1(x))``; for proj and
    fc2, of the branch before the residual add)."""

    linear: QuantLinear
    input_quantizer: QAct
    output_quantizer: QAct


def _long(value: int) -> torch.Tensor:
    """A 0-dim int64 buffer holding ``value`` (placeholders that the conversion fills)."""
    return torch.tensor(int(value), dtype=torch.int64)


class QuantSoftmax(QuantModule):
    """FQ-ViT ``QIntSoftmax``: LIS with ``bits``-bit log2 codes, or float softmax + uniform ``QAct``."""

    def __init__(self, config: QuantConfig, name: str) -> None:
        super().__init__()
        self.lis = config.lis
        self.bits = config.attn_bits
        # The uniform branch's quantizer; FQ-ViT builds it in both settings (unused by LIS).
        self.qact = QAct(1, "act", config, name + ".qact")

    def forward(self, x: torch.Tensor, score_quantizer: QAct) -> torch.Tensor:
        """Softmax of the scores ``x`` (on ``score_quantizer``'s grid) along the last dim."""
        if self.lis and score_quantizer.is_calibrated and (self.mode != "float" or self.calibrating):
            # Also in the last calibration batch, once qact_attn1 has its scale (as in FQ-ViT).
            return log_int_softmax_float(x, score_quantizer.scale.reshape(()), self.bits)
        return self.qact(x.softmax(dim=-1))


#: The block guide's name for the softmax quantizer module (FQ-ViT's ``QIntSoftmax``).
QuantIntSoft = QuantSoftmax


class QuantAttention(QuantModule):
    """timm ``Attention`` with FQ-ViT's quantizers (``qkv``, ``qact1``, ``qact_attn1``, ``softmax``,
    ``qact2``, ``proj``, ``qact3``)."""

    def __init__(self, attn: nn.Module, config: QuantConfig, name: str = "attn") -> None:
        super().__init__()
        dim = attn.qkv.in_features
        self.num_heads = attn.num_heads
        self.head_dim = attn.head_dim
        self.scale = float(attn.scale)
        self.lis = config.lis
        self.attn_bits = config.attn_bits
        self.qkv = QuantLinear(attn.qkv, weight_bits=config.weight_bits)
        self.qact1 = QAct(3 * dim, "act", config, f"{name}.qact1")
        self.qact_attn1 = QAct(1, "act", config, f"{name}.qact_attn1")
        self.softmax = QuantSoftmax(config, f"{name}.softmax")
        self.qact2 = QAct(dim, "act", config, f"{name}.qact2")
        self.proj = QuantLinear(attn.proj, residual=True, weight_bits=config.weight_bits)
        self.qact3 = QAct(dim, "act", config, f"{name}.qact3")
        # int-mode parameters of the attention core (filled at conversion).
        self.register_buffer("score_multiplier", _long(0))
        self.register_buffer("score_shift", _long(1))
        # LIS: FQ-ViT's exponent per (row max, distance); uniform softmax: exp(-d * s_score) per distance.
        self.register_buffer("exp_table", torch.zeros((256, 256) if self.lis else (256,), dtype=torch.int64))
        self.register_buffer("out_multiplier", _long(0))
        self.register_buffer("out_shift", _long(1))
        # uniform (no-LIS) softmax: 1 / s_softmax as a fixed-point number.
        self.register_buffer("inv_softmax_multiplier", _long(0))
        self.register_buffer("inv_softmax_shift", _long(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Float / fake forward of ``x [B, N, C]`` (FQ-ViT ``Attention.forward``)."""
        b, n, c = x.shape
        x = self.qact1(self.qkv(x))
        qkv = x.reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = (q @ k.transpose(-2, -1)) * self.scale
        attn = self.qact_attn1(attn)
        attn = self.softmax(attn, self.qact_attn1)
        x = (attn @ v).transpose(1, 2).reshape(b, n, c)
        x = self.qact2(x)
        return self.qact3(self.proj(x))

    def convert(self) -> None:
        """Precompute the int-mode parameters of the attention core (:func:`~.convert.convert_attention`)."""
        convert_attention(self)

    def int_params(self) -> AttentionInts:
        """Python ints of the attention core (read once per conversion / load)."""
        return attention_ints(self)

    def int_core(self, qkv: torch.Tensor, b: int, n: int, ints: AttentionInts) -> torch.Tensor:
        """Integer attention of the qkv GEMM output ``[B*N, 3C]`` → context ``[B*N, C]`` on qact2's grid."""
        h, d = self.num_heads, self.head_dim
        parts = qkv.view(b, n, 3, h, d).permute(2, 0, 3, 1, 4)
        q, k, v = parts[0], parts[1], parts[2]
        if self.lis:
            if self.attn_bits != 4:
                raise UnsupportedModelError("int mode supports 4-bit LIS only (torch.ops.fqvit.int_attention); "
                                          f"this block uses {self.attn_bits}-bit LIS: run it in fake mode")
            ctx = torch.ops.fqvit.int_attention(
                q, k, v, ints.qkv_zp, ints.score_multiplier, ints.score_shift, ints.score_zp,
                self.exp_table, ints.out_multiplier, ints.out_shift, ints.out_zp)
        else:
            ctx = torch.ops.fqvit.int_attention_uniform(
                q, k, v, ints.qkv_zp, ints.score_multiplier, ints.score_shift, ints.score_zp,
                self.exp_table, ints.inv_softmax_multiplier, ints.inv_softmax_shift, ints.softmax_zp,
                ints.out_multiplier, ints.out_shift, ints.out_zp)
        return ctx.transpose(1, 2).reshape(b * n, h * d)


class QuantMlp(QuantModule):
    """timm ``Mlp`` with FQ-ViT's quantizers (``fc1``, GELU, ``qact1``, ``fc2``, ``qact2``).

    FQ-ViT leaves fc1's output unquantized and applies the float GELU; ``int`` mode reproduces
    ``qact1(GELU(fc1(x)))`` with a step table on a fine pre-GELU grid (``gelu_table``,
    ``gelu_cell_bits``, ``gelu_pre_zero_point``; :func:`fqvit_kernels.params.gelu_table`), which
    depends only on ``qact1``'s grid.
    """

    def __init__(self, mlp: nn.Module, config: QuantConfig, name: str = "mlp") -> None:
        super().__init__()
        hidden = mlp.fc1.out_features
        self.fc1 = QuantLinear(mlp.fc1, weight_bits=config.weight_bits)
        self.qact1 = QAct(hidden, "act", config, f"{name}.qact1")
        self.fc2 = QuantLinear(mlp.fc2, residual=True, weight_bits=config.weight_bits)
        self.qact2 = QAct(mlp.fc2.out_features, "act", config, f"{name}.qact2")
        # Its length is set at conversion (it depends on qact1's scale); loading resizes it.
        self.register_buffer("gelu_table", torch.zeros(1, dtype=torch.int32))
        self.register_buffer("gelu_cell_bits", _long(0))
        self.register_buffer("gelu_pre_zero_point", _long(0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Float / fake forward (FQ-ViT ``Mlp.forward``)."""
        x = self.qact1(F.gelu(self.fc1(x)))
        return self.qact2(self.fc2(x))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        table = state_dict.get(prefix + "gelu_table")
        if isinstance(table, torch.Tensor) and table.shape != self.gelu_table.shape:
            self.gelu_table = torch.zeros(table.shape, dtype=self.gelu_table.dtype, device=self.gelu_table.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def convert(self, in_quantizer: QAct) -> None:
        """The GELU step table and fc1 / fc2 requantization (:func:`~.convert.convert_mlp`)."""
        convert_mlp(self, in_quantizer)


def linear_int(lin: QuantLinear, x: torch.Tensor, output_zero_point: int, gelu_table: Optional[torch.Tensor] = None,
               gelu_cell_bits: int = 0, residual: Optional[torch.Tensor] = None, residual_zero_point: int = 0,
               final_zero_point: int = 0) -> torch.Tensor:
    """``torch.ops.fqvit.int8_linear`` with ``lin``'s parameters, every argument passed explicitly."""
    if residual is None:
        res_parts = (None, None, None)
    else:
        res_parts = (lin.branch_multiplier, lin.residual_multiplier, lin.residual_shift)
    return torch.ops.fqvit.int8_linear(x, lin.weight_int8, lin.int_bias, lin.multiplier, lin.shift, output_zero_point,
                                       gelu_table, gelu_cell_bits, residual, residual_zero_point, *res_parts,
                                       final_zero_point)


def layernorm_int(norm: QuantLayerNorm, x: torch.Tensor, in_zp: int, out_zp: int) -> torch.Tensor:
    """The integer LayerNorm of ``norm`` on int8 rows ``[M, C]``."""
    return norm.forward_int(x, in_zp, out_zp)


class QuantTimmVitBlock(QuantModule):
    """A timm ``Block`` with FQ-ViT quantization; build it with :meth:`from_float`.

    Modes (set with :meth:`set_mode`): ``float`` (FP32; observers record while calibrating),
    ``fake`` (FQ-ViT's float simulation; input and output float, the output on ``qact4``'s PTF grid)
    and ``int`` (``torch.ops.fqvit`` kernels; input int8 ``[B, N, C]`` codes on the input grid, output
    int8 codes on ``qact4``'s grid). Set ``float_io = True`` to make the ``int`` forward take a float
    input (quantized with the input quantizer) and return the dequantized float output.

    The input grid belongs to the previous quantizer (the model's ``qact1`` or the previous block's
    ``qact4``), passed as ``input_quantizer``; a standalone block owns one (``qact0``, PTF).
    """

    def __init__(self, block: nn.Module, config: QuantConfig, input_quantizer: Optional[QAct] = None) -> None:
        super().__init__()
        check_supported_block(block)
        self.config = config
        dim = block.norm1.normalized_shape[0]
        self.dim = dim
        ln_kind = "ptf" if config.ptf else "act"
        if input_quantizer is None:
            self.qact0 = QAct(dim, ln_kind, config, "qact0")
            self._external_input = None
        else:
            self.qact0 = None
            self._external_input = [input_quantizer]  # a list: not registered as a submodule
        self.norm1 = QuantLayerNorm(block.norm1, config)
        self.qact1 = QAct(dim, "act", config, "qact1")
        self.attn = QuantAttention(block.attn, config, "attn")
        self.qact2 = QAct(dim, ln_kind, config, "qact2")
        self.norm2 = QuantLayerNorm(block.norm2, config)
        self.qact3 = QAct(dim, "act", config, "qact3")
        self.mlp = QuantMlp(block.mlp, config, "mlp")
        self.qact4 = QAct(dim, ln_kind, config, "qact4")
        self.float_io = False
        self._ints: Optional[dict] = None
        self.register_load_state_dict_post_hook(_after_load)

    @classmethod
    def from_float(cls, block: nn.Module, config: Optional[QuantConfig] = None,
                   input_quantizer: Optional[QAct] = None) -> "QuantTimmVitBlock":
        """Wrap ``timm.models.vision_transformer.Block`` ``block`` (uncalibrated, ``float`` mode).

        Raises :class:`~fqvit_kernels.nn.layers.UnsupportedModelError` (a ``NotImplementedError``) for
        unsupported variants (qk_norm, layer scale, gated or fused MLPs, non-GELU activations, other
        attention classes).
        """
        return cls(block, config or QuantConfig(), input_quantizer)

    @property
    def input_quantizer(self) -> QAct:
        """The quantizer whose grid the block input lies on."""
        return self.qact0 if self.qact0 is not None else self._external_input[0]

    # -- the vocabulary of the block guide (docs/fqvit.md §5.1) -----------------------------------

    @property
    def attn_qkv_output(self) -> QAct:
        """The re-quantization of the qkv linear's output (``attn.qact1``): int32 -> int8."""
        return self.attn.qact1

    @property
    def residual1(self) -> QAct:
        """The re-quantization after the attention residual add (``qact2``, PTF)."""
        return self.qact2

    @property
    def residual2(self) -> QAct:
        """The re-quantization after the MLP residual add (``qact4``, PTF): the block's output grid."""
        return self.qact4

    def get_quantized_layers(self, prefix: str = "") -> "OrderedDict[str, QuantizedLayer]":
        """The block's quantized linear layers in execution order: ``attn.qkv``, ``attn.proj``,
        ``mlp.fc1``, ``mlp.fc2`` (names prefixed by ``prefix``), each with the quantizers of its
        input and output: the entry point of weight-rounding and inspection tools."""
        attn, mlp = self.attn, self.mlp
        return OrderedDict([
            (prefix + "attn.qkv", QuantizedLayer(attn.qkv, self.qact1, attn.qact1)),
            (prefix + "attn.proj", QuantizedLayer(attn.proj, attn.qact2, attn.qact3)),
            (prefix + "mlp.fc1", QuantizedLayer(mlp.fc1, self.qact3, mlp.qact1)),
            (prefix + "mlp.fc2", QuantizedLayer(mlp.fc2, mlp.qact1, mlp.qact2)),
        ])

    def _drop_int_cache(self) -> None:
        self._ints = None

    def prepare_int(self) -> None:
        """Fix the int forward's Python parameters (zero points, multipliers, shifts) from the
        buffers, so that the forward reads no tensor on the host; called by :meth:`convert` and after
        ``load_state_dict``. A no-op before calibration."""
        self._ints = self._compute_int_params() if self.calibrated and self.input_quantizer.is_calibrated else None

    def set_mode(self, mode: str) -> "QuantTimmVitBlock":
        """Switch this block (and its own input quantizer) to ``float``, ``fake`` or ``int``."""
        set_mode(self, mode)
        return self

    @property
    def calibrated(self) -> bool:
        """Whether every quantizer of the block has its parameters."""
        return all(m.is_calibrated for m in self.modules() if isinstance(m, QAct)
                   and not (m is self.attn.softmax.qact and self.attn.lis))

    # -- forward ---------------------------------------------------------------------------------

    def forward(self, x: torch.Tensor, attn_mask: Optional[torch.Tensor] = None, is_causal: bool = False) -> torch.Tensor:
        """Block forward; accepts timm's keywords but refuses masks and causal attention."""
        if attn_mask is not None:
            raise UnsupportedModelError("attention masks (attn_mask) are not supported by QuantTimmVitBlock")
        if is_causal:
            raise UnsupportedModelError("causal attention (is_causal=True) is not supported by QuantTimmVitBlock")
        if self.mode == "int":
            return self._forward_int(x)
        if self.qact0 is not None:
            x = self.qact0(x)
        in_q = self.input_quantizer
        x = x + self.attn(self.qact1(self.norm1(x, in_q, self.qact1)))
        x = self.qact2(x)
        x = x + self.mlp(self.qact3(self.norm2(x, self.qact2, self.qact3)))
        return self.qact4(x)

    def _require_calibrated(self) -> None:
        if not self.calibrated or not self.input_quantizer.is_calibrated:
            raise NotCalibratedError("QuantTimmVitBlock is not calibrated: run calibrate() (or quantize_model) "
                                     "before an int or fake forward")

    def _int_params(self) -> BlockInts:
        if self._ints is None:
            self._require_calibrated()
            self._ints = self._compute_int_params()
        return self._ints

    def _compute_int_params(self) -> BlockInts:
        return block_ints(self)

    def _forward_int(self, x: torch.Tensor) -> torch.Tensor:
        ints = self._int_params()
        if self.float_io:
            if not x.is_floating_point():
                raise TypeError("float_io=True: the int-mode block takes a float input")
            x = self.input_quantizer.quantize_int(x)
        elif x.dtype != torch.int8:
            raise TypeError(f"int mode takes int8 codes on the input grid, got {x.dtype} (set block.float_io = True "
                            "to pass floats)")
        if x.dim() != 3 or x.shape[-1] != self.dim or x.shape[0] == 0 or x.shape[1] == 0:
            raise ValueError(f"expected x of shape [B >= 1, N >= 1, {self.dim}], got {tuple(x.shape)}")
        b, n, c = x.shape
        # The ops' value checks read the (constant) parameters on the first call only: the buffers
        # are fingerprinted by version counter (checks.track_by_version), so later calls read
        # nothing on the host. Any int8 input is valid. (No torch.no_grad() here: integer tensors
        # carry no autograd history, and a grad-mode switch would wrap torch.export's graph in a
        # higher-order op that its serialiser refuses.)
        out = self._int_body(x.reshape(b * n, c).contiguous(), b, n, ints).view(b, n, c)
        return self.qact4.dequantize_int(out) if self.float_io else out

    def _int_body(self, x: torch.Tensor, b: int, n: int, ints: BlockInts) -> torch.Tensor:
        attn, mlp = self.attn, self.mlp
        h = layernorm_int(self.norm1, x, ints.in_zp, ints.qact1_zp)
        qkv = linear_int(attn.qkv, h, ints.qkv_zp)
        ctx = attn.int_core(qkv, b, n, ints)
        x = linear_int(attn.proj, ctx, ints.qact3_attn_zp, residual=x, residual_zero_point=ints.in_zp,
                       final_zero_point=ints.qact2_zp)
        h = layernorm_int(self.norm2, x, ints.qact2_zp, ints.qact3_zp)
        h = linear_int(mlp.fc1, h, ints.pre_gelu_zp, gelu_table=mlp.gelu_table, gelu_cell_bits=ints.gelu_cell_bits)
        return linear_int(mlp.fc2, h, ints.mlp_qact2_zp, residual=x, residual_zero_point=ints.qact2_zp,
                          final_zero_point=ints.qact4_zp)

    # -- calibration and conversion --------------------------------------------------------------

    @torch.no_grad()
    def convert(self, keep_float_weights: bool = False) -> None:
        """Precompute every int-mode parameter from the calibrated scales (called once).

        The float weights of the linear layers are released afterwards unless ``keep_float_weights``
        (``fake`` and ``int`` mode need only the int8 weights; ``float`` mode then refuses).
        """
        self._require_calibrated()
        convert_block(self)
        if not keep_float_weights:
            release_float_weights(self)
        self.prepare_int()
        track_buffers(self)

    @torch.no_grad()
    def calibrate(self, batches: Iterable[torch.Tensor], mode: str = "int", progress: bool = False,
                  keep_float_weights: bool = False) -> "QuantTimmVitBlock":
        """Calibrate a standalone block on float inputs ``[B, N, C]`` (FQ-ViT §6), convert, set ``mode``.

        Observers update on every batch; the last batch fixes the parameters (OMSE / PTF search on
        it). Raises ``ValueError`` on empty data or on a batch with NaN/inf values, ``TypeError`` on a
        batch that is not a float tensor.
        """
        run_calibration(self, list(batches), self.forward, progress=progress, desc="calibrating block")
        self.convert(keep_float_weights)
        return self.set_mode(mode)

    def calibration(self, batches: Iterable[torch.Tensor], mode: str = "int", progress: bool = False,
                    keep_float_weights: bool = False) -> "QuantTimmVitBlock":
        """The block guide's name for :meth:`calibrate` (same arguments)."""
        return self.calibrate(batches, mode=mode, progress=progress, keep_float_weights=keep_float_weights)


def _after_load(module, incompatible_keys) -> None:
    # A module-level function, not a lambda: a quantized module must stay picklable (torch.save).
    # A block inside a model has its input quantizer outside itself (loaded later, maybe): the
    # model's own hook prepares its blocks.
    module._drop_int_cache()
    if module.qact0 is not None:
        module.prepare_int()
    track_buffers(module)
