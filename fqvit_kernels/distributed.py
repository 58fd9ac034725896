"""Evaluation across processes with ``torch.distributed``: ``torchrun --nproc-per-node N -m fqvit_kernels.eval``.

What runs where:

* the process group comes from torchrun's environment (``RANK``, ``WORLD_SIZE``, ...): NCCL when
  the evaluation device is CUDA (each rank on ``cuda:LOCAL_RANK``), gloo on CPU; every collective
  has a timeout (``--dist-timeout``), so a rank that dies cannot leave the others waiting forever;
* calibration runs once, on rank 0, on the same calibration batches as a single-process run; the
  calibrated integer model is broadcast and rebuilt on every other rank like a checkpoint load
  (bit-identical by construction), and a SHA-256 over every rank's state is compared
  (:func:`check_identical`);
* the validation batches are dealt out whole: batch ``b`` holds the same images as in a
  single-process run and goes to one rank (:class:`BatchShardSampler`, a ``DistributedSampler``
  over batch indices without its padding, so no image counts twice and an uneven tail is fine).
  Whole batches keep every float computation (the float stem, fake mode) on exactly the inputs of
  the single-process run, whatever batch-size-dependent algorithms the float kernels pick;
* each rank counts correct predictions, agreements and equal block codes as integers; the counts
  are summed with ``all_reduce`` and the percentages computed from the totals, so the table that
  rank 0 prints equals the single-process table exactly;
* an exception on any rank is raised on every rank (:func:`run_everywhere`), naming the rank and
  the error, instead of a hang in the next collective.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import os
from typing import Callable, Iterator, List, Optional, Sequence, TypeVar

import torch
import torch.distributed as dist
from torch.utils.data.distributed import DistributedSampler

__all__ = ["Group", "DistributedEvalError", "init_from_env", "BatchShardSampler", "run_everywhere", "sum_counts",
           "broadcast_quantized", "gather_objects", "state_checksum", "check_identical", "DEFAULT_TIMEOUT_S"]

T = TypeVar("T")

#: Default collective timeout in seconds: long enough for rank 0 to calibrate a large model on a
#: CPU while the other ranks wait in the broadcast.
DEFAULT_TIMEOUT_S = 1800.0


class DistributedEvalError(RuntimeError):
    """A rank failed (or the ranks disagree); raised on every rank with the failing ranks' errors."""


