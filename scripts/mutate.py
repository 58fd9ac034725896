"""Mutation check of the test suite: does it catch realistic single-line bugs?

Usage::

    python scripts/mutate.py                 # the Python and Triton mutants (~10-20 min on 2 cores)
    python scripts/mutate.py --cpp           # the C++ mutants too (one incremental rebuild each)
    python scripts/mutate.py --only R3,T1    # selected mutants
    python scripts/mutate.py --list

Each mutant replaces one exact snippet of one file (the snippet must occur exactly once, so a
mutant that no longer applies fails loudly instead of passing silently). It is applied to a
throwaway copy of the tracked files (with the built extension), and the tests run from that copy,
which then shadows the editable install. A mutant is killed when pytest fails: first on the tests
it names (fast), else on the whole suite; it survives only if the whole suite passes. A tool for
developers (the score goes into the issue notes), not part of CI.
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import List, NamedTuple, Sequence

ROOT = Path(__file__).resolve().parents[1]


class Mutant(NamedTuple):
    key: str
    path: str        # file relative to the repository root
    find: str        # exact snippet, occurring once
    replace: str
    tests: Sequence[str]  # pytest selectors tried first
    what: str


M = Mutant
REF, PAR, OBS, QNT = "fqvit_kernels/reference.py", "fqvit_kernels/params.py", "fqvit_kernels/quant/observers.py", \
    "fqvit_kernels/quant/quantizers.py"
DEPLOY = "tests/test_deployment.py"
BLK, LAY, MOD, OPS = "fqvit_kernels/nn/block.py", "fqvit_kernels/nn/layers.py", "fqvit_kernels/nn/model.py", \
    "fqvit_kernels/ops.py"
CNV = "fqvit_kernels/nn/convert.py"
TAU, UNI = "triton_kernels/attention_uniform.py", "tests/ops/test_int_attention_uniform.py"
TIM, TGE, TSM, TAT, TLN = ("triton_kernels/_intmath.py", "triton_kernels/gemm.py", "triton_kernels/softmax.py",
                           "triton_kernels/attention.py", "triton_kernels/layernorm.py")
CCO, CGE, CLN, CSA = "csrc/common.h", "csrc/gemm_epilogue.cpp", "csrc/layernorm.cpp", "csrc/softmax_attention.cpp"
# The op tests, one file per op (each starts with its tie cases on every backend, so -x stops early).
LIN, LN, LIS, AV, ATT, QUANT = ("tests/ops/test_int8_linear.py", "tests/ops/test_ptf_layernorm.py",
                                "tests/ops/test_log_int_softmax.py", "tests/ops/test_log_attn_v.py",
                                "tests/ops/test_int_attention.py", "tests/ops/test_quantize.py")

MUTANTS: List[Mutant] = [
    # -- reference ------------------------------------------------------------------------------
    M("R1", REF, "half = torch.ones_like(shift) << (shift - 1)", "half = (torch.ones_like(shift) << (shift - 1)) - 1",
      [LIN], "round_shift: half down (tensor shifts)"),
    M("R2", REF, "up = (shift > 0) & ((rem > half) | ((rem == half) & ((quot & 1) == 1)))",
      "up = (shift > 0) & ((rem > half) | ((rem == half) & ((quot & 1) == 0)))", [LN], "half-even: ties to odd"),
    M("R3", REF, "drop = torch.clamp(bit_length(magnitude) - FLOAT32_BITS, min=0)",
      "drop = torch.clamp(bit_length(magnitude) - FLOAT32_BITS - 1, min=0)", [LIS, LIN], "float32: 25 bits"),
    M("R4", REF, "u = round_to_float32(y + ((int(zero_point) + 128) << shift))", "u = y + ((int(zero_point) + 128) << shift)",
      [LIN, ATT], "float32_code: second rounding skipped"),
    M("R5", REF, "        ) * residual_multiplier.to(torch.int64)", "        ) * branch_multiplier.to(torch.int64)",
      [LIN], "residual mixed with the branch multiplier"),
    M("R6", REF, "var_num = channels * sum2 - sum1 * sum1 + int(variance_offset)", "var_num = channels * sum2 - sum1 * sum1",
      [LN], "LayerNorm: epsilon dropped"),
    # (Rounding the quotient's last fraction bit up on an exact half is an equivalent mutant: fl32(E)
    # has at most 24 significant bits, so a quotient that terminates has at most 24 too.)
    M("R7", REF, "    total = round_to_float32(total.to(torch.int64))\n    exps = exps.to(torch.int64)",
      "    total = total.to(torch.int64)\n    exps = exps.to(torch.int64)", [LIS], "LIS ratio: the sum not rounded to float32"),
    M("R8", REF, "valid = positive & (code < (1 << bits))", "valid = positive & (code <= (1 << bits))", [LIS],
      "LIS mask threshold off by one"),
    M("R9", REF, "keep = codes <= LIS_VALUE_SHIFT", "keep = codes < LIS_VALUE_SHIFT", [AV], "attn@V drops code 15"),
    M("R10", REF, "n = torch.clamp(7 - log2_a, 0, LN_DYADIC_MAX_N)", "n = torch.clamp(7 - log2_a, 0, LN_DYADIC_MAX_N - 1)",
      [LN], "dyadic LN: N capped at 30"),
    M("R11", REF, "return (below + direction * (t - (cell << cell_bits) >= step).to(torch.int64)).to(torch.int8)",
      "return (below + direction * (t - (cell << cell_bits) > step).to(torch.int64)).to(torch.int8)", [LIN],
      "GELU step taken one index late"),
    M("R12", REF, "code = torch.round(x.to(torch.float32) / scale.to(torch.float32) + float(zero_point + 128))",
      "code = torch.floor(x.to(torch.float32) / scale.to(torch.float32) + float(zero_point + 128) + 0.5)", [QUANT],
      "quantize: half up"),
    M("R13", REF, "index = (row_max + 128) * 256 + (row_max - values)", "index = (row_max + 127) * 256 + (row_max - values)",
      [LIS], "LIS table row off by one"),
    # -- params ---------------------------------------------------------------------------------
    M("P1", PAR, "mantissa in [0.5, 1)\n    mult = torch.round(mantissa * 2.0**MULTIPLIER_BITS).to(torch.int64)",
      "mantissa in [0.5, 1)\n    mult = torch.floor(mantissa * 2.0**MULTIPLIER_BITS).to(torch.int64)", ["tests/test_params.py"],
      "multiplier truncated"),
    M("P5", PAR, "    m2 = torch.round(r2 * scale).to(torch.int64)", "    m2 = torch.floor(r2 * scale).to(torch.int64)",
      ["tests/test_params.py", "tests/test_quant_block.py"], "residual multiplier truncated"),
    M("P2", PAR, "folded = -int(input_zero_point) * row_sums * mult.to(torch.int64)",
      "folded = int(input_zero_point) * row_sums * mult.to(torch.int64)", ["tests/test_params.py"], "zero point fold sign"),
    M("P3", PAR, "bias = torch.round(torch.ldexp(beta_ratio, shift)).to(torch.int64)",
      "bias = torch.round(torch.ldexp(beta_ratio, shift - 1)).to(torch.int64)", ["tests/test_params.py"],
      "LN bias at half scale"),
    M("P4", PAR, "folded = folded + torch.round(scaled).to(torch.int64)", "folded = folded + scaled.to(torch.int64)",
      ["tests/test_params.py"], "linear bias truncated"),
    # -- observers and quantizers ---------------------------------------------------------------
    M("O1", OBS, "hi = torch.tensor(np.percentile(data, self.alpha * 100), dtype=torch.float32, device=flat.device)",
      "hi = torch.tensor(np.percentile(data, self.alpha), dtype=torch.float32, device=flat.device)",
      ["tests/test_quant_observers.py"], "percentile fallback: fraction as percent"),
    M("O2", OBS, "if best is None or score < best_score:", "if best is None or score <= best_score:",
      ["tests/test_quant_observers.py"], "OMSE ties keep the narrowest"),
    M("O3", OBS, "        for i in range(self.candidates):", "        for i in range(1, self.candidates):",
      ["tests/test_quant_observers.py"], "OMSE skips the full range"),
    M("O4", OBS, "self.max_val = self.max_val + self.sigma * (cur_max - self.max_val)\n            self.min_val = self.min_val + self.sigma * (cur_min - self.min_val)\n\n\nclass OmseObserver",
      "self.max_val = self.max_val + self.sigma * (cur_max - self.max_val)\n            self.min_val = self.min_val + self.sigma * (cur_max - self.min_val)\n\n\nclass OmseObserver",
      ["tests/test_quant_observers.py"], "percentile EMA of min uses max"),
    M("Q1", QNT, "    mask = rounds >= 2**bits", "    mask = rounds > 2**bits", ["tests/test_quant_observers.py"],
      "fake LIS mask off by one"),
    M("Q2", QNT, "    n = torch.clamp(7 - torch.floor(torch.log2(a.abs())), 0, 31)",
      "    n = torch.clamp(8 - torch.floor(torch.log2(a.abs())), 0, 31)", ["tests/test_quant_observers.py"],
      "fake int LayerNorm: 9-bit M"),
    # -- model side ------------------------------------------------------------------------------
    M("N1", BLK, "        x = linear_int(attn.proj, ctx, ints.qact3_attn_zp, residual=x,",
      "        x = linear_int(attn.proj, ctx, ints.qact3_attn_zp, residual=h,", ["tests/test_quant_block.py"],
      "proj residual from the wrong tensor"),
    M("N2", BLK, "        h = layernorm_int(self.norm2, x, ints.qact2_zp, ints.qact3_zp)",
      "        h = layernorm_int(self.norm2, x, ints.qact3_zp, ints.qact3_zp)", ["tests/test_quant_block.py"],
      "norm2 with the wrong input zero point"),
    M("N3", CNV, "    lin.residual_multiplier.copy_(m_r)", "    lin.residual_multiplier.copy_(m_b)", ["tests/test_quant_block.py"],
      "residual multiplier from the branch ratio"),
    M("N4", LAY, "        self.code_zero_point = int(self.zero_point.item())",
      "        self.code_zero_point = int(self.zero_point.item()) + 1", ["tests/test_quant_block.py"],
      "stored zero point off by one"),
    M("N8", LAY, "        return self.code_zero_point - 2 ** (self.bits - 1)",
      "        return int(self.zero_point.item()) - 2 ** (self.bits - 1)", [DEPLOY],
      "zero point read from the buffer in the forward (a host read per call)"),
    M("N9", LAY, "        if isinstance(probe, torch.Tensor) and probe.dtype != torch.float32:",
      "        if False:", [DEPLOY], "dtype casts of a quantized model accepted"),
    M("N10", BLK, "        self._ints = self._compute_int_params() if self.calibrated and self.input_quantizer.is_calibrated else None",
      "        self._ints = None", [DEPLOY], "a block's int parameters read from its buffers inside the forward"),
    M("N5", CNV, "    convert_linear(model.head, model.qact2, float(model.act_out.scale), model.qact2.stored_zero_point)",
      "    convert_linear(model.head, model.qact2, float(model.qact2.scale), model.qact2.stored_zero_point)",
      ["tests/test_quant_model.py"], "head requantized onto the wrong grid"),
    M("N11", OPS, "    if top * row_length > MAX_LIS_ROW_SUM:", "    if top * row_length > INT64_MAX:", [LIS],
      "LIS row sums accepted up to 2**63 - 1 (their float32 rounding overflows)"),
    M("N6", OPS, "        chk.values_in_range(name, t, 1, max_shift)", "        chk.values_in_range(name, t, 1, max_shift + 1)",
      [LIN], "shift validation accepts 63"),
    M("N7", OPS, "    chk.int_in_range(f\"{prefix}_shift\", shift, 1, ref.MAX_FLOAT32_REQUANT_SHIFT)",
      "    chk.int_in_range(f\"{prefix}_shift\", shift, 0, ref.MAX_FLOAT32_REQUANT_SHIFT)", [ATT],
      "attention shift validation accepts 0"),
    # -- Triton (interpreter) --------------------------------------------------------------------
    M("T1", TIM, "    half = tl.full(value.shape, 1, tl.int64) << (shift - 1)\n    return (value + half) >> shift",
      "    half = (tl.full(value.shape, 1, tl.int64) << (shift - 1)) - 1\n    return (value + half) >> shift", [LIN],
      "Triton round_shift: half down"),
    M("T2", TGE, "from_residual = residual.to(tl.int32).to(tl.int64) * res_mult[None, :].to(tl.int64)",
      "from_residual = residual.to(tl.int32).to(tl.int64) * branch_mult[None, :].to(tl.int64)", [LIN],
      "Triton residual multiplier swapped (fast epilogue)"),
    M("T3", TGE, "(below + tl.where(tc - (cell << cell_bits) >= (entry >> _GELU_STEP_SHIFT), direction, 0))",
      "(below + tl.where(tc - (cell << cell_bits) > (entry >> _GELU_STEP_SHIFT), direction, 0))", [LIN],
      "Triton GELU step one late"),
    # (Dropping the exclusive-threshold correction is equivalent: fl32(E) / e never equals a level's
    # midpoint L_c, whose odd numerator has 25 bits while fl32(E) has at most 24.)
    M("T4", TSM, "    code += tl.where(exps <= u[7][:, None], 1, 0)\n", "", [ATT, LIS],
      "Triton attention: one LIS level not counted"),
    M("T5", TAT, "    return tl.load(table_ptr + (row_max[:, None] + 128) * 256 + (row_max[:, None] - s), mask=n_ok[None, :], other=0)",
      "    return tl.load(table_ptr + (row_max[:, None] + 128) * 256 + (row_max[:, None] - s), mask=n_ok[None, :], other=1)",
      [ATT], "Triton attention: keys past N get exponent 1"),
    # (``exps >= 0`` for ``exps > 0`` in _lis_code4 is equivalent: a zero exponent is below all 16
    # thresholds, so its count is 16, the masked code, either way.)
    M("T6", "triton_kernels/attn_v.py", "    neg_lo = (-(weight & 0xFF)).to(tl.int8)",
      "    neg_lo = (-(weight & 0x7F)).to(tl.int8)", [AV],
      "Triton attn@V: code 8 weighs nothing"),
    M("T7", TIM, "    return (u + _RNE_MAGIC).to(tl.int32, bitcast=True) - (_RNE_MAGIC_BITS + 128)",
      "    return (u + 0.5).to(tl.int32) - 128", [LIN, ATT],
      "Triton float32_code: half up instead of half to even"),
    M("T8", TLN, "    centered = (x - input_zero_point) << alpha[None, :]\n    centered = tl.where(mask, centered, 0)\n    sum1",
      "    centered = (x - input_zero_point) << (alpha[None, :] & 1)\n    centered = tl.where(mask, centered, 0)\n    sum1",
      [LN], "Triton LN (general): PTF shift loses its high bit"),
    M("T18", TLN, "    x = tl.load(x_ptr + row_offs + ch[None, :], mask=mask, other=0).to(tl.int32)\n    centered = (x - input_zero_point) << alpha[None, :]",
      "    x = tl.load(x_ptr + row_offs + ch[None, :], mask=mask, other=0).to(tl.int32)\n    centered = (x - input_zero_point) << (alpha[None, :] & 1)",
      [LN], "Triton LN (chunked): PTF shift loses its high bit"),
    M("T9", TGE, "            rounding = bias + (tl.full(bias.shape, 1, tl.int64) << (shift - 1).to(tl.int64))",
      "            rounding = bias + (tl.full(bias.shape, 1, tl.int64) << (shift - 2).to(tl.int64))",
      [LIN], "Triton int32 epilogue: rounding half at the wrong bit"),
    M("T10", TGE, "lambda: int(shift.min()) >= FAST_MIN_SHIFT))", "lambda: int(shift.min()) >= FAST_MIN_SHIFT - 1))",
      [LIN], "Triton int32 epilogue taken for shift 32"),
    M("T11", TAT, "    code = ((bits >> 23) - 127) + ((bits >> 22) & 1)", "    code = ((bits >> 23) - 127) + ((bits >> 21) & 1)",
      [ATT], "Triton attention (fast): code from the wrong mantissa bit"),
    M("T12", TAT, "    r = tl.where(q < 8388608.0, (q + 8388608.0) - 8388608.0, q)",
      "    r = tl.where(q < 8388608.0, (q + 0.5).to(tl.int32).to(tl.float32), q)", [ATT],
      "Triton attention (fast): LIS ratio rounded half up"),
    # (Dropping the upward corrections of the float root or reciprocal is equivalent: rounding v to a
    # double moves its root by at most 2**-24, under half the spacing of doubles near the root, and
    # the reciprocal's division is exact or rounds to within 2**-22; they are kept as a safeguard.)
    M("T13", TLN, "    root = tl.where(root * root > scaled, root - 1, root)\n", "\n",
      [LN], "Triton LN (fast): float root not corrected downwards"),
    M("T14", TLN, "        product = (wide << 32) - wide * r2[:, None].to(tl.int64)",
      "        product = (wide << 32) - (wide.to(tl.int32) * r2[:, None]).to(tl.int64)",
      [LN], "Triton LN (chunked): D * r2 wraps in 32 bits"),
    M("T15", TLN, "        centered = tl.where(mask, centered, 0)", "        centered = centered",
      [LN], "Triton LN (chunked): masked tail counted in the statistics"),
    M("T17", TLN, "    mean = floor_div(sum1.to(tl.int64) << MEAN_FRAC, C)", "    mean = (sum1.to(tl.int64) << MEAN_FRAC) // C",
      [LN], "Triton dyadic LN (chunked): the mean rounded towards zero"),
    M("T16", TLN, "        return bool(((top >> s) + 1 < 2**31 - 256).all())", "        return bool(((top >> s) + 1 < 2**32).all())",
      [LN],
      "Triton LN (chunked): int32 clamp taken for affine values beyond int32"),
    M("T19", TAU, "        quotient = (2 * e * inv_mult + den[:, None]) // den2[:, None]",
      "        quotient = (2 * e * inv_mult) // den2[:, None]", [UNI], "Triton uniform attention: codes floored"),
    M("T20", TAU, "        weight = tl.minimum(weight, 255) - softmax_zero_point",
      "        weight = weight - softmax_zero_point", [UNI], "Triton uniform attention: code not clamped at 255"),
    M("T21", TAU, "        lo = (weight & 127).to(tl.int8)", "        lo = (weight & 63).to(tl.int8)", [UNI],
      "Triton uniform attention: low digit loses a bit"),
    # -- C++ (--cpp) ------------------------------------------------------------------------------
    M("C1", CCO, "  return ((v >> (s - 1)) + 1) >> 1;", "  return (v >> (s - 1)) >> 1;", [LIN], "C++ round_shift: floor"),
    M("C2", CCO, "  const int64_t up = (h + 1) >> 1;", "  const int64_t up = (h + 2) >> 1;", [LN],
      "C++ half-even: off by one"),
    M("C3", CLN, "      const int64_t var_num = c * s2 - s1 * s1 + variance_offset;", "      const int64_t var_num = c * s2 - s1 * s1;",
      [LN], "C++ LN: epsilon dropped"),
    M("C4", CSA, "  const int64_t code_levels = std::min<int64_t>(mask_level - 1, kMaxLevel);",
      "  const int64_t code_levels = std::min<int64_t>(mask_level - 2, kMaxLevel);", [LIS],
      "C++ LIS: the top code level not counted"),
    M("C5", CSA, "      by_distance[d] = (e <= threshold || e <= 0) ? kMaskedCode : uint8_t(code);",
      "      by_distance[d] = (e < threshold || e <= 0) ? kMaskedCode : uint8_t(code);", [LIS],
      "C++ LIS: mask threshold exclusive"),
    M("C6", CGE, "zp(float(final_zp + 128))", "zp(float(final_zp + 127))", [LIN],
      "C++ residual: final zero point off by one"),
    M("C10", CSA, "    const float r = q < kRound ? (q + kRound) - kRound : q;",
      "    const float r = q < kRound ? std::floor(q + 0.5f) : q;", [LIS],
      "C++ LIS float32 form: ratio rounded half up"),
    M("C11", CSA, "    for (int c = 0; c < kMaxLevels; ++c) code += e <= level[c];",
      "    for (int c = 0; c < kMaxLevels; ++c) code += e < level[c];", [LIS],
      "C++ LIS threshold form: level thresholds exclusive"),
    M("C12", CCO, "  return int32_t((u + kRound) - kRound) - 128;", "  return int32_t(u + 0.5f) - 128;", [LIN, ATT],
      "C++ float32 quantizer: half up instead of half to even"),
    M("C13", "csrc/contract.h", "X(GELU_STEP_SHIFT, kGeluStepShift, int32_t, 10)", "X(GELU_STEP_SHIFT, kGeluStepShift, int32_t, 11)",
      ["tests/test_contract_constants.py"], "C++ contract: a constant that no longer equals contract.py"),
    M("C7", CSA, "    const uint64_t quotient = (2 * uint64_t(table[d]) * uint64_t(inv_mult) + den) / den2;",
      "    const uint64_t quotient = (2 * uint64_t(table[d]) * uint64_t(inv_mult)) / den2;", [UNI],
      "C++ uniform attention: codes floored"),
    M("C9", CGE, "      epilogue(acc_p + begin * n, r0 + begin, end - begin, index.data());",
      "      epilogue(acc_p + begin * n, begin, end - begin, index.data());", [LIN],
      "C++ int8_linear panels: epilogue rows not offset by the panel"),
    M("C8", CSA, "      if (any_hi)  // only", "      if (false)  // only", [UNI],
      "C++ uniform attention: the high digit's GEMM always skipped"),
]


def _copy_tree(dest: Path, with_build: bool) -> None:
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, check=True, capture_output=True, text=True).stdout.split()
    for rel in files:
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if (ROOT / rel).is_file():
            shutil.copy2(ROOT / rel, target)
    for so in glob.glob(str(ROOT / "fqvit_kernels" / "_C*.so")):
        shutil.copy2(so, dest / "fqvit_kernels")
    if with_build and (ROOT / "build").is_dir():
        shutil.copytree(ROOT / "build", dest / "build", dirs_exist_ok=True)


def _apply(dest: Path, mutant: Mutant) -> None:
    path = dest / mutant.path
    text = path.read_text()
    count = text.count(mutant.find)
    if count != 1:
        raise SystemExit(f"mutant {mutant.key}: snippet found {count} times in {mutant.path} (update the catalogue)")
    path.write_text(text.replace(mutant.find, mutant.replace))


def _pytest(dest: Path, selectors: Sequence[str], timeout: int) -> int:
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *selectors]
    try:
        return subprocess.run(cmd, cwd=dest, env=env, capture_output=True, timeout=timeout).returncode
    except subprocess.TimeoutExpired:
        return -1  # a hang counts as killed (the suite noticed something)


def _build(dest: Path) -> None:
    subprocess.run([sys.executable, "setup.py", "build_ext", "--inplace", "--build-temp", "build/mutants"], cwd=dest,
                   check=True, capture_output=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cpp", action="store_true", help="include the C++ mutants (rebuilds the extension per mutant)")
    p.add_argument("--only", default="", help="comma-separated mutant keys")
    p.add_argument("--list", action="store_true")
    p.add_argument("--timeout", type=int, default=900, help="seconds per pytest run")
    args = p.parse_args()
    chosen = [m for m in MUTANTS if (not args.only or m.key in args.only.split(","))
              and (args.cpp or args.only or not m.path.startswith("csrc/"))]
    if args.list:
        for m in MUTANTS:
            print(f"{m.key:4} {m.path:36} {m.what}")
        return
    stale = [f"{m.key} ({m.path}: found {(ROOT / m.path).read_text().count(m.find)} times)" for m in chosen
             if (ROOT / m.path).read_text().count(m.find) != 1]
    if stale:  # check every snippet before spending an hour on the others
        raise SystemExit("stale mutants, update the catalogue: " + ", ".join(stale))
    work = Path(tempfile.mkdtemp(prefix="fqvit-mutants-"))
    base = work / "base"
    _copy_tree(base, with_build=False)
    if any(m.path.startswith("csrc/") for m in chosen):
        print("building the extension once in the base copy (later builds recompile one file) ...", flush=True)
        _build(base)
    results = []
    try:
        for m in chosen:
            t0 = time.time()
            dest = work / m.key
            shutil.copytree(base, dest, symlinks=True)
            _apply(dest, m)
            if m.path.startswith("csrc/"):
                _build(dest)
            killed = _pytest(dest, m.tests, args.timeout) != 0
            stage = "named tests"
            if not killed:
                killed = _pytest(dest, ["tests"], args.timeout) != 0
                stage = "whole suite"
            results.append((m, killed))
            print(f"{m.key:4} {'killed  ' if killed else 'SURVIVED'} ({stage}, {time.time() - t0:5.0f} s)  {m.what}",
                  flush=True)
            shutil.rmtree(dest, ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    killed = sum(k for _, k in results)
    print(f"\n{killed} of {len(results)} mutants killed ({100.0 * killed / max(len(results), 1):.1f} %)")
    for m, k in results:
        if not k:
            print(f"  survived: {m.key} {m.path}: {m.what}")


if __name__ == "__main__":
    main()
