"""Builds the optional C++ CPU extension ``fqvit_kernels._C`` from ``csrc/``.

Set ``FQVIT_NO_EXTENSION=1`` to install the pure-Python package only (the CPU ops then run the
PyTorch reference, with one warning at import).
"""

import glob
import os
import sys

from setuptools import setup

ext_modules = []
cmdclass = {}
sources = sorted(glob.glob(os.path.join("csrc", "*.cpp")))

if sources and os.environ.get("FQVIT_NO_EXTENSION", "0") != "1":
    from torch.utils.cpp_extension import BuildExtension, CppExtension

    openmp = ["-fopenmp"] if sys.platform.startswith("linux") else []
    ext_modules.append(
        CppExtension(
            name="fqvit_kernels._C",
            sources=sources,
            # No -std flag: torch.utils.cpp_extension picks the standard this torch needs (C++20 for 2.10+).
            # -fwrapv: signed integer overflow wraps (defined) for any parameter values an op is
            # handed with its value checks off; valid inputs never overflow.
            extra_compile_args={"cxx": ["-O3", "-fwrapv", *openmp]},
            extra_link_args=openmp,
        )
    )
    _ninja_build = BuildExtension.with_options(use_ninja=True)

    class BuildKeepingObjects(_ninja_build):
        """Compiles in a fixed folder (``build/temp``) so that ninja finds the objects of the last
        build: a second ``pip install -e .`` of an unchanged tree only relinks (seconds) instead of
        recompiling every file (pip's editable build otherwise uses a fresh temporary folder)."""

        def finalize_options(self):
            super().finalize_options()
            self.build_temp = os.path.join(os.path.dirname(os.path.abspath(__file__)), "build", "temp")

        def build_extensions(self):
            print(f"fqvit-kernels: building the C++ extension from {len(sources)} files in {self.build_temp} "
                  "(~1.5 min on 2 cores from clean; unchanged files are not recompiled)", flush=True)
            super().build_extensions()

    cmdclass["build_ext"] = BuildKeepingObjects

setup(ext_modules=ext_modules, cmdclass=cmdclass)
