"""The C++ CPU backend (fqvit_kernels._C) as a whole: every op registered and dispatched to it,
default arguments through the dispatcher, a hypothesis property test over all ops (extension and
dispatched op bit-identical to fqvit_kernels.reference), 1-vs-2-thread determinism, and what
``fqvit_kernels.info`` reports. The per-op cases (ragged shapes, strided inputs, range edges) are in
tests/ops/test_<op>.py, on the ``cpp`` and ``dispatch`` backends.
"""

import pytest
import torch
from hypothesis import given, settings, strategies as st

from fqvit_kernels import backends, ops, reference as ref, testing

try:
    from fqvit_kernels import _C
except ImportError as exc:  # only when the extension was not built
    pytest.skip(f"C++ extension fqvit_kernels._C is not built ({backends.cpu_extension_error() or exc}); "
                "build it with `pip install --no-build-isolation --no-deps -e .`", allow_module_level=True)

from op_backends import BACKENDS  # noqa: E402
from op_checks import check as check_on, lis_codes  # noqa: E402

CPU_KERNELS = [b for b in BACKENDS if b.name in ("cpp", "dispatch")]


def check(name, args, what=""):
    """C++ direct and dispatched outputs equal the reference (values, dtype, shape; the extension's
    strides too)."""
    for backend in CPU_KERNELS:
        check_on(backend, name, args, what)


def test_every_cpu_op_dispatches_to_cpp():
    assert backends.cpu_extension_error() is None
    for name in ops.OP_NAMES:
        assert hasattr(_C, name), name
        assert backends.BACKEND[name]["cpu"] == "cpp", name


def test_dispatch_with_default_arguments(gen):
    # The dispatcher drops trailing arguments equal to their defaults before calling the kernel.
    case = testing.linear_case(5, 16, 24, gen)
    assert len(case.args) == 6
    testing.assert_equal(torch.ops.fqvit.int8_linear(*case.args), ref.int8_linear(*case.args))
    scores, table, _ = testing.scores_case((3, 9), gen).args
    testing.assert_equal(torch.ops.fqvit.log_int_softmax(scores, table), ref.log_int_softmax(scores, table))


# ----------------------------------------------------------------------------------------------
# Properties and threads
# ----------------------------------------------------------------------------------------------


@settings(max_examples=25, deadline=None, derandomize=False)
@given(data=st.data())
def test_property_random_shapes_and_parameters(data):
    gen = torch.Generator().manual_seed(data.draw(st.integers(0, 2**31 - 1), label="seed"))
    kind = data.draw(st.sampled_from(["linear", "layernorm", "layernorm_dyadic", "softmax", "attention"]), label="op")
    if kind == "linear":
        # linear_case derives the output scale from the outputs' spread: it needs M * N >= 2.
        m, n, k = data.draw(st.integers(2, 70)), data.draw(st.integers(1, 40)), data.draw(st.integers(1, 300))
        epilogue = data.draw(st.sampled_from(["plain", "gelu", "steps", "residual"]))
        check("int8_linear", testing.linear_case(m, n, k, gen, epilogue).args, f"{epilogue} {m}x{n}x{k}")
        check("int8_matmul", testing.matmul_case(m, n, k, gen).args)
    elif kind in ("layernorm", "layernorm_dyadic"):
        m, c = data.draw(st.integers(1, 40)), data.draw(st.integers(1, 1100))
        make = testing.layernorm_case if kind == "layernorm" else testing.layernorm_dyadic_case
        check(make(1, 1, gen).name, make(m, c, gen, wide_channels=min(4, c)).args, f"{m}x{c}")
    elif kind == "softmax":
        rows, n = data.draw(st.integers(1, 30)), data.draw(st.integers(1, 300))
        bits = data.draw(st.integers(1, 8))
        check("log_int_softmax", testing.scores_case((rows, n), gen, bits).args, f"{rows}x{n} bits={bits}")
    else:
        b, h = data.draw(st.integers(1, 2)), data.draw(st.integers(1, 3))
        n, d = data.draw(st.integers(1, 120)), data.draw(st.sampled_from([8, 16, 24, 64, 80]))
        case = testing.attention_case(b, h, n, d, gen)
        check("int_attention", case.args, f"B={b} H={h} N={n} D={d}")
        codes = lis_codes(gen, (b, h, n, n))
        check("log_attn_v", (codes, case.args[2], case.args[3]))
        check("attention_scores", case.args[:2] + case.args[3:7])


def test_one_and_two_threads_give_identical_bits(gen):
    cases = [
        testing.linear_case(300, 96, 77, gen, "residual"),
        testing.linear_case(300, 96, 77, gen, "gelu"),
        testing.layernorm_case(300, 200, gen),
        testing.layernorm_dyadic_case(300, 200, gen),
        testing.scores_case((4, 3, 120, 120), gen),
        testing.attention_case(2, 3, 197, 64, gen),
        testing.quantize_case((300, 64), gen, per_channel=True),
    ]
    previous = torch.get_num_threads()
    try:
        outputs = {}
        for threads in (1, 2):
            torch.set_num_threads(threads)
            outputs[threads] = [getattr(_C, c.name)(*c.args) for c in cases]
    finally:
        torch.set_num_threads(previous)
    for case, one, two in zip(cases, outputs[1], outputs[2]):
        testing.assert_equal(two, one, f"{case.name} 2 threads vs 1")
        testing.assert_equal(one, getattr(ref, case.name)(*case.args), case.name)


def test_info_reports_the_cpp_backend():
    from fqvit_kernels import info

    lines = info.report()
    assert "C++ extension fqvit_kernels._C: loaded" in lines
    rows = {line.split()[0]: line.split()[1:] for line in lines if line.split() and line.split()[0] in ops.OP_NAMES}
    assert set(rows) == set(ops.OP_NAMES)
    assert all(cols[0] == "cpp" for cols in rows.values())


def test_info_reports_the_triton_fast_path_switch(monkeypatch):
    from fqvit_kernels import info

    monkeypatch.delenv("FQVIT_TRITON_FALLBACK", raising=False)
    assert any(line.startswith("Triton fast paths: on") for line in info.report())
    monkeypatch.setenv("FQVIT_TRITON_FALLBACK", "1")
    assert any(line.startswith("Triton fast paths: off") for line in info.report())
