"""QuantTimmVitBlock: int mode vs fake mode per block, save/load, refusals, calibration errors."""

import io

import pytest
import torch
from torch import nn

from fqvit_kernels.nn import NotCalibratedError, QuantTimmVitBlock, fidelity
from fqvit_kernels.quant import QuantConfig, get_config

timm_vit = pytest.importorskip("timm.models.vision_transformer")

DIM, HEADS, TOKENS = 48, 4, 17

#: Random-weight blocks: stages where FQ-ViT's own float32 arithmetic on dequantized values (q and k
#: rounded to float32 before their dot product; the residual add and division in float32) decides
#: near-ties that exact arithmetic with FQ-ViT's final float32 roundings cannot follow. Over 210
#: random ViT-S draws, 2-3 % put these stages between 99.97 and 99.99 % (worst 99.971 %); the trained
#: digits models keep every stage at 99.99 % or above (test_quant_model).
RANDOM_BLOCK_FLOORS = {"attention": 99.95, "proj+residual": 99.95, "fc2+residual": 99.95}


def _block(gen, **kwargs):
    blk = timm_vit.Block(DIM, HEADS, mlp_ratio=2.0, qkv_bias=True, **kwargs).eval()
    with torch.no_grad():
        for p in blk.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.05)
    return blk


def _tokens(gen, b=4):
    """Residual-stream-like input: a few channels 30x wider than the rest."""
    x = torch.randn(b, TOKENS, DIM, generator=gen) * 0.7 + 0.1
    x[..., :3] *= 30.0
    return x


def _calibrated(gen, preset="fqvit-8/8/4", mode="int"):
    blk = _block(gen)
    qb = QuantTimmVitBlock.from_float(blk, get_config(preset))
    qb.calibrate([_tokens(gen) for _ in range(3)], mode=mode)
    return blk, qb


@pytest.mark.parametrize("preset", ["fqvit-8/8/4", "fqvit-8/8/8", "minmax-8/8/8"])
def test_int_block_close_to_fake(preset, gen):
    """Whole block, both modes on the same input codes. Stage differences (see the stage test) are
    rare but a flipped code propagates: a LayerNorm code moves a whole row of the next GEMM and a
    score code a whole row of the 4-bit softmax, so the block agrees on fewer codes than any stage."""
    _, qb = _calibrated(gen, preset)
    x_int = qb.qact0.quantize_int(_tokens(gen, b=8))
    got, fake = fidelity.block_codes(qb, x_int)
    assert got.dtype == torch.int8 and got.shape == x_int.shape
    diff = (got.to(torch.int32) - fake.to(torch.int32)).abs()
    exact = (diff == 0).double().mean().item()
    print(f"{preset}: int vs fake block output {100 * exact:.3f} % equal, max {diff.max().item()} LSB")
    assert exact >= 0.995


def test_int_block_float_io_and_timm_keywords(gen):
    _, qb = _calibrated(gen)
    x = _tokens(gen)
    x_int = qb.qact0.quantize_int(x)
    expected = qb.qact4.dequantize_int(qb(x_int, attn_mask=None, is_causal=False))
    qb.float_io = True
    assert torch.equal(qb(x), expected)


def test_block_state_dict_round_trip_is_bit_exact(gen):
    _, qb = _calibrated(gen)
    x_int = qb.qact0.quantize_int(_tokens(gen))
    out_int = qb(x_int)
    qb.set_mode("fake")
    out_fake = qb(qb.qact0.dequantize_int(x_int))
    buf = io.BytesIO()
    torch.save(qb.state_dict(), buf)
    buf.seek(0)
    # A fresh conversion of a *different* float block: everything that matters must come from the file.
    fresh = QuantTimmVitBlock.from_float(_block(gen), get_config("fqvit-8/8/4"))
    fresh.load_state_dict(torch.load(buf, weights_only=True))
    assert torch.equal(fresh.set_mode("int")(x_int), out_int)
    assert torch.equal(fresh.set_mode("fake")(qb.qact0.dequantize_int(x_int)), out_fake)


