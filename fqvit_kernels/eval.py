"""Accuracy of FQ-ViT quantization: ``python -m fqvit_kernels.eval``.

Default (no arguments): the small ViT trained on scikit-learn's bundled handwritten digits by
``scripts/train_digits.py`` (checkpoint ``fqvit_kernels/data/digits_vit.pt``; no download), evaluated
on its fixed test split in FP32 and in the quantized settings, printed in the paper's table layout
with two measures of how closely the ``int`` path reproduces the ``fake`` (FQ-ViT simulation) path:
the top-1 agreement, and the share of identical block-output codes when every block runs both ways on
the same input codes (mean over blocks). ``--digits-model b`` evaluates the second shipped model
(another seed, depth and width).

ImageNet: ``python -m fqvit_kernels.eval --model deit_small_patch16_224 --pretrained --data
/path/to/imagenet`` (a folder with ``val/`` (and ``train/`` for calibration) in ImageFolder layout,
or a val folder itself), calibrated like FQ-ViT on ``--calib-batches`` × ``--calib-batch-size``
training images with the validation transform.

``--json PATH`` writes the numbers.

Several processes or GPUs: ``torchrun --nproc-per-node N -m fqvit_kernels.eval ...`` gives the
same table (rank 0 calibrates and broadcasts, the batches are sharded, the counts summed; see
:mod:`fqvit_kernels.distributed`).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import torch

from .distributed import (DEFAULT_TIMEOUT_S, BatchShardSampler, Group, broadcast_quantized, check_identical,
                          gather_objects, init_from_env, run_everywhere, sum_counts)
from .imagefolder import default_workers

__all__ = ["DIGITS_CHECKPOINT", "DIGITS_MODELS", "digits_data", "digits_calibration", "build_digits_vit",
           "load_digits_model", "evaluate", "main"]

_DATA = Path(__file__).resolve().parent / "data"


class DigitsModel(NamedTuple):
    """A small ViT trained on the digits by ``scripts/train_digits.py --variant <name>``."""

    path: Path
    arch: Dict[str, object]
    seed: int


#: The shipped digits ViTs (8x8 images, 2x2 patches: 16 tokens + class token): ``a`` is the default
#: model of the evaluation, ``b`` a second one with another seed, depth and width.
DIGITS_MODELS = {
    "a": DigitsModel(_DATA / "digits_vit.pt", dict(img_size=8, patch_size=2, in_chans=1, num_classes=10, embed_dim=96,
                                                   depth=4, num_heads=4, mlp_ratio=2.0, qkv_bias=True), seed=0),
    "b": DigitsModel(_DATA / "digits_vit_b.pt", dict(img_size=8, patch_size=2, in_chans=1, num_classes=10, embed_dim=64,
                                                     depth=6, num_heads=2, mlp_ratio=4.0, qkv_bias=True), seed=1),
}
#: Checkpoint and architecture of the default digits ViT.
DIGITS_CHECKPOINT = DIGITS_MODELS["a"].path
DIGITS_ARCH = DIGITS_MODELS["a"].arch
#: Test batch size of the digits evaluation (the batches are also the unit of sharding across ranks).
DIGITS_EVAL_BATCH = 256
#: Fixed split of load_digits: 40 % of the 1797 images (719) for testing, stratified, seed 0.
DIGITS_TEST_FRACTION = 0.4
DIGITS_SPLIT_SEED = 0

#: (label, preset) rows of the table, in the paper's order; the exact-LayerNorm rows differ from the
#: FQ-ViT rows in int mode only (QuantConfig.int_layernorm).
DEFAULT_SETTINGS = [("MinMax", "minmax-8/8/8"), ("FQ-ViT", "fqvit-8/8/8"), ("FQ-ViT", "fqvit-8/8/4"),
                    ("FQ-ViT, exact int LN", "fqvit-8/8/8-exactln"), ("FQ-ViT, exact int LN", "fqvit-8/8/4-exactln")]
#: ``--extra adaround``: AdaRound against round-to-nearest at 8- and 4-bit weights.
ADAROUND_SETTINGS = [("FQ-ViT + AdaRound", "fqvit-8/8/4", "adaround"), ("FQ-ViT", "fqvit-4/8/4"),
                     ("FQ-ViT + AdaRound", "fqvit-4/8/4", "adaround")]
EXTRA_SETTINGS = {"ema": ("EMA", "ema-8/8/8"), "percentile": ("Percentile", "percentile-8/8/8"),
                  "omse": ("OMSE", "omse-8/8/8"), "lis8": ("FQ-ViT (LIS 8-bit)", "fqvit-8/8/8-lis8")}


def digits_data():
    """``(x_train, y_train, x_test, y_test)``: digits scaled to [-1, 1], ``[n, 1, 8, 8]`` float32."""
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError as exc:
        raise SystemExit("the digits evaluation needs scikit-learn: pip install scikit-learn") from exc
    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    x = (x - 0.5) / 0.5
    y = torch.tensor(digits.target, dtype=torch.int64)
    idx = list(range(len(y)))
    train_idx, test_idx = train_test_split(idx, test_size=DIGITS_TEST_FRACTION, random_state=DIGITS_SPLIT_SEED,
                                           stratify=digits.target)
    train_idx, test_idx = torch.tensor(train_idx), torch.tensor(test_idx)
    return x[train_idx], y[train_idx], x[test_idx], y[test_idx]


def digits_calibration(x_train: torch.Tensor, batches: int = 10, batch_size: int = 50) -> List[torch.Tensor]:
    """Calibration batches: a fixed shuffle (seed 0) of the training images, like FQ-ViT's."""
    order = torch.randperm(len(x_train), generator=torch.Generator().manual_seed(0))
    return _batches(x_train[order][: batches * batch_size], batch_size)


