"""Triton kernels vs the integer reference, bit for bit.

Without a GPU the kernels run on CPU tensors under the Triton interpreter (``TRITON_INTERPRET=1``
is set here, before Triton is imported); with a GPU the same tests run on CUDA tensors, plus the
ViT-B/L shapes, opcheck through the registered CUDA kernels and the Hopper PTX check.
Run alone with ``pytest -m interpreter``.
"""

import os
import pathlib
import subprocess
import sys

import pytest
import torch

CUDA = torch.cuda.is_available()
if not CUDA:
    os.environ.setdefault("TRITON_INTERPRET", "1")  # must precede the first import of triton

pytest.importorskip("triton")
import triton.language as tl  # noqa: E402
from triton.runtime.interpreter import InterpretedFunction  # noqa: E402

# Triton builds its own @jit library functions (tl.sum, tl.cdiv, ...) for the interpreter only if
# TRITON_INTERPRET was set when triton was first imported. In a full pytest run another module
# (timm, through torch) may import triton first; the interpreter then cannot run in this process
# and the whole file re-runs in a fresh one (test_interpreter_suite_in_fresh_process).
IN_PROCESS = CUDA or isinstance(tl.standard.sum, InterpretedFunction)

import triton_kernels  # noqa: E402
from triton_kernels import attention, attention_uniform, attn_v, gemm, layernorm, softmax  # noqa: E402

from fqvit_kernels import params, reference as ref, testing  # noqa: E402
from triton_lis_check import lis_codes_by_thresholds  # noqa: E402

DEVICE = "cuda" if CUDA else "cpu"
pytestmark = pytest.mark.interpreter
needs_gpu = pytest.mark.gpu  # skipped without CUDA by conftest.py


@pytest.fixture(autouse=True)
def _needs_usable_interpreter(request):
    if not IN_PROCESS and request.node.originalname != "test_interpreter_suite_in_fresh_process":
        pytest.skip("triton was imported before TRITON_INTERPRET was set; this file re-runs in a fresh process")


@pytest.mark.skipif(IN_PROCESS, reason="the interpreter runs in this process")
def test_interpreter_suite_in_fresh_process():
    env = dict(os.environ, TRITON_INTERPRET="1")
    root = pathlib.Path(__file__).resolve().parents[1]
    here = pathlib.Path(__file__).resolve()
    res = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "interpreter",
                          str(here), str(here.with_name("test_triton_fast_paths.py"))], capture_output=True,
                         text=True, env=env, cwd=root, timeout=900)
    assert res.returncode == 0, res.stdout[-6000:] + res.stderr[-2000:]


def _run(case, launcher):
    """Launcher vs reference, both on ``DEVICE`` (the reference is exact on CUDA too: its GEMMs
    are float64 with every partial sum below 2**53); returns the kernel output on CPU."""
    device_case = case.to(DEVICE)
    got = launcher(*device_case.args).cpu()
    expected = getattr(ref, case.name)(*device_case.args).cpu()
    testing.assert_equal(got, expected, case.name)
    return got


def test_cuda_kernels_cover_every_integer_op():
    kernels = triton_kernels.cuda_kernels()
    assert set(kernels) == {"int8_matmul", "int8_linear", "ptf_layernorm", "ptf_layernorm_dyadic", "log_int_softmax",
                            "log_attn_v", "attention_scores", "int_attention", "int_attention_uniform"}
    assert triton_kernels.__fqvit_kernels__ is True


# ---------------------------------------------------------------------------------------------
# GEMMs
# ---------------------------------------------------------------------------------------------

GEMM_SHAPES = [(1, 7, 13), (7, 1, 40), (33, 50, 13), (33, 7, 40), (70, 130, 200)]


@pytest.mark.parametrize("m,n,k", GEMM_SHAPES)
def test_int8_matmul(m, n, k, gen):
    _run(testing.matmul_case(m, n, k, gen), gemm.int8_matmul)


