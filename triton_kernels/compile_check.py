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
import sys
from typing import Dict, Iterator, List, Tuple

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from ._common import interpreting
from .static_report import wgmma_s8_count

_I8, _U8, _I32, _I64 = "*i8", "*u8", "*i32", "*i64"
# Pointer argument types of the GEMM and int_attention kernels (the other arguments are i32).
_GEMM_PTRS = dict(a_ptr=_I8, b_ptr=_I8, out_ptr=_I8, bias_ptr=_I64, mult_ptr=_I32, shift_ptr=_I32,
                  table_ptr=_I32, res_ptr=_I8, branch_mult_ptr=_I32, res_mult_ptr=_I32, res_shift_ptr=_I32)
_LN_PTRS = dict(x_ptr=_I8, out_ptr=_I8, alpha_ptr=_I32, wmult_ptr=_I32, bias_ptr=_I64, shift_ptr=_I32)
_DYADIC_PTRS = dict(x_ptr=_I8, out_ptr=_I8, alpha_ptr=_I32, gmult_ptr=_I32, gshift_ptr=_I32, beta_ptr=_I64)
_ATTENTION_PTRS = dict(q_ptr=_I8, k_ptr=_I8, v_ptr=_I8, out_ptr=_I8, table_ptr=_I64, levels_ptr=_I64)


def _signature(fn, pointer_types: Dict[str, str], constexprs: Dict[str, object]) -> Dict[str, str]:
    sig = {}
    for name in fn.arg_names:
        if name in constexprs:
            sig[name] = "constexpr"
        else:
            sig[name] = pointer_types.get(name, "i64" if name == "variance_offset" else "i32")
    return sig


