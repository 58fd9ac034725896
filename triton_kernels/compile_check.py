"""Compile every Triton kernel for a CUDA target without a GPU (ahead of time, no driver needed).

The interpreter runs the kernels' semantics but not the GPU compiler, so it cannot see errors
that only the CUDA backend raises (tile constraints of int8 ``tl.dot``, non-constexpr globals,
software-pipeliner failures). This module lowers each kernel, with the specialisations its
launcher uses, through Triton's CUDA pipeline down to PTX for ``sm_90`` and reports what failed
and whether the dots became Hopper ``wgmma`` instructions with s8 operands.

Run ``python -m triton_kernels.compile_check [--quick | --all-configs]`` in a process where
``TRITON_INTERPRET`` is unset (the module refuses to run under the interpreter).

``--report`` compiles every kernel x autotune candidate with the specialisation of its launch at
ViT-B batch 64 and prints registers, spills, shared memory, s8 wgmma count and SASS instructions
per element of the hot code (:mod:`.static_report`); ``--general`` adds the general (fallback)
paths. It exits 1 on the problems :func:`report_problems` lists (tests/test_static_report.py).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Dict, Iterator, List

import triton
from triton.backends.compiler import GPUTarget

from ._common import interpreting
from .spec import CompileSpec, ast_source, signature
from .static_report import wgmma_s8_count

#: The kernel modules, each with ``compile_specs(all_configs)`` next to its kernels (:mod:`.spec`).
KERNEL_MODULES = ("gemm", "layernorm", "softmax", "attn_v", "attention", "attention_uniform", "gluon_gemm",
                  "gluon_attention")


def compile_specs(all_configs: bool = False) -> Iterator[CompileSpec]:
    """Every kernel module's compile specs, in :data:`KERNEL_MODULES` order."""
    for name in KERNEL_MODULES:
        module = importlib.import_module(f"{__package__}.{name}")
        yield from module.compile_specs(all_configs)


#: One compile per kernel family at its hardest specialisation (the CPU test's selection).
QUICK = ("gemm epilogue=2", "gemm epilogue=3", "gemm epilogue=2 fast", "gemm epilogue=3 fast", "ptf_layernorm C=768", "ptf_layernorm_dyadic C=768", "ptf_layernorm fast C=768",
         "ptf_layernorm chunked C=768 affine32", "ptf_layernorm chunked C=200", "ptf_layernorm_dyadic chunked C=200",
         "ptf_layernorm_dyadic chunked C=768",
         "ptf_layernorm_dyadic fast C=768", "log_int_softmax L=197",
         "log_attn_v D=80", "attention_scores D=80", "int_attention D=32 ", "int_attention D=80 ", "int_attention fast D=32 ",
         "int_attention fast D=80 ", "int_attention_uniform D=32 ", "int_attention_uniform D=80 ")


def compile_all(arch: int = 90, all_configs: bool = False, only=None) -> List[Dict[str, object]]:
    """Compile every kernel for ``sm_<arch>``; one dict per compile (label, ok, error, wgmma_s8).

    ``only``: compile just the jobs whose label starts with one of these prefixes.
    """
    if interpreting():
        raise RuntimeError("compile_check needs real @triton.jit kernels: unset TRITON_INTERPRET")
    target = GPUTarget("cuda", arch, 32)
    results = []
    for spec in compile_specs(all_configs):
        label = spec.label
        if only is not None and not any(label.startswith(prefix) for prefix in only):
            continue
        src = ast_source(spec.kernel, spec.signature(), spec.constexprs)
        try:
            compiled = triton.compile(src, target=target,
                                      options=dict(num_warps=spec.num_warps, num_stages=spec.num_stages))
        except Exception as exc:  # report every failure, not only the first
            cause = exc
            while cause.__cause__ is not None:
                cause = cause.__cause__
            results.append(dict(label=label, ok=False, error=f"{type(cause).__name__}: {str(cause)[-400:]}",
                                wgmma_s8=0))
            continue
        results.append(dict(label=label, ok=True, error="", wgmma_s8=wgmma_s8_count(compiled.asm["ptx"])))
    return results


