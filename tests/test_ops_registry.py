"""Registration of every torch.ops.fqvit op: opcheck, fake kernels, dispatch, torch.compile, value-check
switch, signatures. (Each op's own cases: tests/ops/test_<op>.py.)"""

import pytest
import torch

from fqvit_kernels import ops, reference as ref, testing


def _cases(gen):
    return testing.small_cases(gen)


def test_every_op_has_a_case(gen):
    assert {c.name for c in _cases(gen)} == set(ops.OP_NAMES)


def test_opcheck_every_op(gen):
    for case in _cases(gen):
        torch.library.opcheck(getattr(torch.ops.fqvit, case.name).default, case.args)


def test_ops_dispatch_to_reference_semantics(gen):
    for case in _cases(gen):
        out = case.run()
        expected = getattr(ref, case.name)(*case.args)
        testing.assert_equal(out, expected, case.name)
        assert out.stride() == expected.stride(), case.name


def test_fake_kernels_match_real_outputs(gen):
    from torch._subclasses.fake_tensor import FakeTensorMode

    for case in _cases(gen):
        real = case.run()
        with FakeTensorMode() as mode:
            fake_args = tuple(mode.from_tensor(a) if isinstance(a, torch.Tensor) else a for a in case.args)
            fake = getattr(torch.ops.fqvit, case.name)(*fake_args)
        assert (fake.shape, fake.dtype, fake.stride()) == (real.shape, real.dtype, real.stride()), case.name


def test_ops_compile_fullgraph(gen):
    case = testing.linear_case(7, 24, 40, gen)

    def f(*args):
        return torch.ops.fqvit.int8_linear(*args)

    compiled = torch.compile(f, fullgraph=True, backend="eager")
    testing.assert_equal(compiled(*case.args), case.run())


def test_value_checks_can_be_disabled(gen):
    case = testing.linear_case(3, 8, 16, gen)
    bad_shift = torch.zeros_like(case.args[4])
    with pytest.raises(ValueError, match="shift"):
        torch.ops.fqvit.int8_linear(*case.args[:4], bad_shift, case.args[5])
    with ops.value_checks(False):
        assert not ops.value_checks_enabled()
        # The same call now skips the value check and runs (a defined result: kernels clamp the shift).
        out = torch.ops.fqvit.int8_linear(*case.args[:4], bad_shift.clone(), case.args[5])
        assert out.shape == (3, 8) and out.dtype == torch.int8
        # Metadata checks still run.
        with pytest.raises(TypeError, match="shift must have dtype int32"):
            torch.ops.fqvit.int8_linear(*case.args[:4], bad_shift.to(torch.int64), case.args[5])
    assert ops.value_checks_enabled()
    with pytest.raises(ValueError, match="shift"):
        torch.ops.fqvit.int8_linear(*case.args[:4], bad_shift.clone(), case.args[5])


def test_reference_signatures_match_the_op_schemas():
    # register_backend binds kernel arguments against the reference signature (names and defaults).
    import inspect

    for name in ops.OP_NAMES:
        ours = inspect.signature(getattr(ref, name)).parameters
        schema = inspect.signature(ops.OPS[name]._init_fn).parameters
        assert [(p.name, p.default) for p in ours.values()] == [(p.name, p.default) for p in schema.values()], name
