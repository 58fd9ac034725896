"""Registration of every torch.ops.fqvit op: opcheck, fake kernels, dispatch, composition, shapes."""

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


@pytest.mark.parametrize("n", [1, 7, 50, 197])
@pytest.mark.parametrize("d", [8, 64, 80])
def test_int_attention_equals_unfused_composition(n, d, gen):
    case = testing.attention_case(2, 3, n, d, gen)
    q, k, v, zp, s_mult, s_shift, s_zp, table, o_mult, o_shift, o_zp = case.args
    scores = torch.ops.fqvit.attention_scores(q, k, zp, s_mult, s_shift, s_zp)
    codes = torch.ops.fqvit.log_int_softmax(scores, table, 4)
    context = torch.ops.fqvit.log_attn_v(codes, v, zp)
    expected = ref.requantize_float32(context, o_mult, o_shift, o_zp).to(torch.int8)
    out = case.run()
    testing.assert_equal(out, expected)
    assert out.transpose(1, 2).is_contiguous(), "output memory must be [B, N, H, D]"


def test_int_attention_accepts_qkv_views_of_one_projection(gen):
    b, n, h, d = 2, 7, 3, 16
    case = testing.attention_case(b, h, n, d, gen)
    qkv = torch.randint(-128, 128, (b, n, 3, h, d), generator=gen, dtype=torch.int8)
    q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
    args = (q, k, v) + case.args[3:]
    # Against the reference on contiguous copies: a kernel that misreads strides cannot agree with it.
    testing.assert_equal(torch.ops.fqvit.int_attention(*args),
                         ref.int_attention(q.contiguous(), k.contiguous(), v.contiguous(), *case.args[3:]))


@pytest.mark.parametrize("m", [1, 7, 197, 577])
@pytest.mark.parametrize("n,k", [(1, 1), (24, 13), (40, 771)])
def test_int8_matmul_ragged_shapes_exact(m, n, k, gen):
    case = testing.matmul_case(m, n, k, gen)
    a, b = case.args
    expected = (a.to(torch.float64) @ b.to(torch.float64).t()).to(torch.int32)
    testing.assert_equal(case.run(), expected)


def test_int8_matmul_extremes_do_not_overflow():
    k = ops.MAX_GEMM_K
    a = torch.full((2, k), -128, dtype=torch.int8)
    b = torch.full((3, k), -128, dtype=torch.int8)
    out = torch.ops.fqvit.int8_matmul(a, b)
    assert int(out[0, 0]) == 128 * 128 * k
    with pytest.raises(ValueError, match="K=131072"):
        torch.ops.fqvit.int8_matmul(torch.zeros((1, k + 1), dtype=torch.int8), torch.zeros((1, k + 1), dtype=torch.int8))


@pytest.mark.parametrize("shape", [(1,), (7,), (3, 197), (2, 2, 577)])
def test_log_int_softmax_ragged_shapes(shape, gen):
    case = testing.scores_case(shape, gen)
    codes = case.run()
    assert codes.shape == torch.Size(shape) and codes.dtype == torch.uint8
    # The row maximum always gets a code; every code is 0..15 or the masked 255.
    assert ((codes <= 15) | (codes == 255)).all()
    top = case.args[0].to(torch.int64).argmax(dim=-1, keepdim=True)
    assert (codes.gather(-1, top) <= 15).all()


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