# ViT-B at batch 64: M = 64 * 197 token rows, C = 768, 12 heads of 64, MLP 3072.
_VIT_B = dict(batch=64, tokens=197, dim=768, heads=12, head_dim=64, hidden=3072)


def report_jobs(all_configs: bool = True, general: bool = False, only=None):
    """Every kernel x autotune config with the specialisation of its launch at ViT-B batch 64
    (the fast paths; ``general=True`` adds the general paths, for before/after tables)."""
    for job in _report_jobs(all_configs, general):
        if only is None or any(job.label.startswith(prefix) for prefix in only):
            yield job


def _report_jobs(all_configs: bool, general: bool):
    from . import attention, gemm, layernorm
    from .static_report import Job

    v = _VIT_B
    gemm_ptrs = gemm.ARG_TYPES
    # Triton specialises integer arguments equal to 1 as constants and marks pointers and integers
    # divisible by 16 at launch; the unit strides and the divisible sizes of these shapes:
    unit = dict(stride_ak=1, stride_bk=1, stride_on=1, stride_rn=1)
    divisible = list(gemm_ptrs) + ["M", "N", "K", "stride_am", "stride_bn", "stride_om", "stride_rm"]
    shapes = {gemm.EPILOGUE_PLAIN: ("qkv", 3 * v["dim"], v["dim"]), gemm.EPILOGUE_GELU: ("fc1", v["hidden"], v["dim"]),
              gemm.EPILOGUE_RESIDUAL: ("fc2", v["dim"], v["hidden"])}
    for fast in (True, False) if general else (True,):
        for epilogue, (name, n, k) in shapes.items():
            candidates = gemm.configs_for(epilogue)
            for cfg in candidates if all_configs else candidates[:1]:
                kw = cfg.kwargs
                consts = dict(kw, EPILOGUE=epilogue, FAST=fast, EVEN_K=k % kw["BLOCK_K"] == 0, OFFSETS_64=False,
                              **unit)
                sig = signature(gemm._gemm_kernel, gemm_ptrs, consts)
                label = (f"gemm {name} {'fast' if fast else 'general'} {kw['BLOCK_M']}x{kw['BLOCK_N']}x{kw['BLOCK_K']} "
                         f"w{cfg.num_warps} s{cfg.num_stages}")
                yield Job(label, gemm._gemm_kernel, sig, consts, divisible, cfg.num_warps, cfg.num_stages, "gemm",
                          kw["BLOCK_M"] * kw["BLOCK_N"])
    from . import gluon_gemm

    if gluon_gemm.HAVE_GLUON:
        gluon_kinds = {gluon_gemm.EPILOGUE_PLAIN: "qkv", gluon_gemm.EPILOGUE_GELU: "fc1", gluon_gemm.EPILOGUE_RESIDUAL: "fc2"}
        for spec in gluon_gemm.compile_specs(all_configs):
            epilogue = spec.constexprs["EPILOGUE"]
            tile = spec.label.split()[2]
            bm, bn = (int(v) for v in tile.split("x")[:2])
            label = f"gluon_gemm {gluon_kinds[epilogue]} {tile} w{spec.num_warps} s{spec.constexprs['STAGES']} {spec.label.split()[-1]}"
            yield Job(label, spec.kernel, spec.signature(), dict(spec.constexprs),
                      [a for a in spec.arg_types if a.endswith("_ptr")] + ["M", "N", "K", "stride_rm"],
                      spec.num_warps, spec.num_stages, "gluon_gemm", bm * bn)
    from . import gluon_attention

    for spec in gluon_attention.compile_specs(all_configs):
        yield Job(spec.label, spec.kernel, spec.signature(), dict(spec.constexprs),
                  [a for a in spec.arg_types] + ["D"] + [a for a in spec.kernel.arg_names if a.startswith("stride_")],
                  spec.num_warps, spec.num_stages, "gluon_attention",
                  gluon_attention.BLOCK_M * gluon_attention.BLOCK_N)
    att_ptrs = attention.ARG_TYPES
    att_div = list(att_ptrs) + ["D", "stride_qb", "stride_qh", "stride_qn", "stride_kb", "stride_kh", "stride_kn",
                                "stride_vb", "stride_vh", "stride_vn", "stride_ob", "stride_oh", "stride_on"]
    for cfg, fast in ((c, f) for f in ((True, False) if general else (True,))
                      for c in (attention._GPU_CONFIGS if all_configs else attention._GPU_CONFIGS[:1])):
        kw = cfg.kwargs
        consts = dict(kw, BLOCK_D=attention.head_block(v["head_dim"]), FAST=fast)
        sig = signature(attention._int_attention_kernel, att_ptrs, consts)
        label = (f"int_attention {'fast' if fast else 'general'} D=64 {kw['BLOCK_M']}x{kw['BLOCK_N']} w{cfg.num_warps} "
                 f"s{cfg.num_stages}")
        yield Job(label, attention._int_attention_kernel, sig, consts, att_div, cfg.num_warps, cfg.num_stages,
                  "attention", kw["BLOCK_M"] * kw["BLOCK_N"])
    from . import attention_uniform

    for cfg in attention._GPU_CONFIGS if all_configs else attention._GPU_CONFIGS[:1]:
        kw = cfg.kwargs
        consts = dict(kw, BLOCK_D=attention.head_block(v["head_dim"]))
        kernel = attention_uniform._int_attention_uniform_kernel
        yield Job(f"int_attention_uniform D=64 {kw['BLOCK_M']}x{kw['BLOCK_N']} w{cfg.num_warps} s{cfg.num_stages}",
                  kernel, signature(kernel, attention_uniform.ARG_TYPES, consts), consts,
                  [a for a in att_div if a != "levels_ptr"],
                  cfg.num_warps, cfg.num_stages, "attention", kw["BLOCK_M"] * kw["BLOCK_N"])
    block_c, rows, warps = layernorm.launch_config(v["dim"])
    ln_div = ["x_ptr", "out_ptr", "alpha_ptr", "M", "C"]
    chunk, n_chunks, c_rows, c_warps = layernorm.chunked_config(v["dim"])
    for fast in (True, False) if general else (True,):
        tag = "fast" if fast else "general"
        ptrs = layernorm.ARG_TYPES
        if fast:  # the chunked int32 kernel, with the int32 clamp that LayerNorm parameters take
            consts = dict(ROWS=c_rows, CHUNK=chunk, N_CHUNKS=n_chunks, EVEN_C=True,
                          NORM_FRAC_BITS=layernorm.LN_NORM_FRAC_BITS, OFFSETS_64=False, AFFINE_32=True)
            yield Job(f"ptf_layernorm fast C=768 rows={c_rows} w{c_warps}", layernorm._ptf_layernorm_chunked_kernel,
                      signature(layernorm._ptf_layernorm_chunked_kernel, ptrs, consts), consts, ln_div + [a for a in ptrs if a.endswith("_ptr")],
                      c_warps, 3, "layernorm", c_rows * v["dim"])
        else:
            consts = dict(ROWS=rows, BLOCK_C=block_c, NORM_FRAC_BITS=layernorm.LN_NORM_FRAC_BITS, FAST=False)
            yield Job(f"ptf_layernorm general C=768 rows={rows} w{warps}", layernorm._ptf_layernorm_kernel,
                      signature(layernorm._ptf_layernorm_kernel, ptrs, consts), consts, ln_div + [a for a in ptrs if a.endswith("_ptr")], warps, 3,
                      "layernorm", rows * v["dim"])
        ptrs = layernorm.DYADIC_ARG_TYPES
        if fast:
            consts = dict(ROWS=c_rows, CHUNK=chunk, N_CHUNKS=n_chunks, EVEN_C=True, OFFSETS_64=False,
                          **layernorm.DYADIC_CONSTEXPRS)
            kernel, k_rows, k_warps = layernorm._ptf_layernorm_dyadic_chunked_kernel, c_rows, c_warps
        else:
            consts = dict(ROWS=rows, BLOCK_C=block_c, FAST=False, **layernorm.DYADIC_CONSTEXPRS)
            kernel, k_rows, k_warps = layernorm._ptf_layernorm_dyadic_kernel, rows, warps
        yield Job(f"ptf_layernorm_dyadic {tag} C=768 rows={k_rows} w{k_warps}", kernel,
                  signature(kernel, ptrs, consts), consts, ln_div + [a for a in ptrs if a.endswith("_ptr")], k_warps, 3, "layernorm",
                  k_rows * v["dim"])


