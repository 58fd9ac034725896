"""Hand freed heap memory back to the operating system during quantization (glibc only).

Converting and calibrating a model frees many medium-sized temporaries (per-layer weight
quantization, activations of each block). glibc keeps freed heap blocks mapped, and after the
first large ``free`` its adaptive mmap threshold sends later allocations of that size to the heap
too, so the resident set of ``quantize_model`` measured 0.8 to 0.9 GiB for ViT-B at calibration
batch 4, while the live tensors never exceeded about 0.55 GiB (the same run with a fixed
``MALLOC_MMAP_THRESHOLD_`` peaks there). ``malloc_trim(0)`` after each block returns the free
pages; it costs well under a millisecond per call next to a block's forward. Elsewhere (musl,
macOS, Windows) this is a no-op.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
from typing import Callable, Iterable, Iterator, Optional

from torch import nn

__all__ = ["release_freed_memory", "releasing_after_each"]


def _find_trim() -> Optional[Callable[[int], int]]:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


_TRIM = _find_trim()


def release_freed_memory() -> None:
    """Return free heap pages to the OS (glibc ``malloc_trim(0)``); no-op where unavailable."""
    if _TRIM is not None:
        _TRIM(0)


@contextlib.contextmanager
def releasing_after_each(modules: Iterable[nn.Module]) -> Iterator[None]:
    """Within the block, call :func:`release_freed_memory` after each forward of each module."""
    handles = [m.register_forward_hook(lambda module, args, output: release_freed_memory()) for m in modules]
    try:
        yield
    finally:
        for h in handles:
            h.remove()