def build_digits_vit(arch: Optional[Dict[str, object]] = None, **train_kwargs):
    """A digits ViT architecture (random weights), a timm ``VisionTransformer``; default model ``a``.

    ``train_kwargs`` (e.g. ``drop_path_rate``) only change training-time behaviour, not the weights.
    """
    from timm.models.vision_transformer import VisionTransformer

    return VisionTransformer(**(arch or DIGITS_ARCH), **train_kwargs)


def load_digits_model(path: Path = DIGITS_CHECKPOINT):
    """A trained digits ViT (eval mode) from a checkpoint of ``scripts/train_digits.py``."""
    if not Path(path).exists():
        raise SystemExit(f"digits checkpoint {path} is missing: run python scripts/train_digits.py")
    payload = torch.load(path, map_location="cpu", weights_only=True)
    arch = payload.get("arch")
    if not isinstance(arch, dict):
        raise SystemExit(f"{path} is not a digits checkpoint (no architecture); retrain with scripts/train_digits.py")
    model = build_digits_vit(arch)
    model.load_state_dict(payload["state_dict"])
    return model.eval()


@torch.no_grad()
def predict(model, loader, device="cpu", return_labels: bool = False):
    """Top-1 predictions of ``model`` over ``loader`` (batches of images or (images, labels)).

    With ``return_labels``, returns ``(predictions, labels)`` where ``labels`` are the ones the
    loader yielded (None for image-only batches): a loader that drops unreadable files drops their
    labels too, so the two stay aligned.
    """
    preds, labels = [], []
    for batch in loader:
        images = batch[0] if isinstance(batch, (tuple, list)) else batch
        if isinstance(batch, (tuple, list)) and len(batch) > 1:
            labels.append(torch.as_tensor(batch[1]).cpu())
        preds.append(model(images.to(device)).argmax(dim=-1).cpu())
    preds = torch.cat(preds) if preds else torch.empty(0, dtype=torch.int64)  # a rank may get no batch
    if not return_labels:
        return preds
    return preds, (torch.cat(labels) if labels else None)


def _correct(model, loader, labels: Optional[torch.Tensor], device) -> Tuple[torch.Tensor, int, int]:
    """Predictions, correct count and image count, scored against the loader's own labels when it
    yields them (else ``labels``)."""
    preds, seen = predict(model, loader, device, return_labels=True)
    if len(preds) == 0 and seen is None and labels is None:
        return preds, 0, 0  # a rank that got no batch (more ranks than batches)
    truth = seen if seen is not None else labels
    if truth is None or len(truth) != len(preds):
        raise ValueError(f"{len(preds)} predictions but {'no' if truth is None else len(truth)} labels")
    return preds, int((preds == truth).sum()), len(preds)


