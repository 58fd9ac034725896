"""Triton CUDA kernels of fqvit-kernels, one module per kernel family.

This package is imported by :mod:`fqvit_kernels.backends` only when a CUDA device is present (or
directly by the interpreter tests). ``__fqvit_kernels__`` tells it apart from the unrelated PyPI
package that is also importable as ``triton_kernels``. Importing the package does not import
Triton; :func:`cuda_kernels` and the family modules do.

Families: :mod:`.gemm` (``int8_matmul``, ``int8_linear``), :mod:`.layernorm` (``ptf_layernorm``,
``ptf_layernorm_dyadic``),
:mod:`.softmax` (``log_int_softmax``), :mod:`.attn_v` (``log_attn_v``), :mod:`.attention`
(``attention_scores``, ``int_attention``), :mod:`.attention_uniform` (``int_attention_uniform``); :mod:`.compile_check` compiles them all for sm_90
without a GPU (``python -m triton_kernels.compile_check``).
"""

__fqvit_kernels__ = True


def cuda_kernels():
    """``{op name: launcher}`` for every fqvit op that has a Triton kernel.

    Each launcher takes the op's positional arguments exactly as in its schema (validation has
    already run) and returns a new output tensor. ``quantize`` / ``dequantize`` (float, model
    boundary) keep the PyTorch reference on CUDA.
    """
    from . import attention, attention_uniform, attn_v, gemm, layernorm, softmax

    return {
        "int8_matmul": gemm.int8_matmul,
        "int8_linear": gemm.int8_linear,
        "ptf_layernorm": layernorm.ptf_layernorm,
        "ptf_layernorm_dyadic": layernorm.ptf_layernorm_dyadic,
        "log_int_softmax": softmax.log_int_softmax,
        "log_attn_v": attn_v.log_attn_v,
        "attention_scores": attention.attention_scores,
        "int_attention": attention.int_attention,
        "int_attention_uniform": attention_uniform.int_attention_uniform,
    }


def gemm_ptx(*args, **kwargs) -> str:
    """PTX of the int8 GEMM kernel on the current GPU (see :func:`triton_kernels.gemm.gemm_ptx`)."""
    from .gemm import gemm_ptx as _gemm_ptx

    return _gemm_ptx(*args, **kwargs)
