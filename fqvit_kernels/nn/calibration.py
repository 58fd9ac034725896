"""FQ-ViT's calibration loop (docs/fqvit.md §6) and the checks on its data.

Every activation quantizer's observer updates on every batch; the last batch fixes the
parameters (and is the search data of OMSE and the PTF factors), as in FQ-ViT's ``test_quant.py``.
``quantize_model`` and ``QuantTimmVitBlock.calibrate`` both run :func:`run_calibration`.
"""

from __future__ import annotations

from typing import Callable, Iterable, List

import torch
from torch import nn

from .layers import set_calibration, set_mode

__all__ = ["image_batches", "check_calibration_batches", "run_calibration"]


def image_batches(calib_data: Iterable) -> List[torch.Tensor]:
    """The image batches of ``calib_data``: one tensor, or an iterable of tensors or of
    ``(images, labels)`` pairs. ``ValueError`` when there is none, ``TypeError`` for an item that is
    neither."""
    if calib_data is None:
        raise ValueError("calibration data is empty: give at least one batch of images")
    if isinstance(calib_data, torch.Tensor):
        calib_data = [calib_data]
    out = []
    for batch in calib_data:
        if isinstance(batch, (tuple, list)):
            batch = batch[0]
        if not isinstance(batch, torch.Tensor):
            raise TypeError(f"calibration batches must be image tensors or (images, labels), got {type(batch).__name__}")
        out.append(batch)
    if not out:
        raise ValueError("calibration data is empty: give at least one batch of images")
    return out


def check_calibration_batches(batches: list) -> None:
    """Name the first bad calibration batch: ``TypeError`` for one that is not a float tensor,
    ``ValueError`` for one with NaN or inf values."""
    for i, batch in enumerate(batches):
        if not isinstance(batch, torch.Tensor) or not batch.is_floating_point():
            raise TypeError(f"calibration batch {i} must be a float tensor, got "
                            f"{getattr(batch, 'dtype', type(batch).__name__)}")
        if not bool(torch.isfinite(batch).all()):
            raise ValueError(f"calibration batch {i} contains NaN or inf values ({int((~torch.isfinite(batch)).sum())} "
                             "of them): the observers would record them as the activation range")


def run_calibration(root: nn.Module, batches: list, forward: Callable[[torch.Tensor], object], progress: bool = True,
                    desc: str = "calibrating") -> None:
    """Call ``forward(batch)`` on every batch of the list ``batches`` with ``root`` in float mode
    and its observers recording; the last batch fixes the quantizers' parameters. Leaves ``root``
    in float mode with calibration off (also on error)."""
    if len(batches) == 0:
        raise ValueError("calibration data is empty: give at least one batch")
    check_calibration_batches(batches)
    from tqdm.auto import tqdm

    set_mode(root, "float")
    try:
        for i, batch in enumerate(tqdm(batches, desc=desc, disable=not progress)):
            set_calibration(root, True, last_batch=(i == len(batches) - 1))
            forward(batch)
    finally:
        set_calibration(root, False, False)