@pytest.mark.parametrize("mode", ["int", "fake"])
def test_uncalibrated_forward_raises(mode, gen):
    qb = QuantTimmVitBlock.from_float(_block(gen)).set_mode(mode)
    x = _tokens(gen)
    with pytest.raises(NotCalibratedError, match="calibrat"):
        qb(x if mode == "fake" else torch.zeros(x.shape, dtype=torch.int8))


def test_empty_calibration_raises(gen):
    qb = QuantTimmVitBlock.from_float(_block(gen))
    with pytest.raises(ValueError, match="empty"):
        qb.calibrate([])


def test_int_mode_rejects_float_input_without_float_io(gen):
    _, qb = _calibrated(gen)
    with pytest.raises(TypeError, match="float_io"):
        qb(_tokens(gen))


def test_int_mode_refuses_8bit_lis(gen):
    _, qb = _calibrated(gen, "fqvit-8/8/8-lis8", mode="fake")
    qb.set_mode("int")
    with pytest.raises(NotImplementedError, match="4-bit LIS"):
        qb(torch.zeros(2, TOKENS, DIM, dtype=torch.int8))


def test_refuses_masks_and_causal(gen):
    _, qb = _calibrated(gen)
    x = torch.zeros(1, TOKENS, DIM, dtype=torch.int8)
    with pytest.raises(NotImplementedError, match="attn_mask"):
        qb(x, attn_mask=torch.zeros(TOKENS, TOKENS))
    with pytest.raises(NotImplementedError, match="is_causal"):
        qb(x, is_causal=True)


def _swiglu_block():
    from timm.layers import SwiGLU
    return timm_vit.Block(DIM, HEADS, mlp_layer=SwiGLU)


@pytest.mark.parametrize("make, feature", [
    (lambda: timm_vit.Block(DIM, HEADS, qk_norm=True), "qk_norm"),
    (lambda: timm_vit.Block(DIM, HEADS, init_values=1e-5), "layer scale"),
    (lambda: timm_vit.Block(DIM, HEADS, act_layer=nn.ReLU), "activation"),
    (lambda: timm_vit.Block(DIM, HEADS, act_layer=lambda: nn.GELU(approximate="tanh")), "activation"),
    (_swiglu_block, "MLP variant"),
    (lambda: timm_vit.ResPostBlock(DIM, HEADS), "only timm.models.vision_transformer.Block"),
])
def test_refuses_unsupported_variants(make, feature):
    with pytest.raises(NotImplementedError, match=feature):
        QuantTimmVitBlock.from_float(make())


def test_refuses_gated_attention():
    try:
        blk = timm_vit.Block(DIM, HEADS)
        blk.attn = type(blk.attn)(DIM, HEADS, gated=True)
    except TypeError:
        pytest.skip("this timm has no gated attention")
    with pytest.raises(NotImplementedError, match="gated"):
        QuantTimmVitBlock.from_float(blk)


def _assert_stages(agree: dict, what: str, floor: float = 99.99, lower: dict = None) -> None:
    for stage, percent in agree.items():
        bound = (lower or {}).get(stage, floor)
        assert percent >= bound, f"{what} {stage}: {percent:.4f} % of codes equal fake, below {bound} %"


@pytest.mark.parametrize("preset", ["fqvit-8/8/4", "fqvit-8/8/8", "minmax-8/8/8"])
def test_each_int_stage_reproduces_fake(preset, gen):
    """Every stage of the int block against the same stage of FQ-ViT's fake block on the same input
    codes: >= 99.99 % identical codes (issue target; the float32-limited stages of random weights:
    RANDOM_BLOCK_FLOORS). The differences left are FQ-ViT's own float32 rounding (docs/numerics.md).
    MinMax: fake uses a float LayerNorm (with eps), int the exact one with the same eps."""
    _, qb = _calibrated(gen, preset)
    x_int = qb.qact0.quantize_int(_tokens(gen, b=64))  # 64 * 17 tokens: ~50k codes per stage
    agree = fidelity.agreement(fidelity.stage_codes(qb, x_int))
    print(preset, {k: round(v, 4) for k, v in agree.items()})
    assert set(agree) == set(fidelity.STAGES)
    _assert_stages(agree, preset, lower=RANDOM_BLOCK_FLOORS)


