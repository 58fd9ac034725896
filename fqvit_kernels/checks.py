"""Input validation shared by the op launchers and their fake kernels.

Every failure names the argument: ``TypeError`` for a wrong dtype or Python type, ``ValueError``
for rank, shape, device, layout or value problems. Metadata checks run everywhere (also under
``torch.compile`` tracing); value checks read tensor contents and are skipped on meta/fake tensors.
"""

from __future__ import annotations

import itertools
import zlib
from typing import Iterable, Optional, Sequence

import torch
import weakref

from .contract import INT8_MAX, INT8_MIN  # noqa: F401 (re-exported)


def tensor(name: str, t, dtypes: torch.dtype | Sequence[torch.dtype], ndim: int | Sequence[int] | None = None,
           device: Optional[torch.device] = None) -> torch.Tensor:
    """Check that ``t`` is a tensor of one of ``dtypes`` (and rank ``ndim``, on ``device``)."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    allowed = (dtypes,) if isinstance(dtypes, torch.dtype) else tuple(dtypes)
    if t.dtype not in allowed:
        names = " or ".join(str(d).replace("torch.", "") for d in allowed)
        raise TypeError(f"{name} must have dtype {names}, got {str(t.dtype).replace('torch.', '')}")
    if ndim is not None:
        ranks = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if t.dim() not in ranks:
            raise ValueError(f"{name} must have rank {' or '.join(map(str, ranks))}, got shape {tuple(t.shape)}")
    if device is not None and t.device != device:
        raise ValueError(f"{name} is on {t.device} but the other inputs are on {device}")
    return t


def shape(name: str, t: torch.Tensor, expected: Iterable[int]) -> None:
    expected = tuple(expected)
    if tuple(t.shape) != expected:
        raise ValueError(f"{name} must have shape {expected}, got {tuple(t.shape)}")


def nonempty(name: str, t: torch.Tensor, dims: Iterable[int]) -> None:
    for d in dims:
        if t.shape[d] == 0:
            raise ValueError(f"{name} has an empty dimension {d} (shape {tuple(t.shape)}); sizes must be >= 1")


def contiguous(name: str, t: torch.Tensor) -> None:
    if not t.is_contiguous():
        raise ValueError(f"{name} must be contiguous (strides {t.stride()} for shape {tuple(t.shape)})")


def last_dim_contiguous(name: str, t: torch.Tensor) -> None:
    if t.shape[-1] > 1 and t.stride(-1) != 1:
        raise ValueError(f"{name} must have unit stride in its last dimension, got strides {t.stride()}")


def int_in_range(name: str, value, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if not lo <= value <= hi:
        raise ValueError(f"{name} must lie in [{lo}, {hi}], got {value}")
    return value


def zero_point(name: str, value) -> int:
    """Zero points are in the stored int8 domain: ``uint8 zero point - 128``."""
    return int_in_range(name, value, INT8_MIN, INT8_MAX)


def _readable(t: torch.Tensor) -> bool:
    return t.device.type != "meta" and not isinstance(t, torch._subclasses.fake_tensor.FakeTensor)


# Parameter tensors (multipliers, shifts, biases, tables) are passed unchanged on every call, and
# reading their values costs a device synchronisation on a GPU. A tensor that passed a check is
# remembered with a fingerprint, so the check is repeated only after it changes. The version counter
# misses writes through ``.data`` or ``.numpy()``: on the CPU the fingerprint also holds a CRC of the
# contents (a fraction of the cost of the check itself); on a GPU it is the version counter and the
# storage address (reading the contents would be the synchronisation the cache avoids), and the
# kernels stay free of undefined behaviour whatever the values.
class _ByIdentity:
    """A mapping keyed by tensor identity that does not keep its keys alive: a plain dict on
    ``id()`` with a weak reference to tell a live key from a new object at a recycled address. A
    lookup costs a dict access and a call, far less than a WeakIdKeyDictionary lookup (which builds
    a weak reference every time); the checks below run several times per op call."""

    def __init__(self):
        self._items = {}

    def get(self, t, default=None):
        entry = self._items.get(id(t))
        return entry[1] if entry is not None and entry[0]() is t else default

    def __contains__(self, t) -> bool:
        entry = self._items.get(id(t))
        return entry is not None and entry[0]() is t

    def __setitem__(self, t, value) -> None:
        key, items = id(t), self._items
        entry = items.get(key)
        if entry is not None and entry[0]() is t:
            items[key] = (entry[0], value)
            return

        def forget(ref, key=key):
            current = items.get(key)
            if current is not None and current[0] is ref:
                del items[key]
        items[key] = (weakref.ref(t, forget), value)


_PASSED = _ByIdentity()
# Tensors owned by a converted quantized module (track_by_version): their CPU fingerprint is the
# version counter and storage address too, as on a GPU, so a converted model's calls cost no CRC.
# Any in-place op on such a tensor bumps its version and brings the checks back.
_VERSION_TRACKED = _ByIdentity()


def track_by_version(tensors: Iterable[torch.Tensor]) -> None:
    """Fingerprint these tensors by version counter and storage address only (no CRC of the
    contents on the CPU): for the parameters of converted modules, which are written only by
    in-place ops (which bump the version) or by loading (which re-registers them)."""
    for t in tensors:
        if isinstance(t, torch.Tensor) and _readable(t) and t not in _VERSION_TRACKED:
            _VERSION_TRACKED[t] = next(_TRACKING_TOKENS)


# A fresh number per tracked tensor: a new tensor that happens to reuse a freed one's address and
# id never matches what was remembered about the old one.
_TRACKING_TOKENS = itertools.count(1)


def call_key(args: Sequence[object], activations: Iterable[int]) -> Optional[tuple]:
    """A key under which one call's complete validation can be remembered, or ``None``.

    Parameters (every tensor argument not listed in ``activations``) enter by tracking token,
    version counter and storage address, so the key changes with any in-place write; they must be
    version-tracked (:func:`track_by_version`: the parameters of converted modules), else there is
    no key (their contents could change unseen). Activations enter by dtype, device, shape and
    strides only: the op checks never read their values. Other arguments enter by value.
    """
    key = []
    for i, a in enumerate(args):
        if isinstance(a, torch.Tensor):
            if i in activations:
                key.append((a.dtype, a.device, a.shape, a.stride()))
                continue
            token = _VERSION_TRACKED.get(a)
            if token is None:
                return None
            key.append((token, a._version, a.data_ptr(), a.dtype, a.device, a.shape, a.stride()))
        else:
            key.append((type(a), a))
    return tuple(key)


def _fingerprint(t: torch.Tensor):
    if t.device.type != "cpu" or t in _VERSION_TRACKED:
        return (t._version, t.data_ptr())
    data = t.detach().contiguous()
    return (t._version, t.data_ptr(), zlib.crc32(data.reshape(-1).view(torch.uint8).numpy()) if data.numel() else 0)


def _already_passed(t: torch.Tensor, key) -> bool:
    entry = _PASSED.get(t)
    return entry is not None and key in entry[1] and entry[0] == _fingerprint(t)


def _remember(t: torch.Tensor, key) -> None:
    fingerprint = _fingerprint(t)
    entry = _PASSED.get(t)
    keys = entry[1] if entry is not None and entry[0] == fingerprint else frozenset()
    _PASSED[t] = (fingerprint, keys | {key})


def once(t: torch.Tensor, key, check) -> None:
    """Run ``check()`` (which raises on failure) unless ``t`` passed it unchanged before."""
    if not _readable(t) or _already_passed(t, key):
        return
    check()
    _remember(t, key)


def values_in_range(name: str, t: torch.Tensor, lo: int, hi: int) -> None:
    """Every element of integer tensor ``t`` in ``[lo, hi]`` (skipped for fake tensors)."""
    if not _readable(t) or t.numel() == 0 or _already_passed(t, ("range", lo, hi)):
        return
    t_min, t_max = int(t.min()), int(t.max())
    if t_min < lo or t_max > hi:
        raise ValueError(f"{name} values must lie in [{lo}, {hi}], got [{t_min}, {t_max}]")
    _remember(t, ("range", lo, hi))


def finite(name: str, t: torch.Tensor) -> None:
    if _readable(t) and t.numel() and not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} contains NaN or inf")


def positive_finite(name: str, t: torch.Tensor) -> None:
    if not _readable(t) or t.numel() == 0 or _already_passed(t, "positive"):
        return
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} must be finite, got NaN or inf")
    if not bool((t > 0).all()):
        raise ValueError(f"{name} must be > 0, got min {float(t.min())}")
    _remember(t, "positive")


# Facts about parameter values that select a kernel variant (``every shift >= 33`` picks an int32
# epilogue). Same fingerprint as the checks above, so a GPU reads the values once per tensor.
_FACTS = _ByIdentity()


def cached_fact(t: torch.Tensor, key, compute, also=()) -> Optional[bool]:
    """``compute()`` (a bool read from ``t``'s values), remembered per tensor until ``t`` changes.
    A fact that also reads other tensors names them in ``also``: their fingerprints join the key.

    Returns ``None`` when the values cannot be read now without harm: fake/meta tensors, and CUDA
    graph capture of a tensor not seen before (a read would synchronise inside the capture). The
    caller then takes its general path, which is exact for any value.
    """
    if not all(_readable(u) for u in (t, *also)):
        return None
    if also:
        key = (key, *(_fingerprint(u) for u in also))
    fingerprint = _fingerprint(t)
    entry = _FACTS.get(t)
    if entry is not None and entry[0] == fingerprint and key in entry[1]:
        return entry[1][key]
    if t.is_cuda and torch.cuda.is_current_stream_capturing():
        return None
    value = bool(compute())
    facts = dict(entry[1]) if entry is not None and entry[0] == fingerprint else {}
    facts[key] = value
    _FACTS[t] = (fingerprint, facts)
    return value