def report(arch: int = 90, all_configs: bool = True, general: bool = False, only=None):
    """Compile :func:`report_jobs` and return the :class:`static_report.Report` list."""
    if interpreting():
        raise RuntimeError("the static report needs real @triton.jit kernels: unset TRITON_INTERPRET")
    from .static_report import compile_job

    return [compile_job(job, arch) for job in report_jobs(all_configs, general, only)]


def report_problems(reports) -> List[str]:
    """What fails the report: a failed compile, a GEMM or attention kernel without s8 wgmma, a Gluon
    GEMM that never leaves a wgmma group in flight, or a
    register spill in any candidate of a fast path (the default paths). Spills of the general
    (fallback) paths, shown with ``--general``, are listed in the table but do not fail."""
    problems = []
    for r in reports:
        if not r.ok:
            problems.append(f"{r.job.label}: compile failed: {r.error}")
        elif r.job.kind in ("gemm", "gluon_gemm", "attention", "gluon_attention") and r.wgmma_s8 == 0:
            problems.append(f"{r.job.label}: no s8 wgmma")
        elif r.job.kind == "gluon_gemm" and r.wait_group_1 == 0:
            problems.append(f"{r.job.label}: no wgmma.wait_group 1 (the wgmma is not asynchronous)")
        elif r.spill_bytes > 0 and " general " not in r.job.label:
            problems.append(f"{r.job.label}: {r.spill_bytes} B spilled")
    return problems


