"""fqvit-kernels: FQ-ViT post-training quantization as real integer kernels for PyTorch.

Importing the package registers the ``torch.ops.fqvit`` operators (see :mod:`fqvit_kernels.ops`),
loads the C++ CPU kernels when built and, on machines with a CUDA device, the Triton kernels.
"""

from . import ops, params, reference
from .backends import register_all as _register_all

__version__ = "0.1.0"

_register_all()

__all__ = ["ops", "params", "reference", "__version__"]
