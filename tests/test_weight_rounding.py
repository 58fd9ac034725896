"""Weight bits 4-8 on the int8 kernels, AdaRound, get_quantized_layers and the block guide's names."""

import sys
from pathlib import Path

import pytest
import torch

from fqvit_kernels.nn import (AdaRoundConfig, QLayerNorm, QuantIntSoft, QuantLayerNorm, QuantTimmVitBlock,
                              load_quantized, quantize_model, save_quantized)
from fqvit_kernels.nn.adaround import adaround_layer
from fqvit_kernels.nn.block import QuantSoftmax
from fqvit_kernels.nn.fidelity import model_block_agreement
from fqvit_kernels.nn.layers import QuantLinear
from fqvit_kernels.quant import QuantConfig, quantize_weight

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_quant_model import _images, _vit  # noqa: E402  (the tiny random ViT of the model tests)

timm_vit = pytest.importorskip("timm.models.vision_transformer")


@pytest.mark.parametrize("bits", [4, 5, 6, 7, 8])
@pytest.mark.parametrize("shape", [(1, 7), (197, 64), (33, 577)])
def test_weight_codes_follow_fqvit_symmetric_formula(bits, shape, gen):
    w = torch.randn(*shape, generator=gen) * torch.rand(shape[0], 1, generator=gen)
    codes, scale = quantize_weight(w, bits)
    lo, hi = -2 ** (bits - 1), 2 ** (bits - 1) - 1
    # FQ-ViT's symmetric MinMax: s = max(-min, max) / ((qmax - qmin) / 2), q = clip(round(w / s)).
    expected_scale = torch.maximum(-w.min(1).values, w.max(1).values) / ((hi - lo) / 2)
    assert torch.equal(scale, expected_scale.clamp(min=torch.finfo(torch.float32).eps))
    assert torch.equal(codes, torch.round(w / scale[:, None]).clamp(lo, hi).to(torch.int8))
    assert codes.dtype == torch.int8 and int(codes.min()) >= lo and int(codes.max()) <= hi


@pytest.mark.parametrize("bits", [3, 9, 0, True, 4.0])
def test_unsupported_weight_bits_are_refused(bits):
    with pytest.raises(ValueError, match="weight_bits"):
        QuantConfig(weight_bits=bits)


@pytest.mark.parametrize("preset", ["fqvit-4/8/4", QuantConfig(weight_bits=6, attn_bits=8, lis=False)])
def test_narrow_weights_int_equals_fake_per_stage(preset, gen):
    vit = _vit(gen)
    q = quantize_model(vit, [_images(gen, 16) for _ in range(3)], preset, mode="int", progress=False)
    bits = q.config.weight_bits
    for name, layer in q.get_quantized_layers().items():
        w = layer.linear.weight_int8
        assert int(w.min()) >= -2 ** (bits - 1) and int(w.max()) <= 2 ** (bits - 1) - 1, name
    # Same bound as the 8-bit presets (test_quant_model): >= 99.9 % per block, 99.95 % per stage.
    for i, row in enumerate(model_block_agreement(q, _images(gen, 48), stages=True)):
        assert row["block"] >= 99.9, f"block {i}: {row}"
        assert min(v for k, v in row.items() if k != "block") >= 99.95, f"block {i}: {row}"


