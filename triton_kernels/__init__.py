"""Triton CUDA kernels of fqvit-kernels, one module per kernel family.

This package is imported by :mod:`fqvit_kernels.backends` only when a CUDA device is present (or
directly by the interpreter tests). ``__fqvit_kernels__`` tells it apart from the unrelated PyPI
package that is also importable as ``triton_kernels``.
"""

__fqvit_kernels__ = True


def cuda_kernels():
    """``{op name: launcher}`` for every fqvit op that has a Triton kernel."""
    return {}
