"""Loading the optional compiled backends and registering them as kernels of the fqvit ops.

* CPU: the C++ extension ``fqvit_kernels._C`` (built by ``setup.py`` from ``csrc/``). When it is
  missing or fails to load, the CPU ops keep the PyTorch reference and one warning says so.
* CUDA: the Triton kernels of the top-level ``triton_kernels`` package, imported only when a CUDA
  device is present, so CPU use never imports Triton or needs a GPU driver.
"""

from __future__ import annotations

import importlib
import warnings
from typing import Optional

from . import ops

__all__ = ["load_cpu_extension", "load_triton_kernels", "register_all", "cpu_extension_error"]

#: Marker attribute that our ``triton_kernels/__init__.py`` defines (a PyPI package shares the name).
TRITON_KERNELS_MARKER = "__fqvit_kernels__"

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
            ops.register_backend(name, "cpu", impl, "cpp")
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
            ops.register_backend(name, "cuda", impl, "triton")