def test_int8_matmul_strided_operands(gen):
    a = torch.randint(-128, 128, (40, 33), generator=gen, dtype=torch.int8).t()  # [33, 40], column-major
    b = torch.randint(-128, 128, (7, 80), generator=gen, dtype=torch.int8)[:, ::2]  # [7, 40], stride 2
    got = gemm.int8_matmul(a.to(DEVICE), b.to(DEVICE)).cpu()
    testing.assert_equal(got, ref.int8_matmul(a, b))


@pytest.mark.parametrize("epilogue", ["plain", "gelu", "steps", "residual"])
@pytest.mark.parametrize("m,n,k", GEMM_SHAPES[:4])
def test_int8_linear(m, n, k, epilogue, gen):
    _run(testing.linear_case(m, n, k, gen, epilogue), gemm.int8_linear)


def test_int8_linear_extreme_requant(gen):
    """Saturating outputs, large multipliers/shifts and step-table indices far outside the table."""
    case = testing.linear_case(9, 20, 40, gen)
    args = list(case.args)
    args[3] = torch.full((20,), 2**31 - 1, dtype=torch.int32)
    args[4] = torch.randint(1, 63, (20,), generator=gen, dtype=torch.int32)
    _run(testing.OpCase("int8_linear", tuple(args)), gemm.int8_linear)
    for length, bits in ((5, 0), (1, 20), (300, 7)):
        table = testing.random_step_table(gen, length, bits)
        for zp in (2**31 - 1000, -(2**31), (length << bits) // 2):
            _run(testing.OpCase("int8_linear", tuple(args[:5]) + (zp, table, bits)), gemm.int8_linear)


def _strided(t):
    """The same values as a non-contiguous 1-D view (every other element of a larger tensor)."""
    wide = torch.zeros(t.numel() * 2, dtype=t.dtype)
    wide[::2] = t
    return wide[::2]


@pytest.mark.parametrize("epilogue", ["gelu", "residual"])
def test_int8_linear_strided_parameter_vectors(epilogue, gen):
    case = testing.linear_case(7, 20, 40, gen, epilogue)
    args = tuple(_strided(a) if isinstance(a, torch.Tensor) and a.dim() == 1 else a for a in case.args)
    assert not args[2].is_contiguous()
    _run(testing.OpCase("int8_linear", args), gemm.int8_linear)


@pytest.mark.parametrize("dyadic", [False, True])
def test_ptf_layernorm_strided_parameter_vectors(dyadic, gen):
    case = (testing.layernorm_dyadic_case if dyadic else testing.layernorm_case)(5, 48, gen)
    args = tuple(_strided(a) if isinstance(a, torch.Tensor) and a.dim() == 1 else a for a in case.args)
    _run(testing.OpCase(case.name, args), layernorm.ptf_layernorm_dyadic if dyadic else layernorm.ptf_layernorm)


def test_int8_linear_empty_rows(gen):
    case = testing.linear_case(1, 7, 13, gen)
    x = case.args[0][:0]
    out = gemm.int8_linear(x.to(DEVICE), *testing.OpCase("", case.args[1:]).to(DEVICE).args)
    assert out.shape == (0, 7) and out.dtype == torch.int8


# ---------------------------------------------------------------------------------------------
# LayerNorm
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("m,c", [(1, 1), (1, 8), (7, 80), (33, 200), (20, 768)])
def test_ptf_layernorm(m, c, gen):
    _run(testing.layernorm_case(m, c, gen), layernorm.ptf_layernorm)
    _run(testing.layernorm_case(m, c, gen, eps=1e-5), layernorm.ptf_layernorm)


@pytest.mark.parametrize("m,c", [(1, 1), (1, 8), (7, 80), (33, 200), (20, 768)])
def test_ptf_layernorm_dyadic(m, c, gen):
    _run(testing.layernorm_dyadic_case(m, c, gen), layernorm.ptf_layernorm_dyadic)


def test_out_of_range_shifts_and_alphas_are_clamped_not_undefined(gen):
    """Parameters the ops refuse (reachable with value checks off, or tampered after a cached check)
    still give defined results: the reference at the clamped value (LLVM makes an out-of-range
    shift poison, so without the clamp the GPU result would be arbitrary)."""
    x, w, bias, mult, shift, zp = testing.linear_case(9, 12, 30, gen).args
    for bad in (0, -1, -(2**31), 63, 64, 2**31 - 1):
        tampered = shift.clone()
        tampered[::2] = bad
        case = testing.OpCase("int8_linear", (x, w, bias, mult, tampered, zp)).to(DEVICE)
        expected = ref.int8_linear(x, w, bias, mult, tampered.clamp(1, 63), zp)
        testing.assert_equal(gemm.int8_linear(*case.args).cpu(), expected, f"shift {bad}")
    args = list(testing.layernorm_case(5, 40, gen).args)
    alpha = args[2].clone()
    alpha[::3] = 9
    alpha[1::3] = -4
    expected = ref.ptf_layernorm(*args[:2], alpha.clamp(0, 3), *args[3:])
    args[2] = alpha
    got = layernorm.ptf_layernorm(*testing.OpCase("ptf_layernorm", tuple(args)).to(DEVICE).args).cpu()
    testing.assert_equal(got, expected, "alpha out of range")


@pytest.mark.parametrize("dyadic", [False, True])
def test_ptf_layernorm_zero_variance_and_extreme_rows(dyadic, gen):
    case = (testing.layernorm_dyadic_case if dyadic else testing.layernorm_case)(6, 48, gen)
    launcher = layernorm.ptf_layernorm_dyadic if dyadic else layernorm.ptf_layernorm
    args = list(case.args)
    x = args[0].clone()
    x[0] = 17
    x[3] = args[1]  # every channel at the zero point
    x[4] = -128
    x[4, 0] = 127  # one outlier: tiny sigma, huge gain
    x[5] = 5
    x[5, 9] = 6  # the smallest nonzero variance
    args[0] = x
    args[2] = torch.zeros_like(args[2])
    _run(testing.OpCase(case.name, tuple(args)), launcher)
    if dyadic:  # extreme parameters: largest/smallest gains, beta at its limits
        c = x.shape[1]
        signs = torch.where(torch.arange(c) % 3 == 0, 1, -1)
        for mag, sh, beta in ((2**31 - 1, 15, 2**62), (2**30, 62, -(2**62)), (0, 31, 3)):
            extreme = (x, -128, torch.full((c,), 3, dtype=torch.int32), (signs * mag).to(torch.int32),
                       torch.full((c,), sh, dtype=torch.int32), torch.full((c,), beta, dtype=torch.int64), 127)
            _run(testing.OpCase(case.name, extreme), launcher)


# ---------------------------------------------------------------------------------------------
# Log-Int-Softmax, attn @ V, scores
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(1, 1), (3, 7), (2, 5, 50), (3, 1100)])
@pytest.mark.parametrize("bits", [4, 8, 1])
def test_log_int_softmax(shape, bits, gen):
    _run(testing.scores_case(shape, gen, bits), softmax.log_int_softmax)


