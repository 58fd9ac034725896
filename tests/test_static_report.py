"""The static sm_90 report (``python -m triton_kernels.compile_check --report``): its SASS reader on
a hand-written listing, and the report itself, which fails on any register spill of a fast path
and on a GEMM or attention kernel without s8 wgmma (compiled ahead of time: no GPU needed)."""

import os
import subprocess
import sys

import pytest

pytest.importorskip("triton.backends.nvidia.compiler")

from triton_kernels.static_report import Job, Report, parse_sass  # noqa: E402

_LISTING = """
        /*0000*/                   MOV R1, c[0x0][0x28] ;
        /*0010*/                   NOP ;
.L_x_0:
        /*0020*/                   IMAD R2, R3, R4, RZ ;
        /*0030*/              @!P0 BRA `(.L_x_1) ;
.L_x_2:
        /*0040*/                   IADD3 R5, R5, 0x1, RZ ;
        /*0050*/              @P1 BRA `(.L_x_2) ;
        /*0060*/                   WARPGROUP.DEPBAR.LE gsb0, 0x0 ;
        /*0070*/               @P2 BRA `(.L_x_0) ;
.L_x_1:
        /*0080*/                   STG.E desc[UR4][R6.64], R2 ;
        /*0090*/                   EXIT ;
"""


def test_sass_reader_finds_outer_loops_and_skips_nops():
    sass = parse_sass(_LISTING)
    assert [op for _, op in sass.instructions] == ["MOV", "NOP", "IMAD", "BRA", "IADD3", "BRA", "WARPGROUP",
                                                   "BRA", "STG", "EXIT"]
    assert sass.loops == [(0x20, 0x70)]  # the inner loop 0x40-0x50 is counted inside the outer one
    assert sass.count() == 9 and sass.count(0x20, 0x70) == 6
    assert sass.opcodes(0x80)["STG"] == 1


def test_report_line_names_the_problem():
    job = Job("gemm x", None, {}, {}, [], 4, 3, "gemm", 64 * 128)
    assert "spill   376 B" in Report(job, True, "", 255, 376, 100 * 1024, 4, 10.0, 1000).line()
    assert Report(job, False, "boom").line().startswith("FAIL")


@pytest.mark.slow
def test_sm90_report_has_no_spill_and_s8_wgmma_everywhere():
    """Every kernel x autotune candidate as launched at ViT-B batch 64 (the default fast paths):
    no register spill anywhere, and every GEMM and attention kernel uses s8 wgmma."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    res = subprocess.run([sys.executable, "-m", "triton_kernels.compile_check", "--report"], capture_output=True,
                         text=True, env=env, timeout=1500)
    out = res.stdout + res.stderr[-3000:]
    lines = [line for line in res.stdout.splitlines() if line.startswith(("ok ", "FAIL"))]
    families = {line.split()[1] for line in lines}
    assert {"gemm", "int_attention", "ptf_layernorm", "ptf_layernorm_dyadic"} <= families, out
    assert all(line.startswith("ok ") for line in lines), out
    assert res.returncode == 0, out  # compile_check.report_problems: the same rules
    for line in lines:
        assert " spill     0 B" in line, line
        if line.split()[1] in ("gemm", "int_attention"):
            assert "wgmma.s8  0" not in line, line