def test_quantized_layers_in_execution_order_with_their_quantizers(gen):
    q = quantize_model(_vit(gen), [_images(gen, 8)], progress=False)
    layers = q.get_quantized_layers()
    assert list(layers) == [f"blocks.{i}.{n}" for i in range(2) for n in ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2")] \
        + ["head"]
    b0 = q.blocks[0]
    assert layers["blocks.0.attn.qkv"] == (b0.attn.qkv, b0.qact1, b0.attn.qact1)
    assert layers["blocks.0.mlp.fc2"] == (b0.mlp.fc2, b0.mlp.qact1, b0.mlp.qact2)
    assert layers["head"] == (q.head, q.qact2, q.act_out)
    assert list(b0.get_quantized_layers()) == ["attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2"]


def test_the_block_guide_names(gen):
    block = timm_vit.Block(64, 4, qkv_bias=True).eval()
    qb = QuantTimmVitBlock.from_float(block)
    assert QLayerNorm is QuantLayerNorm and QuantIntSoft is QuantSoftmax
    assert isinstance(qb.norm1, QLayerNorm) and isinstance(qb.attn.softmax, QuantIntSoft)
    assert qb.attn_qkv_output is qb.attn.qact1 and qb.residual1 is qb.qact2 and qb.residual2 is qb.qact4
    x = torch.randn(2, 5, 64, generator=gen)
    out_calibration = qb.calibration([x], mode="fake")
    assert out_calibration is qb and qb.calibrated


def _layer_case(gen, n=48, k=96, rows=2048, bits=4):
    lin = torch.nn.Linear(k, n)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(n, k, generator=gen) * 0.1)
        lin.bias.copy_(torch.randn(n, generator=gen) * 0.1)
    q = QuantLinear(lin, weight_bits=bits)
    x_float = torch.randn(rows, k, generator=gen)
    x_quant = x_float + 0.05 * torch.randn(rows, k, generator=gen)  # a quantized input is off by a little
    return q, x_quant, x_float


@pytest.mark.parametrize("bits", [4, 8])
def test_adaround_layer_rounds_up_or_down_and_reduces_the_output_error(bits, gen):
    q, x_quant, x_float = _layer_case(gen, bits=bits)
    nearest = q.weight_int8.clone()
    report = adaround_layer(q, x_quant, x_float, AdaRoundConfig(iters=300, batch_rows=512))
    w = q.weight / q.weight_scale[:, None]
    lo, hi = -2 ** (bits - 1), 2 ** (bits - 1) - 1
    codes = q.weight_int8.float()
    # Every code is the floor or the ceiling of w / s (clipped to the range): AdaRound only decides the direction.
    assert bool(((codes == torch.floor(w).clamp(lo, hi)) | (codes == torch.ceil(w).clamp(lo, hi))).all())
    assert report["adaround_error"] < report["nearest_error"], report
    assert 0 < report["changed"] == float((q.weight_int8 != nearest).float().mean())
    # The reported errors are the layer's output errors on these rows.
    out = torch.nn.functional.linear(x_quant, q.fake_weight(), q.bias)
    target = torch.nn.functional.linear(x_float, q.weight, q.bias)
    assert abs(float((out - target).pow(2).sum(-1).mean()) - report["adaround_error"]) <= 1e-4 * report["adaround_error"]


def test_adaround_is_deterministic_under_its_seed(gen):
    q, x_quant, x_float = _layer_case(gen)
    runs = []
    for _ in range(2):  # each run starts from the float weight, not from the previous codes
        report = adaround_layer(q, x_quant, x_float, AdaRoundConfig(iters=60, seed=3))
        runs.append((report, q.weight_int8.clone()))
    assert runs[0][0] == runs[1][0] and torch.equal(runs[0][1], runs[1][1])