def test_log_int_softmax_permuted_input(gen):
    case = testing.scores_case((2, 9, 7), gen)
    scores = case.args[0].transpose(1, 2)
    got = softmax.log_int_softmax(scores.to(DEVICE), case.args[1].to(DEVICE)).cpu()
    testing.assert_equal(got, ref.log_int_softmax(scores, case.args[1]))


def _reference_codes(total, exps):
    """4-bit codes by the reference's formula (FQ-ViT's float32 ratio), 16 = masked."""
    positive = exps > 0
    tot = total[:, None].expand_as(exps)
    ratio = ref.float32_ratio(tot, torch.where(positive, exps, torch.ones_like(exps)))
    msb = ref.bit_length(ratio) - 1
    next_bit = ((ratio >> torch.clamp(msb - 1, min=0)) & 1) * (msb >= 1)
    code = msb + next_bit
    return torch.where(positive & (code < 16), code, torch.full_like(code, 16)).to(torch.int32)


def test_lis_threshold_codes_match_division(gen):
    """The fused attention's division-free codes, including float32 ties and sums near 2**63."""
    rows, length = 96, 300
    total = torch.randint(1, 2**40, (rows,), generator=gen, dtype=torch.int64)
    total[40:60] = 2**62 + torch.randint(0, 2**40, (20,), generator=gen)  # near the int64 limit
    divisor = torch.randint(1, 70000, (rows, length), generator=gen)
    exps = total[:, None] // divisor
    for i, level in enumerate(ref.lis_level_constants()[:16]):
        # Exponents around each level's threshold, where the float32 rounding decides.
        u = ref.lis_level_thresholds(total[i:i + 1], 16)[0, i]
        exps[i, :3] = torch.stack([u - 1, u, u + 1])
        big = ref.lis_level_thresholds(total[40 + i:41 + i], 16)[0, i]
        exps[40 + i, :3] = torch.stack([big - 1, big, big + 1])
    exps = torch.minimum(exps, total[:, None])
    exps[:, 5] = 0
    got = lis_codes_by_thresholds(total.to(DEVICE), exps.to(DEVICE)).cpu()
    expected = _reference_codes(total, exps)
    testing.assert_equal(got, expected, "codes")
    assert set(expected.unique().tolist()) == set(range(17))


