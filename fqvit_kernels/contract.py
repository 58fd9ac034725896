"""Every numeric constant and limit of the integer contract, in one place.

The reference (:mod:`fqvit_kernels.reference`), the op validation (:mod:`fqvit_kernels.ops`), the
parameter derivation (:mod:`fqvit_kernels.params`), the fake-quantization code
(:mod:`fqvit_kernels.quant`) and the Triton kernels import them from here; the C++ extension
holds the same values in ``csrc/contract.h`` and exports them as ``_C.contract_constants()``, which
``tests/test_contract_constants.py`` compares with :data:`CPP_CONSTANTS` below. Why each limit
keeps every intermediate inside its integer type: docs/numerics.md. FQ-ViT's own constants
(LIS polynomial, PTF range, LayerNorm bit widths): docs/fqvit.md.
"""

from __future__ import annotations

# -- integer ranges ---------------------------------------------------------------------------------
INT8_MIN, INT8_MAX = -128, 127
INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1

# -- float32-faithful rounding (FQ-ViT quantizes in float32) ------------------------------------------
#: float32 keeps 24 significant bits.
FLOAT32_BITS = 24
#: Largest shift of the float32-faithful requantization (``reference.requantize_float32``): the
#: pre-round value plus ``zp << shift`` must stay inside int64.
MAX_FLOAT32_REQUANT_SHIFT = 52

# -- fixed-point multipliers ----------------------------------------------------------------------
#: Fixed-point multipliers are normalised to ``[2**30, 2**31)``: 31 significant bits
#: (``params.fixed_point_multiplier``).
MULTIPLIER_BITS = 31
#: Shifts must stay in this range so that ``acc * multiplier + 2**(shift - 1)`` fits int64.
MIN_SHIFT, MAX_SHIFT = 1, 62

# -- GEMMs ------------------------------------------------------------------------------------------
#: Longest reduction: ``128 * 128 * K < 2**31`` keeps the int32 accumulator exact.
MAX_GEMM_K = 131071

#: Bit layout of a GELU step-table entry (``reference.gelu_table_lookup``): the code below the step
#: (int8) in bits 0..7, the direction of the step plus one (0, 1 or 2) in bits 8..9, the step
#: position (0..2**cell_bits) in bits 10..30.
GELU_DIRECTION_SHIFT = 8
GELU_STEP_SHIFT = 10
#: Largest ``gelu_cell_bits``: a step position (0..2**bits) must fit the entry's bits 10..30.
GELU_MAX_CELL_BITS = 20
MAX_GELU_CELL_BITS = GELU_MAX_CELL_BITS
MAX_GELU_TABLE_LENGTH = 1 << 16

# -- LayerNorm --------------------------------------------------------------------------------------
MAX_LN_CHANNELS = 8192
#: PTF: channel ``c`` is quantized with scale ``s * 2**alpha_c``, ``0 <= alpha_c <= 3`` (FQ-ViT's K = 3).
MAX_PTF_ALPHA = 3
#: Fractional bits of the normalised value ``(x - mean) / std`` inside ``reference.ptf_layernorm``.
LN_NORM_FRAC_BITS = 24
#: Mantissa bits of the exact LayerNorm's weight multiplier (``gamma / s_out``, ``params``).
LN_WEIGHT_BITS = 24
#: Largest ``variance_offset`` of ``ptf_layernorm``: ``V + offset`` stays below 2**62.
MAX_VARIANCE_OFFSET = 2**61
#: FQ-ViT's integer LayerNorm keeps an 8-bit mantissa ``M`` of ``A = gamma / (sigma * s_out)`` and a
#: shift ``N`` in 0..31 (docs/fqvit.md §3.3, ``get_MN``).
LN_DYADIC_MAX_N = 31
#: Fractional bits of the fixed-point quantities inside ``reference.ptf_layernorm_dyadic`` (see its
#: docstring for why each suffices).
LN_DYADIC_A_FRAC_BITS = 24
LN_DYADIC_MEAN_FRAC_BITS = 20
LN_DYADIC_B_FRAC_BITS = 16
#: ``gamma_shift`` range of ``ptf_layernorm_dyadic``: ``|gamma / s_out|`` in ``[2**-32, 2**16)``.
LN_DYADIC_MIN_GAMMA_SHIFT, LN_DYADIC_MAX_GAMMA_SHIFT = 15, 62
#: ``beta`` of ``ptf_layernorm_dyadic`` is ``round(beta / s_out * 2**47)``.
LN_DYADIC_BETA_FRAC_BITS = 47

