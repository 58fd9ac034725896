"""quantize_model on a tiny random-weight timm ViT: int vs fake top-1, save/load, errors, eval CLI."""

import pytest
import torch

from fqvit_kernels.nn import NotCalibratedError, QuantVisionTransformer, load_quantized, quantize_model, save_quantized
from fqvit_kernels.nn.fidelity import model_block_agreement

timm_vit = pytest.importorskip("timm.models.vision_transformer")

ARCH = dict(img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=4, num_classes=10)


def _vit(gen, **overrides):
    """A random ViT whose logits separate the classes (timm's init gives nearly equal logits)."""
    with torch.random.fork_rng():
        torch.manual_seed(int(torch.randint(0, 2**31, (), generator=gen)))
        vit = timm_vit.VisionTransformer(**{**ARCH, **overrides}).eval()
        with torch.no_grad():
            for name, p in vit.named_parameters():
                if p.dim() == 2 and "weight" in name:
                    p.mul_(2.0)
                elif name in ("pos_embed", "cls_token"):
                    p.normal_(0, 0.5)
            vit.head.weight.mul_(5.0)
    return vit


def _images(gen, n):
    return torch.randn(n, 3, 32, 32, generator=gen)


@pytest.fixture
def calibrated(gen):
    vit = _vit(gen)
    calib = [_images(gen, 16) for _ in range(3)]
    return vit, quantize_model(vit, calib, "fqvit-8/8/4", progress=False)


@pytest.mark.parametrize("preset", ["fqvit-8/8/4", "fqvit-8/8/8"])
def test_int_vs_fake_top1_agreement(preset, gen):
    vit = _vit(gen)
    q = quantize_model(vit, [(_images(gen, 16), None) for _ in range(3)], preset, mode="int", progress=False)
    x = _images(gen, 96)
    with torch.no_grad():
        fp32 = vit(x)
        logits_int = q(x)
        logits_fake = q.set_mode("fake")(x)
    top_int, top_fake = logits_int.argmax(1), logits_fake.argmax(1)
    agree = (top_int == top_fake).float().mean().item()
    agree_fp32 = (top_fake == fp32.argmax(1)).float().mean().item()
    step = q.act_out.scale.item()
    # Where the two disagree, how far apart were the two classes in the fake logits (in logit LSBs)?
    rows = torch.nonzero(top_int != top_fake).flatten()
    gaps = (logits_fake[rows, top_fake[rows]] - logits_fake[rows, top_int[rows]]) / step
    print(f"{preset}: top-1 int vs fake {100 * agree:.1f} %, fake vs fp32 {100 * agree_fp32:.1f} %, "
          f"max |int - fake| {(logits_int - logits_fake).abs().max().item() / step:.0f} logit LSB, "
          f"fake-logit gaps of the disagreements {gaps.tolist()} LSB")
    assert logits_int.dtype == torch.float32 and logits_int.shape == (96, 10)
    # Random weights can give many near-ties (some draws put most images within a few logit LSBs of
    # a tie); the int path may flip those. The 99.5 % target is checked on the trained digits model
    # (test_shipped_digits_model_meets_accuracy_targets). The maximum difference is heavy-tailed
    # (median 5, max 7 over 40 seeds, 11 seen once), so the bound is on the mean difference: at most
    # 1.69 logit LSB over those 40 seeds per preset, asserted at 3; a broken kernel gives tens.
    diff_lsb = (logits_int - logits_fake).abs() / step
    assert diff_lsb.mean() <= 3.0, f"int logits differ from fake by {diff_lsb.mean():.2f} LSB on average"
    assert diff_lsb.max() <= 32, f"int logits differ from fake by up to {diff_lsb.max():.1f} LSB"
    assert agree >= 0.75  # measured minimum over 40 seeds: 0.896
    assert agree_fp32 >= 0.6  # random weights, two quantized blocks: a sanity floor, not a target
    # Top-1 on random weights barely sees a broken block (a residual taken from the wrong tensor
    # still gave 100 % here); the codes do. Every block and stage, int vs fake on the same input
    # codes: measured >= 99.979 % per block and >= 99.994 % per stage over 12 seeds per preset.
    for i, row in enumerate(model_block_agreement(q, x, stages=True)):
        assert row["block"] >= 99.9, f"block {i}: {row}"
        assert min(v for k, v in row.items() if k != "block") >= 99.95, f"block {i}: {row}"


def test_save_load_round_trip_bit_exact(calibrated, gen, tmp_path):
    vit, q = calibrated
    x = _images(gen, 8)
    with torch.no_grad():
        out_int = q.set_mode("int")(x)
        out_fake = q.set_mode("fake")(x)
    path = tmp_path / "q.pt"
    save_quantized(q, path)
    # Into a fresh conversion of a differently initialised model of the same architecture ...
    other = _vit(gen)
    loaded = load_quantized(path, other.eval())
    loaded.patch_embed.load_state_dict(vit.patch_embed.state_dict())  # the file restores it anyway
    with torch.no_grad():
        assert torch.equal(loaded(x), out_int)
        assert torch.equal(loaded.set_mode("fake")(x), out_fake)
    # ... and rebuilt from the architecture stored in the file.
    rebuilt = load_quantized(path)
    with torch.no_grad():
        assert torch.equal(rebuilt(x), out_int)