def _jobs(all_configs: bool) -> Iterator[Tuple[str, object, Dict[str, str], Dict[str, object], int, int]]:
    """(label, kernel, pointer types, constexprs, num_warps, num_stages) per compile."""
    from . import attention, attention_uniform, attn_v, gemm, layernorm, softmax

    gemm_ptrs = _GEMM_PTRS
    for epilogue in (gemm.EPILOGUE_INT32, gemm.EPILOGUE_PLAIN, gemm.EPILOGUE_GELU, gemm.EPILOGUE_RESIDUAL):
        candidates = gemm.configs_for(epilogue)
        for cfg in candidates if all_configs else candidates[:1]:
            ptrs = dict(gemm_ptrs, out_ptr=_I32 if epilogue == gemm.EPILOGUE_INT32 else _I8)
            # The general path with everything general (K masks, 64-bit offsets); the fast one as at ViT shapes.
            for fast in ((False,) if epilogue == gemm.EPILOGUE_INT32 else (False, True)):
                consts = dict(cfg.kwargs, EPILOGUE=epilogue, FAST=fast, EVEN_K=fast, OFFSETS_64=not fast)
                label = (f"gemm epilogue={epilogue}{' fast' if fast else ''} "
                         f"{cfg.kwargs['BLOCK_M']}x{cfg.kwargs['BLOCK_N']}x{cfg.kwargs['BLOCK_K']}")
                yield label, gemm._gemm_kernel, ptrs, consts, cfg.num_warps, cfg.num_stages

    for channels in (8, 768, 8192):
        block_c, rows, warps = layernorm.launch_config(channels)
        for fast in (False, True):
            tag = " fast" if fast else ""
            yield (f"ptf_layernorm{tag} C={channels}", layernorm._ptf_layernorm_kernel,
                   _LN_PTRS, dict(ROWS=rows, BLOCK_C=block_c, NORM_FRAC_BITS=layernorm.LN_NORM_FRAC_BITS, FAST=fast), warps, 3)
            yield (f"ptf_layernorm_dyadic{tag} C={channels}", layernorm._ptf_layernorm_dyadic_kernel,
                   _DYADIC_PTRS, dict(ROWS=rows, BLOCK_C=block_c, FAST=fast, **layernorm.DYADIC_CONSTEXPRS), warps, 3)

    for channels in (1, 200, 768, layernorm.MAX_FAST_CHANNELS):
        chunk, n_chunks, rows, warps = layernorm.chunked_config(channels)
        shape = dict(ROWS=rows, CHUNK=chunk, N_CHUNKS=n_chunks, EVEN_C=channels % chunk == 0, OFFSETS_64=channels == 1)
        for affine_32 in (True, False):
            yield (f"ptf_layernorm chunked C={channels}{' affine32' if affine_32 else ''}",
                   layernorm._ptf_layernorm_chunked_kernel, _LN_PTRS,
                   dict(shape, NORM_FRAC_BITS=layernorm.LN_NORM_FRAC_BITS, AFFINE_32=affine_32), warps, 3)
        yield (f"ptf_layernorm_dyadic chunked C={channels}", layernorm._ptf_layernorm_dyadic_chunked_kernel,
               _DYADIC_PTRS, dict(shape, **layernorm.DYADIC_CONSTEXPRS), warps, 3)

    for length in (7, 197, 4096):
        block_l, rows, warps = softmax.launch_config(length)
        yield (f"log_int_softmax L={length}", softmax._log_int_softmax_kernel,
               dict(s_ptr=_I8, out_ptr=_U8, table_ptr=_I64, levels_ptr=_I64), dict(BITS=4, ROWS=rows, BLOCK_L=block_l),
               warps, 3)

    for head_dim in (8, 64, 80):
        block_m, block_n, block_d, warps = attn_v.launch_config(head_dim)
        yield (f"log_attn_v D={head_dim}", attn_v._log_attn_v_kernel, dict(codes_ptr=_U8, v_ptr=_I8, out_ptr=_I32),
               dict(BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_D=block_d), warps, 3)

    for head_dim in (8, 64, 80):
        block_m, block_n, block_d, warps = attention.scores_launch_config(head_dim)
        yield (f"attention_scores D={head_dim}", attention._attention_scores_kernel,
               dict(q_ptr=_I8, k_ptr=_I8, out_ptr=_I8), dict(BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_D=block_d),
               warps, 3)

    attention_configs = attention._GPU_CONFIGS if all_configs else attention._GPU_CONFIGS[:1]
    for head_dim in (32, 64, 80, 128):
        for cfg, fast in ((c, f) for c in attention_configs for f in (False, True)):
            consts = dict(cfg.kwargs, BLOCK_D=attention.head_block(head_dim), FAST=fast)
            yield (f"int_attention{' fast' if fast else ''} D={head_dim} {cfg.kwargs['BLOCK_M']}x{cfg.kwargs['BLOCK_N']} "
                   f"w{cfg.num_warps}",
                   attention._int_attention_kernel,
                   _ATTENTION_PTRS, consts,
                   cfg.num_warps,
                   cfg.num_stages)


    for head_dim in (32, 64, 80, 128):
        for cfg in attention_configs:
            consts = dict(cfg.kwargs, BLOCK_D=attention.head_block(head_dim))
            yield (f"int_attention_uniform D={head_dim} {cfg.kwargs['BLOCK_M']}x{cfg.kwargs['BLOCK_N']} "
                   f"w{cfg.num_warps}", attention_uniform._int_attention_uniform_kernel, _ATTENTION_PTRS, consts,
                   cfg.num_warps, cfg.num_stages)


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
    for label, fn, ptrs, consts, warps, stages in _jobs(all_configs):
        if only is not None and not any(label.startswith(prefix) for prefix in only):
            continue
        src = ASTSource(fn, _signature(fn, ptrs, consts), consts)
        try:
            compiled = triton.compile(src, target=target, options=dict(num_warps=warps, num_stages=stages))
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
    gemm_ptrs = _GEMM_PTRS
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
                sig = _signature(gemm._gemm_kernel, gemm_ptrs, consts)
                label = (f"gemm {name} {'fast' if fast else 'general'} {kw['BLOCK_M']}x{kw['BLOCK_N']}x{kw['BLOCK_K']} "
                         f"w{cfg.num_warps} s{cfg.num_stages}")
                yield Job(label, gemm._gemm_kernel, sig, consts, divisible, cfg.num_warps, cfg.num_stages, "gemm",
                          kw["BLOCK_M"] * kw["BLOCK_N"])
    att_ptrs = _ATTENTION_PTRS
    att_div = list(att_ptrs) + ["D", "stride_qb", "stride_qh", "stride_qn", "stride_kb", "stride_kh", "stride_kn",
                                "stride_vb", "stride_vh", "stride_vn", "stride_ob", "stride_oh", "stride_on"]
    for cfg, fast in ((c, f) for f in ((True, False) if general else (True,))
                      for c in (attention._GPU_CONFIGS if all_configs else attention._GPU_CONFIGS[:1])):
        kw = cfg.kwargs
        consts = dict(kw, BLOCK_D=attention.head_block(v["head_dim"]), FAST=fast)
        sig = _signature(attention._int_attention_kernel, att_ptrs, consts)
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
                  kernel, _signature(kernel, att_ptrs, consts), consts, [a for a in att_div if a != "levels_ptr"],
                  cfg.num_warps, cfg.num_stages, "attention", kw["BLOCK_M"] * kw["BLOCK_N"])
    block_c, rows, warps = layernorm.launch_config(v["dim"])
    ln_div = ["x_ptr", "out_ptr", "alpha_ptr", "M", "C"]
    chunk, n_chunks, c_rows, c_warps = layernorm.chunked_config(v["dim"])
    for fast in (True, False) if general else (True,):
        tag = "fast" if fast else "general"
        ptrs = _LN_PTRS
        if fast:  # the chunked int32 kernel, with the int32 clamp that LayerNorm parameters take
            consts = dict(ROWS=c_rows, CHUNK=chunk, N_CHUNKS=n_chunks, EVEN_C=True,
                          NORM_FRAC_BITS=layernorm.LN_NORM_FRAC_BITS, OFFSETS_64=False, AFFINE_32=True)
            yield Job(f"ptf_layernorm fast C=768 rows={c_rows} w{c_warps}", layernorm._ptf_layernorm_chunked_kernel,
                      _signature(layernorm._ptf_layernorm_chunked_kernel, ptrs, consts), consts, ln_div + list(ptrs),
                      c_warps, 3, "layernorm", c_rows * v["dim"])
        else:
            consts = dict(ROWS=rows, BLOCK_C=block_c, NORM_FRAC_BITS=layernorm.LN_NORM_FRAC_BITS, FAST=False)
            yield Job(f"ptf_layernorm general C=768 rows={rows} w{warps}", layernorm._ptf_layernorm_kernel,
                      _signature(layernorm._ptf_layernorm_kernel, ptrs, consts), consts, ln_div + list(ptrs), warps, 3,
                      "layernorm", rows * v["dim"])
        ptrs = _DYADIC_PTRS
        if fast:
            consts = dict(ROWS=c_rows, CHUNK=chunk, N_CHUNKS=n_chunks, EVEN_C=True, OFFSETS_64=False,
                          **layernorm.DYADIC_CONSTEXPRS)
            kernel, k_rows, k_warps = layernorm._ptf_layernorm_dyadic_chunked_kernel, c_rows, c_warps
        else:
            consts = dict(ROWS=rows, BLOCK_C=block_c, FAST=False, **layernorm.DYADIC_CONSTEXPRS)
            kernel, k_rows, k_warps = layernorm._ptf_layernorm_dyadic_kernel, rows, warps
        yield Job(f"ptf_layernorm_dyadic {tag} C=768 rows={k_rows} w{k_warps}", kernel,
                  _signature(kernel, ptrs, consts), consts, ln_div + list(ptrs), k_warps, 3, "layernorm",
                  k_rows * v["dim"])


def report(arch: int = 90, all_configs: bool = True, general: bool = False, only=None):
    """Compile :func:`report_jobs` and return the :class:`static_report.Report` list."""
    if interpreting():
        raise RuntimeError("the static report needs real @triton.jit kernels: unset TRITON_INTERPRET")
    from .static_report import compile_job

    return [compile_job(job, arch) for job in report_jobs(all_configs, general, only)]


def report_problems(reports) -> List[str]:
    """What fails the report: a failed compile, a GEMM or attention kernel without s8 wgmma, or a
    register spill in any candidate of a fast path (the default paths). Spills of the general
    (fallback) paths, shown with ``--general``, are listed in the table but do not fail."""
    problems = []
    for r in reports:
        if not r.ok:
            problems.append(f"{r.job.label}: compile failed: {r.error}")
        elif r.job.kind in ("gemm", "attention") and r.wgmma_s8 == 0:
            problems.append(f"{r.job.label}: no s8 wgmma")
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
