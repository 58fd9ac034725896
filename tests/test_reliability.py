"""Determinism and concurrency of every op through torch.ops.fqvit (whichever backend serves it)."""

import threading

import torch

from fqvit_kernels import testing


def _cases(gen):
    return [
        testing.linear_case(197, 96, 200, gen),
        testing.linear_case(197, 96, 200, gen, "gelu"),
        testing.linear_case(197, 96, 200, gen, "residual"),
        testing.layernorm_case(197, 384, gen),
        testing.scores_case((2, 3, 197, 197), gen),
        testing.attention_case(2, 3, 197, 64, gen),
        testing.quantize_case((4, 197, 96), gen, per_channel=True),
    ]


def test_repeated_runs_and_thread_counts_give_identical_bits(gen):
    previous = torch.get_num_threads()
    try:
        for case in _cases(gen):
            torch.set_num_threads(1)
            one = case.run()
            torch.set_num_threads(2)
            for _ in range(2):
                testing.assert_equal(case.run(), one, f"{case.name} (2 threads vs 1)")
    finally:
        torch.set_num_threads(previous)


def test_two_python_threads_calling_ops_at_once(gen):
    cases = _cases(gen)
    expected = [case.run() for case in cases]
    results = {}
    errors = []

    def worker(tag):
        try:
            for _ in range(2):
                for i, case in enumerate(cases):
                    results[(tag, i)] = case.run()
        except Exception as exc:  # reported below; a thread's exception would otherwise vanish
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors, errors
    assert all(not t.is_alive() for t in threads), "a worker thread hung"
    for (tag, i), out in results.items():
        testing.assert_equal(out, expected[i], f"{cases[i].name} in thread {tag}")