def _report_header(arch: int) -> str:
    import datetime
    import platform

    v = _VIT_B
    return (f"# sm_{arch} static report, {datetime.date.today().isoformat()}, triton {triton.__version__}, "
            f"python {platform.python_version()}; ViT-B batch {v['batch']} launch specialisations\n"
            "# hot SASS/elem: GEMM = epilogue instructions per output; attention = key-tile loop instructions "
            "per score (+ per-row work over 197 keys); LayerNorm = all instructions per element (per thread)")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", type=int, default=90)
    parser.add_argument("--all-configs", action="store_true", help="every autotune candidate, not only the first")
    parser.add_argument("--quick", action="store_true", help="one compile per kernel family (see QUICK)")
    parser.add_argument("--report", action="store_true",
                        help="registers, spills, shared memory, wgmma and SASS per element at ViT-B batch-64 shapes")
    parser.add_argument("--general", action="store_true", help="--report: the general (fallback) paths too")
    parser.add_argument("--only", default="", help="--report: comma-separated label prefixes")
    args = parser.parse_args(argv)
    if args.report:
        from .static_report import format_reports

        reports = report(args.arch, general=args.general, only=args.only.split(",") if args.only else None)
        print(format_reports(reports, _report_header(args.arch)))
        bad = report_problems(reports)
        for problem in bad:
            print("problem:", problem)
        return 1 if bad else 0
    results = compile_all(args.arch, args.all_configs, QUICK if args.quick else None)
    for r in results:
        status = "ok  " if r["ok"] else "FAIL"
        print(f"{status} {r['label']:<45} wgmma.s8={r['wgmma_s8']} {r['error']}")
    failed = [r for r in results if not r["ok"]]
    print(f"{len(results) - len(failed)}/{len(results)} kernels compiled for sm_{args.arch}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
