"""fqvit-kernels benchmark: integer kernels side by side with the float baselines.

    python bench/run.py                 # every section the device supports
    python bench/run.py --quick         # small shapes, few repetitions (what CI runs)
    python bench/run.py --only linear,attention --device cuda

Sections are modules of this folder with ``run(ctx) -> list[Row]`` (see ``bench/common.py``); each
verifies a kernel's output against the reference before timing it. Results are printed as a table
with speed-up columns and appended to ``bench/results/local/results.jsonl`` (untracked; ``--out
bench/results`` adds a run to the committed results): one JSON object per row, keyed by device
name, torch/triton versions, date and git commit, plus a PNG plot of the speed-ups over the float
baselines when matplotlib is installed. Rows whose 20-80 percentile spread exceeds 1.25x are
marked ``!`` (a busy machine), and a load average above the core count is reported.
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


#: A row whose 80th-percentile time exceeds its 20th by more than this is flagged as noisy.
NOISY_SPREAD = 1.25


def _rate(r: Row) -> str:
    """Throughput where it means something: integer/float operations per second (GEMM-like rows),
    bytes per second (memory-bound rows) or images per second (models), in units that do not
    round to zero."""
    if not r.work or not r.median_ms or r.median_ms != r.median_ms or r.median_ms <= 0:
        return ""
    per_s = r.work / (r.median_ms * 1e-3)
    if r.work_unit == "op":
        return f"{per_s / 1e12:.2f} TOP/s" if per_s >= 1e12 else f"{per_s / 1e9:.1f} GOP/s"
    if r.work_unit == "img":
        return f"{per_s:.1f} img/s"
    return f"{per_s / 1e9:.1f} GB/s" if per_s >= 1e9 else f"{per_s / 1e6:.0f} MB/s"


def _noisy(r: Row) -> bool:
    return r.p20_ms > 0 and r.p80_ms / r.p20_ms > NOISY_SPREAD


def _format_table(rows: List[Row]) -> str:
    """One line per (kernel, shape, provider), with the speed-up over the row's baseline; columns
    as wide as their longest entry (nothing is cut). A ``!`` marks a noisy row (p80/p20 above
    :data:`NOISY_SPREAD`): its ratios are unreliable."""
    by_key = {(r.section, r.kernel, r.shape, r.provider): r for r in rows}
    cells = []
    for r in rows:
        speedup = ""
        if r.baseline:
            base = by_key.get((r.section, r.kernel, r.shape, r.baseline))
            if base is not None and r.median_ms > 0:
                speedup = f"{base.median_ms / r.median_ms:.2f}x vs {r.baseline}"
        cells.append((r.section, r.kernel, r.shape, r.provider, f"{r.median_ms:.4f}", f"{r.p20_ms:.4f}",
                      f"{r.p80_ms:.4f}", "!" if _noisy(r) else "", speedup, _rate(r)))
    titles = ("section", "kernel", "shape", "provider", "median ms", "p20", "p80", "", "speed-up", "rate")
    widths = [max(len(t), *(len(c[i]) for c in cells)) for i, t in enumerate(titles)]
    right = {4, 5, 6, 9}

    def line(values):
        return "  ".join(v.rjust(w) if i in right else v.ljust(w) for i, (v, w) in enumerate(zip(values, widths)))

    lines = [line(titles).rstrip(), "-" * (sum(widths) + 2 * (len(widths) - 1))]
    lines += [line(c).rstrip() for c in cells]
    noisy = [r for r in rows if _noisy(r)]
    if noisy:
        lines += ["", f"! {len(noisy)} of {len(rows)} rows spread more than {NOISY_SPREAD:.2f}x between their 20th "
                      "and 80th percentile: the machine was busy, their ratios are unreliable (rerun on a quiet machine)"]
    notes = [f"  {r.kernel} {r.shape} {r.provider}: {r.note}" for r in rows if r.note]
    if notes:
        lines += ["", "notes:"] + notes
    return "\n".join(lines)


def _load_warning() -> str:
    """A warning when the machine runs more than one process per core (then every timing is shared)."""
    try:
        load = os.getloadavg()[0]
    except OSError:
        return ""
    cores = os.cpu_count() or 1
    if load > cores:
        return (f"warning: load average {load:.1f} on {cores} cores: other work competes with this run, "
                "times and ratios are unreliable")
    return ""


def _save(rows: List[Row], env: Dict[str, str], out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "results.jsonl"
    with path.open("a") as f:
        for r in rows:
            f.write(json.dumps({**env, **dataclasses.asdict(r)}) + "\n")
    return path


def _plot(rows: List[Row], env: Dict[str, str], out_dir: Path):
    """One slide-sized figure: the speed-up of each fqvit op, block and model over its float
    baseline (not over the pure-PyTorch reference), on a log axis centred on 1x, with value labels."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker
        from matplotlib.patches import Patch
    except ImportError:
        return None
    by_key = {(r.section, r.kernel, r.shape, r.provider): r for r in rows}
    labels, values, noisy = [], [], []
    for r in rows:
        if not r.baseline or r.provider == "reference":
            continue
        base = by_key.get((r.section, r.kernel, r.shape, r.baseline))
        if base is not None and r.median_ms > 0 and base.median_ms == base.median_ms:
            labels.append(f"{r.kernel} [{r.shape}] {r.provider} vs {r.baseline}")
            values.append(base.median_ms / r.median_ms)
            noisy.append(_noisy(r) or _noisy(base))
    if not values:
        return None
    import math

    height = 0.24 * len(values) + 1.6
    width = max(12.0, height)
    fig, ax = plt.subplots(figsize=(width, height))
    colors = ["tab:green" if v >= 1 else "tab:red" for v in values]
    # Bars grow from 1x: right for faster, left for slower.
    ax.barh(range(len(values)), [v - 1.0 for v in values], left=1.0, color=colors, alpha=0.85)
    ax.set_xscale("log")
    span = max(abs(math.log10(v)) for v in values) * 1.35 + 0.05
    ax.set_xlim(10 ** -span, 10 ** span)
    ticks = [t for t in (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100) if 10 ** -span <= t <= 10 ** span]
    ax.set_xticks(ticks, [f"{t:g}x" for t in ticks])
    ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    ax.axvline(1.0, color="black", linewidth=0.8)
    for i, (v, n) in enumerate(zip(values, noisy)):
        ax.text(v * (1.04 if v >= 1 else 0.96), i, f"{v:.2f}x" + (" (noisy)" if n else ""), va="center",
                ha="left" if v >= 1 else "right", fontsize=7)
    ax.set_yticks(range(len(values)), labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("speed-up over the float baseline of the same run (median time ratio, log scale)")
    ax.legend(handles=[Patch(color="tab:green", label="fqvit faster (>= 1x)"),
                       Patch(color="tab:red", label="fqvit slower (< 1x)")], loc="lower right", fontsize=8)
    ax.set_title(f"fqvit-kernels on {env['device_name']} ({env['device']}, {env['threads']} threads)\n"
                 f"torch {env['torch']}, triton {env['triton']}, {env['date']}, commit {env['commit']}", fontsize=9)
    fig.tight_layout()
    stamp = env["date"][:10]
    path = out_dir / f"speedups_{env['device']}_{stamp}.png"
    fig.savefig(path, dpi=110, bbox_inches="tight")  # the long y labels are never cut
    plt.close(fig)
    return path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--quick", action="store_true", help="small shapes and few repetitions")
    parser.add_argument("--only", default="", help="comma-separated substrings of kernel names to run")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (default 2)")
    parser.add_argument("--out", default=str(HERE / "results" / "local"),
                        help="folder for results.jsonl and the plot (default bench/results/local/, untracked; "
                             "pass bench/results to add a run to the committed results)")
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
        from fqvit_kernels import backends, ops
    ctx = Context(device=device, quick=args.quick, threads=args.threads,
                  only=[s for s in args.only.split(",") if s] or None)
    env = _environment(device)
    print(f"fqvit-kernels {fqvit_kernels.__version__} benchmark on {env['device_name']} ({device}), "
          f"torch {env['torch']}, triton {env['triton']}, {env['threads']} CPU threads, {env['date']}, "
          f"commit {env['commit']}{', quick mode' if args.quick else ''}")
    for w in caught:
        print(f"note: {w.message}")
    if _load_warning():
        print(_load_warning())
    print("backends: " + ", ".join(f"{name}={backends.BACKEND[name][device]}" for name in ops.OP_NAMES))
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
    for warning in {_load_warning()} - {""}:
        print(warning)
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