def test_adaround_model_int_equals_fake_and_survives_save_load(gen, tmp_path):
    vit = _vit(gen)
    calib = [_images(gen, 16) for _ in range(2)]
    nearest = quantize_model(vit, calib, "fqvit-4/8/4", mode="fake", progress=False)
    q = quantize_model(vit, calib, "fqvit-4/8/4", mode="int", progress=False, weight_rounding="adaround",
                       adaround=AdaRoundConfig(iters=40, rows=512, batch_rows=256))
    result = q.adaround_report
    assert set(result.layers) == set(q.get_quantized_layers())
    changed = sum(int((a.linear.weight_int8 != b.linear.weight_int8).sum())
                  for a, b in zip(q.get_quantized_layers().values(), nearest.get_quantized_layers().values()))
    # The guard keeps whichever rounding brings the output closer to the float model's.
    assert result.kept == ("adaround" if result.output_error_adaround <= result.output_error_nearest else "nearest")
    assert (changed > 0) == (result.kept == "adaround")
    # Activation scales do not depend on the rounding (FQ-ViT calibrates them in float mode).
    assert torch.equal(q.blocks[1].qact4.scale, nearest.blocks[1].qact4.scale)
    x = _images(gen, 24)
    for i, row in enumerate(model_block_agreement(q, x, stages=True)):
        assert row["block"] >= 99.9 and min(v for k, v in row.items() if k != "block") >= 99.95, f"block {i}: {row}"
    save_quantized(q, tmp_path / "q.pt")
    back = load_quantized(tmp_path / "q.pt")
    with torch.no_grad():
        assert torch.equal(back(x), q(x))


def test_bad_rounding_arguments(gen):
    vit = _vit(gen)
    with pytest.raises(ValueError, match="weight_rounding"):
        quantize_model(vit, [_images(gen, 4)], progress=False, weight_rounding="stochastic")
    with pytest.raises(ValueError, match="iters"):
        AdaRoundConfig(iters=0)
    lin = QuantLinear(torch.nn.Linear(8, 4), weight_bits=4)
    with pytest.raises(ValueError, match="-8..7"):
        lin.set_weight_codes(torch.full((4, 8), 8))
    with pytest.raises(ValueError, match="shape"):
        lin.set_weight_codes(torch.zeros(4, 7))
    with pytest.raises(ValueError, match="integers"):
        lin.set_weight_codes(torch.full((4, 8), 0.5))


def test_adaround_guard_restores_nearest_when_the_output_gets_worse(gen, monkeypatch):
    """A layer step that rounds every weight the wrong way moves the output away from the float
    model's: the guard must put the round-to-nearest codes back."""
    import fqvit_kernels.nn.adaround as adaround

    def wrong_way(lin, x_quant, x_float, config, generator):
        w = lin.weight / lin.weight_scale[:, None]
        lo, hi = -2 ** (lin.weight_bits - 1), 2 ** (lin.weight_bits - 1) - 1
        nearest = torch.round(w)
        lin.set_weight_codes(torch.where(nearest > w, nearest - 1, nearest + 1).clamp(lo, hi))
        return dict(nearest_error=0.0, adaround_error=0.0, changed=1.0)

    monkeypatch.setattr(adaround, "adaround_layer", wrong_way)
    vit = _vit(gen)
    calib = [_images(gen, 8)]
    nearest = quantize_model(vit, calib, "fqvit-4/8/4", mode="fake", progress=False)
    q = quantize_model(vit, calib, "fqvit-4/8/4", mode="fake", progress=False, weight_rounding="adaround")
    assert q.adaround_report.kept == "nearest"
    assert q.adaround_report.output_error_adaround > q.adaround_report.output_error_nearest
    for a, b in zip(q.get_quantized_layers().values(), nearest.get_quantized_layers().values()):
        assert torch.equal(a.linear.weight_int8, b.linear.weight_int8)


@pytest.mark.gpu
def test_adaround_on_cuda_matches_its_fake_mode(gen):
    """The GPU path: inputs, rows and the optimization stay on the model's device."""
    vit = _vit(gen).cuda()
    calib = [_images(gen, 8).cuda() for _ in range(2)]
    q = quantize_model(vit, calib, "fqvit-4/8/4", mode="int", progress=False, weight_rounding="adaround",
                       adaround=AdaRoundConfig(iters=40, rows=512, batch_rows=256))
    assert q.head.weight_int8.is_cuda
    for i, row in enumerate(model_block_agreement(q, _images(gen, 16).cuda(), stages=True)):
        assert row["block"] >= 99.9 and min(v for k, v in row.items() if k != "block") >= 99.95, f"block {i}: {row}"
