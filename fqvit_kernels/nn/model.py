"""Whole-model conversion of a timm ``VisionTransformer``: :func:`quantize_model`, save and load.

Layout (FQ-ViT ``VisionTransformer``, docs/fqvit.md §5.1, with the patch embedding kept in
float as the user asked): ``patch_embed`` (float) → ``cls_token`` / ``+ pos_embed`` (float) →
``qact1`` (PTF; in ``int`` mode ``torch.ops.fqvit.quantize`` — the float/int boundary) →
:class:`QuantTimmVitBlock` × depth → ``norm`` (integer LayerNorm onto ``qact2``, class token only,
which is what FQ-ViT's per-token LayerNorm followed by ``[:, 0]`` computes) → ``qact2`` → ``head``
(int8 weights) → ``act_out`` (uint8 logits, dequantized to float32 at the end).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
from collections import OrderedDict
import hashlib
import json
import os
import tempfile
from typing import Dict, Iterable, Optional, Union

import torch
from torch import nn

from ..quant.config import QuantConfig, get_config
from ._memory import release_freed_memory, releasing_after_each
from .adaround import WEIGHT_ROUNDINGS, AdaRoundConfig, adaround_model
from .block import QuantizedLayer, QuantTimmVitBlock, layernorm_int, linear_int
from .calibration import image_batches, run_calibration
from .convert import HeadInts, convert_head, head_ints, release_float_weights
from .layers import NotCalibratedError, QAct, QuantLayerNorm, QuantLinear, QuantModule, set_mode, track_buffers
from .support import check_supported_vit

__all__ = ["QuantVisionTransformer", "quantize_model", "save_quantized", "load_quantized", "build_quantized", "arch_config",
           "CHECKPOINT_FORMAT", "CHECKPOINT_VERSION"]

CHECKPOINT_FORMAT = "fqvit-kernels/quantized-vit"
CHECKPOINT_VERSION = 2

ConfigLike = Union[QuantConfig, str, None]


def _resolve_config(config: ConfigLike) -> QuantConfig:
    if config is None:
        return QuantConfig()
    if isinstance(config, str):
        return get_config(config)
    if not isinstance(config, QuantConfig):
        raise TypeError(f"config must be a QuantConfig or a preset name, got {type(config).__name__}")
    return config


def arch_config(vit: nn.Module) -> Dict[str, object]:
    """Constructor arguments of ``timm...VisionTransformer`` that rebuild ``vit``'s architecture."""
    block = vit.blocks[0]
    pe = vit.patch_embed
    return dict(
        img_size=list(pe.img_size), patch_size=list(pe.patch_size), in_chans=int(pe.proj.in_channels),
        num_classes=int(vit.head.out_features), embed_dim=int(vit.embed_dim), depth=len(vit.blocks),
        num_heads=int(block.attn.num_heads), mlp_ratio=block.mlp.fc1.out_features / vit.embed_dim,
        qkv_bias=block.attn.qkv.bias is not None, proj_bias=block.attn.proj.bias is not None,
        no_embed_class=bool(vit.no_embed_class), norm_eps=float(vit.norm.eps),
    )


def _build_vit(arch: Dict[str, object]) -> nn.Module:
    from timm.models.vision_transformer import VisionTransformer

    kwargs = dict(arch)
    eps = kwargs.pop("norm_eps")
    kwargs["img_size"] = tuple(kwargs["img_size"])
    kwargs["patch_size"] = tuple(kwargs["patch_size"])
    return VisionTransformer(norm_layer=functools.partial(nn.LayerNorm, eps=eps), **kwargs).eval()


def _after_load(module, incompatible_keys) -> None:
    # A module-level function, not a lambda: a quantized model must stay picklable (torch.save).
    # Runs after every child is loaded (and its Python state synced): prepare the int forwards.
    module.prepare_int()


