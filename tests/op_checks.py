"""Helpers shared by the op tests in tests/ops/: input builders, the comparisons each kind of case
uses, and the machinery of the per-op tables of parameter limits and bad inputs.

Comparisons, by where the expected value comes from:

* ``check_oracle``: the plain-Python oracle (tests/int_oracle.py), on any backend;
* ``check``: ``fqvit_kernels.reference`` on the CPU, with the C++ extension's output layout checked
  and arguments the op refuses (a ValueError on the dispatched op, still computed like the
  reference by a kernel called directly);
* ``check_on_device``: the reference evaluated on the backend's device (the Triton kernels' cases;
  the reference is exact on CUDA too).
"""

from __future__ import annotations

from typing import Callable, List, NamedTuple, Sequence

import pytest
import torch

from fqvit_kernels import ops, reference as ref, testing

INT32_MAX = 2**31 - 1


def int8(gen, *shape) -> torch.Tensor:
    return torch.randint(-128, 128, shape, generator=gen, dtype=torch.int8)


def ints(t: torch.Tensor):
    return t.tolist()


def exp_rows(table_1d: torch.Tensor) -> torch.Tensor:
    """A [256, 256] exponent table whose every row is ``table_1d`` (by distance)."""
    return table_1d.to(torch.int64).expand(256, 256).contiguous()


def table_from(rows_fn) -> torch.Tensor:
    """A [256, 256] exponent table from ``rows_fn(distance) -> value`` (same for every row max)."""
    row = [int(rows_fn(d)) for d in range(256)]
    return torch.tensor([row] * 256, dtype=torch.int64)


def lis_tables(gen) -> dict:
    """Tie-prone and degenerate LIS exponent tables, by name."""
    tiny = torch.randint(0, 7, (256, 256), generator=gen, dtype=torch.int64)
    tiny[:, 0] = torch.randint(1, 7, (256,), generator=gen)
    return {
        # exact-half ratios (E = 3, e = 2 -> 1.5; E = 5, e = 2 -> 2.5) and every small threshold
        "tiny": tiny,
        # only the maximum has an exponent: the others are masked, the maxima share 2**-log2(count)
        "only_max": table_from(lambda d: 1 if d == 0 else 0),
        # exponents halving with the distance: ratios are powers of two and sums of them
        "halving": table_from(lambda d: 2 ** max(23 - d, 0) if d < 24 else 0),
        # float32 sums: 24-bit entries whose sums lose bits (ties in fl32(E))
        "wide": table_from(lambda d: (2**24 - 1) if d == 0 else (2**23 + 1) if d < 4 else 3),
        # one dominant key: the rest cross the 4-bit mask threshold (ratio >= 49152)
        "dominant": table_from(lambda d: 2**20 if d == 0 else (d % 5) + 1),
    }