def test_load_refuses_other_architecture(calibrated, gen, tmp_path):
    _, q = calibrated
    path = tmp_path / "q.pt"
    save_quantized(q, path)
    with pytest.raises(ValueError, match="architecture"):
        load_quantized(path, _vit(gen, depth=3))
    with pytest.raises(ValueError, match="architecture"):
        load_quantized(path, _vit(gen, embed_dim=32))


def test_load_refuses_truncated_and_corrupted_files(calibrated, tmp_path):
    _, q = calibrated
    path = tmp_path / "q.pt"
    save_quantized(q, path)
    data = path.read_bytes()
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated or corrupted"):
        load_quantized(truncated)
    # Flip bytes inside the tensor data: either the archive or the checksum catches it.
    corrupted = tmp_path / "corrupted.pt"
    raw = bytearray(data)
    start = len(raw) // 2
    for i in range(start, start + 64):
        raw[i] ^= 0x5A
    corrupted.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="corrupted"):
        load_quantized(corrupted)
    with pytest.raises(FileNotFoundError):
        load_quantized(tmp_path / "missing.pt")


def test_load_refuses_other_package_version(calibrated, tmp_path):
    _, q = calibrated
    path = tmp_path / "q.pt"
    save_quantized(q, path)
    payload = torch.load(path, weights_only=True)
    payload["package_version"] = "0.0.1"
    torch.save(payload, path)
    with pytest.raises(ValueError, match="0.0.1"):
        load_quantized(path)


def test_empty_calibration_data_raises(gen):
    vit = _vit(gen)
    with pytest.raises(ValueError, match="empty"):
        quantize_model(vit, [], progress=False)
    with pytest.raises(ValueError, match="empty"):
        quantize_model(vit, iter(()), progress=False)


def test_uncalibrated_model_refuses_int_forward(gen):
    q = QuantVisionTransformer.from_float(_vit(gen)).set_mode("int")
    with pytest.raises(NotCalibratedError, match="not calibrated"):
        q(_images(gen, 2))


def test_refuses_unsupported_models(gen):
    distilled = timm_vit.__dict__.get("VisionTransformerDistilled")
    if distilled is None:
        from timm.models.deit import VisionTransformerDistilled as distilled
    with pytest.raises(NotImplementedError, match="distilled"):
        QuantVisionTransformer.from_float(distilled(**ARCH))
    with pytest.raises(NotImplementedError, match="global_pool"):
        QuantVisionTransformer.from_float(timm_vit.VisionTransformer(**ARCH, global_pool="avg", class_token=False))
    with pytest.raises(NotImplementedError, match="qk_norm"):
        QuantVisionTransformer.from_float(timm_vit.VisionTransformer(**ARCH, qk_norm=True))


def test_eval_cli_missing_imagenet_folder(tmp_path):
    from fqvit_kernels import eval as fq_eval

    with pytest.raises(SystemExit, match="does not exist"):
        fq_eval.main(["--model", "deit_tiny_patch16_224", "--pretrained", "--data", str(tmp_path / "nope")])
    with pytest.raises(SystemExit, match="--model"):
        fq_eval.main(["--data", str(tmp_path)])


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["a", "b"])
def test_shipped_digits_models_meet_the_fidelity_targets(variant):
    """Both shipped digits ViTs (different seed, depth and width): FQ-ViT 8/8/8 within 0.5 points of
    FP32 (model a); int vs fake top-1 agreement >= 99.8 % (8/8/8, also MinMax) and >= 99.5 % (8/8/4),
    int never more than 0.1 point below fake; and every stage of every block >= 99.99 % identical
    codes to fake on the same inputs (docs/numerics.md: what float32 effects remain)."""
    pytest.importorskip("sklearn")
    from fqvit_kernels import eval as fq_eval
    from fqvit_kernels.nn.fidelity import STAGES, model_block_agreement

    model = fq_eval.load_digits_model(fq_eval.DIGITS_MODELS[variant].path)
    x_train, _, x_test, y_test = fq_eval.digits_data()
    calib = fq_eval.digits_calibration(x_train)
    test = fq_eval._batches(x_test, 256)
    settings = [("FQ-ViT", "fqvit-8/8/8"), ("FQ-ViT", "fqvit-8/8/4"), ("MinMax", "minmax-8/8/8")]
    fp32, w8, w4, mm = fq_eval.evaluate(model, calib, test, y_test, settings, block_images=x_test)
    print(f"digits {variant}: FP32 {fp32['top1']:.2f}; 8/8/8 fake {w8['top1_fake']:.2f} int {w8['top1_int']:.2f} "
          f"agree {w8['agreement']:.2f} blocks {w8['block_agreement']:.3f}; 8/8/4 fake {w4['top1_fake']:.2f} int "
          f"{w4['top1_int']:.2f} agree {w4['agreement']:.2f} blocks {w4['block_agreement']:.3f}")
    assert fp32["top1"] > 95.0
    if variant == "a":
        assert abs(w8["top1_fake"] - fp32["top1"]) <= 0.5
    assert w8["agreement"] >= 99.8 and w4["agreement"] >= 99.5 and mm["agreement"] >= 99.8
    for row in (w8, w4, mm):
        assert row["top1_int"] >= row["top1_fake"] - 0.1
    for preset in ("fqvit-8/8/8", "fqvit-8/8/4", "minmax-8/8/8"):
        q = quantize_model(model, calib, preset, progress=False)
        for i, row in enumerate(model_block_agreement(q, x_test[:300], stages=True)):  # ~490k codes per stage
            for stage in STAGES:
                assert row[stage] >= 99.99, f"{variant} {preset} block {i} {stage}: {row[stage]:.4f} %"