def test_exact_layernorm_option_is_closer_to_float_than_fqvit(gen):
    """int_layernorm="exact" trades fake-equality for the float LayerNorm: it differs from fake's
    8-bit dyadic LayerNorm on a few percent of codes (FQ-ViT's approximation error)."""
    blk = _block(gen)
    calib = [_tokens(gen) for _ in range(3)]
    default = QuantTimmVitBlock.from_float(blk, get_config("fqvit-8/8/4")).calibrate(calib)
    exact = QuantTimmVitBlock.from_float(blk, QuantConfig(int_layernorm="exact")).calibrate(calib)
    assert default.norm1.kind == "dyadic" and exact.norm1.kind == "exact"
    x_int = default.qact0.quantize_int(_tokens(gen, b=32))
    agree_default = fidelity.agreement(fidelity.stage_codes(default, x_int))["norm1"]
    agree_exact = fidelity.agreement(fidelity.stage_codes(exact, x_int))["norm1"]
    print(f"norm1 vs fake: fqvit {agree_default:.3f} %, exact {agree_exact:.3f} %")
    assert agree_default >= 99.99 and agree_exact < agree_default


def test_stage_harness_detects_a_wrong_stage(gen):
    """The stage comparison is not vacuous: qkv with a 1 % smaller multiplier shows up there."""
    _, qb = _calibrated(gen)
    x_int = qb.qact0.quantize_int(_tokens(gen, b=16))
    with torch.no_grad():
        qb.attn.qkv.multiplier.copy_(qb.attn.qkv.multiplier.to(torch.int64) * 99 // 100)
    agree = fidelity.agreement(fidelity.stage_codes(qb, x_int))
    assert agree["qkv"] < 99.0 and agree["norm1"] >= 99.99


def _vit_block(dim, heads, gen):
    with torch.random.fork_rng():
        torch.manual_seed(int(torch.randint(0, 2**31, (), generator=gen)))
        blk = timm_vit.Block(dim, heads, mlp_ratio=4.0, qkv_bias=True).eval()
    with torch.no_grad():
        for p in blk.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.02)
    return blk


def _vit_tokens(gen, b, dim):
    x = torch.randn(b, 197, dim, generator=gen) * 0.7 + 0.1
    x[..., :6] *= 30.0
    return x




@pytest.mark.parametrize("dim,heads", [(384, 6), (768, 12)])
@pytest.mark.parametrize("preset", ["fqvit-8/8/4", "fqvit-8/8/8"])
def test_vit_s_and_vit_b_blocks_reproduce_fake(dim, heads, preset, gen):
    """Random-weight ViT-S / ViT-B blocks, 197 tokens: >= 99.99 % of fake's codes per stage (the
    float32-limited stages: see RANDOM_BLOCK_FLOORS)."""
    qb = QuantTimmVitBlock.from_float(_vit_block(dim, heads, gen), get_config(preset))
    qb.calibrate([_vit_tokens(gen, 4, dim) for _ in range(3)])
    x_int = qb.qact0.quantize_int(_vit_tokens(gen, 4, dim))
    agree = fidelity.agreement(fidelity.stage_codes(qb, x_int))
    got, fake = fidelity.block_codes(qb, x_int)
    block = 100.0 * (got == fake).double().mean().item()
    print(f"dim {dim} {preset}: {({k: round(v, 4) for k, v in agree.items()})}, block {block:.3f} %")
    _assert_stages(agree, f"dim {dim} {preset}", lower=RANDOM_BLOCK_FLOORS)
    assert block >= 95.0  # chained: rare stage flips spread through the next GEMM (reported, not a target)
