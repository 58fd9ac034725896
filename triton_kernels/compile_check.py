"""Compile every Triton kernel for a CUDA target without a GPU (ahead of time, no driver needed).

The interpreter runs the kernels' semantics but not the GPU compiler, so it cannot see errors
that only the CUDA backend raises (tile constraints of int8 ``tl.dot``, non-constexpr globals,
software-pipeliner failures). This module lowers each kernel, with the specialisations its
launcher uses, through Triton's CUDA pipeline down to PTX for ``sm_90`` and reports what failed
and whether the dots became Hopper ``wgmma`` instructions with s8 operands.

Run ``python -m triton_kernels.compile_check [--quick | --all-configs]`` in a process where
``TRITON_INTERPRET`` is unset (the module refuses to run under the interpreter).
"""

from __future__ import annotations

import argparse
import sys
from typing import Dict, Iterator, List, Tuple

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from ._common import interpreting

_I8, _U8, _I32, _I64 = "*i8", "*u8", "*i32", "*i64"


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
    from . import attention, attn_v, gemm, layernorm, softmax

    gemm_ptrs = dict(a_ptr=_I8, b_ptr=_I8, out_ptr=_I8, bias_ptr=_I64, mult_ptr=_I32, shift_ptr=_I32,
                     table_ptr=_I32, res_ptr=_I8, branch_mult_ptr=_I32, res_mult_ptr=_I32, res_shift_ptr=_I32)
    gemm_configs = gemm._GPU_CONFIGS if all_configs else gemm._GPU_CONFIGS[:1]
    for cfg in gemm_configs:
        for epilogue in (gemm.EPILOGUE_INT32, gemm.EPILOGUE_PLAIN, gemm.EPILOGUE_GELU, gemm.EPILOGUE_RESIDUAL):
            ptrs = dict(gemm_ptrs, out_ptr=_I32 if epilogue == gemm.EPILOGUE_INT32 else _I8)
            consts = dict(cfg.kwargs, EPILOGUE=epilogue)
            label = f"gemm epilogue={epilogue} {cfg.kwargs['BLOCK_M']}x{cfg.kwargs['BLOCK_N']}x{cfg.kwargs['BLOCK_K']}"
            yield label, gemm._gemm_kernel, ptrs, consts, cfg.num_warps, cfg.num_stages

    for channels in (8, 768, 8192):
        block_c, rows, warps = layernorm.launch_config(channels)
        yield (f"ptf_layernorm C={channels}", layernorm._ptf_layernorm_kernel,
               dict(x_ptr=_I8, out_ptr=_I8, alpha_ptr=_I32, wmult_ptr=_I32, bias_ptr=_I64, shift_ptr=_I32),
               dict(ROWS=rows, BLOCK_C=block_c, NORM_FRAC_BITS=layernorm.LN_NORM_FRAC_BITS), warps, 3)
        yield (f"ptf_layernorm_dyadic C={channels}", layernorm._ptf_layernorm_dyadic_kernel,
               dict(x_ptr=_I8, out_ptr=_I8, alpha_ptr=_I32, gmult_ptr=_I32, gshift_ptr=_I32, beta_ptr=_I64),
               dict(ROWS=rows, BLOCK_C=block_c, **layernorm.DYADIC_CONSTEXPRS), warps, 3)

    for length in (7, 197, 4096):
        block_l, rows, warps = softmax.launch_config(length)
        yield (f"log_int_softmax L={length}", softmax._log_int_softmax_kernel,
               dict(s_ptr=_I8, out_ptr=_U8, table_ptr=_I64, levels_ptr=_I64), dict(BITS=4, ROWS=rows, BLOCK_L=block_l),
               warps, 3)
    yield ("lis_codes_check", softmax._lis_codes_check_kernel,
           dict(total_ptr=_I64, exps_ptr=_I64, out_ptr=_I32, levels_ptr=_I64), dict(BLOCK_R=32, BLOCK_L=256), 4, 3)

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
        for cfg in attention_configs:
            consts = dict(cfg.kwargs, BLOCK_D=attention.head_block(head_dim))
            yield (f"int_attention D={head_dim} {cfg.kwargs['BLOCK_M']}x{cfg.kwargs['BLOCK_N']} w{cfg.num_warps}",
                   attention._int_attention_kernel,
                   dict(q_ptr=_I8, k_ptr=_I8, v_ptr=_I8, out_ptr=_I8, table_ptr=_I64, levels_ptr=_I64), consts,
                   cfg.num_warps,
                   cfg.num_stages)


def wgmma_s8_count(ptx: str) -> int:
    """Number of ``wgmma.mma_async`` instructions with s8 operands in ``ptx``."""
    return sum(1 for line in ptx.splitlines() if "wgmma.mma_async" in line and ".s8" in line)


#: One compile per kernel family at its hardest specialisation (the CPU test's selection).
QUICK = ("gemm epilogue=2", "gemm epilogue=3", "ptf_layernorm C=768", "ptf_layernorm_dyadic C=768", "log_int_softmax L=197", "lis_codes_check",
         "log_attn_v D=80", "attention_scores D=80", "int_attention D=32 ", "int_attention D=80 ")


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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", type=int, default=90)
    parser.add_argument("--all-configs", action="store_true", help="every autotune candidate, not only the first")
    parser.add_argument("--quick", action="store_true", help="one compile per kernel family (see QUICK)")
    args = parser.parse_args(argv)
    results = compile_all(args.arch, args.all_configs, QUICK if args.quick else None)
    for r in results:
        status = "ok  " if r["ok"] else "FAIL"
        print(f"{status} {r['label']:<45} wgmma.s8={r['wgmma_s8']} {r['error']}")
    failed = [r for r in results if not r["ok"]]
    print(f"{len(results) - len(failed)}/{len(results)} kernels compiled for sm_{args.arch}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
