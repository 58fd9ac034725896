"""Fresh random seed per session (reproducible with FQVIT_SEED=<n>), one generator per test.

The op tests live in tests/ops/ (one file per op, the implementation a ``backend`` argument, see
tests/ops/conftest.py); the files directly in tests/ are cross-cutting (registry, backends as a
whole, models, packaging, ...). The helper modules (op_backends, int_oracle, ...) sit here in
tests/, which is put on ``sys.path`` for the files in both directories.
"""

import os
import sys

import torch

_TESTS = os.path.dirname(os.path.abspath(__file__))
if _TESTS not in sys.path:  # pytest's default import mode adds it too; other modes do not
    sys.path.insert(0, _TESTS)

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


def pytest_configure(config):
    config.addinivalue_line("markers", "backends(*names, exclude=()): the backends a tests/ops test that takes "
                                       "`backend` runs on (default: every one this machine has)")


def pytest_report_header(config):
    return f"fqvit seed: FQVIT_SEED={SEED} (set it to replay this run)"


@pytest.fixture
def gen(request) -> torch.Generator:
    """A CPU generator seeded from the session seed and the test id."""
    return torch.Generator().manual_seed(SEED + zlib.crc32(request.node.nodeid.encode()))


def _interpreter_usable() -> bool:
    """Triton builds its own @jit library functions (tl.sum, ...) for the interpreter only if
    TRITON_INTERPRET was set when triton was first imported; if something imported triton before
    this file set it, the interpreter cannot run in this process."""
    try:
        import triton.language as tl
        from triton.runtime.interpreter import InterpretedFunction
    except ImportError:
        return True  # nothing to run: the Triton tests skip themselves
    return isinstance(tl.standard.sum, InterpretedFunction)


def pytest_collection_modifyitems(config, items):
    """The ``gpu`` marker skips its tests without a CUDA device, with the reason in ``-rs``'s
    summary; ``-m gpu`` selects them on a GPU machine and ``-m "not slow"`` leaves out the tests
    that take several seconds each (a quicker local run; CI runs everything). Without a GPU, the
    ``interpreter`` tests (every Triton leg) are skipped if the interpreter cannot run in this
    process; tests/test_triton_backend.py then re-runs them in a fresh one."""
    if torch.cuda.is_available():
        return
    if any(item.get_closest_marker("interpreter") for item in items) and not _interpreter_usable():
        stale = pytest.mark.skip(reason="triton was imported before TRITON_INTERPRET was set; the interpreter tests "
                                        "re-run in a fresh process (test_interpreter_suite_in_fresh_process)")
        for item in items:
            if (item.get_closest_marker("interpreter")
                    and getattr(item, "originalname", None) != "test_interpreter_suite_in_fresh_process"):
                item.add_marker(stale)
    skip = pytest.mark.skip(reason="marker gpu: needs a CUDA device (CPU runs cover the same code under the "
                                   "Triton interpreter at small shapes)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