def huge_table(n: int) -> torch.Tensor:
    """An exponent table whose row sums reach the validator's edge for n keys: float32-representable
    entries, the largest at most ops.MAX_LIS_ROW_SUM / n (row sums just below 2**63 - 2**38)."""
    top = int(ref.round_to_float32(torch.tensor(ops.MAX_LIS_ROW_SUM // n)))
    while top * n > ops.MAX_LIS_ROW_SUM:
        top = int(ref.round_to_float32(torch.tensor(top - (top >> 23))))
    row = ref.round_to_float32(torch.tensor([top >> min(d // 3, 63) for d in range(256)], dtype=torch.int64))
    return row.expand(256, 256).contiguous()


def strided_1d(t: torch.Tensor) -> torch.Tensor:
    """The same values as a non-contiguous 1-D view (every other element of a larger tensor)."""
    wide = torch.zeros(t.numel() * 2, dtype=t.dtype)
    wide[::2] = t
    return wide[::2]


def lis_codes(gen, shape) -> torch.Tensor:
    """4-bit LIS codes of random scores (the reference's)."""
    scores, table, _ = testing.scores_case(shape, gen).args
    return ref.log_int_softmax(scores, table, 4)


# -- comparisons -----------------------------------------------------------------------------------


def check_oracle(backend, op, args, expected_rows, dtype) -> None:
    """``op(*args)`` on ``backend`` equals the oracle's nested lists ``expected_rows``."""
    got = backend.run(op, *args)
    testing.assert_equal(got, torch.tensor(expected_rows, dtype=dtype).reshape(got.shape), f"{op} on {backend.name}")


def check(backend, name, args, what="", refused=None):
    """``name(*args)`` on ``backend`` equals the reference (values, dtype, shape; the C++
    extension's strides too).

    ``refused``: arguments the op refuses with a ValueError matching it: the dispatched op must
    raise it, a kernel called directly must still compute them like the reference (no undefined
    behaviour for any parameter value). Returns the output (None where the op refused).
    """
    label = f"{name} {what}".strip()
    if refused is not None and backend.name.startswith("dispatch"):
        with pytest.raises(ValueError, match=refused):
            backend.run(name, *args)
        return None
    expected = getattr(ref, name)(*args)
    got = backend.run(name, *args)
    testing.assert_equal(got, expected, f"{label} ({backend.name})")
    if backend.name == "cpp":
        if name == "int_attention":  # [B, H, N, D] in [B, N, H, D] memory, as the fake kernel says
            assert got.stride() == ops.attention_output(args[0]).stride(), label
        elif all(a.is_contiguous() for a in args if isinstance(a, torch.Tensor)):
            assert got.stride() == expected.stride(), label
    return got


def check_on_device(backend, case: testing.OpCase) -> torch.Tensor:
    """The backend's output vs the reference, both on the backend's device (the reference is exact
    on CUDA too: its GEMMs are float64 with every partial sum below 2**53); returns the output on
    the CPU."""
    expected = getattr(ref, case.name)(*case.to(backend.device).args).cpu()
    got = backend.run(case.name, *case.args)
    testing.assert_equal(got, expected, f"{case.name} on {backend.name}")
    return got


def agree(backend, name, args, expected, dispatch=True) -> None:
    """``backend`` computes ``expected``; ``dispatch=False`` for arguments the op refuses, which the
    kernels must still handle without undefined behaviour (the dispatched legs are not compared)."""
    if dispatch or not backend.name.startswith("dispatch"):
        testing.assert_equal(backend.run(name, *args), expected, f"{name} on {backend.name}")


# -- parameter limits: each op file lists its own ---------------------------------------------------


class Limit(NamedTuple):
    name: str                      # test id: op.parameter
    op: str
    build: Callable                # gen -> list of valid args
    index: int                     # position of the parameter
    element: bool                  # set one element of a tensor parameter (else the scalar itself)
    ok: Sequence[int]              # last accepted values (both ends)
    bad: Sequence[int]             # first refused values
    match: str                     # the ValueError message names this


def limit_ids(limits: List[Limit]) -> List[str]:
    return [lim.name for lim in limits]


def with_value(limit: Limit, gen, value):
    args = limit.build(gen)
    if limit.element:
        t = args[limit.index].clone()
        t[len(t) // 2] = value  # not the first element: a check must look at every one
        args[limit.index] = t
    else:
        args[limit.index] = value
    return tuple(args)


def check_refused(limit: Limit, gen) -> None:
    """The first value past the limit is refused with a ValueError naming the parameter."""
    for value in limit.bad:
        with pytest.raises(ValueError, match=limit.match):
            getattr(torch.ops.fqvit, limit.op)(*with_value(limit, gen, value))


def check_accepted(limit: Limit, backend, gen) -> None:
    """The last value inside the limit is accepted and computed like the reference."""
    for value in limit.ok:
        args = with_value(limit, gen, value)
        expected = getattr(ref, limit.op)(*args)
        testing.assert_equal(getattr(torch.ops.fqvit, limit.op)(*args), expected, f"{limit.name}={value} dispatched")
        testing.assert_equal(backend.run(limit.op, *args), expected, f"{limit.name}={value} on {backend.name}")


def limit_tests(limits: List[Limit]):
    """The two tests every op file runs over its ``LIMITS`` table, as module-level functions for it
    to bind (``test_first_value_past_each_limit_is_refused, test_last_value_inside_each_limit_is_accepted_and_exact
    = limit_tests(LIMITS)``): the first value past each limit refused (dispatched op), the last one
    inside accepted and exact on every backend."""
    ids = limit_ids(limits)

    @pytest.mark.parametrize("limit", limits, ids=ids)
    def test_first_value_past_each_limit_is_refused(limit, gen):
        check_refused(limit, gen)

    @pytest.mark.parametrize("limit", limits, ids=ids)
    def test_last_value_inside_each_limit_is_accepted_and_exact(limit, backend, gen):
        check_accepted(limit, backend, gen)

    return test_first_value_past_each_limit_is_refused, test_last_value_inside_each_limit_is_accepted_and_exact


# -- bad inputs: each op file lists its own --------------------------------------------------------


def replace(args, index, value):
    args = list(args)
    args[index] = value
    return tuple(args)


def check_bad_inputs(cases) -> None:
    """Each ``(op, args, exception, message)``: the op raises exactly that type, naming the argument."""
    for op, args, exc, message in cases:
        with pytest.raises(exc, match=message) as info:
            getattr(torch.ops.fqvit, op)(*args)
        assert info.type is exc, f"{op}: raised {info.type.__name__}, expected {exc.__name__}"
