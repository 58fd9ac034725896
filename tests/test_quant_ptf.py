"""The problem PTF solves (FQ-ViT §3): LayerNorm inputs whose channels differ 20–100x in range.

A per-tensor MinMax quantizer must cover the widest channel, so the narrow channels fall onto a
handful of levels and the LayerNorm output of those channels is mostly noise. PTF gives every
channel its own power-of-two factor over one shared zero point (docs/fqvit.md §3.2), which
keeps up to 8x finer steps on the narrow channels. Errors are measured as SQNR (dB) of the
LayerNorm output against the float LayerNorm of the unquantized input.
"""

import torch
import torch.nn.functional as F

from fqvit_kernels import params
from fqvit_kernels.quant import int_layernorm_float
from fqvit_kernels.quant.observers import MinMaxObserver, PtfObserver, fake_quant

C, TOKENS = 96, 197
WIDE = {0: 20.0, 1: 50.0, 2: 100.0, 3: 80.0}  # channel -> range multiplier


def _sqnr(ref, approx):
    return 10 * torch.log10(ref.pow(2).mean() / (ref - approx).pow(2).mean()).item()


def _ln_inputs(gen, batches=4):
    spread = torch.ones(C)
    for c, f in WIDE.items():
        spread[c] = f
    offset = 0.2 * torch.randn(C, generator=gen)
    return [torch.randn(2, TOKENS, C, generator=gen) * 0.5 * spread + offset for _ in range(batches)]


def test_ptf_keeps_narrow_channels_that_minmax_loses(gen):
    batches = _ln_inputs(gen)
    gamma = 1 + 0.2 * torch.randn(C, generator=gen)
    beta = 0.1 * torch.randn(C, generator=gen)
    minmax, ptf = MinMaxObserver(8), PtfObserver(8)
    for x in batches:
        minmax.update(x)
        ptf.update(x)
    x = batches[-1]
    s_mm, zp_mm = minmax.compute(x)
    s_ptf, zp_ptf = ptf.compute(x)
    y = F.layer_norm(x, (C,), gamma, beta, eps=1e-6)
    y_mm = F.layer_norm(fake_quant(x, s_mm, zp_mm, 0, 255), (C,), gamma, beta, eps=1e-6)
    x_ptf = fake_quant(x, s_ptf, zp_ptf, 0, 255)
    y_ptf = F.layer_norm(x_ptf, (C,), gamma, beta, eps=1e-6)
    # FQ-ViT's integer-mode LayerNorm on the PTF input, and our integer kernel.
    s_out = torch.tensor((float(y.max()) - float(y.min())) / 255)
    y_ptf_int_formula = int_layernorm_float(x_ptf, s_ptf, s_out, gamma, beta)
    zp_out = int(round(-float(y.min()) / float(s_out))) - 128
    x_int = torch.ops.fqvit.quantize(x, s_ptf, int(zp_ptf) - 128)
    wm, b, sh = params.layernorm_params(gamma, beta, float(s_out))
    y_kernel = torch.ops.fqvit.ptf_layernorm(x_int.reshape(-1, C), int(zp_ptf) - 128, params.ptf_alpha(s_ptf), wm, b,
                                             sh, zp_out)
    y_kernel = (y_kernel.to(torch.float32).reshape(x.shape) - zp_out) * s_out

    # The same per-tensor output grid for the MinMax path (LN output quantized by the next QAct).
    y_mm_q = fake_quant(y_mm, s_out, torch.tensor(float(zp_out + 128)), 0, 255)

    narrow = torch.tensor([c not in WIDE for c in range(C)])
    report = {
        "minmax": (_sqnr(y[..., narrow], y_mm[..., narrow]), _sqnr(y, y_mm)),
        "minmax+output grid": (_sqnr(y[..., narrow], y_mm_q[..., narrow]), _sqnr(y, y_mm_q)),
        "ptf": (_sqnr(y[..., narrow], y_ptf[..., narrow]), _sqnr(y, y_ptf)),
        "ptf+int-LN formula": (_sqnr(y[..., narrow], y_ptf_int_formula[..., narrow]), _sqnr(y, y_ptf_int_formula)),
        "ptf+ptf_layernorm op": (_sqnr(y[..., narrow], y_kernel[..., narrow]), _sqnr(y, y_kernel)),
    }
    for name, (narrow_db, all_db) in report.items():
        print(f"{name:>22}: LN output SQNR narrow channels {narrow_db:6.2f} dB, all channels {all_db:6.2f} dB")
    alpha = ptf.alpha
    print(f"PTF alphas: wide channels {alpha[list(WIDE)].tolist()}, narrow channels max {alpha[narrow].max().item()}")

    # MinMax: one step of (range / 255) ~ 1.2 units against narrow channels of std 0.5: they are lost
    # (measured 6-8 dB over random draws).
    assert report["minmax"][0] < 11.0
    # PTF: the narrow channels keep the finest scale (alpha 0), 8x finer, >= 15 dB better. The wide
    # channels take coarser ones, except that channel 0 (20x) may keep alpha 0 when the widest
    # channel (100x) draws an outlier that stretches the shared range until channel 0 fits into 1/8
    # of it (about one draw in 800; PTF then rightly prefers the finer step).
    assert (alpha[narrow] == 0).all() and (alpha[[1, 2, 3]] >= 1).all() and alpha[2] == 3
    assert report["ptf"][0] > report["minmax"][0] + 15.0
    assert report["ptf"][1] > report["minmax"][1] + 10.0
    # With the LN output on its 8-bit grid (whose range the wide channels set), the integer
    # LayerNorms on the PTF input still beat MinMax on the same output grid by a wide margin.
    for name in ("ptf+int-LN formula", "ptf+ptf_layernorm op"):
        assert report[name][0] > report["minmax+output grid"][0] + 6.0, name
        assert report[name][1] > report["minmax+output grid"][1] + 4.0, name


def test_ptf_zero_point_is_shared_and_from_coarsest_scale(gen):
    batches = _ln_inputs(gen, batches=2)
    obs = PtfObserver(8)
    for x in batches:
        obs.update(x)
    s, zp = obs.compute(batches[-1])
    lo = min(float(b.min()) for b in batches)
    hi = max(float(b.max()) for b in batches)
    s8 = (hi - lo) / 255
    assert zp.numel() == 1 and int(zp) == max(0, min(255, round(-lo / s8)))
    # Per-channel scales are s8 / 8 * 2**alpha: the smallest one belongs to the smallest alpha.
    alpha = obs.alpha.to(torch.float64)
    assert ((0 <= alpha) & (alpha <= 3)).all()
    torch.testing.assert_close(s.to(torch.float64), s8 / 8 * torch.pow(2.0, alpha), rtol=1e-5, atol=0)