class QuantVisionTransformer(QuantModule):
    """A quantized timm ``VisionTransformer``; create it with :func:`quantize_model`.

    ``forward(images)`` returns float32 logits in every mode (``float``, ``fake``, ``int``; switch with
    :meth:`set_mode`). In ``int`` mode everything between the ``qact1`` boundary and the logits runs
    on ``torch.ops.fqvit`` kernels.
    """

    def __init__(self, vit: nn.Module, config: QuantConfig) -> None:
        super().__init__()
        check_supported_vit(vit)
        self.config = config
        self.arch = arch_config(vit)
        dim = vit.embed_dim
        self.patch_embed = copy.deepcopy(vit.patch_embed)  # float; the checkpoint restores it
        self.cls_token = nn.Parameter(vit.cls_token.detach().clone(), requires_grad=False)
        self.pos_embed = nn.Parameter(vit.pos_embed.detach().clone(), requires_grad=False)
        self.no_embed_class = bool(vit.no_embed_class)
        self.qact1 = QAct(dim, "ptf" if config.ptf else "act", config, "qact1")
        blocks = []
        prev = self.qact1
        for blk in vit.blocks:
            qb = QuantTimmVitBlock.from_float(blk, config, input_quantizer=prev)
            blocks.append(qb)
            prev = qb.qact4
            release_freed_memory()  # the block's weight-quantization temporaries (see _memory)
        self.blocks = nn.ModuleList(blocks)
        self.norm = QuantLayerNorm(vit.norm, config)
        self.qact2 = QAct(dim, "act", config, "qact2")
        self.head = QuantLinear(vit.head, weight_bits=config.weight_bits)
        self.act_out = QAct(vit.head.out_features, "act", config, "act_out")
        self._ints: Optional[dict] = None
        self.register_load_state_dict_post_hook(_after_load)

    @classmethod
    def from_float(cls, vit: nn.Module, config: ConfigLike = None) -> "QuantVisionTransformer":
        """Uncalibrated conversion of ``vit`` (``float`` mode); see :func:`quantize_model`."""
        return cls(vit, _resolve_config(config))

    def set_mode(self, mode: str) -> "QuantVisionTransformer":
        """Switch the whole model to ``float``, ``fake`` or ``int``."""
        set_mode(self, mode)
        return self

    @property
    def calibrated(self) -> bool:
        """Whether every quantizer has its parameters."""
        return (self.qact1.is_calibrated and self.qact2.is_calibrated and self.act_out.is_calibrated
                and all(b.calibrated for b in self.blocks))

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Float patch embedding, class token and position embedding: ``[B, N, C]``."""
        x = self.patch_embed(images)
        cls = self.cls_token.expand(x.shape[0], -1, -1)
        if self.no_embed_class:
            return torch.cat([cls, x + self.pos_embed], dim=1)
        return torch.cat([cls, x], dim=1) + self.pos_embed

    def _check_images(self, images) -> None:
        if not isinstance(images, torch.Tensor):
            raise TypeError(f"images must be a torch.Tensor, got {type(images).__name__}")
        if not images.is_floating_point():
            raise TypeError(f"images must be a float tensor (normalised pixels), got {images.dtype}")
        chans = self.arch.get("in_chans", 3)
        size = self.arch.get("img_size")
        if images.dim() != 4 or images.shape[0] == 0 or images.shape[1] != chans:
            raise ValueError(f"images must have shape [B >= 1, {chans}, H, W], got {tuple(images.shape)}")
        if size is not None:
            h, w = (size, size) if isinstance(size, int) else tuple(size)
            if tuple(images.shape[2:]) != (h, w):
                raise ValueError(f"images must be {h}x{w} pixels for this model, got {tuple(images.shape[2:])}")

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Float32 logits of ``images [B, C, H, W]`` in the current mode.

        Raises ``TypeError``/``ValueError`` for a non-float tensor, a wrong shape or image size, and
        (in ``int`` mode, at the quantization boundary) NaN or inf values.
        """
        self._check_images(images)
        # The float stem runs in float32 (its weights are float32): float16 / bfloat16 / float64 images
        # are converted rather than refused.
        x = self.embed(images.to(torch.float32))
        if self.mode == "int":
            return self._forward_int(x)
        x = self.qact1(x)
        for blk in self.blocks:
            x = blk(x)
        x = self.norm(x[:, :1], self.blocks[-1].qact4, self.qact2)[:, 0]
        x = self.qact2(x)
        return self.act_out(self.head(x))

    def prepare_int(self) -> None:
        """Fix every int forward's Python parameters from the buffers (the blocks' too) and track the
        buffers by version, so that the int forward reads no tensor on the host (torch.compile with
        ``fullgraph=True``, torch.export, CUDA graphs); called by :meth:`convert` and after
        ``load_state_dict``. A no-op before calibration."""
        for blk in self.blocks:
            blk.prepare_int()
        self._ints = self._compute_int_params() if self.calibrated else None
        track_buffers(self)

    def _compute_int_params(self) -> HeadInts:
        return head_ints(self)

    def _int_params(self) -> HeadInts:
        if self._ints is None:
            if not self.calibrated:
                raise NotCalibratedError("the model is not calibrated: use quantize_model(...) or load_quantized(...)")
            self._ints = self._compute_int_params()
        return self._ints

    def forward_int_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """Blocks in ``int`` mode on int8 tokens ``[B, N, C]`` (on ``qact1``'s grid); int8 output."""
        for blk in self.blocks:
            x = blk(x)
        return x

    def _forward_int(self, x: torch.Tensor) -> torch.Tensor:
        # Integer tensors carry no autograd history, and quantize_int detaches its float input: no
        # torch.no_grad() needed (it would wrap torch.export's graph in a higher-order op that the
        # exported program's serialiser refuses).
        ints = self._int_params()
        x = self.forward_int_tokens(self.qact1.quantize_int(x))
        cls = x[:, 0].contiguous()
        h = layernorm_int(self.norm, cls, ints.norm_in_zp, ints.qact2_zp)
        logits = linear_int(self.head, h, ints.out_zp)
        return self.act_out.dequantize_int(logits)

    def get_quantized_layers(self) -> "OrderedDict[str, QuantizedLayer]":
        """Every quantized linear layer in execution order (``blocks.<i>.attn.qkv``, ...,
        ``head``), each with the quantizers of its input and output
        (:class:`~fqvit_kernels.nn.block.QuantizedLayer`): the entry point of weight-rounding and
        inspection tools (AdaRound walks it)."""
        layers: "OrderedDict[str, QuantizedLayer]" = OrderedDict()
        for i, blk in enumerate(self.blocks):
            layers.update(blk.get_quantized_layers(prefix=f"blocks.{i}."))
        layers["head"] = QuantizedLayer(self.head, self.qact2, self.act_out)
        return layers

    @torch.no_grad()
    def calibration(self, calib_data: Iterable, mode: str = "int", progress: bool = True,
                    keep_float_weights: bool = False, weight_rounding: str = "nearest",
                    adaround_iters: Optional[int] = None, adaround: Optional[AdaRoundConfig] = None
                    ) -> "QuantVisionTransformer":
        """Calibrate this (uncalibrated) model on ``calib_data``, optionally AdaRound its weights,
        convert it and switch to ``mode``; :func:`quantize_model` is ``from_float`` + this."""
        if weight_rounding not in WEIGHT_ROUNDINGS:
            raise ValueError(f"weight_rounding={weight_rounding!r}: choose one of {WEIGHT_ROUNDINGS}")
        if adaround_iters is not None:
            adaround = dataclasses.replace(adaround or AdaRoundConfig(), iters=int(adaround_iters))
        batches = image_batches(calib_data)
        device = self.cls_token.device
        forward = lambda b: self(b.to(device))  # noqa: E731
        with releasing_after_each(self.modules()):
            run_calibration(self, batches, forward, progress=progress, desc="FQ-ViT calibration")
        if weight_rounding == "adaround":
            self.adaround_report = adaround_model(self, batches, forward, adaround or AdaRoundConfig(), progress)
        self.convert(keep_float_weights)
        release_freed_memory()
        return self.set_mode(mode)

    @torch.no_grad()
    def convert(self, keep_float_weights: bool = False) -> None:
        """Precompute all int-mode parameters from the calibrated scales; then release the float
        weights of the linear layers unless ``keep_float_weights`` (``float`` mode needs them)."""
        if not self.calibrated:
            raise NotCalibratedError("the model is not calibrated")
        for blk in self.blocks:
            blk.convert(keep_float_weights=True)
        convert_head(self)
        if not keep_float_weights:
            release_float_weights(self)
        self.prepare_int()


