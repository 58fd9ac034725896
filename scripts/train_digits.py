"""Train the small ViTs of ``python -m fqvit_kernels.eval`` on scikit-learn's handwritten digits.

Deterministic (``--seed``, fixed split from :func:`fqvit_kernels.eval.digits_data`, single-threaded
by default); a couple of CPU minutes. Writes a checkpoint (float state_dict, architecture, test
accuracy). The two shipped models:

    python scripts/train_digits.py                      # fqvit_kernels/data/digits_vit.pt
    python scripts/train_digits.py --variant b          # fqvit_kernels/data/digits_vit_b.pt
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from fqvit_kernels.eval import DIGITS_MODELS, build_digits_vit, digits_data


def shift_augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random translation by up to one pixel (background value -1 fills the border)."""
    padded = F.pad(x, (1, 1, 1, 1), value=-1.0)
    out = torch.empty_like(x)
    offsets = torch.randint(0, 3, (x.shape[0], 2), generator=gen)
    for i, (dy, dx) in enumerate(offsets.tolist()):
        out[i] = padded[i, :, dy:dy + 8, dx:dx + 8]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variant", choices=sorted(DIGITS_MODELS), default="a",
                        help="which shipped model: a (4 blocks x 96, seed 0) or b (6 blocks x 64, seed 1)")
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1.5e-3)
    parser.add_argument("--drop-path", type=float, default=0.1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", help="checkpoint path (default: the variant's shipped path)")
    args = parser.parse_args()
    spec = DIGITS_MODELS[args.variant]
    out = args.out or str(spec.path)

    torch.manual_seed(spec.seed)
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    gen = torch.Generator().manual_seed(spec.seed)
    x_train, y_train, x_test, y_test = digits_data()
    model = build_digits_vit(spec.arch, drop_path_rate=args.drop_path)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.05)
    steps_per_epoch = (len(x_train) + args.batch_size - 1) // args.batch_size
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=args.epochs * steps_per_epoch,
                                                pct_start=0.1)
    t0 = time.time()
    for epoch in range(args.epochs):
        model.train()
        order = torch.randperm(len(x_train), generator=gen)
        for i in range(0, len(order), args.batch_size):
            idx = order[i:i + args.batch_size]
            logits = model(shift_augment(x_train[idx], gen))
            loss = F.cross_entropy(logits, y_train[idx], label_smoothing=0.1)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        if (epoch + 1) % 25 == 0 or epoch + 1 == args.epochs:
            model.eval()
            with torch.no_grad():
                acc = (model(x_test).argmax(-1) == y_test).float().mean().item() * 100
            print(f"epoch {epoch + 1}: loss {loss.item():.3f}, test top-1 {acc:.2f} % ({time.time() - t0:.0f} s)")
    model.eval()
    with torch.no_grad():
        acc = (model(x_test).argmax(-1) == y_test).float().mean().item() * 100
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}  # DropPath has no state
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    torch.save(dict(arch=spec.arch, state_dict=state, test_top1=acc, epochs=args.epochs, seed=spec.seed), out)
    print(f"saved {out}: test top-1 {acc:.2f} %, {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
