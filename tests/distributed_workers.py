"""Worker functions for tests/test_distributed_eval.py, run in processes spawned by ``spawn_ranks``.

Each worker joins a gloo group through ``fqvit_kernels.distributed.init_from_env`` (the variables
torchrun would set) and writes what happened on its rank to ``<out>/rank<r>.txt``: ``ok ...`` or
``error <ExceptionName>: <message>``.
"""

from __future__ import annotations

import os
import socket
import time
import traceback
from pathlib import Path

import torch


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn_ranks(worker, world: int, out: Path, scenario: str, timeout_s: float = 20.0, join_s: float = 120.0):
    """Run ``worker(rank, world, port, out, scenario, timeout_s)`` in ``world`` spawned processes;
    returns ``{rank: text written}`` and the seconds taken. Processes still alive after ``join_s``
    are killed and reported as ``hung``."""
    ctx = torch.multiprocessing.get_context("spawn")
    port = free_port()
    procs = [ctx.Process(target=worker, args=(r, world, port, str(out), scenario, timeout_s)) for r in range(world)]
    t0 = time.time()
    for p in procs:
        p.start()
    for p in procs:
        p.join(max(1.0, join_s - (time.time() - t0)))
    results = {}
    for r, p in enumerate(procs):
        if p.is_alive():
            p.kill()
            p.join()
            results[r] = "hung"
        else:
            f = Path(out) / f"rank{r}.txt"
            results[r] = f.read_text() if f.exists() else f"no report (exit code {p.exitcode})"
    return results, time.time() - t0


def _join(rank: int, world: int, port: int, timeout_s: float):
    from fqvit_kernels import distributed

    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    return distributed.init_from_env("cpu", timeout_s)[0]


def collective_worker(rank: int, world: int, port: int, out: str, scenario: str, timeout_s: float) -> None:
    """Scenarios: ``raise-on-1`` (rank 1 raises inside run_everywhere), ``exit-on-1`` (rank 1 dies
    without a word before the collective), ``differ-on-1`` (rank 1's model differs: check_identical),
    ``counts`` (sum_counts and gather_objects)."""
    from fqvit_kernels import distributed

    report = Path(out) / f"rank{rank}.txt"
    try:
        group = _join(rank, world, port, timeout_s)
        if scenario == "raise-on-1":
            def work():
                if group.rank == 1:
                    raise ValueError("calibration batch 3 contains NaN values")
                return 7
            distributed.run_everywhere(group, "the test step", work)
            text = "ok"
        elif scenario == "exit-on-1":
            if group.rank == 1:
                os._exit(3)
            distributed.run_everywhere(group, "the test step", lambda: 7)
            text = "ok"
        elif scenario == "differ-on-1":
            model = torch.nn.Linear(3, 2)
            torch.nn.init.zeros_(model.weight)
            if group.rank == 1:
                model.weight.data[0, 0] = 1e-30
            distributed.check_identical(group, model, "the test model")
            text = "ok"
        elif scenario == "counts":
            total = distributed.sum_counts(group, [rank + 1, 10 * rank, 2**40])
            names = distributed.gather_objects(group, f"r{rank}")
            text = f"ok {total} {names}"
        else:
            raise ValueError(f"unknown scenario {scenario}")
    except Exception as exc:
        text = f"error {type(exc).__name__}: {exc}\n{traceback.format_exc()}"
    report.write_text(text)
    try:
        torch.distributed.destroy_process_group()
    except Exception:
        pass