@torch.no_grad()
def quantize_model(vit: nn.Module, calib_data: Iterable, config: ConfigLike = None, mode: str = "int",
                   progress: bool = True, keep_float_weights: bool = False, weight_rounding: str = "nearest",
                   adaround_iters: Optional[int] = None, adaround: Optional[AdaRoundConfig] = None) -> QuantVisionTransformer:
    """Quantize a timm ``VisionTransformer`` the FQ-ViT way and return the converted model.

    Args:
        vit: a timm ``VisionTransformer`` (vit_*, deit_*; not distilled). It is put in eval mode
            and left unchanged; while calibrating, the quantized model shares its float weights
            (no copy).
        calib_data: an image tensor ``[B, 3, H, W]`` or an iterable of such tensors or of
            ``(images, labels)`` pairs. Observers update on every batch; the last batch fixes the
            parameters (and is the search data of OMSE / PTF), as in FQ-ViT's ``test_quant.py``.
            A batch with NaN or inf values raises ``ValueError`` naming it.
        config: a :class:`QuantConfig` or a preset name (default: FQ-ViT W8/A8/attn4, PTF, LIS;
            ``fqvit-4/8/4`` for 4-bit weights).
        mode: ``int`` (kernels) or ``fake`` (FQ-ViT simulation); ``float`` needs ``keep_float_weights``.
        progress: show tqdm progress bars.
        keep_float_weights: keep references to the float weights so that ``float`` mode still works
            (by default they are dropped after conversion: ``fake`` and ``int`` use int8 weights).
        weight_rounding: ``"nearest"`` (FQ-ViT) or ``"adaround"``: learn each weight's rounding
            on the calibration images after calibration (:mod:`fqvit_kernels.nn.adaround`).
        adaround_iters: AdaRound's Adam steps per layer (overrides ``adaround.iters``).
        adaround: AdaRound's settings (:class:`~fqvit_kernels.nn.adaround.AdaRoundConfig`).
    """
    vit.eval()
    model = QuantVisionTransformer.from_float(vit, config)
    model.to(next(vit.parameters()).device)
    return model.calibration(calib_data, mode=mode, progress=progress, keep_float_weights=keep_float_weights,
                             weight_rounding=weight_rounding, adaround_iters=adaround_iters, adaround=adaround)


