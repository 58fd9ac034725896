"""Import-time behaviour: lazy Triton, one warning without the extension, foreign triton_kernels."""

import subprocess
import sys
import textwrap

import pytest


def _python(code: str, cwd=None, env_path=None):
    import os

    env = dict(os.environ)
    env.pop("TRITON_INTERPRET", None)
    if env_path:
        env["PYTHONPATH"] = env_path + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=120)


def test_import_does_not_import_triton_on_a_cpu_machine():
    res = _python("""
        import sys, torch
        assert not torch.cuda.is_available()
        import fqvit_kernels
        print("triton" in sys.modules, "triton_kernels" in sys.modules)
    """)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["False", "False"]


@pytest.mark.slow
def test_missing_extension_gives_exactly_one_warning():
    res = _python("""
        import sys, warnings
        sys.modules["fqvit_kernels._C"] = None  # makes 'import fqvit_kernels._C' fail
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            import fqvit_kernels
            import torch
            torch.ops.fqvit.int8_matmul(torch.ones(2, 3, dtype=torch.int8), torch.ones(4, 3, dtype=torch.int8))
            import fqvit_kernels.backends as b
            b.register_all()
        mine = [w for w in caught if "fqvit_kernels._C" in str(w.message)]
        print(len(mine), fqvit_kernels.backends.BACKEND["int8_linear"]["cpu"])
    """)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["1", "reference"]


def test_foreign_triton_kernels_package_is_refused(tmp_path):
    # Another PyPI project is importable as 'triton_kernels'; load it the way Python would if it
    # came first, then ask fqvit_kernels for its Triton package.
    foreign = tmp_path / "triton_kernels"
    foreign.mkdir()
    (foreign / "__init__.py").write_text("NAME = 'someone else'\n")
    res = _python(f"""
        import importlib.util, sys
        spec = importlib.util.spec_from_file_location("triton_kernels", {str(foreign / "__init__.py")!r})
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        sys.modules["triton_kernels"] = module
        import fqvit_kernels.backends as b
        try:
            b.load_triton_kernels()
        except ImportError as exc:
            print("refused:", exc)
        else:
            print("accepted")
    """)
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("refused:"), res.stdout
    assert "not fqvit-kernels' Triton package" in res.stdout and str(tmp_path) in res.stdout


def test_our_triton_kernels_package_is_accepted():
    res = _python("""
        import fqvit_kernels.backends as b
        print(b.load_triton_kernels().__fqvit_kernels__)
    """)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "True"


def test_all_lists_name_every_public_function_and_nothing_else():
    """``__all__`` of the modules users import from lists each public function and class defined
    there, and only names that exist (a new op's reference function or test case was missed once)."""
    import inspect

    from fqvit_kernels import params, reference, testing

    for module in (reference, testing, params):
        public = {name for name, value in vars(module).items()
                  if not name.startswith("_") and (inspect.isfunction(value) or inspect.isclass(value))
                  and getattr(value, "__module__", None) == module.__name__}
        listed = set(module.__all__)
        assert public <= listed, f"{module.__name__}.__all__ misses {sorted(public - listed)}"
        assert listed <= set(vars(module)), f"{module.__name__}.__all__ names missing {sorted(listed - set(vars(module)))}"
