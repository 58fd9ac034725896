#!/usr/bin/env bash
# GPU check of the Triton backend, one call of a few minutes on an H100/H200 machine:
# build, GPU tests (bit-exactness at ViT sizes, opcheck on CUDA), sm_90 compile of every autotune
# candidate, PTX check for Hopper wgmma with s8 operands, compute-sanitizer memcheck on one small case per kernel, then a summary.
# Logs go to $OUT/gpu_check (or /tmp/fqvit_gpu_check when OUT is unset).
set -uo pipefail
cd "$(dirname "$0")/.."

if [ -n "${OUT:-}" ]; then LOG_DIR="$OUT/gpu_check"; else LOG_DIR=/tmp/fqvit_gpu_check; fi
mkdir -p "$LOG_DIR"
SUMMARY=()

step() {  # step NAME TIMEOUT_S COMMAND...
  local name=$1 limit=$2; shift 2
  local start=$SECONDS
  echo "== $name: $*"
  timeout "$limit" "$@" >"$LOG_DIR/$name.log" 2>&1
  local rc=$?
  tail -n 15 "$LOG_DIR/$name.log"
  local took=$((SECONDS - start))
  if [ $rc -eq 0 ]; then SUMMARY+=("PASS  $name (${took}s)"); else SUMMARY+=("FAIL  $name rc=$rc (${took}s, $LOG_DIR/$name.log)"); fi
  return $rc
}

step env 60 python -c "
import torch, triton, platform
print('torch', torch.__version__, 'triton', triton.__version__, 'python', platform.python_version())
print('device', torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'none',
      torch.cuda.get_device_capability(0) if torch.cuda.is_available() else '')
"
step build 300 pip install --no-build-isolation --no-deps -e .
step gpu_tests 420 python -m pytest -q -rs tests/test_triton_interpreter.py
step other_tests 420 python -m pytest -q tests --ignore=tests/test_triton_interpreter.py

step compile_all_configs 600 python -m triton_kernels.compile_check --all-configs
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
else
  SUMMARY+=("SKIP  memcheck (compute-sanitizer not found)")
fi

echo
echo "== summary (logs in $LOG_DIR)"
printf '%s\n' "${SUMMARY[@]}" | tee "$LOG_DIR/summary.txt"
! printf '%s\n' "${SUMMARY[@]}" | grep -q '^FAIL'