#: The architecture fields of a checkpoint and their types (arch_config's output).
_ARCH_SCHEMA = dict(img_size=list, patch_size=list, in_chans=int, num_classes=int, embed_dim=int, depth=int,
                    num_heads=int, mlp_ratio=float, qkv_bias=bool, proj_bias=bool, no_embed_class=bool, norm_eps=float)


def _digest(payload: Dict[str, object], state: Dict[str, torch.Tensor]) -> str:
    """SHA-256 over the format, versions, architecture, config and every tensor of a checkpoint."""
    h = hashlib.sha256()
    meta = {k: payload.get(k) for k in ("format", "format_version", "package_version", "arch", "config")}
    h.update(json.dumps(meta, sort_keys=True, default=repr).encode())
    hash_tensors(h, state)
    return h.hexdigest()


def hash_tensors(h, state: Dict[str, torch.Tensor]) -> None:
    """Feed every tensor of ``state`` into the hash ``h``, by sorted name: name, dtype, element
    count and bytes (the checkpoint checksum and the cross-rank check of fqvit_kernels.distributed)."""
    for key in sorted(state):
        t = state[key].detach().cpu().contiguous().reshape(-1)
        h.update(key.encode())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")


def save_quantized(model: QuantVisionTransformer, path) -> None:
    """Write a calibrated model: integer tensors, scales, float stem, config and architecture.

    The file records a format version, the package version, the architecture and a SHA-256 over all
    of it; :func:`load_quantized` checks them. The write is atomic: a temporary file in the same
    folder, flushed to disk, then renamed over ``path`` (a crash mid-save keeps the old file).
    """
    from .. import __version__

    if not isinstance(model, QuantVisionTransformer):
        raise TypeError("save_quantized expects a QuantVisionTransformer")
    if not model.calibrated:
        raise NotCalibratedError("only a calibrated model can be saved")
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    payload = dict(format=CHECKPOINT_FORMAT, format_version=CHECKPOINT_VERSION, package_version=__version__,
                   arch=model.arch, config=model.config.to_dict(), state_dict=state)
    payload["sha256"] = _digest(payload, state)
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".fqvit-", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(payload, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _check_arch(path, arch) -> None:
    if not isinstance(arch, dict):
        raise ValueError(f"{path}: checkpoint field 'arch' must be a dict, got {type(arch).__name__}")
    missing = sorted(set(_ARCH_SCHEMA) - set(arch))
    unknown = sorted(set(arch) - set(_ARCH_SCHEMA))
    if missing or unknown:
        raise ValueError(f"{path}: checkpoint field 'arch' has missing keys {missing} / unknown keys {unknown}")
    for key, kind in _ARCH_SCHEMA.items():
        value = arch[key]
        if kind is list:
            ok = (isinstance(value, list) and len(value) == 2
                  and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value))
        elif kind is int:
            ok = isinstance(value, int) and not isinstance(value, bool) and value > 0
        elif kind is float:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value < float("inf")
        else:
            ok = isinstance(value, bool)
        if not ok:
            raise ValueError(f"{path}: checkpoint field 'arch.{key}' has an invalid value {value!r}")
    if arch["embed_dim"] % arch["num_heads"]:
        raise ValueError(f"{path}: checkpoint field 'arch.num_heads' ({arch['num_heads']}) does not divide "
                         f"'arch.embed_dim' ({arch['embed_dim']})")