def test_lis_threshold_codes_every_table_entry(gen):
    """Every (row sum, table entry) pair a real table gives, for several score scales."""
    for scale in (0.02, 0.08, 0.3):
        table = params.lis_exp_table(scale, 3)[200, :201]
        counts = torch.randint(1, 2000, (64, table.numel()), generator=gen)
        counts[:, 1:] *= torch.randint(0, 2, (64, table.numel() - 1), generator=gen)
        total = (counts * table).sum(dim=1)
        exps = table.expand(64, table.numel()).contiguous()
        got = lis_codes_by_thresholds(total.to(DEVICE), exps.to(DEVICE)).cpu()
        testing.assert_equal(got, _reference_codes(total, exps), f"codes at scale {scale}")


def test_lis_threshold_codes_exhaustive_small_sums():
    """Every pair 1 <= e <= E <= 512 (where round-half-even ties are densest)."""
    total = torch.arange(1, 513, dtype=torch.int64)
    exps = torch.minimum(torch.arange(1, 513, dtype=torch.int64)[None, :], total[:, None]).contiguous()
    got = lis_codes_by_thresholds(total.to(DEVICE), exps.to(DEVICE)).cpu()
    testing.assert_equal(got, _reference_codes(total, exps), "codes")


def _huge_table(n: int) -> torch.Tensor:
    """An exponent table whose row sums reach the validator's edge for n keys: float32-representable
    entries, the largest at most ops.MAX_LIS_ROW_SUM / n (row sums just below 2**63 - 2**38)."""
    from fqvit_kernels import ops

    top = int(ref.round_to_float32(torch.tensor(ops.MAX_LIS_ROW_SUM // n)))
    while top * n > ops.MAX_LIS_ROW_SUM:
        top = int(ref.round_to_float32(torch.tensor(top - (top >> 23))))
    row = ref.round_to_float32(torch.tensor([top >> min(d // 3, 63) for d in range(256)], dtype=torch.int64))
    return row.expand(256, 256).contiguous()


def test_log_int_softmax_near_int64_limit(gen):
    scores = torch.randint(-128, 128, (4, 50), generator=gen, dtype=torch.int8)
    scores[:, :7] = 127  # many keys at the row max: E close to 2**63
    _run(testing.OpCase("log_int_softmax", (scores, _huge_table(50), 4)), softmax.log_int_softmax)


def test_int_attention_near_int64_limit(gen):
    case = testing.attention_case(1, 2, 50, 16, gen)
    args = list(case.args)
    args[7] = _huge_table(50)
    _check_attention(testing.OpCase("int_attention", tuple(args)))


@pytest.mark.parametrize("b,nq,nk,d", [(1, 1, 1, 8), (2, 7, 50, 80), (3, 33, 70, 13), (1, 65, 70, 200),
                                       (2, 65, 9, 130)])
def test_log_attn_v(b, nq, nk, d, gen):
    case = testing.scores_case((b, nq, nk), gen)
    codes = ref.log_int_softmax(*case.args)
    v = torch.randint(-128, 128, (b, nk, d), generator=gen, dtype=torch.int8)
    zp = int(torch.randint(-128, 128, (), generator=gen))
    _run(testing.OpCase("log_attn_v", (codes, v, zp)), attn_v.log_attn_v)
    raw = torch.randint(0, 256, (b, nq, nk), generator=gen, dtype=torch.uint8)
    raw[..., 0] = 0  # weight 2**15
    _run(testing.OpCase("log_attn_v", (raw, v, zp)), attn_v.log_attn_v)


@pytest.mark.parametrize("nq,nk,d", [(1, 1, 8), (7, 50, 80), (33, 7, 13), (70, 130, 64)])
def test_attention_scores(nq, nk, d, gen):
    q = torch.randint(-128, 128, (2, nq, d), generator=gen, dtype=torch.int8)
    k = torch.randint(-128, 128, (2, nk, d), generator=gen, dtype=torch.int8)
    mult, shift = params.fixed_point_multiplier(1.0 / (d**0.5 * 60.0))
    zp = int(torch.randint(-64, 64, (), generator=gen))
    _run(testing.OpCase("attention_scores", (q, k, zp, mult, shift, -3)), attention.attention_scores)


# ---------------------------------------------------------------------------------------------
# Fused attention
# ---------------------------------------------------------------------------------------------


def _check_attention(case):
    got = _run(case, attention.int_attention)
    b, h, n, d = got.shape
    assert got.transpose(1, 2).is_contiguous(), "output memory must be [B, N, H, D]"


@pytest.mark.parametrize("b,h,n,d", [(1, 1, 1, 8), (1, 2, 7, 80), (2, 1, 50, 8), (1, 1, 70, 32),
                                     (1, 1, 197, 64), (1, 1, 129, 80), (2, 2, 70, 16)])
def test_int_attention(b, h, n, d, gen):
    _check_attention(testing.attention_case(b, h, n, d, gen))


def test_int_attention_strided_qkv_view(gen):
    """q, k, v as views of one packed qkv tensor [B, N, 3, H, D] (timm's layout)."""
    b, h, n, d = 1, 2, 9, 16
    case = testing.attention_case(b, h, n, d, gen)
    packed = torch.stack(case.args[:3], dim=0).permute(1, 3, 0, 2, 4).contiguous()  # [B, N, 3, H, D]
    views = packed.permute(2, 0, 3, 1, 4).unbind(0)
    assert not views[0].is_contiguous()
    _check_attention(testing.OpCase("int_attention", tuple(views) + case.args[3:]))


# ---------------------------------------------------------------------------------------------
# Ahead-of-time compilation for sm_90 (no GPU needed): what the interpreter cannot check
# ---------------------------------------------------------------------------------------------


def test_every_kernel_family_compiles_for_sm90():
    """Lower one specialisation per kernel through Triton's CUDA pipeline to PTX (driverless).

    Catches GPU-compiler-only errors (int8 dot tile limits, globals, pipeliner) and checks that
    the GEMM and attention dots become Hopper wgmma with s8 operands.
    """
    import subprocess
    import sys

    pytest.importorskip("triton.backends.nvidia.compiler")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    res = subprocess.run([sys.executable, "-m", "triton_kernels.compile_check", "--quick"], capture_output=True,
                         text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr[-3000:]
    lines = {line.split("wgmma.s8=")[0].strip(): int(line.split("wgmma.s8=")[1].split()[0])
             for line in res.stdout.splitlines() if "wgmma.s8=" in line}
    for label, count in lines.items():
        if label.split()[1].startswith(("gemm", "log_attn_v", "attention_scores", "int_attention")):
            assert count > 0, f"{label}: no s8 wgmma in the PTX"


# ---------------------------------------------------------------------------------------------
# GPU only: model sizes, opcheck on CUDA, Hopper PTX
# ---------------------------------------------------------------------------------------------


@needs_gpu
@pytest.mark.parametrize("m,n,k,epilogue", [
    (1576, 2304, 768, "plain"), (1576, 3072, 768, "gelu"), (1576, 768, 3072, "residual"),
    (1577, 3072, 1024, "gelu"), (1577, 1024, 4096, "residual"), (12608, 768, 768, "residual"),
    (1576, 3072, 768, "steps"),
])
def test_gpu_vit_linears(m, n, k, epilogue, gen):
    _run(testing.linear_case(m, n, k, gen, epilogue), gemm.int8_linear)


@needs_gpu
@pytest.mark.parametrize("m,n,k", [(12608, 2304, 768), (1000, 1000, 1000)])
def test_gpu_int8_matmul(m, n, k, gen):
    _run(testing.matmul_case(m, n, k, gen), gemm.int8_matmul)


@needs_gpu
@pytest.mark.parametrize("m,c", [(12608, 768), (1577, 1024), (3, 8192)])
def test_gpu_layernorm(m, c, gen):
    _run(testing.layernorm_case(m, c, gen), layernorm.ptf_layernorm)
    _run(testing.layernorm_dyadic_case(m, c, gen), layernorm.ptf_layernorm_dyadic)


@needs_gpu
@pytest.mark.parametrize("n", [1, 50, 197, 577, 1025])
@pytest.mark.parametrize("d", [32, 64, 80, 128])
def test_gpu_int_attention(n, d, gen):
    _check_attention(testing.attention_case(2, 3, n, d, gen))


@needs_gpu
@pytest.mark.parametrize("n", [1, 50, 197, 577, 1025])
@pytest.mark.parametrize("d", [32, 64, 80, 128])
def test_gpu_int_attention_uniform(n, d, gen):
    got = _run(testing.attention_uniform_case(2, 3, n, d, gen), attention_uniform.int_attention_uniform)
    assert got.transpose(1, 2).is_contiguous(), "output memory must be [B, N, H, D]"
    _run(testing.attention_uniform_case(1, 2, n, d, gen, peak=0.05), attention_uniform.int_attention_uniform)


@needs_gpu
def test_gpu_vit_b_attention_and_softmax(gen):
    case = testing.attention_case(8, 12, 197, 64, gen)
    _check_attention(case)
    scores_case = testing.scores_case((8, 12, 197, 197), gen)
    _run(scores_case, softmax.log_int_softmax)


@needs_gpu
def test_gpu_opcheck_every_integer_op(gen):
    from fqvit_kernels import backends, ops

    assert all(backends.BACKEND[name]["cuda"] == "triton" for name in triton_kernels.cuda_kernels())
    cases = [c for c in testing.small_cases(gen) if c.name in triton_kernels.cuda_kernels()]
    for case in cases:
        cuda_case = case.to("cuda")
        torch.library.opcheck(getattr(torch.ops.fqvit, case.name).default, cuda_case.args)
        testing.assert_equal(cuda_case.run().cpu(), getattr(ref, case.name)(*case.args), case.name)


@needs_gpu
@pytest.mark.skipif(CUDA and torch.cuda.get_device_capability() != (9, 0), reason="wgmma is sm_90 only")
def test_gpu_gemm_ptx_uses_wgmma_s8():
    ptx = triton_kernels.gemm_ptx()
    assert "wgmma" in ptx, "the int8 GEMM did not lower to Hopper wgmma"
    wgmma_lines = [line for line in ptx.splitlines() if "wgmma.mma_async" in line]
    assert any(".s8" in line for line in wgmma_lines), wgmma_lines[:3]
