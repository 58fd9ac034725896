"""ImageNet-style folders for ``python -m fqvit_kernels.eval``, tolerant of unreadable images.

One truncated or corrupt JPEG in 50 000 should not abort an hour of evaluation with an
``OSError`` that names no file. Every image is read inside a guard: a failure is recorded with its
path and the image is dropped from the batch (its label with it, so predictions and labels stay
aligned); the summary reports how many were skipped and which. ``strict=True`` stops at the first
one instead, naming it. The same files fail on every pass, so every mode is scored on the same images.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

import torch

__all__ = ["UnreadableImageError", "default_workers", "SkippingLoader", "calibration_batches"]

# What PIL and torchvision raise for files that are not (complete) images: truncated data and
# unidentified formats are OSError subclasses; some broken headers give SyntaxError or ValueError.
_READ_ERRORS = (OSError, SyntaxError, ValueError)


class UnreadableImageError(RuntimeError):
    """An image file could not be decoded and skipping was turned off (``--strict-images``)."""


def default_workers() -> int:
    """DataLoader workers: 4, or fewer on a machine with fewer cores (never more than the cores)."""
    return max(0, min(4, (os.cpu_count() or 1)))


def _read(dataset, index: int):
    """``(image, label, None)`` or ``(None, label, "path: error")`` for sample ``index``."""
    path, label = dataset.samples[index]
    try:
        image, label = dataset[index]
    except _READ_ERRORS as exc:
        return None, label, f"{path}: {type(exc).__name__}: {exc}"
    return image, label, None


class _Guarded(torch.utils.data.Dataset):
    """``dataset[i]`` as ``(image or None, label, error or None)``; picklable for worker processes."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        return _read(self.dataset, index)


def _collate(items):
    images = [image for image, _, error in items if error is None]
    labels = torch.tensor([label for _, label, error in items if error is None], dtype=torch.long)
    errors = [error for _, _, error in items if error is not None]
    return (torch.stack(images) if images else None), labels, errors


class SkippingLoader:
    """Batches ``(images, labels)`` of an ImageFolder, leaving out files that cannot be decoded.

    ``skipped`` maps each unreadable file (``"path: error"``) seen so far; with ``strict=True`` the
    first one raises :class:`UnreadableImageError` naming it. ``batch_sampler`` (e.g.
    :class:`fqvit_kernels.distributed.BatchShardSampler`) replaces the plain in-order batches.
    """

    def __init__(self, dataset, batch_size: int, workers: int, strict: bool = False, batch_sampler=None):
        self.dataset = dataset
        self.strict = strict
        self.skipped: Dict[str, None] = {}
        if batch_sampler is None:
            self._loader = torch.utils.data.DataLoader(_Guarded(dataset), batch_size=batch_size, num_workers=workers,
                                                       collate_fn=_collate)
        else:
            self._loader = torch.utils.data.DataLoader(_Guarded(dataset), batch_sampler=batch_sampler,
                                                       num_workers=workers, collate_fn=_collate)

    def __len__(self) -> int:
        return len(self._loader)

    def __iter__(self) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
        for images, labels, errors in self._loader:
            for error in errors:
                if self.strict:
                    raise UnreadableImageError(f"unreadable image {error} (drop --strict-images to skip such files)")
                self.skipped.setdefault(error)
            if images is not None:
                yield images, labels

    def summary(self) -> Optional[str]:
        """One line for the report, or None when every image was read."""
        if not self.skipped:
            return None
        shown = list(self.skipped)[:5]
        more = f" (and {len(self.skipped) - len(shown)} more)" if len(self.skipped) > len(shown) else ""
        return f"skipped {len(self.skipped)} unreadable image(s): " + "; ".join(shown) + more


def calibration_batches(dataset, count: int, batch_size: int, seed: int = 0, strict: bool = False,
                        skipped: Optional[List[str]] = None) -> List[torch.Tensor]:
    """``count`` batches of ``batch_size`` images drawn at random (fixed ``seed``) from ``dataset``.

    An unreadable image is replaced by the next one in the random order (its ``"path: error"`` is
    appended to ``skipped``); ``strict=True`` raises :class:`UnreadableImageError` instead.
    """
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed)).tolist()
    need = count * batch_size
    images = []
    for index in order:
        if len(images) == need:
            break
        image, _, error = _read(dataset, index)
        if error is not None:
            if strict:
                raise UnreadableImageError(f"unreadable calibration image {error}")
            if skipped is not None:
                skipped.append(error)
            continue
        images.append(image)
    if len(images) < need:
        raise ValueError(f"calibration needs {need} readable images; {Path(dataset.root)} has {len(images)}")
    return [torch.stack(images[j:j + batch_size]) for j in range(0, need, batch_size)]