def _read_checkpoint(path) -> dict:
    from .. import __version__

    if isinstance(path, (str, os.PathLike)) and not os.path.exists(path):
        raise FileNotFoundError(f"no quantized checkpoint at {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(f"{path}: not a readable fqvit-kernels checkpoint (truncated or corrupted file?): "
                         f"{type(exc).__name__}: {exc}") from exc
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: not an fqvit-kernels quantized-ViT checkpoint")
    if payload.get("format_version") != CHECKPOINT_VERSION or payload.get("package_version") != __version__:
        raise ValueError(f"{path}: written by fqvit-kernels {payload.get('package_version')} (format "
                         f"{payload.get('format_version')}); this is {__version__} (format {CHECKPOINT_VERSION}): "
                         "re-quantize the model with this version")
    state = payload.get("state_dict")
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path}: checkpoint field 'state_dict' must map names to tensors")
    if _digest(payload, state) != payload.get("sha256"):
        raise ValueError(f"{path}: checkpoint contents do not match their checksum (corrupted or edited file)")
    _check_arch(path, payload.get("arch"))
    config = payload.get("config")
    if not isinstance(config, dict):
        raise ValueError(f"{path}: checkpoint field 'config' must be a dict, got {type(config).__name__}")
    try:
        QuantConfig.from_dict(config)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path}: checkpoint field 'config' is invalid: {exc}") from exc
    return payload


def load_quantized(path, vit: Optional[nn.Module] = None, mode: str = "int") -> QuantVisionTransformer:
    """Load a checkpoint written by :func:`save_quantized`; outputs are bit-identical to the saved model.

    The model is built without float weights (on the meta device, then the checkpoint's tensors are
    assigned), so loading takes about the int8 model's memory; ``float`` mode is unavailable
    (:class:`~fqvit_kernels.nn.layers.FloatWeightsUnavailableError`). ``vit`` (optional) is a float
    timm model of the same architecture: the architecture is checked against it and the model is put
    on its device (its weights are not used). Raises ``ValueError`` for another architecture, a
    truncated/corrupted/edited file or another package version.
    """
    payload = _read_checkpoint(path)
    arch = payload["arch"]
    device = torch.device("cpu")
    if vit is not None:
        check_supported_vit(vit)
        got = arch_config(vit)
        if got != arch:
            diff = {k: (arch.get(k), got.get(k)) for k in set(arch) | set(got) if arch.get(k) != got.get(k)}
            raise ValueError(f"checkpoint architecture differs from the given model (checkpoint, model): {diff}")
        device = next(vit.parameters()).device
    return build_quantized(arch, payload["config"], payload["state_dict"], device, mode, source=str(path))


def build_quantized(arch: Dict[str, object], config: Dict[str, object], state: Dict[str, torch.Tensor],
                    device=None, mode: str = "int", source: str = "state") -> QuantVisionTransformer:
    """A calibrated ``QuantVisionTransformer`` from its parts, without float weights: the
    architecture (:func:`arch_config`), the config dict and the state dict of a calibrated model.
    The model is built on the meta device and the tensors assigned (the int8 model's memory only).
    ``ValueError`` (naming ``source``) when the tensors do not fit the architecture."""
    config = QuantConfig.from_dict(config)
    with torch.device("meta"):
        model = QuantVisionTransformer.from_float(_build_vit(arch), config)
    release_float_weights(model)
    try:
        model.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as exc:
        raise ValueError(f"{source}: checkpoint tensors do not fit the architecture {arch}: {exc}") from exc
    leftover = [name for name, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_meta]
    if leftover:
        raise ValueError(f"{source}: checkpoint is missing tensors for {leftover[:5]}")
    model.to(device if device is not None else torch.device("cpu"))
    return model.set_mode(mode)
