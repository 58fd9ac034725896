"""The Gluon kernels' host side (``int8_linear``, ``int_attention``), checked without a GPU.

Gluon has no interpreter, so on a CPU the kernels themselves are covered by the offline sm_90
compile (tests/test_static_report.py: every candidate compiles without a spill, the GEMM keeps one
wgmma group in flight) and their bits by the GPU tests (the ``gluon`` backend of
tests/ops/test_int8_linear.py and test_int_attention.py). Here: each launcher hands its kernel the
same operands, sizes and constants as the Triton launcher does for the same call, the GEMM's
descriptors describe the operands and the tile, its grid is persistent, and the variant switch,
the TMA layout checks and the shape limits answer as documented.
"""

import pytest
import torch

from fqvit_kernels import testing
from op_backends import triton_only

gemm = pytest.importorskip("triton_kernels.gemm")
from triton_kernels import attention, gluon_attention, gluon_gemm, variants  # noqa: E402

needs_gluon = pytest.mark.skipif(not gluon_gemm.HAVE_GLUON, reason="this Triton has no triton.experimental.gluon")


class _Recorder:
    """Stands in for a JIT kernel: ``kernel[grid](*args, **kwargs)`` records the call."""

    def __init__(self):
        self.calls = []

    def __getitem__(self, grid):
        def launch(*args, **kwargs):
            self.calls.append((grid, args, kwargs))
        return launch


def _same(a, b) -> bool:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.data_ptr() == b.data_ptr() \
            and a.shape == b.shape and a.dtype == b.dtype
    return a == b