@dataclasses.dataclass(frozen=True)
class Group:
    """This process's place in the evaluation: ``rank`` of ``world_size`` (1: no process group)."""

    rank: int = 0
    world_size: int = 1

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_from_env(device: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> "tuple[Group, str]":
    """Join torchrun's process group if the environment names one with more than one process.

    Returns ``(group, device)``: on CUDA each rank uses ``cuda:LOCAL_RANK`` (NCCL); on CPU, gloo.
    Without torchrun (or ``WORLD_SIZE=1``) nothing is initialised and ``Group()`` is returned.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Group(), device
    if not dist.is_available():
        raise DistributedEvalError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    if timeout_s <= 0:
        raise ValueError(f"the collective timeout must be > 0 seconds, got {timeout_s}")
    cuda = str(device).startswith("cuda")
    if cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if local >= torch.cuda.device_count():
            raise DistributedEvalError(f"LOCAL_RANK {local} but only {torch.cuda.device_count()} CUDA device(s)")
        torch.cuda.set_device(local)
        device = f"cuda:{local}"
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo", timeout=datetime.timedelta(seconds=timeout_s))
    return Group(dist.get_rank(), dist.get_world_size()), device


class BatchShardSampler(DistributedSampler):
    """This rank's whole batches of a dataset of ``length`` items, as lists of item indices.

    Batch ``b`` is items ``[b * batch_size, (b + 1) * batch_size)`` (the last one shorter), exactly
    the batches of a single-process ``DataLoader(shuffle=False)``; the batch indices are dealt out
    round-robin by ``DistributedSampler`` (``shuffle=False``) without the padding it adds to even
    out the ranks (padding would count images twice). Use it as a ``DataLoader``'s ``batch_sampler``.
    """

    def __init__(self, length: int, batch_size: int, group: Group) -> None:
        if batch_size <= 0:
            raise ValueError(f"batch_size must be > 0, got {batch_size}")
        self.length = int(length)
        self.batch_size = int(batch_size)
        batches = range((self.length + self.batch_size - 1) // self.batch_size)
        super().__init__(batches, num_replicas=group.world_size, rank=group.rank, shuffle=False, drop_last=False)

    def _batch_indices(self) -> List[int]:
        count = len(self.dataset)
        return list(range(self.rank, count, self.num_replicas))

    def __iter__(self) -> Iterator[List[int]]:
        for b in self._batch_indices():
            yield list(range(b * self.batch_size, min((b + 1) * self.batch_size, self.length)))

    def __len__(self) -> int:
        return len(self._batch_indices())


def run_everywhere(group: Group, what: str, fn: Callable[[], T]) -> Optional[T]:
    """``fn()`` on this rank; if it raised on any rank, raise :class:`DistributedEvalError` on every
    rank, naming each failed rank and its error (the ranks meet in one ``all_gather_object``)."""
    result, error = None, None
    try:
        result = fn()
    except Exception as exc:  # reported to every rank below
        error = f"{type(exc).__name__}: {exc}"
        if not group.distributed:
            raise
    if not group.distributed:
        return result
    reports: List[Optional[str]] = [None] * group.world_size
    try:
        dist.all_gather_object(reports, error)
    except RuntimeError as exc:  # gloo / NCCL: a peer died, or did not arrive within the timeout
        raise DistributedEvalError(f"{what}: lost contact with another rank (it died or hung; see its log). "
                                   f"Rank {group.rank}'s own step {'failed: ' + error if error else 'succeeded'}. "
                                   f"{type(exc).__name__}: {exc}") from exc
    failed = [(rank, msg) for rank, msg in enumerate(reports) if msg is not None]
    if failed:
        detail = "; ".join(f"rank {rank}: {msg}" for rank, msg in failed)
        raise DistributedEvalError(f"{what} failed on {len(failed)} of {group.world_size} ranks: {detail}")
    return result


def gather_objects(group: Group, obj: T) -> List[T]:
    """Every rank's ``obj`` (picklable), in rank order (``[obj]`` in one process)."""
    if not group.distributed:
        return [obj]
    out: List[Optional[T]] = [None] * group.world_size
    dist.all_gather_object(out, obj)
    return out


def sum_counts(group: Group, counts: Sequence[int]) -> List[int]:
    """Element-wise sum of integer ``counts`` over the ranks (int64 ``all_reduce``)."""
    if not group.distributed:
        return [int(c) for c in counts]
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    total = torch.tensor([int(c) for c in counts], dtype=torch.int64, device=device)
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return [int(c) for c in total.cpu().tolist()]


def state_checksum(model: torch.nn.Module) -> str:
    """SHA-256 over every tensor of ``model``'s state dict (names, dtypes, sizes and bytes)."""
    from .nn.model import hash_tensors

    h = hashlib.sha256()
    hash_tensors(h, model.state_dict())
    return h.hexdigest()


def check_identical(group: Group, model: torch.nn.Module, what: str = "the quantized model") -> Optional[str]:
    """Compare :func:`state_checksum` across ranks; :class:`DistributedEvalError` naming the ranks
    that differ from rank 0. Returns the checksum (``None`` in a single process)."""
    if not group.distributed:
        return None  # one process: nothing to compare (and no need to hash a large model)
    mine = state_checksum(model)
    sums: List[Optional[str]] = [None] * group.world_size
    dist.all_gather_object(sums, mine)
    differ = [rank for rank, s in enumerate(sums) if s != sums[0]]
    if differ:
        raise DistributedEvalError(f"{what} differs between ranks: ranks {differ} disagree with rank 0 "
                                   f"(SHA-256 {sums[0][:12]}... vs {[sums[r][:12] for r in differ]})")
    return mine


def broadcast_quantized(group: Group, model, vit: torch.nn.Module, mode: str):
    """Rank 0's calibrated ``QuantVisionTransformer`` on every rank: rank 0 passes it (others pass
    ``None``); the architecture, config and state dict travel by ``broadcast_object_list`` and the
    other ranks rebuild the model as :func:`~fqvit_kernels.nn.load_quantized` does (no float
    weights), on ``vit``'s device, in ``mode``."""
    from .nn.model import build_quantized

    if not group.distributed:
        return model
    payload = [None]
    if group.is_main:
        payload[0] = dict(arch=model.arch, config=model.config.to_dict(),
                          state={k: v.detach().cpu() for k, v in model.state_dict().items()})
    dist.broadcast_object_list(payload, src=0)
    if group.is_main:
        return model
    got = payload[0]
    return build_quantized(got["arch"], got["config"], got["state"], device=next(vit.parameters()).device,
                           mode=mode, source="rank 0's broadcast")
