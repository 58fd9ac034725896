"""The integer contract (docs/numerics.md) in plain Python integers and Fractions, element by element.

An oracle independent of ``fqvit_kernels.reference``: no torch arithmetic, no shared helpers, every
rounding written out from its definition. Slow (pure Python), so the tie and edge tests that use it
keep their tensors small. ``fl32`` rounds a rational to float32 (24 significant bits, ties to even)
the way IEEE-754 does for normal numbers.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import List, Optional, Sequence

INT8_MIN, INT8_MAX = -128, 127


def clamp(v: int, lo: int, hi: int) -> int:
    return lo if v < lo else hi if v > hi else v


def round_shift(v: int, s: int) -> int:
    """``v / 2**s`` rounded half up (towards +inf), ``s >= 1``."""
    return math.floor(Fraction(v, 2**s) + Fraction(1, 2))


def round_half_even(q: Fraction) -> int:
    """Nearest integer, ties to the even one."""
    lower = math.floor(q)
    rest = q - lower
    if rest > Fraction(1, 2) or (rest == Fraction(1, 2) and lower % 2 == 1):
        return lower + 1
    return lower


def fl32(q) -> Fraction:
    """``q`` (int or Fraction) rounded to 24 significant bits, ties to even (float32, no overflow)."""
    q = Fraction(q)
    if q == 0:
        return q
    sign, mag = (-1 if q < 0 else 1), abs(q)
    exponent = math.floor(math.log2(mag))  # may be off by one near powers of two: corrected below
    while Fraction(2) ** exponent > mag:
        exponent -= 1
    while Fraction(2) ** (exponent + 1) <= mag:
        exponent += 1
    unit = Fraction(2) ** (exponent - 23)  # the spacing of float32 values in [2**e, 2**(e+1))
    return sign * round_half_even(mag / unit) * unit


def float32_code(value: int, shift: int, zero_point: int) -> int:
    """FQ-ViT's float32 quantizer on the exact ``value * 2**-shift``: stored int8 code."""
    y = fl32(Fraction(value, 2**shift))
    u = fl32(y + zero_point + 128)
    return clamp(round_half_even(u), 0, 255) - 128


def matmul(a: Sequence[Sequence[int]], b_t: Sequence[Sequence[int]]) -> List[List[int]]:
    return [[sum(x * y for x, y in zip(row, col)) for col in b_t] for row in a]


def gelu_lookup(t: int, table: Sequence[int], cell_bits: int) -> int:
    cell = clamp(t >> cell_bits, 0, len(table) - 1)
    entry = table[cell]
    below = ((entry & 0xFF) ^ 0x80) - 0x80
    direction = ((entry >> 8) & 3) - 1
    step = entry >> 10
    return below + (direction if t - (cell << cell_bits) >= step else 0)


def int8_linear(x, w, bias, mult, shift, zp, table=None, cell_bits=0, residual=None, residual_zp=0,
                branch_mult=None, residual_mult=None, residual_shift=None, final_zp=0) -> List[List[int]]:
    acc = matmul(x, w)
    out = []
    for i, row in enumerate(acc):
        out_row = []
        for n, a in enumerate(row):
            t = round_shift(a * mult[n] + bias[n], shift[n]) + zp
            if table is not None:
                out_row.append(gelu_lookup(t, table, cell_bits))
                continue
            b = clamp(t, INT8_MIN, INT8_MAX)
            if residual is not None:
                mixed = (b - zp) * branch_mult[n] + (residual[i][n] - residual_zp) * residual_mult[n]
                b = float32_code(mixed, residual_shift[n], final_zp)
            out_row.append(b)
        out.append(out_row)
    return out


def ptf_layernorm(x, zp, alpha, wmult, bias, shift, out_zp, variance_offset=0) -> List[List[int]]:
    """The exact LayerNorm: ``z = D / sqrt(V) * 2**24`` with the 31-bit root and one reciprocal."""
    c = len(alpha)
    out = []
    for row in x:
        xs = [(v - zp) << a for v, a in zip(row, alpha)]
        s1, s2 = sum(xs), sum(v * v for v in xs)
        var = c * s2 - s1 * s1 + variance_offset
        if var > 0:
            p = (62 - var.bit_length()) // 2
            reciprocal = (1 << 62) // math.isqrt(var << (2 * p))
        else:
            p, reciprocal = 0, 0
        norms = [round_shift((c * v - s1) * reciprocal, 62 - 24 - p) for v in xs]
        out.append([clamp(round_shift(nz * wm + b, s) + out_zp, INT8_MIN, INT8_MAX)
                    for nz, wm, b, s in zip(norms, wmult, bias, shift)])
    return out


