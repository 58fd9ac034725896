"""Host memory of a quantized ViT against its float model (CPU): the README's memory table.

Usage: python scripts/measure_memory.py [--model vit_base_patch16_224] [--batch 4] [--json out.json]

Each phase runs in a fresh subprocess. Peak memory is the rise of the process's peak resident set
(``VmHWM``) above its resident set right after ``import torch, timm, fqvit_kernels`` (the peak is
reset there through ``/proc/self/clear_refs``): the libraries alone take hundreds of MiB in a CUDA
build of torch, the same in every phase, so they are left out. Phases:

* ``float``    build the float timm model (random weights) and run one forward of ``--batch`` images;
* ``quantize`` build it and ``quantize_model`` it (2 calibration batches of ``--batch`` images,
  preset ``fqvit-8/8/4``), then save the checkpoint;
* ``load``     ``load_quantized`` that checkpoint and run one ``int`` forward of ``--batch`` images.

"Resident tensors" are the bytes of the model's parameters and buffers (distinct storages).
Linux only (reads ``/proc/self/status``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

MIB = 2**20


def _status_kib(key: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{key} not in /proc/self/status")


def _phase(name: str, model_name: str, batch: int, checkpoint: str) -> dict:
    import timm
    import torch

    import fqvit_kernels  # noqa: F401  (loads the extension: part of the baseline)
    from fqvit_kernels.nn import load_quantized, quantize_model, save_quantized
    from fqvit_kernels.testing import tensor_bytes

    torch.manual_seed(0)
    images = torch.randn(batch, 3, 224, 224)
    calib = [torch.randn(batch, 3, 224, 224) for _ in range(2)]
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")  # reset VmHWM to the current resident set
    base = _status_kib("VmRSS")
    with torch.no_grad():
        if name == "float":
            model = timm.create_model(model_name, pretrained=False).eval()
            model(images)
        elif name == "quantize":
            model = quantize_model(timm.create_model(model_name, pretrained=False).eval(), calib, "fqvit-8/8/4",
                                   progress=False)
            save_quantized(model, checkpoint)
        else:
            model = load_quantized(checkpoint)
            model(images)
    peak = _status_kib("VmHWM") - base
    return dict(phase=name, peak_mib=peak * 1024 / MIB, resident_tensors_mib=tensor_bytes(model) / MIB)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="vit_base_patch16_224")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--json", help="write the numbers here")
    p.add_argument("--phase", help=argparse.SUPPRESS)  # internal: run one phase in this process
    p.add_argument("--checkpoint", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.phase:
        print(json.dumps(_phase(args.phase, args.model, args.batch, args.checkpoint)))
        return
    if not os.path.exists("/proc/self/clear_refs"):
        raise SystemExit("measure_memory.py reads /proc/self/status and needs Linux")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = os.path.join(tmp, "q.pt")
        for phase in ("float", "quantize", "load"):
            out = subprocess.run([sys.executable, __file__, "--phase", phase, "--model", args.model, "--batch",
                                  str(args.batch), "--checkpoint", checkpoint], check=True, capture_output=True,
                                 text=True)
            results[phase] = json.loads(out.stdout.strip().splitlines()[-1])
        checkpoint_mib = os.path.getsize(checkpoint) / MIB
    f, q, ld = results["float"], results["quantize"], results["load"]
    print(f"{args.model}, batch {args.batch}, CPU; peak = rise of peak RSS above the imported libraries")
    print(f"| phase                          | resident tensors (MiB) | peak (MiB) | peak / float forward |")
    print(f"|--------------------------------|------------------------|------------|----------------------|")
    rows = [("float model: build + forward", f), ("quantize_model + save", q), ("load_quantized + int forward", ld)]
    for label, r in rows:
        print(f"| {label:<30} | {r['resident_tensors_mib']:>22.1f} | {r['peak_mib']:>10.1f} | "
              f"{r['peak_mib'] / f['peak_mib']:>20.2f} |")
    print(f"checkpoint file: {checkpoint_mib:.1f} MiB")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(dict(model=args.model, batch=args.batch, checkpoint_mib=checkpoint_mib, **results), fh, indent=2)


if __name__ == "__main__":
    main()
