#!/usr/bin/env bash
# GPU check of the Triton and Gluon kernels, one call of a few minutes on an H100/H200 machine:
# build, GPU tests (bit-exactness at ViT sizes and ragged ones, the Gluon variants, opcheck and
# dispatch on CUDA), PTX check for Hopper wgmma with s8 operands, compute-sanitizer memcheck and
# racecheck on one small case per kernel, CUDA-graph replay, a timing pass (fast vs general paths,
# Gluon vs Triton, the winner per kernel), the benchmark (bench/run.py --device cuda), a summary.
# The offline sm_90 compiles of every candidate run in CI, not here (no device time for them).
#
# Logs are written to a scratch folder; after every step and on exit they are packed into
# $OUT/gpu_check_logs.tgz (so a run killed at the call's time limit still returns what finished) and the few files worth committing are copied next
# to it: summary.txt, timing.log, results.jsonl, table.txt and the plot (the device tool returns at
# most 8 files from $OUT). Without OUT everything stays in /tmp/fqvit_gpu_check.
set -uo pipefail
cd "$(dirname "$0")/.."

LOG_DIR=/tmp/fqvit_gpu_check
rm -rf "$LOG_DIR"
mkdir -p "$LOG_DIR"
SUMMARY=()
STARTED=$SECONDS