def _top1(model, loader, labels: Optional[torch.Tensor], device) -> Tuple[torch.Tensor, float]:
    """Predictions and top-1 (%), scored against the loader's own labels when it yields them."""
    preds, correct, total = _correct(model, loader, labels, device)
    return preds, _percent(correct, total)


def _percent(part: int, whole: int) -> float:
    # From integer counts: the same float whatever the batching or the number of processes.
    return 100.0 * part / whole if whole else float("nan")


def _batches(x: torch.Tensor, size: int) -> List[torch.Tensor]:
    return [x[i:i + size] for i in range(0, len(x), size)]


def evaluate(model, calib, test_batches, labels: Optional[torch.Tensor], settings, modes=("fake", "int"), device="cpu",
             progress=False, block_images=None, group: Optional[Group] = None,
             adaround_iters: Optional[int] = None) -> List[Dict[str, object]]:
    """FP32 and every ``(label, preset)`` or ``(label, preset, weight_rounding)`` of ``settings``:
    top-1 (%) per mode, int/fake agreement and the calibration time (``calib_seconds``: calibration,
    AdaRound where asked, conversion; on rank 0 under torchrun).

    With ``block_images`` (an image tensor or a list of image batches), each row also gets
    ``block_agreement``: the mean over blocks of the percentage of block-output codes on which int
    equals fake (both fed the same input codes; :func:`fqvit_kernels.nn.fidelity.model_block_counts`),
    and ``block_agreement_min``.

    ``group`` (:mod:`fqvit_kernels.distributed`): ``test_batches`` and ``block_images`` are this
    rank's share; rank 0 calibrates and broadcasts each quantized model, every count is summed over
    the ranks, and every rank returns the same rows (equal to a single-process run's).
    """
    from .nn import quantize_model
    from .quant import get_config

    group = group or Group()
    if isinstance(block_images, torch.Tensor):
        block_images = [block_images]
    rows = []
    t0 = time.time()
    _, correct, total = run_everywhere(group, "the FP32 evaluation", lambda: _correct(model, test_batches, labels, device))
    correct, total = sum_counts(group, [correct, total])
    rows.append(dict(method="Full precision", preset="fp32", bits="32/32/32", top1=_percent(correct, total),
                     seconds=time.time() - t0))
    for setting in settings:
        label, preset, rounding = (*setting, "nearest")[:3]
        config = get_config(preset)
        t0 = time.time()
        qmodel = run_everywhere(group, f"calibration ({preset}, on rank 0)", lambda: quantize_model(
            model, calib, config, mode="fake", progress=progress, weight_rounding=rounding,
            adaround_iters=adaround_iters) if group.is_main else None)
        calib_seconds = time.time() - t0
        kept = None
        if rounding == "adaround":  # which rounding AdaRound's output guard kept (known on rank 0)
            kept = gather_objects(group, qmodel.adaround_report.kept if group.is_main else None)[0]
        qmodel = run_everywhere(group, f"sharing the calibrated model ({preset})",
                                lambda: broadcast_quantized(group, qmodel, model, "fake"))
        check_identical(group, qmodel, f"the calibrated {preset} model")
        row = dict(method=label, preset=preset, bits=config.bits_label, weight_rounding=rounding,
                   calib_seconds=calib_seconds)
        if kept is not None:
            row["weight_rounding_kept"] = kept
            if kept != rounding:
                row["method"] = f"{label} (kept nearest)"
        wanted = [m for m in modes if not (m == "int" and config.lis and config.attn_bits != 4)]  # no 8-bit LIS kernel
        row.update(_setting_counts(group, qmodel, wanted, test_batches, labels, device, block_images))
        row["seconds"] = time.time() - t0
        rows.append(row)
    return rows