#: The GELU step table's geometry (``params.gelu_table``): the exact GELU's largest slope,
#: ``Phi(v) + v * phi(v)`` at ``v = sqrt(2)``; the cell width ``s_out / GELU_CELL_SLOPE`` of
#: pre-GELU value, narrower than the closest two steps on either side of the minimum
#: (``s_out / GELU_MAX_SLOPE``); and where the GELU has its minimum (about -0.16997).
GELU_MAX_SLOPE = 1.12900
GELU_CELL_SLOPE = 1.13
GELU_ARGMIN = -0.7517915950

# -- Log-Int-Softmax and attention --------------------------------------------------------------------
#: Code written by ``log_int_softmax`` for a probability that FQ-ViT rounds to zero.
LIS_MASKED_CODE = 255
#: ``log_attn_v`` weights a code ``k`` by ``2**(LIS_VALUE_SHIFT - k)`` (exact for 4-bit codes).
LIS_VALUE_SHIFT = 15
#: Levels ``c`` of ``reference.lis_level_constants``: code ``c`` needs ``R >= 3 * 2**(c - 2)``,
#: beyond 2**63 from ``c = 64`` on, which no ratio of int64 exponents reaches.
LIS_MAX_LEVEL = 63
#: Thresholds of ``reference.lis_level_thresholds`` are capped here (any exponent of a valid row is
#: smaller).
LIS_THRESHOLD_CAP = 2**62 - 1
#: Largest LIS row sum E = sum of exponents: FQ-ViT rounds E to float32, and the float32 values
#: around 2**63 are 2**63 - 2**39 and 2**63, so any larger E (from the midpoint 2**63 - 2**38 on,
#: a tie going to the even 2**63) would round to 2**63, outside int64.
MAX_LIS_ROW_SUM = 2**63 - 2**38 - 1
#: FQ-ViT's integer exponent (I-BERT's i-exp, ``QIntSoftmax.int_exp``): ``x0 = -ln 2`` rounded as in
#: the official code, the clamp ``-n * ln 2`` with ``n = 30``, and the coefficients ``(a, b, c)`` of
#: the second-order polynomial, evaluated on the integer grid as ``r * (r + b/a) + c/a`` (the
#: factor ``a`` folded into the scale; docs/fqvit.md §4.1).
LIS_X0 = -0.6931
LIS_N = 30
LIS_COEF = (0.35815147, 0.96963238, 1.0)
#: Longest head dimension of the score GEMM: ``255 * 255 * D < 2**31``.
MAX_HEAD_DIM = 33025
#: ``int_attention_uniform``: ``255 * 255 * N < 2**31`` (its int32 context).
MAX_UNIFORM_KEYS = 33025
#: Fraction bits of the uniform softmax's exponent table: ``round(2**20 * exp(-d * s_score))``.
UNIFORM_EXP_BITS = 20
MAX_UNIFORM_EXP = 2**UNIFORM_EXP_BITS

#: The constants the C++ extension holds too (``csrc/contract.h``), by the name it exports them under.
CPP_CONSTANTS = {
    "LIS_MASKED_CODE": LIS_MASKED_CODE,
    "LIS_VALUE_SHIFT": LIS_VALUE_SHIFT,
    "LIS_MAX_LEVEL": LIS_MAX_LEVEL,
    "LIS_THRESHOLD_CAP": LIS_THRESHOLD_CAP,
    "LN_NORM_FRAC_BITS": LN_NORM_FRAC_BITS,
    "LN_DYADIC_A_FRAC_BITS": LN_DYADIC_A_FRAC_BITS,
    "LN_DYADIC_MEAN_FRAC_BITS": LN_DYADIC_MEAN_FRAC_BITS,
    "LN_DYADIC_B_FRAC_BITS": LN_DYADIC_B_FRAC_BITS,
    "LN_DYADIC_BETA_FRAC_BITS": LN_DYADIC_BETA_FRAC_BITS,
    "MAX_PTF_ALPHA": MAX_PTF_ALPHA,
    "GELU_DIRECTION_SHIFT": GELU_DIRECTION_SHIFT,
    "GELU_STEP_SHIFT": GELU_STEP_SHIFT,
    "MAX_FLOAT32_REQUANT_SHIFT": MAX_FLOAT32_REQUANT_SHIFT,
}
