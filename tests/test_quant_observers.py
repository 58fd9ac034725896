"""``fake`` mode against an independent transcription of the official FQ-ViT code.

The first half of this module transcribes megvii-research/FQ-ViT (HEAD 5daf591) from
docs/fqvit.md §2–§6 in the official code's own structure — observers, ``UniformQuantizer``,
``QAct``/``QLinear``/``QIntLayerNorm``/``QIntSoftmax`` with the ``calibrate`` / ``last_calibrate`` /
``quant`` flags and the ViT ``Block`` forward. It shares no code with ``fqvit_kernels``. The tests
then run both on the same weights and calibration data and compare observers' scales and zero
points, PTF factors, LIS outputs, the integer-mode LayerNorm and whole blocks.
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fqvit_kernels.quant import get_config, int_layernorm_float, log_int_softmax_float, quantize_weight
from fqvit_kernels.quant import observers as ours_obs
from fqvit_kernels.quant.quantizers import lis_codes_float
from fqvit_kernels import params, reference as ref

# ----------------------------------------------------------------------------------------------
# Transcription of the official code
# ----------------------------------------------------------------------------------------------
EPS = torch.finfo(torch.float32).eps


class BitType:
    def __init__(self, bits, signed):
        self.bits, self.signed = bits, signed
        self.lower_bound = -(2 ** (bits - 1)) if signed else 0
        self.upper_bound = 2 ** (bits - 1) - 1 if signed else 2**bits - 1


INT8, UINT8, UINT4 = BitType(8, True), BitType(8, False), BitType(4, False)


def lp_loss(pred, tgt, p=2.0):
    return (pred - tgt).abs().pow(p).mean()


class Observer:
    def __init__(self, module_type, bit_type, calibration_mode):
        self.module_type, self.bit_type, self.calibration_mode = module_type, bit_type, calibration_mode
        self.symmetric = bit_type.signed
        self.max_val = self.min_val = None

    def reshape_tensor(self, v):
        if not isinstance(v, torch.Tensor):
            v = torch.tensor(v)
        v = v.detach()
        if self.module_type == "linear_weight":
            return v.reshape(v.shape[0], -1)
        if len(v.shape) == 4:
            v = v.permute(0, 2, 3, 1)
        v = v.reshape(-1, v.shape[-1])
        return v.transpose(0, 1)

    def minmax_params(self, max_val, min_val):
        qmax, qmin = self.bit_type.upper_bound, self.bit_type.lower_bound
        if self.symmetric:
            max_val = torch.max(-min_val, max_val)
            scale = max_val / (float(qmax - qmin) / 2)
            scale.clamp_(EPS)
            zero_point = torch.zeros_like(max_val, dtype=torch.int64)
        else:
            scale = (max_val - min_val) / float(qmax - qmin)
            scale.clamp_(EPS)
            zero_point = qmin - torch.round(min_val / scale)
            zero_point.clamp_(qmin, qmax)
        return scale, zero_point


class MinmaxObserver(Observer):
    def update(self, v):
        v = self.reshape_tensor(v)
        cur_max, cur_min = v.max(axis=1).values, v.min(axis=1).values
        if self.max_val is None:
            self.max_val, self.min_val = cur_max, cur_min
        else:
            self.max_val = torch.max(cur_max, self.max_val)
            self.min_val = torch.min(cur_min, self.min_val)
        if self.calibration_mode == "layer_wise":
            self.max_val, self.min_val = self.max_val.max(), self.min_val.min()

    def get_quantization_params(self, *args, **kwargs):
        return self.minmax_params(self.max_val, self.min_val)


class EmaObserver(MinmaxObserver):
    ema_sigma = 0.01

    def update(self, v):
        v = self.reshape_tensor(v)
        cur_max, cur_min = v.max(axis=1).values, v.min(axis=1).values
        if self.max_val is None:
            self.max_val, self.min_val = cur_max, cur_min
        else:
            self.max_val = self.max_val + self.ema_sigma * (cur_max - self.max_val)
            self.min_val = self.min_val + self.ema_sigma * (cur_min - self.min_val)
        if self.calibration_mode == "layer_wise":
            self.max_val, self.min_val = self.max_val.max(), self.min_val.min()


class PercentileObserver(MinmaxObserver):
    sigma, alpha = 0.01, 0.99999

    def update(self, v):
        assert self.calibration_mode == "layer_wise"
        v = self.reshape_tensor(v).reshape(-1).float()
        try:
            cur_max = torch.quantile(v, self.alpha)
            cur_min = torch.quantile(v, 1.0 - self.alpha)
        except RuntimeError:
            cur_max = torch.tensor(np.percentile(v.numpy(), self.alpha * 100), dtype=torch.float32)
            cur_min = torch.tensor(np.percentile(v.numpy(), (1 - self.alpha) * 100), dtype=torch.float32)
        if self.max_val is None:
            self.max_val, self.min_val = cur_max, cur_min
        else:
            self.max_val = self.max_val + self.sigma * (cur_max - self.max_val)
            self.min_val = self.min_val + self.sigma * (cur_min - self.min_val)


class OmseObserver(MinmaxObserver):
    def get_quantization_params(self, inputs):
        qmax, qmin = self.bit_type.upper_bound, self.bit_type.lower_bound
        best_score = 1e10
        for i in range(90):
            new_max = self.max_val * (1.0 - (i * 0.01))
            new_min = self.min_val * (1.0 - (i * 0.01))
            new_scale = (new_max - new_min) / float(qmax - qmin)
            new_scale.clamp_(EPS)
            new_zp = qmin - torch.round(new_min / new_scale)
            new_zp.clamp_(qmin, qmax)
            inputs_q = ((inputs / new_scale + new_zp).round().clamp(qmin, qmax) - new_zp) * new_scale
            score = lp_loss(inputs, inputs_q)
            if score < best_score:
                best_score, best_min, best_max = score, new_min, new_max
        scale = (best_max - best_min) / float(qmax - qmin)
        scale.clamp_(EPS)
        zero_point = qmin - torch.round(best_min / scale)
        zero_point.clamp_(qmin, qmax)
        return scale, zero_point


class PtfObserver(MinmaxObserver):
    def get_quantization_params(self, inputs):
        qmax, qmin = self.bit_type.upper_bound, self.bit_type.lower_bound
        max_val_t, min_val_t = self.max_val.max(), self.min_val.min()
        scale8 = (max_val_t - min_val_t) / float(qmax - qmin)
        scale8.clamp_(EPS)
        scale4 = scale8 / 2
        scale2 = scale4 / 2
        scale1 = scale2 / 2
        zero_point = qmin - torch.round(min_val_t / scale8)
        zero_point.clamp_(qmin, qmax)
        scale_mask = torch.ones_like(self.max_val)
        for j in range(inputs.shape[2]):
            data = inputs[..., j].unsqueeze(-1)
            scores = []
            for s in (scale1, scale2, scale4, scale8):
                data_q = ((data / s + zero_point).round().clamp(qmin, qmax) - zero_point) * s
                scores.append(lp_loss(data, data_q))
            scale_mask[j] *= 2 ** scores.index(min(scores))
        return scale1 * scale_mask, zero_point


OBSERVERS = dict(minmax=MinmaxObserver, ema=EmaObserver, percentile=PercentileObserver, omse=OmseObserver,
                 ptf=PtfObserver)


class UniformQuantizer:
    def __init__(self, bit_type, observer):
        self.bit_type, self.observer = bit_type, observer
        self.scale = self.zero_point = None

    def update_quantization_params(self, *args):
        self.scale, self.zero_point = self.observer.get_quantization_params(*args)

    def __call__(self, x):
        shape = (1, -1) if x.dim() == 2 else ((1, 1, -1) if x.dim() == 3 else (1, -1, 1, 1))
        scale = self.scale.reshape(shape)
        zp = self.zero_point.reshape(shape)
        q = (x / scale + zp).round().clamp(self.bit_type.lower_bound, self.bit_type.upper_bound)
        return (q - zp) * scale


class Flags:
    calibrate = False
    last_calibrate = False
    quant = False


class QAct:
    def __init__(self, flags, observer_str, calibration_mode="layer_wise"):
        self.flags = flags
        self.quantizer = UniformQuantizer(UINT8, OBSERVERS[observer_str]("activation", UINT8, calibration_mode))

    def __call__(self, x):
        if self.flags.calibrate:
            self.quantizer.observer.update(x)
            if self.flags.last_calibrate:
                self.quantizer.update_quantization_params(x)
        if not self.flags.quant:
            return x
        return self.quantizer(x)


class QLinear:
    def __init__(self, flags, linear):
        self.flags = flags
        self.weight, self.bias = linear.weight.detach().clone(), None if linear.bias is None else linear.bias.detach().clone()
        obs = MinmaxObserver("linear_weight", INT8, "channel_wise")
        self.quantizer = UniformQuantizer(INT8, obs)

    def __call__(self, x):
        if self.flags.calibrate:
            self.quantizer.observer.update(self.weight)
            if self.flags.last_calibrate:
                self.quantizer.update_quantization_params(x)
        if not self.flags.quant:
            return F.linear(x, self.weight, self.bias)
        q = (self.weight / self.quantizer.scale.reshape(-1, 1)).round().clamp(-128, 127)
        return F.linear(x, q * self.quantizer.scale.reshape(-1, 1), self.bias)


class QIntLayerNorm:
    def __init__(self, flags, norm, int_mode):
        self.flags, self.weight, self.bias, self.eps = flags, norm.weight.detach(), norm.bias.detach(), norm.eps
        self.int_mode = int_mode
        self.shape = norm.normalized_shape

    @staticmethod
    def get_MN(x):
        bit = 7
        N = torch.clamp(bit - torch.floor(torch.log2(x)), 0, 31)
        M = torch.clamp(torch.floor(x * torch.pow(2, N)), 0, 2 ** (bit + 1) - 1)
        return M, N

    def __call__(self, x, in_quantizer, out_quantizer):
        if not (self.int_mode and self.flags.quant):
            return F.layer_norm(x, self.shape, self.weight, self.bias, self.eps)
        in_scale = in_quantizer.scale.reshape(1, 1, -1)
        out_scale = out_quantizer.scale.reshape(1, 1, -1)
        channel_nums = x.shape[-1]
        x_q = (x / in_scale).round()
        in_scale1 = in_scale.min()
        x_q = x_q * (in_scale / in_scale1).round()
        mean_x_q = x_q.mean(dim=-1) * in_scale1
        std_x_q = (in_scale1 / channel_nums) * torch.sqrt(channel_nums * (x_q**2).sum(dim=-1) - x_q.sum(dim=-1) ** 2)
        A = (in_scale1 / std_x_q).unsqueeze(-1) * self.weight.reshape(1, 1, -1) / out_scale
        A_sign = A.sign()
        M, N = self.get_MN(A.abs())
        B = ((self.bias.reshape(1, 1, -1) - (mean_x_q / std_x_q).unsqueeze(-1) * self.weight.reshape(1, 1, -1))
             / out_scale * torch.pow(2, N)).round()
        x_q = ((A_sign * M * x_q + B) / torch.pow(2, N)).round()
        return x_q * out_scale


def int_softmax(x, scaling_factor):
    def int_polynomial(x_int, scaling_factor):
        coef = [0.35815147, 0.96963238, 1.0]
        coef[1] /= coef[0]
        coef[2] /= coef[0]
        b_int = torch.floor(coef[1] / scaling_factor)
        c_int = torch.floor(coef[2] / scaling_factor**2)
        z = x_int + b_int
        z = x_int * z
        return z + c_int

    def int_exp(x_int, scaling_factor):
        x0, n = -0.6931, 30
        x0_int = torch.floor(x0 / scaling_factor)
        x_int = torch.max(x_int, n * x0_int)
        q = torch.floor(x_int / x0_int)
        r = x_int - x0_int * q
        exp_int = int_polynomial(r, scaling_factor)
        return torch.clamp(torch.floor(exp_int * 2 ** (n - q)), min=0)

    x_int = x / scaling_factor
    x_int_max, _ = x_int.max(dim=-1, keepdim=True)
    x_int = x_int - x_int_max
    exp_int = int_exp(x_int, scaling_factor)
    return exp_int, exp_int.sum(dim=-1, keepdim=True)


def log_round(x):
    x_log_floor = x.log2().floor()
    big = x_log_floor
    extra_mask = (x - 2**big) >= 2 ** (big - 1)
    big[extra_mask] = big[extra_mask] + 1
    return big


def lis(x, scale, bits=4):
    exp_int, exp_int_sum = int_softmax(x, scale)
    softmax_out = torch.round(exp_int_sum / exp_int)
    rounds = log_round(softmax_out)
    mask = rounds >= 2**bits
    qlog = torch.clamp(rounds, 0, 2**bits - 1)
    deq = 2 ** (-qlog)
    deq[mask] = 0
    return deq


class QIntSoftmax:
    def __init__(self, flags, lis_on, bits, observer_str):
        self.flags, self.lis_on, self.bits = flags, lis_on, bits
        self.quantizer = UniformQuantizer(UINT8, OBSERVERS["minmax" if lis_on else observer_str]("activation", UINT8, "layer_wise"))

    def __call__(self, x, scale):
        if self.lis_on and scale is not None:
            return lis(x, scale, self.bits)
        x = x.softmax(dim=-1)
        if self.flags.calibrate:
            self.quantizer.observer.update(x)
            if self.flags.last_calibrate:
                self.quantizer.update_quantization_params(x)
        if not self.flags.quant:
            return x
        return self.quantizer(x)


class Block:
    """FQ-ViT ``Block`` (+ ``Attention``, ``Mlp``) built from a timm Block; ``cfg`` = (ptf, lis, attn_bits, observer)."""

    def __init__(self, blk, ptf, lis_on, attn_bits, observer):
        self.flags = f = Flags()
        ln_obs, ln_mode = ("ptf", "channel_wise") if ptf else (observer, "layer_wise")
        self.qact_in = QAct(f, ln_obs, ln_mode)
        self.norm1 = QIntLayerNorm(f, blk.norm1, ptf)
        self.qact1 = QAct(f, observer)
        self.qkv = QLinear(f, blk.attn.qkv)
        self.attn_qact1 = QAct(f, observer)
        self.qact_attn1 = QAct(f, observer)
        self.softmax = QIntSoftmax(f, lis_on, attn_bits, observer)
        self.attn_qact2 = QAct(f, observer)
        self.proj = QLinear(f, blk.attn.proj)
        self.attn_qact3 = QAct(f, observer)
        self.qact2 = QAct(f, ln_obs, ln_mode)
        self.norm2 = QIntLayerNorm(f, blk.norm2, ptf)
        self.qact3 = QAct(f, observer)
        self.fc1 = QLinear(f, blk.mlp.fc1)
        self.mlp_qact1 = QAct(f, observer)
        self.fc2 = QLinear(f, blk.mlp.fc2)
        self.mlp_qact2 = QAct(f, observer)
        self.qact4 = QAct(f, ln_obs, ln_mode)
        self.heads = blk.attn.num_heads
        self.scale = blk.attn.head_dim ** -0.5

    def attention(self, x):
        B, N, C = x.shape
        x = self.attn_qact1(self.qkv(x))
        qkv = x.reshape(B, N, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = (q @ k.transpose(-2, -1)) * self.scale
        attn = self.qact_attn1(attn)
        attn = self.softmax(attn, self.qact_attn1.quantizer.scale)
        x = (attn @ v).transpose(1, 2).reshape(B, N, C)
        x = self.attn_qact2(x)
        return self.attn_qact3(self.proj(x))

    def mlp(self, x):
        x = self.mlp_qact1(F.gelu(self.fc1(x)))
        return self.mlp_qact2(self.fc2(x))

    def __call__(self, x):
        x = self.qact_in(x)
        last = self.qact_in.quantizer
        x = self.qact2(x + self.attention(self.qact1(self.norm1(x, last, self.qact1.quantizer))))
        x = self.qact4(x + self.mlp(self.qact3(self.norm2(x, self.qact2.quantizer, self.qact3.quantizer))))
        return x

    def calibrate(self, batches):
        self.flags.calibrate = True
        for i, b in enumerate(batches):
            self.flags.last_calibrate = i == len(batches) - 1
            with torch.no_grad():
                self(b)
        self.flags.calibrate = False
        self.flags.quant = True


# ----------------------------------------------------------------------------------------------
# Tests
# ----------------------------------------------------------------------------------------------


def _activations(gen, batches=3, b=4, n=17, c=48, outliers=3):
    """[B, N, C] activations with a few wide channels, like a ViT residual stream."""
    out = []
    for _ in range(batches):
        x = torch.randn(b, n, c, generator=gen) * 0.7 + 0.2
        x[..., :outliers] *= 30.0
        out.append(x)
    return out


def test_weight_quantizer_symmetric_127_5(gen):
    w = torch.randn(24, 40, generator=gen) * 0.05
    w[3, 7] = 0.9  # the extreme of row 3 maps to 127.5 -> rounds (half to even) to 128 -> clips to 127
    codes, scale = quantize_weight(w)
    obs = MinmaxObserver("linear_weight", INT8, "channel_wise")
    obs.update(w)
    s_ref, _ = obs.get_quantization_params()
    assert torch.equal(scale, s_ref)
    expected = (w / s_ref.reshape(-1, 1)).round().clamp(-128, 127)
    assert torch.equal(codes.float(), expected)
    assert codes.dtype == torch.int8 and codes[3, 7] == 127
    assert torch.allclose(scale[3], torch.tensor(0.9 / 127.5))


@pytest.mark.parametrize("kind", ["minmax", "ema", "percentile", "omse"])
def test_layerwise_observer_scale_and_zero_point(kind, gen):
    batches = _activations(gen)
    ours = {"minmax": ours_obs.MinMaxObserver, "ema": ours_obs.EmaObserver,
            "percentile": ours_obs.PercentileObserver, "omse": ours_obs.OmseObserver}[kind](8)
    theirs = OBSERVERS[kind]("activation", UINT8, "layer_wise")
    for x in batches:
        ours.update(x)
        theirs.update(x)
    s, zp = ours.compute(batches[-1])
    s_ref, zp_ref = theirs.get_quantization_params(batches[-1])
    assert torch.equal(s.reshape(()), s_ref.reshape(())), (s, s_ref)
    assert torch.equal(zp.reshape(()).float(), zp_ref.reshape(()).float()), (zp, zp_ref)


def test_ema_first_batch_dominates(gen):
    a, b = _activations(gen, batches=2)
    b = b * 10
    obs = ours_obs.EmaObserver(8)
    obs.update(a)
    obs.update(b)
    assert torch.allclose(obs.max_val, a.max() + 0.01 * (b.max() - a.max()))


def test_percentile_observer_is_layer_wise_only():
    with pytest.raises(ValueError, match="layer-wise"):
        ours_obs.PercentileObserver(8, channel_wise=True)


def test_omse_shrinks_range_with_outlier(gen):
    # A uniform bulk on [0, 1] plus a lone outlier at 1.6: with ~150k bulk values the rounding noise
    # saved by a narrower range outweighs clipping one value (optimum near a 19 % shrink), so the
    # search must leave the min-max range whatever the draw.
    x = torch.rand(8, 197, 96, generator=gen)
    x[0, 0, 0] = 1.6
    obs = ours_obs.OmseObserver(8)
    obs.update(x)
    s, _ = obs.compute(x)
    s_minmax = (x.max() - x.min()) / 255
    assert s < s_minmax
    theirs = OBSERVERS["omse"]("activation", UINT8, "layer_wise")
    theirs.update(x)
    assert torch.equal(s.reshape(()), theirs.get_quantization_params(x)[0].reshape(()))


def test_ptf_scales_alphas_zero_point(gen):
    batches = _activations(gen, c=64, outliers=4)
    ours, theirs = ours_obs.PtfObserver(8), OBSERVERS["ptf"]("activation", UINT8, "channel_wise")
    for x in batches:
        ours.update(x)
        theirs.update(x)
    s, zp = ours.compute(batches[-1])
    s_ref, zp_ref = theirs.get_quantization_params(batches[-1])
    assert torch.equal(s, s_ref)
    assert torch.equal(zp.float(), zp_ref.float())
    # zp comes from the coarsest scale s8 = range / 255 over all channels and batches.
    lo = min(float(b.min()) for b in batches)
    hi = max(float(b.max()) for b in batches)
    assert zp == round(-lo / ((hi - lo) / 255))
    assert ours.alpha[:4].min() >= 2, "wide channels get large factors"
    assert ours.alpha[4:].max() <= 1, "narrow channels keep fine scales"
    assert torch.allclose(s, s.min() * 2.0 ** (ours.alpha - ours.alpha.min()).float())


def test_ptf_ties_pick_smallest_factor():
    # Channel 1 is all zeros (every candidate has error 0: a tie -> alpha 0); channel 0 spans the range.
    x = torch.zeros(2, 5, 2)
    x[..., 0] = torch.linspace(-3.0, 5.0, 10).reshape(2, 5)
    obs = ours_obs.PtfObserver(8)
    obs.update(x)
    obs.compute(x)
    assert obs.alpha[1] == 0


@pytest.mark.parametrize("bits", [4, 8])
def test_lis_fake_equals_transcription(bits, gen):
    # Scores on the qact_attn1 grid, as in the block: x = (q - zp) * s in float32 (x / s not exact).
    for s in (0.013, 0.05, 0.11, 0.4):
        scale = torch.tensor(s, dtype=torch.float32)
        codes = torch.randint(0, 256, (3, 4, 17, 17), generator=gen).float()
        x = (codes - 100.0) * scale
        assert torch.equal(log_int_softmax_float(x, scale, bits), lis(x.clone(), scale, bits))


def test_lis_fake_codes_vs_integer_table(gen):
    """Official float32 LIS vs the integer LIS op (which reproduces its float32 exponents and ratio):
    only the float32 summation order of E can still differ; measure (not assume) how often."""
    total = differ = 0
    for s in (0.02, 0.05, 0.1, 0.2):
        scale = torch.tensor(s, dtype=torch.float32)
        stored = torch.randint(-128, 128, (16, 197), generator=gen, dtype=torch.int8)
        zp = int(torch.randint(-40, 40, (), generator=gen))
        x = (stored.float() - zp) * scale
        k_fake, mask = lis_codes_float(x, scale, 4)
        k_fake = torch.where(mask, torch.full_like(k_fake, 255), k_fake).to(torch.uint8)
        k_int = ref.log_int_softmax(stored, params.lis_exp_table(s, zp), 4)
        total += k_int.numel()
        differ += int((k_int != k_fake).sum())
    print(f"LIS float32 vs integer: {differ} of {total} codes differ")
    assert differ <= max(1, total // 10000)  # at most 1e-4 of the codes (measured: none)


def test_int_layernorm_fake_equals_transcription(gen):
    x_batches = _activations(gen, c=64, outliers=4)
    obs = ours_obs.PtfObserver(8)
    for x in x_batches:
        obs.update(x)
    s_in, zp = obs.compute(x_batches[-1])
    x = ((x_batches[-1] / s_in + zp).round().clamp(0, 255) - zp) * s_in
    norm = torch.nn.LayerNorm(64, eps=1e-6)
    with torch.no_grad():
        norm.weight.copy_(1 + 0.3 * torch.randn(64, generator=gen))
        norm.bias.copy_(0.2 * torch.randn(64, generator=gen))
    out_q = UniformQuantizer(UINT8, None)
    out_q.scale, out_q.zero_point = torch.tensor(0.03), torch.tensor(120.0)
    in_q = UniformQuantizer(UINT8, None)
    in_q.scale, in_q.zero_point = s_in, zp
    flags = Flags()
    flags.quant = True
    expected = QIntLayerNorm(flags, norm, True)(x, in_q, out_q)
    got = int_layernorm_float(x, s_in, out_q.scale, norm.weight.detach(), norm.bias.detach())
    assert torch.equal(got, expected)
    # And it is a LayerNorm: M / 2**N carries A with a relative error below 2**-7 (M >= 128), so an
    # output of |y| / s_out LSB is off by at most |y| / s_out / 128 LSB plus two roundings.
    y = F.layer_norm(x, (64,), norm.weight, norm.bias, 1e-6).detach()
    lsb_err = ((got - y) / 0.03).abs()
    bound = (y / 0.03).abs() / 128 + 1.0
    assert (lsb_err <= bound + 1e-3).all()
    assert (lsb_err <= 1).float().mean() > 0.98


def _timm_block(gen, dim=48, heads=4):
    from timm.models.vision_transformer import Block

    blk = Block(dim, heads, mlp_ratio=2.0, qkv_bias=True).eval()
    with torch.no_grad():
        for p in blk.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.05)
    return blk


FAKE_QACTS = {  # our module path -> transcription attribute
    "qact0": "qact_in", "qact1": "qact1", "attn.qact1": "attn_qact1", "attn.qact_attn1": "qact_attn1",
    "attn.qact2": "attn_qact2", "attn.qact3": "attn_qact3", "qact2": "qact2", "qact3": "qact3",
    "mlp.qact1": "mlp_qact1", "mlp.qact2": "mlp_qact2", "qact4": "qact4",
}


@pytest.mark.parametrize("preset", ["fqvit-8/8/4", "fqvit-8/8/8", "fqvit-8/8/8-lis8", "minmax-8/8/8", "omse-8/8/8",
                                    "percentile-8/8/8", "ema-8/8/8"])
def test_fake_block_equals_transcription(preset, gen):
    from fqvit_kernels.nn import QuantTimmVitBlock

    cfg = get_config(preset)
    blk = _timm_block(gen)
    batches = _activations(gen, batches=3, b=4, n=17, c=48, outliers=3)
    ours = QuantTimmVitBlock.from_float(blk, cfg).calibrate(batches, mode="fake")
    theirs = Block(blk, cfg.ptf, cfg.lis, cfg.attn_bits, cfg.observer)
    theirs.calibrate(batches)
    modules = dict(ours.named_modules())
    for path, attr in FAKE_QACTS.items():
        q_ref = getattr(theirs, attr).quantizer
        assert torch.equal(modules[path].scale, q_ref.scale.reshape(-1).float()), path
        assert float(modules[path].zero_point) == float(q_ref.zero_point), path
    if not cfg.lis:
        assert torch.equal(ours.attn.softmax.qact.scale, theirs.softmax.quantizer.scale.reshape(-1))
    for name, lin in (("attn.qkv", theirs.qkv), ("attn.proj", theirs.proj), ("mlp.fc1", theirs.fc1),
                      ("mlp.fc2", theirs.fc2)):
        assert torch.equal(modules[name].weight_scale, lin.quantizer.scale), name
    x = _activations(gen, batches=1, b=6)[0]
    with torch.no_grad():
        got = ours(x)
        expected = theirs(x)
    # Same float32 operations in the same order: equal up to matmul blocking differences, i.e. at
    # most one grid step on a vanishing fraction of elements.
    step = ours.qact4.scale
    diff = ((got - expected).abs() / step)
    assert (diff > 0.5).float().mean() < 1e-3, f"{(diff > 0.5).sum()} elements differ by a grid step"


@pytest.mark.parametrize("below_limit", [True, False])
def test_percentile_large_tensor_fallback_matches_the_official_code(gen, below_limit, monkeypatch):
    """Above TORCH_QUANTILE_LIMIT (2**24, a ViT-B calibration batch) the quantiles come from numpy as
    in FQ-ViT. The limit is lowered here so the fallback runs on a small tensor; FQ-ViT's own path
    (torch.quantile, or numpy where torch refuses) is the transcription above with the same limit."""
    x = torch.randn(4, 50, 30, generator=gen) * 3 + 0.5
    x[0, 0, :5] = 40.0  # a few outliers that the 0.99999 quantile interpolates between
    if not below_limit:
        monkeypatch.setattr(ours_obs.PercentileObserver, "TORCH_QUANTILE_LIMIT", x.numel() - 1)
    ours = ours_obs.PercentileObserver(8, alpha=0.999)
    lo, hi = ours._quantiles(x)
    flat = x.reshape(-1).float()
    if below_limit:  # FQ-ViT: torch.quantile on the float32 tensor
        expected = torch.quantile(flat, 0.999), torch.quantile(flat, 1 - 0.999)
    else:  # FQ-ViT's except branch: numpy on the float32 array, back to a float32 tensor
        expected = (torch.tensor(np.percentile(flat.numpy(), 0.999 * 100), dtype=torch.float32),
                    torch.tensor(np.percentile(flat.numpy(), (1 - 0.999) * 100), dtype=torch.float32))
    assert hi.dtype == torch.float32 and lo.dtype == torch.float32
    assert torch.equal(hi, expected[0]) and torch.equal(lo, expected[1])
    data = flat.double().numpy()  # and the quantiles are the right ones (not swapped, not 100x off)
    assert float(np.quantile(data, 0.998)) < float(hi) <= float(data.max())
    assert float(data.min()) <= float(lo) < float(np.quantile(data, 0.002))


def test_omse_keeps_the_full_range_when_it_is_best():
    """A uniform grid of values over [min, max]: any shrink clips the ends and costs more than it
    saves, so the widest candidate (i = 0) must win (a search that skips it, or starts at 1 %, fails)."""
    x = torch.linspace(-1.0, 3.0, 20001).reshape(1, -1)
    obs = ours_obs.OmseObserver(8)
    obs.update(x)
    s, zp = obs.compute(x)
    s_full, zp_full = ours_obs.asymmetric_params(x.min(), x.max(), 0, 255)
    assert torch.equal(s.reshape(()), s_full.reshape(())) and torch.equal(zp.reshape(()), zp_full.reshape(()))
    theirs = OBSERVERS["omse"]("activation", UINT8, "layer_wise")
    theirs.update(x)
    assert torch.equal(s.reshape(()), theirs.get_quantization_params(x)[0].reshape(()))


def test_omse_ties_keep_the_widest_range():
    """Inputs that every candidate quantizes without error (all zeros, zero on every grid): all
    scores tie at 0 and the strict comparison keeps the first, widest range."""
    obs = ours_obs.OmseObserver(8)
    obs.update(torch.tensor([[-2.0, 0.0, 6.0]]))
    s, _ = obs.compute(torch.zeros(1, 64))
    s_full, _ = ours_obs.asymmetric_params(torch.tensor(-2.0), torch.tensor(6.0), 0, 255)
    assert torch.equal(s.reshape(()), s_full.reshape(()))
