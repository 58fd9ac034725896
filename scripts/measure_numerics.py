"""Measure each integer op against the float operation it replaces; prints the table used in
docs/numerics.md. Usage: python scripts/measure_numerics.py [--seed N]"""

import argparse
import warnings

import torch
import torch.nn.functional as F

warnings.simplefilter("ignore", RuntimeWarning)
from fqvit_kernels import params, reference as ref, testing  # noqa: E402


def lsb_stats(out, expected):
    diff = (out.to(torch.float64) - expected).abs()
    return f"{(diff == 0).double().mean() * 100:.3f} % exact, {(diff <= 1).double().mean() * 100:.4f} % <= 1 LSB, max {int(diff.max())}"


def float_linear(case):
    x, w = case.args[:2]
    f = case.floats
    return ((x.double() - f["x_zero_point"]) * f["x_scale"]) @ (w.double() * f["weight_scale"][:, None]).t() + f["bias"]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--seed", type=int, default=0)
    gen = torch.Generator().manual_seed(p.parse_args().seed)
    m = 8 * 197

    outs, exps = [], []
    for n, k in [(2304, 768), (768, 768), (3072, 768), (768, 3072)]:
        case = testing.linear_case(m, n, k, gen)
        f = case.floats
        outs.append(case.run().flatten())
        exps.append(torch.clamp(torch.round(float_linear(case) / f["out_scale"]) + f["out_zero_point"], -128, 127).flatten())
    print("int8_linear requant vs float (ViT-B linears, M=1576):", lsb_stats(torch.cat(outs), torch.cat(exps)))

    case = testing.linear_case(m, 768, 3072, gen, "residual")
    f = case.floats
    branch = torch.ops.fqvit.int8_linear(*case.args[:6]).double()
    real = (branch - f["out_zero_point"]) * f["out_scale"] + (case.args[8].double() - f["residual_zero_point"]) * f["residual_scale"]
    exp = torch.clamp(torch.round(real / f["final_scale"]) + f["final_zero_point"], -128, 127)
    print("int8_linear residual+PTF requant vs float add:", lsb_stats(case.run(), exp))

    for _ in range(2):
        case = testing.linear_case(m, 3072, 768, gen, "gelu")
        f = case.floats
        g = F.gelu(float_linear(case))
        exp = torch.clamp(torch.round(g / f["gelu_scale"]) + f["gelu_zero_point"], -128, 127)
        table = case.args[6]
        print(f"int8_linear GELU step table (L={table.numel()}, 2**{case.args[7]} grid steps per cell) vs float64 "
              "GELU of the float linear output:", lsb_stats(case.run(), exp))

    for c in (384, 768, 1024):
        case = testing.layernorm_case(m, c, gen, wide_channels=6)
        x_q, zp, _, _, _, _, out_zp = case.args
        f = case.floats
        y = F.layer_norm((x_q.double() - zp) * f["scale"], (c,), f["gamma"], f["beta"], eps=1e-12)
        exp = torch.clamp(torch.round(y / f["out_scale"]) + out_zp, -128, 127)
        print(f"ptf_layernorm C={c} vs float LayerNorm on the dequantized input:", lsb_stats(case.run(), exp))
        dy = testing.layernorm_dyadic_case(m, c, gen, wide_channels=6)
        x_q, zp, _, _, _, _, out_zp = dy.args
        f = dy.floats
        y = F.layer_norm((x_q.double() - zp) * f["scale"], (c,), f["gamma"], f["beta"], eps=1e-12)
        exp = torch.clamp(torch.round(y / f["out_scale"]) + out_zp, -128, 127)
        print(f"ptf_layernorm_dyadic C={c} (FQ-ViT's 8-bit M / 2**N) vs float LayerNorm:", lsb_stats(dy.run(), exp))

    agree = total = 0
    for s in (0.02, 0.05, 0.1, 0.2):
        scores = torch.randint(-128, 128, (64, 197), generator=gen, dtype=torch.int8)
        codes = ref.log_int_softmax(scores, params.lis_exp_table(s, 0)).long()
        p_float = torch.softmax(scores.double() * s, dim=-1)
        k_float = torch.round(-torch.log2(p_float))
        k_float = torch.where(k_float >= 16, torch.full_like(k_float, 255), k_float)
        agree += int((codes == k_float.long()).sum())
        total += codes.numel()
    print(f"log_int_softmax codes vs round(-log2(float softmax)), S in 0.02..0.2: {agree / total * 100:.2f} % equal")


if __name__ == "__main__":
    main()