def _setting_counts(group: Group, qmodel, modes, test_batches, labels, device, block_images) -> Dict[str, object]:
    """Top-1 per mode, int/fake agreement and block-code agreement of one quantized model, from
    integer counts summed over the ranks."""
    from .nn.fidelity import model_block_counts

    def count():
        preds, counts = {}, []
        for mode in modes:
            qmodel.set_mode(mode)
            preds[mode], correct, total = _correct(qmodel, test_batches, labels, device)
            counts += [correct, total]
        both = "fake" in preds and "int" in preds
        counts.append(int((preds["fake"] == preds["int"]).sum()) if both else 0)
        blocks = [0, 0] * len(qmodel.blocks)
        if both and block_images is not None:
            for images in block_images:
                for i, (equal, seen) in enumerate(model_block_counts(qmodel, images.to(device))):
                    blocks[2 * i] += equal
                    blocks[2 * i + 1] += seen
        return counts + blocks

    counts = sum_counts(group, run_everywhere(group, "the evaluation", count))
    out: Dict[str, object] = {}
    for i, mode in enumerate(modes):
        out[f"top1_{mode}"] = _percent(counts[2 * i], counts[2 * i + 1])
    if "top1_fake" in out and "top1_int" in out:
        images = counts[2 * modes.index("int") + 1]
        out["agreement"] = _percent(counts[2 * len(modes)], images)
        out["int_minus_fake"] = out["top1_int"] - out["top1_fake"]
        blocks = counts[2 * len(modes) + 1:]
        if block_images is not None and sum(blocks[1::2]) > 0:
            per_block = [_percent(blocks[2 * i], blocks[2 * i + 1]) for i in range(len(blocks) // 2)]
            out["block_agreement"] = sum(per_block) / len(per_block)
            out["block_agreement_min"] = min(per_block)
    return out


def format_table(rows, title: str) -> str:
    """The paper's layout: one line per method and mode, W/A/Attn bits, top-1, int/fake agreement."""
    lines = [title, f"| {'Method':<40} | {'W/A/Attn':>8} | {'Top-1 (%)':>9} | {'int/fake top-1 (%)':>18} "
                    f"| {'int/fake block codes (%)':>24} | {'calib (s)':>9} |",
             f"|{'-' * 42}|{'-' * 10}|{'-' * 11}|{'-' * 20}|{'-' * 26}|{'-' * 11}|"]
    for row in rows:
        if row["preset"] == "fp32":
            lines.append(f"| {row['method']:<40} | {row['bits']:>8} | {row['top1']:>9.2f} | {'':>18} | {'':>24} | {'':>9} |")
            continue
        for mode in ("fake", "int"):
            key = f"top1_{mode}"
            if key not in row:
                continue
            agree = f"{row['agreement']:.2f}" if mode == "int" and "agreement" in row else ""
            block = f"{row['block_agreement']:.3f}" if mode == "int" and "block_agreement" in row else ""
            name = f"{row['method']} ({mode})"
            calib = f"{row['calib_seconds']:.1f}" if mode == "fake" and "calib_seconds" in row else ""
            lines.append(f"| {name:<40} | {row['bits']:>8} | {row[key]:>9.2f} | {agree:>18} | {block:>24} | {calib:>9} |")
    return "\n".join(lines)


def _settings(extra: Sequence[str]):
    settings = list(DEFAULT_SETTINGS)
    for i, name in enumerate(n for n in extra if n != "adaround"):
        if name not in EXTRA_SETTINGS:
            raise SystemExit(f"unknown --extra {name!r}; choose from {sorted(EXTRA_SETTINGS) + ['adaround']}")
        settings.insert(1 + i, EXTRA_SETTINGS[name])
    if "adaround" in extra:  # right after the 8/8/4 row they compare with
        at = settings.index(("FQ-ViT", "fqvit-8/8/4")) + 1
        settings[at:at] = ADAROUND_SETTINGS
    return settings


def run_digits(args) -> Dict[str, object]:
    """Default evaluation on a shipped digits ViT (``--digits-model``, default ``a``)."""
    spec = DIGITS_MODELS[args.digits_model]
    model = load_digits_model(Path(args.checkpoint) if args.checkpoint else spec.path)
    x_train, _, x_test, y_test = digits_data()
    calib = digits_calibration(x_train, args.calib_batches, args.calib_batch_size)
    group = args.group
    # This rank's whole test batches (all of them in one process), with their labels.
    mine = [(x_test[idx], y_test[idx]) for idx in BatchShardSampler(len(y_test), DIGITS_EVAL_BATCH, group)]
    t0 = time.time()
    rows = evaluate(model, calib, mine, None, _settings(args.extra), modes=args.modes,
                    progress=not args.quiet and group.is_main, block_images=[images for images, _ in mine],
                    group=group, adaround_iters=args.adaround_iters)
    arch = spec.arch
    title = (f"Digits ViT {args.digits_model} ({arch['depth']} blocks x {arch['embed_dim']}, sklearn load_digits, "
             f"{len(y_test)} test images, {args.calib_batches}x{args.calib_batch_size} calibration images)")
    return dict(dataset="digits", model=args.digits_model, test_images=len(y_test), rows=rows,
                seconds=time.time() - t0, title=title)


def _imagenet_loaders(args, model):
    data = Path(args.data)
    if not data.is_dir():
        raise SystemExit(f"ImageNet folder {data} does not exist (expected <root>/val/<class>/*.JPEG, "
                         "or a val folder in ImageFolder layout)")
    val_dir = data / "val" if (data / "val").is_dir() else data
    calib_dir = Path(args.calib_dir) if args.calib_dir else (data / "train" if (data / "train").is_dir() else val_dir)
    if not any(p.is_dir() for p in val_dir.iterdir()):
        raise SystemExit(f"{val_dir} has no class sub-folders (ImageFolder layout expected)")
    if calib_dir == val_dir:
        print(f"note: no train/ folder under {data}: calibrating on validation images", file=sys.stderr)
    from timm.data import create_transform, resolve_data_config
    from torchvision.datasets import ImageFolder

    from .imagefolder import SkippingLoader, calibration_batches

    transform = create_transform(**resolve_data_config({}, model=model))
    val = ImageFolder(str(val_dir), transform=transform)
    calib_set = ImageFolder(str(calib_dir), transform=transform)
    calib_skipped: List[str] = []
    calib = []  # only rank 0 calibrates (fqvit_kernels.distributed): the others need no calibration images
    if args.group.is_main:
        calib = calibration_batches(calib_set, args.calib_batches, args.calib_batch_size, strict=args.strict_images,
                                    skipped=calib_skipped)
    for error in calib_skipped:
        print(f"note: skipped unreadable calibration image {error}", file=sys.stderr)
    shard = BatchShardSampler(len(val), args.batch_size, args.group)
    loader = SkippingLoader(val, batch_size=args.batch_size, workers=args.workers, strict=args.strict_images,
                            batch_sampler=shard)
    return calib, loader


def run_imagenet(args) -> Dict[str, object]:
    """ImageNet evaluation of a timm model (``--model``, ``--data``)."""
    import timm

    if not args.data:
        raise SystemExit("--model needs --data <ImageNet folder>")
    if not Path(args.data).is_dir():
        raise SystemExit(f"ImageNet folder {args.data} does not exist")
    if not args.pretrained:
        torch.manual_seed(0)  # random weights, but the same in every run and on every rank
    model = timm.create_model(args.model, pretrained=args.pretrained).eval()
    run_everywhere(args.group, "loading the float model", lambda: check_identical(args.group, model, "the float model"))
    calib, loader = _imagenet_loaders(args, model)
    device = args.device
    model.to(device)
    group = args.group
    t0 = time.time()
    # Block agreement on the first validation batch (global batch 0, which is rank 0's).
    first = [next(iter(loader))[0]] if group.is_main and len(loader) else []
    rows = evaluate(model, calib, loader, None, _settings(args.extra), modes=args.modes, device=device,
                    progress=not args.quiet and group.is_main, block_images=first, group=group,
                    adaround_iters=args.adaround_iters)
    skipped = sorted(set(error for rank_errors in gather_objects(group, list(loader.skipped)) for error in rank_errors))
    scored = len(loader.dataset) - len(skipped)
    title = f"{args.model} on ImageNet val ({scored} images)"
    if skipped:
        loader.skipped = dict.fromkeys(skipped)
        title += f"; {loader.summary()}"
    return dict(dataset="imagenet", model=args.model, test_images=scored, skipped_images=skipped,
                rows=rows, seconds=time.time() - t0, title=title)


def _environment() -> Dict[str, object]:
    import platform

    import timm

    from . import __version__, backends

    return dict(date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), fqvit_kernels=__version__,
                torch=torch.__version__, timm=timm.__version__, python=platform.python_version(),
                machine=platform.machine(), cpu_backend=backends.BACKEND["int8_linear"]["cpu"],
                threads=torch.get_num_threads())


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, object]:
    """Command-line entry point; returns the result dict that ``--json`` writes."""
    parser = argparse.ArgumentParser(prog="python -m fqvit_kernels.eval", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="timm model name (ImageNet mode), e.g. deit_small_patch16_224")
    parser.add_argument("--pretrained", action="store_true", help="load timm's pretrained weights")
    parser.add_argument("--data", help="ImageNet root (with val/ and train/) or a val folder")
    parser.add_argument("--calib-dir", help="calibration images (ImageFolder); default <data>/train")
    parser.add_argument("--calib-batches", type=int, default=None, help="calibration batches (FQ-ViT: 10)")
    parser.add_argument("--calib-batch-size", type=int, default=None, help="images per calibration batch (FQ-ViT: 100)")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--workers", type=int, default=default_workers(),
                        help="DataLoader worker processes (default: min(4, CPU cores))")
    parser.add_argument("--strict-images", action="store_true",
                        help="stop at the first unreadable image (default: skip it and report it in the summary)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--modes", nargs="+", default=["fake", "int"], choices=["fake", "int"])
    parser.add_argument("--extra", nargs="*", default=[],
                        help=f"more rows: {sorted(EXTRA_SETTINGS)}, or adaround (AdaRound vs nearest at W8 and W4)")
    parser.add_argument("--adaround-iters", type=int, default=None,
                        help="AdaRound's Adam steps per layer (default: AdaRoundConfig.iters)")
    parser.add_argument("--digits-model", choices=sorted(DIGITS_MODELS), default="a",
                        help="which shipped digits ViT: a (4 blocks x 96) or b (6 blocks x 64, another seed)")
    parser.add_argument("--checkpoint", help="digits checkpoint (default: the shipped one of --digits-model)")
    parser.add_argument("--json", help="write the numbers to this file")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--dist-timeout", type=float, default=DEFAULT_TIMEOUT_S,
                        help="under torchrun: seconds a collective may wait for the other ranks "
                             f"(default {DEFAULT_TIMEOUT_S:.0f}: rank 0 calibrates while the others wait)")
    args = parser.parse_args(argv)
    if args.workers < 0:
        raise SystemExit(f"--workers must be >= 0, got {args.workers}")
    if args.dist_timeout <= 0:
        raise SystemExit(f"--dist-timeout must be > 0 seconds, got {args.dist_timeout}")
    args.group, args.device = init_from_env(args.device, args.dist_timeout)
    if not args.group.distributed:
        return _run(args)
    try:
        result = _run(args)
        # Every rank reaches here before any tears the group down: a gloo group destroyed while a
        # peer still used its connections aborted rank 0 at exit ("terminate called without an
        # active exception", seen once in CI).
        torch.distributed.barrier()
        return result
    finally:
        torch.distributed.destroy_process_group()


def _run(args) -> Dict[str, object]:
    if args.model:
        args.calib_batches = args.calib_batches or 10
        args.calib_batch_size = args.calib_batch_size or 100
        result = run_imagenet(args)
    else:
        if args.data or args.pretrained:
            raise SystemExit("--data / --pretrained need --model <timm name>")
        args.calib_batches = args.calib_batches or 10
        args.calib_batch_size = args.calib_batch_size or 50
        result = run_digits(args)
    result["environment"] = _environment()
    result["environment"]["world_size"] = args.group.world_size
    if not args.group.is_main:  # rank 0 prints and writes; every rank returns the same rows
        return result
    print(format_table(result["rows"], result["title"]))
    print(f"({result['seconds']:.1f} s{f', {args.group.world_size} processes' if args.group.distributed else ''})")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({k: v for k, v in result.items() if k != "title"}, fh, indent=2)
    return result


if __name__ == "__main__":
    main()