pack() {
  printf '%s\n' "${SUMMARY[@]}" > "$LOG_DIR/summary.txt"
  echo "total $((SECONDS - STARTED))s" >> "$LOG_DIR/summary.txt"
  if [ -n "${OUT:-}" ]; then
    tar czf "$OUT/gpu_check_logs.tgz" -C "$(dirname "$LOG_DIR")" "$(basename "$LOG_DIR")"
    cp "$LOG_DIR/summary.txt" "$OUT/" 2>/dev/null
    cp "$LOG_DIR/timing.log" "$OUT/" 2>/dev/null
    for f in "$LOG_DIR"/bench/*.jsonl "$LOG_DIR"/bench/*.png "$LOG_DIR"/bench/table.txt; do
      [ -f "$f" ] && cp "$f" "$OUT/"
    done
  fi
}
trap pack EXIT
trap 'exit 143' TERM INT

step() {  # step NAME TIMEOUT_S COMMAND...
  local name=$1 limit=$2; shift 2
  local start=$SECONDS
  echo "== $name: $*"
  timeout "$limit" "$@" >"$LOG_DIR/$name.log" 2>&1
  local rc=$?
  tail -n 15 "$LOG_DIR/$name.log"
  local took=$((SECONDS - start))
  if [ $rc -eq 0 ]; then SUMMARY+=("PASS  $name (${took}s)"); else SUMMARY+=("FAIL  $name rc=$rc (${took}s, $name.log)"); fi
  pack  # after every step: a run killed at the call's limit still returns what finished
  return $rc
}

step env 60 python -c "
import torch, triton, platform
print('torch', torch.__version__, 'triton', triton.__version__, 'python', platform.python_version())
print('device', torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'none',
      torch.cuda.get_device_capability(0) if torch.cuda.is_available() else '')
"
step build 300 pip install --no-build-isolation --no-deps -e .
# The Triton legs of every op test (on CUDA tensors here), the gpu-marked tests (ViT shapes, the
# Gluon kernels, CUDA graphs, ...) and the CUDA-dispatch and Gluon legs of the op tests; the
# CPU-only tests ran in CI.
# (Small shapes, many specialisations: one tile candidate each, as autotuning would only compile the
# others and then check the winner's bits anyway.)
step triton_tests 300 env FQVIT_TRITON_SINGLE_CONFIG=1 python -m pytest -q -rs -m interpreter tests
step gpu_tests 300 python -m pytest -q -rs -m "gpu and not interpreter" tests
step cuda_dispatch_tests 180 python -m pytest -q -rs -m "not gpu and not interpreter" -k "cuda or gluon" tests

step ptx 120 python -c "
import triton_kernels
ptx = triton_kernels.gemm_ptx()
open('$LOG_DIR/gemm.ptx', 'w').write(ptx)
lines = [l.strip() for l in ptx.splitlines() if 'wgmma.mma_async' in l]
print(len(lines), 'wgmma.mma_async instructions; first:', lines[:1])
assert lines, 'no wgmma in the GEMM PTX'
assert any('.s8' in l for l in lines), 'wgmma without s8 operands'
"

step sanitizer_warmup 300 env FQVIT_TRITON_SINGLE_CONFIG=1 python scripts/sanitizer_cases.py
SANITIZER=$(command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer 2>/dev/null | head -n 1)
if [ -n "$SANITIZER" ]; then
  step memcheck 420 env FQVIT_TRITON_SINGLE_CONFIG=1 "$SANITIZER" --tool memcheck --error-exitcode 3 \
    python scripts/sanitizer_cases.py
  step racecheck 420 env FQVIT_TRITON_SINGLE_CONFIG=1 "$SANITIZER" --tool racecheck --error-exitcode 3 \
    python scripts/sanitizer_cases.py
else
  SUMMARY+=("SKIP  memcheck, racecheck (compute-sanitizer not found)")
fi

# CUDA graphs: a ViT-B int model (both presets) captured at batch 1, replayed bit-identically to
# eager for two inputs (tests/test_deployment.py covers a tiny model the same way).
step cuda_graph 300 python - <<'PY'
import timm, torch, warnings
warnings.simplefilter("ignore")
from fqvit_kernels.nn import quantize_model
torch.manual_seed(0)
vit = timm.create_model("vit_base_patch16_224", pretrained=False).eval()
calib = [torch.randn(4, 3, 224, 224) for _ in range(2)]
for preset in ("fqvit-8/8/4", "fqvit-8/8/8"):
    model = quantize_model(vit, calib, preset, progress=False).to("cuda")
    x = torch.randn(1, 3, 224, 224, device="cuda")
    eager = model(x)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(2):
            model(x)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = model(x)
    graph.replay()
    assert torch.equal(out, eager), preset
    other = torch.randn(1, 3, 224, 224, device="cuda")
    x.copy_(other)
    graph.replay()
    assert torch.equal(out, model(other)), preset
    print(preset, "ViT-B batch 1: CUDA graph replay bit-identical to eager")
PY

# Side-by-side timings on this card (median ms, triton.testing.do_bench): each Triton op with its
# int32 fast paths and forced onto the general int64 paths (what FQVIT_TRITON_FALLBACK=1 selects),
# the Gluon int8_linear and int_attention (FQVIT_GLUON=1; checked bit-identical first, the winner
# per kernel printed),
# next to the float baselines. A quick look; the real benchmark is bench/run.py.
step timing 300 python - <<'PY'
import torch, triton
import torch.nn.functional as F
from fqvit_kernels import testing
from triton_kernels import attention, attention_uniform, gemm, gluon_attention, gluon_gemm, layernorm, variants
from triton_kernels._common import force_paths

bench = lambda fn: triton.testing.do_bench(fn, warmup=25, rep=100)


def both(fn):
    """(fast-path ms, general-path ms), outputs checked equal first."""
    with force_paths(False):
        general_out = fn()
        t_general = bench(fn)
    with force_paths(True):
        assert torch.equal(fn(), general_out), "fast and general paths differ"
        t_fast = bench(fn)
    return t_fast, t_general


def versus_gluon(label, run, t_triton, t_float, float_name, reason):
    """The same call with the Gluon kernel selected: bits compared with the Triton kernel's, then
    timed; prints the ratios and the winner (the faster of the two, if bit-identical)."""
    if reason is not None:
        print(f"  gluon not run for {label}: {reason}")
        return
    expected = run()
    with variants.force("gluon"):
        same = torch.equal(run(), expected)
        t_gluon = bench(run)
    winner = "gluon" if same and t_gluon < t_triton else "triton"
    print(f"  gluon {t_gluon:.4f} ms ({t_triton / t_gluon:.2f}x triton, {t_float / t_gluon:.2f}x {float_name}), "
          f"bit-identical to triton: {same}; winner {label}: {winner}")


gen = torch.Generator().manual_seed(0)
print(torch.cuda.get_device_name(0), "torch", torch.__version__, "triton", triton.__version__)
for name, (n, k, epi) in {"qkv": (2304, 768, "plain"), "proj": (768, 768, "residual"),
                          "fc1": (3072, 768, "gelu"), "fc2": (768, 3072, "residual")}.items():
    case = testing.linear_case(12608, n, k, gen, epi).to("cuda")
    x, w = case.args[0], case.args[1]
    xb, wb = torch.randn_like(x, dtype=torch.bfloat16), torch.randn_like(w, dtype=torch.bfloat16)
    t_fast, t_general = both(lambda: gemm.int8_linear(*case.args))
    t_bf16 = bench(lambda: xb @ wb.t())
    t_intmm = bench(lambda: torch._int_mm(x, w.t()))
    tops = 2 * 12608 * n * k / t_fast / 1e9
    print(f"linear {name:5s} M=12608 N={n} K={k} {epi:8s}: int8_linear fast {t_fast:.4f} ms ({tops:.0f} TOP/s), "
          f"general {t_general:.4f} ({t_general / t_fast:.2f}x), bf16 {t_bf16:.4f} ({t_bf16 / t_fast:.2f}x), "
          f"_int_mm {t_intmm:.4f} ({t_intmm / t_fast:.2f}x)")
    versus_gluon(f"int8_linear {name}", lambda: gemm.int8_linear(*case.args), t_fast, t_bf16, "bf16",
                 gluon_gemm.unsupported_reason(x, w, case.args[8] if len(case.args) > 8 else None))
for n_tok in (197, 577):
    case = testing.attention_case(64, 12, n_tok, 64, gen).to("cuda")
    qb = torch.randn(64, 12, n_tok, 64, device="cuda", dtype=torch.bfloat16)
    t_ours = bench(lambda: attention.int_attention(*case.args))
    t_sdpa = bench(lambda: F.scaled_dot_product_attention(qb, qb, qb))
    print(f"int_attention B=64 H=12 N={n_tok} D=64: {t_ours:.4f} ms, SDPA bf16 {t_sdpa:.4f} ms ({t_sdpa / t_ours:.2f}x)")
    versus_gluon(f"int_attention N={n_tok}", lambda: attention.int_attention(*case.args), t_ours, t_sdpa,
                 "SDPA bf16", gluon_attention.unsupported_reason(case.args[0]))
    uniform = testing.attention_uniform_case(64, 12, n_tok, 64, gen).to("cuda")
    t_uni = bench(lambda: attention_uniform.int_attention_uniform(*uniform.args))
    print(f"int_attention_uniform (8/8/8) B=64 H=12 N={n_tok} D=64: {t_uni:.4f} ms ({t_sdpa / t_uni:.2f}x SDPA bf16)")
case = testing.layernorm_case(12608, 768, gen).to("cuda")
dyadic = testing.layernorm_dyadic_case(12608, 768, gen).to("cuda")
src = case.args[0]
dst = torch.empty_like(src)
t_copy = bench(lambda: dst.copy_(src))
for label, fn in (("ptf_layernorm", lambda: layernorm.ptf_layernorm(*case.args)),
                  ("ptf_layernorm_dyadic", lambda: layernorm.ptf_layernorm_dyadic(*dyadic.args))):
    t_fast, t_general = both(fn)
    print(f"{label} 12608x768: fast {t_fast:.4f} ms ({t_copy / t_fast:.0%} of int8 copy speed {t_copy:.4f} ms), "
          f"general {t_general:.4f} ({t_general / t_fast:.2f}x)")
PY

# The main job on this card: microbenchmarks, block and whole models side by side with the float
# baselines; rows go to $LOG_DIR/bench (results.jsonl + plot) to be committed under bench/results/.
# FQVIT_BENCH_FULL=1 runs every shape instead of the quick selection.
BENCH_FLAGS=(--device cuda --out "$LOG_DIR/bench")
[ "${FQVIT_BENCH_FULL:-0}" = "1" ] || BENCH_FLAGS+=(--quick)
step bench 540 python bench/run.py "${BENCH_FLAGS[@]}"
cp "$LOG_DIR/bench.log" "$LOG_DIR/bench/table.txt" 2>/dev/null || true

echo
echo "== summary (logs in $LOG_DIR; packed into \$OUT on exit)"
printf '%s\n' "${SUMMARY[@]}"
! printf '%s\n' "${SUMMARY[@]}" | grep -q '^FAIL'