def ptf_layernorm_dyadic(x, zp, alpha, gm, gs, beta, out_zp, max_n: int = 31,
                         mean_toward_zero: bool = False) -> List[List[int]]:
    """FQ-ViT's dyadic LayerNorm (reference.ptf_layernorm_dyadic's docstring), scalar Python.
    ``max_n`` other than 31, or ``mean_toward_zero``, give deliberately wrong variants, for tests that
    must tell them apart."""
    c = len(alpha)
    out = []
    for row in x:
        xs = [(v - zp) << a for v, a in zip(row, alpha)]
        s1, s2 = sum(xs), sum(v * v for v in xs)
        var = c * s2 - s1 * s1
        if var <= 0:
            out.append([clamp(round_half_even(Fraction(b, 2**47)) + out_zp, INT8_MIN, INT8_MAX) for b in beta])
            continue
        p = (62 - var.bit_length()) // 2
        inv = (1 << 62) // math.isqrt(var << (2 * p))
        c_inv = c * inv
        sh = c_inv.bit_length() - 32
        rho = c_inv >> sh
        mean = (s1 << 20) // c  # floor division: floor for negative sums too
        if mean_toward_zero and s1 < 0:
            mean = -((-s1 << 20) // c)
        out_row = []
        for xc, g, gshift, b in zip(xs, gm, gs, beta):
            sign = -1 if g < 0 else 1
            prod = abs(g) * rho
            e = sh + p - 62 - gshift
            log2a = (prod.bit_length() - 1 + e) if prod > 0 else -(1 << 20)
            n = clamp(7 - log2a, 0, max_n)
            m = 255 if log2a > 7 else prod >> clamp(-(e + n), 0, 63)
            frac = 24 - max(log2a - 7, 0)
            a_fixed = prod >> clamp(-(e + n) - frac, 0, 63)
            mean_term = (sign * a_fixed * mean) >> (frac + 20 - 16)
            beta_term = b >> (47 - 16 - n)
            bb = round_half_even(Fraction(beta_term - mean_term, 2**16))
            y = round_half_even(Fraction(sign * m * xc + bb, 2**n))
            out_row.append(clamp(y + out_zp, INT8_MIN, INT8_MAX))
        out.append(out_row)
    return out


def float32_ratio(total: int, e: int) -> int:
    """``round_half_even(fl32(fl32(E) / e))``."""
    return round_half_even(fl32(Fraction(fl32(total)) / e))


def lis_codes(exps: Sequence[int], bits: int = 4) -> List[int]:
    """Log-Int-Softmax codes of one row of exponents (255: masked)."""
    total = sum(exps)
    codes = []
    for e in exps:
        if e <= 0:
            codes.append(255)
            continue
        r = float32_ratio(total, e)
        msb = r.bit_length() - 1
        code = msb + (((r >> (msb - 1)) & 1) if msb >= 1 else 0)
        codes.append(code if code < (1 << bits) else 255)
    return codes


def log_int_softmax(scores, exp_table, bits: int = 4) -> List[List[int]]:
    """Rows of int8 scores -> LIS codes (``exp_table[m + 128][m - s]``)."""
    out = []
    for row in scores:
        m = max(row)
        out.append(lis_codes([exp_table[m + 128][m - s] for s in row], bits))
    return out


def log_attn_v(codes, v, v_zp) -> List[List[int]]:
    weights = [[(1 << (15 - c)) if c <= 15 else 0 for c in row] for row in codes]
    cols = list(zip(*[[x - v_zp for x in r] for r in v]))
    return matmul(weights, cols)


def attention(q, k, v, zp, s_mult, s_shift, s_zp, exp_table, o_mult, o_shift, o_zp) -> List[List[int]]:
    """One head: scores -> LIS (4 bits) -> codes @ V -> float32 requantization."""
    qc = [[x - zp for x in r] for r in q]
    kc = [[x - zp for x in r] for r in k]
    scores = [[float32_code(a * s_mult, s_shift, s_zp) for a in row] for row in matmul(qc, kc)]
    codes = log_int_softmax(scores, exp_table)
    context = log_attn_v(codes, v, zp)
    return [[float32_code(a * o_mult, o_shift, o_zp) for a in row] for row in context]


def quantize(x: float, scale: float, zero_point: int) -> int:
    """``clamp(round(fl32(fl32(x / s) + zp + 128)), 0, 255) - 128`` for float32 ``x`` and ``s``."""
    u = fl32(fl32(Fraction(x) / Fraction(scale)) + zero_point + 128)
    return clamp(round_half_even(u), 0, 255) - 128