@triton_only
@needs_gluon
@pytest.mark.parametrize("epilogue", ["plain", "gelu", "steps", "residual"])
@pytest.mark.parametrize("m,n,k", [(1, 48, 32), (197, 784, 3088), (577, 2304, 768)])
def test_gluon_launcher_passes_what_the_triton_launcher_passes(monkeypatch, gen, epilogue, m, n, k):
    case = testing.linear_case(m, n, k, gen, epilogue)
    x, weight, *rest = case.args
    code = {"plain": gemm.EPILOGUE_PLAIN, "gelu": gemm.EPILOGUE_GELU, "steps": gemm.EPILOGUE_GELU,
            "residual": gemm.EPILOGUE_RESIDUAL}[epilogue]
    g_names = [a for a in gluon_gemm._gluon_gemm_kernel.arg_names if a not in ("EPILOGUE", "STAGES", "GROUP_M")]
    triton_kernel, gluon_kernel = _Recorder(), _Recorder()
    monkeypatch.setattr(gemm, "_gemm_tuned", triton_kernel)
    monkeypatch.setattr(gluon_gemm, "_gluon_gemm_kernel", gluon_kernel)
    out = torch.empty((m, n), dtype=torch.int8)
    gemm._launch(x, weight, out, code, *rest)
    config = gluon_gemm.CANDIDATES[0]
    gluon_gemm.launch(x, weight, out, code, *rest, config=config)

    (_, t_args, t_kw), = triton_kernel.calls
    (grid, g_args, g_kw), = gluon_kernel.calls
    t_names = gemm._gemm_kernel.arg_names
    t_by_name, g_by_name = dict(zip(t_names, t_args)), dict(zip(g_names, g_args))
    shared = [a for a in g_names if a in t_by_name]
    assert len(shared) == len(g_names) - 3  # every argument but the three descriptors
    for name in shared:
        assert _same(g_by_name[name], t_by_name[name]), name
    assert g_kw["EPILOGUE"] == t_kw["EPILOGUE"] == code
    # The descriptors: the operands themselves, with the candidate's tiles.
    bm, bn, bk, warps, stages, per_sm = config
    for name, tensor, block in (("a_desc", x, [bm, bk]), ("b_desc", weight, [bn, bk]), ("c_desc", out, [bm, bn])):
        desc = g_by_name[name]
        assert desc.base is tensor and list(desc.shape) == list(tensor.shape)
        assert list(desc.strides) == list(tensor.stride()) and list(desc.block_shape) == block
    assert g_kw["STAGES"] == stages and g_kw["num_warps"] == warps
    tiles = -(-m // bm) * -(-n // bn)
    assert grid == (min(132 * per_sm, tiles),)  # persistent: per_sm programs per SM (132 SMs assumed off-GPU)


@needs_gluon
def test_epilogue_codes_match_the_triton_kernels():
    assert (gluon_gemm.EPILOGUE_PLAIN, gluon_gemm.EPILOGUE_GELU, gluon_gemm.EPILOGUE_RESIDUAL) == \
        (gemm.EPILOGUE_PLAIN, gemm.EPILOGUE_GELU, gemm.EPILOGUE_RESIDUAL)


def test_layout_reason_accepts_dense_operands_and_names_what_tma_cannot_read():
    x = torch.zeros(197, 768, dtype=torch.int8)
    w = torch.zeros(2304, 768, dtype=torch.int8)
    assert gluon_gemm.layout_reason(x, w) is None
    assert gluon_gemm.layout_reason(x, w, torch.zeros(197, 2304, dtype=torch.int8)) is None
    assert "TMA-ready" in gluon_gemm.layout_reason(torch.zeros(197, 40, dtype=torch.int8), torch.zeros(48, 40, dtype=torch.int8))
    assert "TMA-ready" in gluon_gemm.layout_reason(torch.zeros(768, 197, dtype=torch.int8).t(), w)  # column-major
    wide = torch.zeros(197, 800, dtype=torch.int8)
    assert "TMA-ready" in gluon_gemm.layout_reason(wide[:, 1:769], w)  # base off by one byte
    assert "multiple of 16" in gluon_gemm.layout_reason(x, torch.zeros(40, 768, dtype=torch.int8))
    residual = torch.zeros(2304, 197, dtype=torch.int8).t()
    assert "residual" in gluon_gemm.layout_reason(x, w, residual)
    assert "K = 0" in gluon_gemm.layout_reason(x[:, :0], w[:, :0])


def test_cpu_tensors_never_take_gluon():
    x, w = torch.zeros(16, 16, dtype=torch.int8), torch.zeros(16, 16, dtype=torch.int8)
    reason = gluon_gemm.unsupported_reason(x, w)
    assert reason is not None
    with variants.force("gluon"):
        assert variants.selected("int8_linear", torch.device("cpu")) == "triton"
        assert variants.selected("int_attention", torch.device("cpu")) == "triton"


def test_variant_switch(monkeypatch):
    cuda = torch.device("cuda", 0)
    monkeypatch.setenv(variants.VARIANT_ENV, "1")
    assert variants.selected("int8_linear", cuda) == "gluon"
    monkeypatch.setenv(variants.VARIANT_ENV, "0")
    assert variants.selected("int8_linear", cuda) == "triton"
    with variants.force("gluon"):  # the in-process switch wins over the environment
        assert variants.selected("int8_linear", cuda) == "gluon"
    monkeypatch.setenv(variants.VARIANT_ENV, "yes")
    with pytest.raises(ValueError, match="FQVIT_GLUON"):
        variants.selected("int8_linear", cuda)
    with pytest.raises(ValueError, match="unknown variant"):
        with variants.force("cublas"):
            pass


def test_every_recorded_default_is_a_known_variant_with_its_evidence():
    for arch, choices in variants.DEFAULTS.items():
        assert set(choices.values()) <= {"triton", "gluon"}
        assert variants.EVIDENCE.get(arch), arch


def test_candidates_fit_the_documented_limits():
    assert 1 <= len(gluon_gemm.CANDIDATES) <= 4  # first-call tuning stays short
    for config in gluon_gemm.CANDIDATES:
        bm, bn, bk, warps, stages, per_sm = config
        assert bm == 64 * (warps // 4)  # one warp group per 64 rows
        assert bn <= 256 and bk % 32 == 0 and stages >= 2 and per_sm in (1, 2)
        assert per_sm * gluon_gemm.shared_bytes(config) <= 227 * 1024, config  # sm_90: 227 KiB per SM
        assert per_sm * warps * 32 * 256 <= 65536, config  # registers: up to 256 per thread fit


@triton_only
@needs_gluon
@pytest.mark.parametrize("b,h,n,d", [(1, 1, 1, 32), (2, 3, 197, 64), (1, 2, 1024, 40)])
def test_gluon_attention_launcher_passes_what_the_triton_launcher_passes(monkeypatch, gen, b, h, n, d):
    case = testing.attention_case(b, h, n, d, gen)
    triton_kernel, gluon_kernel = _Recorder(), _Recorder()
    g_names = [a for a in gluon_attention._gluon_attention_kernel.arg_names if a not in ("BLOCK_D", "N_TILES")]
    t_names = attention._int_attention_kernel.arg_names
    monkeypatch.setattr(attention, "_int_attention_tuned", triton_kernel)
    monkeypatch.setattr(gluon_attention, "_gluon_attention_kernel", gluon_kernel)
    attention.int_attention(*case.args)
    (_, t_args, t_kw), = triton_kernel.calls
    q, k, v = case.args[:3]
    out = torch.empty_like(t_args[3])
    gluon_attention.launch(q, k, v, out, *case.args[3:])
    (grid, g_args, g_kw), = gluon_kernel.calls
    t_by_name, g_by_name = dict(zip(t_names, t_args)), dict(zip(g_names, g_args))
    for name in g_names:
        if name == "out_ptr":
            assert out.shape == t_args[3].shape and out.stride() == t_args[3].stride()
        else:
            assert _same(g_by_name[name], t_by_name[name]), name
    assert g_kw["BLOCK_D"] == t_kw["BLOCK_D"] == attention.head_block(d)
    assert g_kw["N_TILES"] * gluon_attention.BLOCK_N >= n > (g_kw["N_TILES"] - 1) * gluon_attention.BLOCK_N
    assert grid == (-(-n // gluon_attention.BLOCK_M) * b * h,)  # one program per query tile and head


def test_gluon_attention_shape_limits():
    assert gluon_attention.shape_reason(197, 64) is None
    assert gluon_attention.shape_reason(gluon_attention.MAX_N, gluon_attention.MAX_HEAD_DIM) is None
    assert "N = 1025" in gluon_attention.shape_reason(gluon_attention.MAX_N + 1, 64)
    assert "head dim 80" in gluon_attention.shape_reason(197, 80)
    q = torch.zeros(1, 1, 7, 64, dtype=torch.int8)
    assert gluon_attention.unsupported_reason(q) is not None  # a CPU tensor


@needs_gluon
def test_info_names_the_variant_in_use():
    from fqvit_kernels import info

    assert "sm_90" in info._gluon_status(cuda=False)
    with variants.force("gluon"):  # the GPU branch, without asking a GPU for its capability
        assert info._gluon_status(cuda=True).startswith("gluon")
    with variants.force("triton"):
        assert info._gluon_status(cuda=True).startswith("triton")
