"""Fresh random seed per session (reproducible with FQVIT_SEED=<n>), one generator per test."""

import os

import torch

# Without a GPU, Triton kernels are tested under the interpreter; the variable must be set before
# anything (timm, torch._dynamo) imports triton, so it is set here, first.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import random  # noqa: E402
import warnings  # noqa: E402
import zlib  # noqa: E402

import pytest  # noqa: E402

# Import once here so the single "extension missing" warning does not repeat in every test.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", RuntimeWarning)
    import fqvit_kernels  # noqa: F401

SEED = int(os.environ.get("FQVIT_SEED", random.randrange(2**31)))


def pytest_report_header(config):
    return f"fqvit seed: FQVIT_SEED={SEED} (set it to replay this run)"


@pytest.fixture
def gen(request) -> torch.Generator:
    """A CPU generator seeded from the session seed and the test id."""
    return torch.Generator().manual_seed(SEED + zlib.crc32(request.node.nodeid.encode()))


def pytest_collection_modifyitems(config, items):
    """The ``gpu`` marker skips its tests without a CUDA device, with the reason in ``-rs``'s
    summary; ``-m gpu`` selects them on a GPU machine and ``-m "not slow"`` leaves out the tests
    that take several seconds each (a quicker local run; CI runs everything)."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="marker gpu: needs a CUDA device (CPU runs cover the same code under the "
                                   "Triton interpreter at small shapes)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
