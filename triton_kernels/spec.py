"""What it takes to compile a kernel ahead of time: its argument types and specialisations.

Each kernel module keeps, next to its kernels, the argument types they take (``ARG_TYPES``:
pointers and the few scalars that are not ``i32``) and a ``compile_specs(all_configs)`` generator
of :class:`CompileSpec` — one per specialisation its launcher can choose (fast / general path,
tile configs, channel and head sizes). :mod:`.compile_check` and the static report iterate over
those specs instead of re-typing signatures, so a new kernel or argument is described once, where
it is written.
"""

from __future__ import annotations

import dataclasses
from typing import Dict, Mapping

I8, U8, I32, I64 = "*i8", "*u8", "*i32", "*i64"


@dataclasses.dataclass(frozen=True)
class CompileSpec:
    """One compile of ``kernel``: ``constexprs`` fixed, ``arg_types`` for the pointer and non-``i32``
    scalar arguments (every other runtime argument is ``i32``), launched with ``num_warps`` /
    ``num_stages``. ``label`` names it in reports and in :data:`.compile_check.QUICK`."""

    label: str
    kernel: object
    arg_types: Mapping[str, str]
    constexprs: Mapping[str, object]
    num_warps: int
    num_stages: int = 3

    def signature(self) -> Dict[str, str]:
        """Triton's signature dict: every argument of the kernel, in order, typed."""
        return signature(self.kernel, self.arg_types, self.constexprs)


def signature(kernel, arg_types: Mapping[str, str], constexprs: Mapping[str, object]) -> Dict[str, str]:
    """Every argument of ``kernel`` typed: ``constexpr``, its entry of ``arg_types``, else ``i32``."""
    return {name: "constexpr" if name in constexprs else arg_types.get(name, "i32") for name in kernel.arg_names}


def ast_source(kernel, signature_: Mapping[str, str], constexprs: Mapping[str, object], attrs=None):
    """The compiler's source object for ``kernel``: Gluon kernels (``@gluon.jit``) need Gluon's."""
    if type(kernel).__name__ == "GluonJITFunction":
        from triton.experimental.gluon._runtime import GluonASTSource

        return GluonASTSource(kernel, dict(signature_), dict(constexprs), attrs or {})
    from triton.compiler import ASTSource

    return ASTSource(kernel, dict(signature_), dict(constexprs), attrs)
