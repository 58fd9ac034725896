"""Where the time of the int model goes on the CPU: per-op totals of one forward, from
``torch.profiler`` (median of several profiled forwards), at the batch sizes and models given.

    python scripts/profile_cpu.py [--models vit_small_patch16_224,vit_base_patch16_224] [--batches 1,8]
                                  [--preset fqvit-8/8/4] [--threads 2] [--reps 5]

Rows: each ``fqvit::`` op (the C++ kernels, validation included), the float patch embedding
(conv), the other aten ops (copies, views, the class-token concat), and the rest of the forward
(Python: module calls, op dispatch and argument checks), with the share of the forward's median
wall time. Random weights (speed does not depend on them).
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from collections import defaultdict

import torch


def _profile(model, images, reps):
    totals = defaultdict(list)
    walls = []
    for _ in range(reps):
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            start = time.perf_counter()
            model(images)
            walls.append((time.perf_counter() - start) * 1e3)
        per = defaultdict(float)
        for evt in prof.key_averages():
            name = evt.key
            if name.startswith("fqvit::"):
                per[name] += evt.cpu_time_total / 1e3  # the op with its validation and kernel
            elif name in ("aten::conv2d",):
                per["patch embedding (aten::conv2d)"] += evt.cpu_time_total / 1e3
        for k, v in per.items():
            totals[k].append(v)
    return {k: statistics.median(v) for k, v in totals.items()}, statistics.median(walls)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="vit_small_patch16_224,vit_base_patch16_224")
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--preset", default="fqvit-8/8/4")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    import timm

    from fqvit_kernels.nn import quantize_model

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, preset {args.preset}, "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    for name in args.models.split(","):
        torch.manual_seed(0)
        vit = timm.create_model(name, pretrained=False).eval()
        calib = [torch.randn(2, 3, 224, 224) for _ in range(2)]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = quantize_model(vit, calib, args.preset, progress=False)
        for batch in (int(b) for b in args.batches.split(",")):
            images = torch.randn(batch, 3, 224, 224)
            with torch.no_grad():
                model(images)  # first call: parameter validation, allocator warm-up
                ops, wall = _profile(model, images, args.reps)
            print(f"\n{name} batch {batch}: forward median {wall:.1f} ms (profiled)")
            print(f"| part | ms per forward | share |")
            print(f"|---|---|---|")
            accounted = 0.0
            for key, ms in sorted(ops.items(), key=lambda kv: -kv[1]):
                accounted += ms
                print(f"| {key} | {ms:.2f} | {ms / wall:.0%} |")
            print(f"| rest (Python, dispatch, views, concat) | {wall - accounted:.2f} | {(wall - accounted) / wall:.0%} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
