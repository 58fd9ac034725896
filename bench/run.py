"""fqvit-kernels benchmark: integer kernels side by side with the float baselines.

    python bench/run.py                 # every section the device supports
    python bench/run.py --quick         # small shapes, few repetitions (what CI runs)
    python bench/run.py --only linear,attention --device cuda

Sections are modules of this folder with ``run(ctx) -> list[Row]`` (see ``bench/common.py``); each
verifies a kernel's output against the reference before timing it. Results are printed as a table
with speed-up columns and appended to ``bench/results/results.jsonl`` (one JSON object per row,
keyed by device name, torch/triton versions, date and git commit), plus a PNG plot of the
speed-ups when matplotlib is installed.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import importlib
import json
import os
import platform
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Dict, List

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import torch  # noqa: E402

from common import Context, Row  # noqa: E402

# (module, devices it runs on); a missing module is reported, not fatal.
SECTIONS = [
    ("cpu_ops", ("cpu",)),
    ("gpu_ops", ("cuda",)),
    ("block", ("cpu", "cuda")),
    ("models", ("cpu", "cuda")),
]


def _environment(device: str) -> Dict[str, str]:
    try:
        import triton

        triton_version = triton.__version__
    except Exception:  # Triton is optional on CPU machines
        triton_version = "not installed"
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=HERE, capture_output=True,
                                text=True, timeout=10).stdout.strip() or "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=HERE,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        if dirty and commit != "unknown":
            commit += "+uncommitted"
    except Exception:
        commit = "unknown"
    if device == "cuda":
        name = torch.cuda.get_device_name()
    else:
        name = _cpu_name()
    return {
        "device": device,
        "device_name": name,
        "torch": torch.__version__,
        "triton": triton_version,
        "threads": str(torch.get_num_threads()),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": commit,
        "python": platform.python_version(),
    }


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


def _format_table(rows: List[Row]) -> str:
    """One line per (kernel, shape, provider), with the speed-up over the row's baseline."""
    by_key = {(r.section, r.kernel, r.shape, r.provider): r for r in rows}
    header = f"{'section':<9} {'kernel':<28} {'shape':<26} {'provider':<22} {'median ms':>10} {'p20':>9} {'p80':>9} {'speed-up':>16} {'rate':>12}"
    lines = [header, "-" * len(header)]
    for r in rows:
        speedup = ""
        if r.baseline:
            base = by_key.get((r.section, r.kernel, r.shape, r.baseline))
            if base is not None and r.median_ms > 0:
                speedup = f"{base.median_ms / r.median_ms:6.2f}x {r.baseline[:8]}"
        rate = ""
        if r.work and r.median_ms > 0:
            per_s = r.work / (r.median_ms * 1e-3)
            if r.work_unit == "op":
                rate = f"{per_s / 1e12:7.1f} TOP/s"
            elif r.work_unit == "img":
                rate = f"{per_s:7.1f} img/s"
            else:
                rate = f"{per_s / 1e9:7.0f} GB/s"
        lines.append(f"{r.section:<9} {r.kernel:<28.28} {r.shape:<26.26} {r.provider:<22.22} {r.median_ms:10.4f} "
                     f"{r.p20_ms:9.4f} {r.p80_ms:9.4f} {speedup:>16} {rate:>12}")
    notes = [f"  {r.kernel} {r.shape} {r.provider}: {r.note}" for r in rows if r.note]
    if notes:
        lines += ["", "notes:"] + notes
    return "\n".join(lines)


def _save(rows: List[Row], env: Dict[str, str], out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "results.jsonl"
    with path.open("a") as f:
        for r in rows:
            f.write(json.dumps({**env, **dataclasses.asdict(r)}) + "\n")
    return path


def _plot(rows: List[Row], env: Dict[str, str], out_dir: Path):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    by_key = {(r.section, r.kernel, r.shape, r.provider): r for r in rows}
    labels, values = [], []
    for r in rows:
        base = by_key.get((r.section, r.kernel, r.shape, r.baseline)) if r.baseline else None
        if base is not None and r.median_ms > 0:
            labels.append(f"{r.kernel} {r.shape} {r.provider} vs {r.baseline}")
            values.append(base.median_ms / r.median_ms)
    if not values:
        return None
    fig, ax = plt.subplots(figsize=(10, 0.3 * len(values) + 1.5))
    ax.barh(range(len(values)), values, color=["tab:green" if v >= 1 else "tab:red" for v in values])
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_yticks(range(len(values)), labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("speed-up over baseline (median time ratio)")
    ax.set_title(f"fqvit-kernels on {env['device_name']} (torch {env['torch']}, {env['date']})", fontsize=9)
    fig.tight_layout()
    stamp = env["date"][:10]
    path = out_dir / f"speedups_{env['device']}_{stamp}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--quick", action="store_true", help="small shapes and few repetitions")
    parser.add_argument("--only", default="", help="comma-separated substrings of kernel names to run")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (default 2)")
    parser.add_argument("--out", default=str(HERE / "results"), help="folder for results.jsonl and plots")
    parser.add_argument("--no-save", action="store_true", help="print only; write no result files")
    args = parser.parse_args(argv)

    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda needs a CUDA device; none is visible")
    torch.set_num_threads(args.threads)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        import fqvit_kernels
        from fqvit_kernels import ops
    ctx = Context(device=device, quick=args.quick, threads=args.threads,
                  only=[s for s in args.only.split(",") if s] or None)
    env = _environment(device)
    print(f"fqvit-kernels {fqvit_kernels.__version__} benchmark on {env['device_name']} ({device}), "
          f"torch {env['torch']}, triton {env['triton']}, {env['threads']} CPU threads, {env['date']}, "
          f"commit {env['commit']}{', quick mode' if args.quick else ''}")
    for w in caught:
        print(f"note: {w.message}")
    print("backends: " + ", ".join(f"{name}={ops.BACKEND[name][device]}" for name in ops.OP_NAMES))
    if device == "cpu":
        print("GPU results need a CUDA device: this run measures the CPU backend only.")

    rows: List[Row] = []
    for module_name, devices in SECTIONS:
        if device not in devices:
            continue
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            print(f"[{module_name}] not available: {exc}")
            continue
        print(f"[{module_name}] running ...", flush=True)
        section_rows = module.run(ctx)
        rows.extend(section_rows)
        print(f"[{module_name}] {len(section_rows)} measurements")
    if not rows:
        print("no measurements were taken")
        return 1
    print()
    print(_format_table(rows))
    print("\nTimes are medians with 20th/80th percentiles. Integer kernels take int8 inputs: the "
          "quantize/dequantize cost at the model boundary is not included unless a row says so.")
    if not args.no_save:
        out_dir = Path(args.out)
        path = _save(rows, env, out_dir)
        print(f"results appended to {os.path.relpath(path)}")
        plot = _plot(rows, env, out_dir)
        print(f"plot: {os.path.relpath(plot)}" if plot else "plot skipped (matplotlib not installed)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
