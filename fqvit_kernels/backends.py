"""Loading the optional compiled backends and registering them as kernels of the fqvit ops.

* CPU: the C++ extension ``fqvit_kernels._C`` (built by ``setup.py`` from ``csrc/``). When it is
  missing or fails to load, the CPU ops keep the PyTorch reference and one warning says so.
* CUDA: the Triton kernels of the top-level ``triton_kernels`` package, imported only when a CUDA
  device is present, so CPU use never imports Triton or needs a GPU driver.
"""

from __future__ import annotations

import importlib
import inspect
import warnings
from typing import Callable, Dict, Optional, Tuple

import torch

from . import checks, ops, reference as ref

__all__ = ["BACKEND", "CHECKS", "ACTIVATION_ARGS", "register_backend", "load_cpu_extension", "load_triton_kernels",
           "register_all", "cpu_extension_error"]

#: Marker attribute that our ``triton_kernels/__init__.py`` defines (a PyPI package shares the name).
TRITON_KERNELS_MARKER = "__fqvit_kernels__"

# -- the registry: which implementation serves each op, and the validation it runs first ---------------

#: Which implementation serves each op on each device type (updated by :func:`register_backend`).
BACKEND: Dict[str, Dict[str, str]] = {name: {"cpu": "reference", "cuda": "reference"} for name in ops.OPS}

#: The validation each kernel runs first; same argument order as the op.
CHECKS: Dict[str, Callable[..., object]] = {
    "int8_matmul": lambda a, b: ops._check_gemm_operands(a, b, "a", "b"),
    "int8_linear": ops._check_int8_linear,
    "ptf_layernorm": ops._check_ptf_layernorm,
    "ptf_layernorm_dyadic": ops._check_ptf_layernorm_dyadic,
    "log_int_softmax": ops._check_log_int_softmax,
    "log_attn_v": ops._check_log_attn_v,
    "attention_scores": ops._check_attention_scores,
    "int_attention": ops._check_int_attention,
    "int_attention_uniform": ops._check_int_attention_uniform,
    "quantize": ops._check_quantize,
    "dequantize": ops._check_dequantize,
}


#: Positions of the activation arguments (whose values no check reads) of the ops whose
#: validation a converted model's calls may skip once it passed (see :func:`register_backend`).
ACTIVATION_ARGS: Dict[str, Tuple[int, ...]] = {
    "int8_linear": (0, 8),            # x, residual
    "ptf_layernorm": (0,),            # x
    "ptf_layernorm_dyadic": (0,),     # x
    "attention_scores": (0, 1),       # q, k
    "int_attention": (0, 1, 2),       # q, k, v
    "int_attention_uniform": (0, 1, 2),
}


def register_backend(name: str, device_type: str, impl: Callable[..., torch.Tensor], label: str) -> None:
    """Serve op ``name`` on ``device_type`` with ``impl`` (same positional arguments as the op).

    The registered kernel runs the op's validation first, so every backend raises the same errors.
    """
    check = CHECKS[name]
    # The dispatcher drops trailing arguments equal to their schema defaults before calling a
    # kernel; bind against the op's own signature to hand every argument to check and impl.
    signature = inspect.signature(getattr(ref, name))
    defaults = tuple(p.default for p in signature.parameters.values())
    count = len(defaults)

    # A converted model calls the same op with the same parameter tensors every forward: once a
    # call passed the full validation (value checks on), a call with the same parameters (same
    # tracked tensors, unchanged) and same-shaped activations skips it (~25 us of Python per
    # int8_linear call).
    activations = ACTIVATION_ARGS.get(name)
    passed = set() if activations is not None else None

    def kernel(*args, **kwargs):
        if not kwargs and len(args) <= count and inspect.Parameter.empty not in defaults[len(args):]:
            args = args + defaults[len(args):]  # the common case, without inspect's binding (per call)
        else:
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            args = bound.args
        if passed is None:
            check(*args)
            return impl(*args)
        key = checks.call_key(args, activations)
        if key is None or key not in passed:
            check(*args)
            if key is not None and ops.value_checks_enabled():
                if len(passed) >= 4096:  # bounded: new shapes or parameters keep arriving
                    passed.clear()
                passed.add(key)
        return impl(*args)

    kernel.__name__ = f"{name}_{label}"
    ops.OPS[name].register_kernel(device_type, kernel)
    BACKEND[name][device_type] = label


# -- loading ------------------------------------------------------------------------------------------

_cpu_error: Optional[str] = None
_registered = False


def cpu_extension_error() -> Optional[str]:
    """Why the C++ extension is not in use, or ``None`` when it serves the CPU ops."""
    return _cpu_error


def load_cpu_extension():
    """Import ``fqvit_kernels._C`` and register its CPU kernels; returns the module or ``None``."""
    global _cpu_error
    try:
        ext = importlib.import_module("fqvit_kernels._C")
    except Exception as exc:  # ImportError, or an undefined symbol from a stale build
        _cpu_error = f"{type(exc).__name__}: {exc}"
        warnings.warn(
            "fqvit_kernels: the C++ extension fqvit_kernels._C is not available "
            f"({_cpu_error}); CPU ops run the slower PyTorch reference. "
            "Build it with `pip install --no-build-isolation -e .`.",
            RuntimeWarning,
            stacklevel=3,
        )
        return None
    _cpu_error = None
    for name in ops.OP_NAMES:
        impl = getattr(ext, name, None)
        if impl is not None:
            register_backend(name, "cpu", impl, "cpp")
    return ext


def load_triton_kernels():
    """Import our ``triton_kernels`` package, refusing a foreign package of the same name."""
    module = importlib.import_module("triton_kernels")
    if not getattr(module, TRITON_KERNELS_MARKER, False):
        where = getattr(module, "__file__", None) or list(getattr(module, "__path__", []))
        raise ImportError(
            f"the module 'triton_kernels' imported from {where} is not fqvit-kernels' Triton package "
            "(another project on PyPI uses the same import name). Uninstall it "
            "(`pip uninstall triton-kernels`) or reinstall fqvit-kernels so that its own "
            "triton_kernels package comes first on sys.path."
        )
    return module


def register_all() -> None:
    """Register every available backend once (called on ``import fqvit_kernels``)."""
    global _registered
    if _registered:
        return
    _registered = True
    load_cpu_extension()
    import torch

    if torch.cuda.is_available():
        module = load_triton_kernels()
        for name, impl in module.cuda_kernels().items():
            register_backend(name, "cuda", impl, "triton")
