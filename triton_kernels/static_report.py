"""What the sm_90 compiler makes of each kernel, read without a GPU: registers, spills, shared
memory, s8 ``wgmma`` count and SASS instructions per element of the hot code.

Used by ``python -m triton_kernels.compile_check --report``. Each kernel is compiled ahead of time
with the specialisation its launcher gets at ViT-B batch-64 shapes (pointer and stride arguments
divisible by 16 marked as such, as Triton does at launch), then:

* ``cuobjdump --dump-resource-usage`` on the cubin gives registers, stack (spill) bytes and static
  shared memory; the dynamic shared memory comes from the compiled metadata;
* ``nvdisasm`` gives the SASS; loops are found from backward branches. The *hot* instructions per
  element are: GEMM, the instructions after the K loop (the epilogue) per output of a thread;
  attention, the instructions of the key-tile loops (passes 1-3, plus their fixed per-row work
  spread over N = 197 keys) per score of a thread; LayerNorm, every instruction of the kernel per
  element of a thread.

The tools (``cuobjdump``, ``nvdisasm``) ship with Triton's NVIDIA backend; no driver is needed.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from collections import Counter
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import triton
from triton.backends.compiler import GPUTarget

from .spec import ast_source

_BIN = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")


class Sass(NamedTuple):
    """Instructions ``(address, opcode)`` in order and the loops ``(start, end)`` (addresses)."""

    instructions: List[Tuple[int, str]]
    loops: List[Tuple[int, int]]
    text: Dict[int, str] = {}  # address -> the whole instruction (operands included)

    def find(self, fragment: str) -> List[int]:
        """Addresses of the instructions whose text contains ``fragment``."""
        return [a for a, t in sorted(self.text.items()) if fragment in t]

    def count(self, start: int = 0, end: int = 1 << 62) -> int:
        return sum(1 for a, op in self.instructions if start <= a <= end and op not in ("NOP",))

    def opcodes(self, start: int = 0, end: int = 1 << 62) -> Counter:
        return Counter(op for a, op in self.instructions if start <= a <= end and op != "NOP")


_INSTRUCTION = re.compile(r"/\*([0-9a-f]{4,})\*/\s+(?:@!?U?P[T0-9]+\s+)?([A-Z][A-Z0-9_]*)")
_LABEL = re.compile(r"^\s*(\.L_x_\d+):")
_TARGET = re.compile(r"`\((\.L_x_\d+)\)")


def parse_sass(text: str) -> Sass:
    instructions, labels, pending, branches, full = [], {}, [], [], {}
    for line in text.splitlines():
        m = _LABEL.match(line)
        if m:
            pending.append(m.group(1))
            continue
        m = _INSTRUCTION.search(line)
        if not m:
            continue
        address, opcode = int(m.group(1), 16), m.group(2)
        for label in pending:
            labels[label] = address
        pending = []
        instructions.append((address, opcode))
        full[address] = line[m.start(2):].strip()
        if opcode == "BRA":
            t = _TARGET.search(line)
            if t:
                branches.append((address, t.group(1)))
    loops = sorted({(labels[target], address) for address, target in branches
                    if target in labels and labels[target] < address})
    # Keep the outermost loops only (nested loops are counted inside them).
    outer = [lp for lp in loops if not any(o != lp and o[0] <= lp[0] and lp[1] <= o[1] for o in loops)]
    return Sass(instructions, outer, full)


def _tool(name: str, *args: str) -> str:
    return subprocess.run([os.path.join(_BIN, name), *args], check=True, capture_output=True, text=True).stdout


def cubin_facts(cubin: bytes) -> Tuple[Dict[str, int], Sass]:
    with tempfile.NamedTemporaryFile(suffix=".cubin", delete=False) as fh:
        fh.write(cubin)
        path = fh.name
    try:
        usage = _tool("cuobjdump", "--dump-resource-usage", path)
        sass = parse_sass(_tool("nvdisasm", "-c", path))
    finally:
        os.unlink(path)
    m = re.search(r"REG:(\d+) STACK:(\d+) SHARED:(\d+) LOCAL:(\d+)", usage)
    regs, stack, shared, local = (int(v) for v in m.groups()) if m else (-1, -1, -1, -1)
    return dict(regs=regs, stack=stack, static_shared=shared, local=local), sass


class Job(NamedTuple):
    label: str
    fn: object
    signature: Dict[str, str]
    constexprs: Dict[str, object]
    divisible: Sequence[str]      # arguments Triton would mark divisible by 16 at this launch
    num_warps: int
    num_stages: int
    kind: str                     # gemm | gluon_gemm | attention | layernorm | other
    elements_per_program: int     # outputs (gemm), scores (attention) or elements (LN) per program


class Report(NamedTuple):
    job: Job
    ok: bool
    error: str
    regs: int = -1
    spill_bytes: int = -1
    shared: int = -1
    wgmma_s8: int = 0
    hot_per_element: float = float("nan")
    total_instructions: int = 0
    wait_group_1: int = 0  # PTX ``wgmma.wait_group 1``: a wgmma group left in flight (asynchronous)

    def line(self) -> str:
        if not self.ok:
            return f"FAIL {self.job.label:<48} {self.error}"
        return (f"ok   {self.job.label:<48} regs {self.regs:>3}  spill {self.spill_bytes:>5} B  smem {self.shared // 1024:>4} KiB"
                f"  wgmma.s8 {self.wgmma_s8:>2}  hot SASS/elem {self.hot_per_element:6.1f}  ({self.total_instructions} instr)"
                + (f"  wait_group 1: {self.wait_group_1}" if self.job.kind == "gluon_gemm" else ""))


def _hot_per_element(job: Job, sass: Sass) -> float:
    threads = 32 * job.num_warps
    per_thread = job.elements_per_program / threads
    if job.kind == "gemm":
        if not sass.loops:
            return float("nan")
        k_loop_end = sass.loops[0][1]  # the first loop is the K loop (wgmma)
        return sass.count(k_loop_end + 1) / per_thread
    if job.kind == "gluon_gemm":
        # The persistent loop holds main loop and epilogue: the epilogue runs from the wait for
        # every wgmma group (``WARPGROUP.DEPBAR.LE gsb0, 0x0``) to the tile's TMA store.
        waits, stores = sass.find("DEPBAR.LE gsb0, 0x0"), sass.find("UTMASTG")
        if not waits or not stores:
            return float("nan")
        return sass.count(waits[0], stores[0] - 1) / per_thread
    if job.kind in ("attention", "gluon_attention"):
        # Passes over key tiles: instructions of every loop per key tile, per score of one tile.
        loop_total = sum(sass.count(s, e) for s, e in sass.loops)
        rest = sass.count() - loop_total  # per-row work (row setup, thresholds, output)
        keys = 197
        block_n = job.constexprs.get("BLOCK_N", 64)  # the Gluon kernel's key tile is 64
        return loop_total / per_thread + rest / (per_thread * keys / block_n)
    return sass.count() / per_thread


def wait_group_1_count(ptx: str) -> int:
    """Number of ``wgmma.wait_group`` instructions that leave one group outstanding."""
    return sum(1 for line in ptx.splitlines() if "wgmma.wait_group" in line and line.rstrip(" ;").endswith(" 1"))


def wgmma_s8_count(ptx: str) -> int:
    """Number of ``wgmma.mma_async`` instructions with s8 operands in ``ptx``."""
    return sum(1 for line in ptx.splitlines() if "wgmma.mma_async" in line and ".s8" in line)


def compile_job(job: Job, arch: int = 90) -> Report:
    names = list(job.fn.arg_names)
    attrs = {(names.index(a),): [["tt.divisibility", 16]] for a in job.divisible}
    src = ast_source(job.fn, job.signature, job.constexprs, attrs)
    try:
        compiled = triton.compile(src, target=GPUTarget("cuda", arch, 32),
                                  options=dict(num_warps=job.num_warps, num_stages=job.num_stages))
    except Exception as exc:  # report every failure, not only the first
        cause = exc
        while cause.__cause__ is not None:
            cause = cause.__cause__
        return Report(job, False, f"{type(cause).__name__}: {str(cause)[-300:]}")
    facts, sass = cubin_facts(compiled.asm["cubin"])
    shared = int(getattr(compiled.metadata, "shared", 0) or 0) + max(facts["static_shared"], 0)
    wgmma = wgmma_s8_count(compiled.asm["ptx"])
    return Report(job, True, "", facts["regs"], max(facts["stack"], facts["local"]), shared, wgmma,
                  _hot_per_element(job, sass), sass.count(), wait_group_1_count(compiled.asm["ptx"]))


def format_reports(reports: Sequence[Report], header: Optional[str] = None) -> str:
    lines = [header] if header else []
    lines += [r.line() for r in reports]
    return "\n".join(lines)
