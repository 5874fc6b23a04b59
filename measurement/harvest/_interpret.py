"""Running Inductor's Triton kernels under Triton's CPU interpreter (``TRITON_INTERPRET=1``), for tests.

Inductor's kernels call ``libdevice`` (``libdevice.exp``, ``libdevice.rsqrt``, ...), which Triton 3.6's
interpreter does not implement. :data:`INTERPRETER_LIBDEVICE` stands in for it: each function is written
with ``triton.language`` operations, which the interpreter does patch. It replaces the ``libdevice`` global of
a kernel's module only under the interpreter; results match libdevice to float32 rounding, except where noted
(``pow`` of negative bases, round-half-even). On a GPU nothing here is used.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import triton.language as tl


class _InterpreterLibdevice:
    """``libdevice`` functions in terms of ``triton.language``, for the interpreter only."""

    @staticmethod
    def tanh(x: Any) -> Any:
        return 2.0 * tl.sigmoid(2.0 * x) - 1.0

    @staticmethod
    def pow(x: Any, y: Any) -> Any:  # noqa: A003 - libdevice's name; positive bases only
        return tl.exp2(y * tl.log2(x))

    @staticmethod
    def log1p(x: Any) -> Any:
        return tl.log(1.0 + x)

    @staticmethod
    def expm1(x: Any) -> Any:
        return tl.exp(x) - 1.0

    @staticmethod
    def nearbyint(x: Any) -> Any:
        return tl.floor(x + 0.5)

    @staticmethod
    def rint(x: Any) -> Any:
        return tl.floor(x + 0.5)

    @staticmethod
    def round(x: Any) -> Any:  # noqa: A003 - libdevice's name
        return tl.floor(x + 0.5)

    @staticmethod
    def isnan(x: Any) -> Any:
        return x != x

    @staticmethod
    def isinf(x: Any) -> Any:
        return tl.abs(x) == float("inf")

    @staticmethod
    def signbit(x: Any) -> Any:
        return x < 0

    @staticmethod
    def tan(x: Any) -> Any:
        return tl.sin(x) / tl.cos(x)

    def __getattr__(self, name: str) -> Any:
        # exp, exp2, log, log2, sqrt, rsqrt, erf, sin, cos, floor, ceil, abs, ...: the interpreter patches these.
        for module in (tl.math, tl):
            if hasattr(module, name):
                return getattr(module, name)
        if name == "fabs":
            return tl.abs
        raise AttributeError(f"libdevice.{name} has no interpreter stand-in in kernelcast")


INTERPRETER_LIBDEVICE = _InterpreterLibdevice()
"""The stand-in ``libdevice`` object."""


def use_interpreter_libdevice(namespace: dict[str, Any] | ModuleType) -> None:
    """Point a kernel module's ``libdevice`` global at :data:`INTERPRETER_LIBDEVICE`."""
    target = namespace.__dict__ if isinstance(namespace, ModuleType) else namespace
    if "libdevice" in target:
        target["libdevice"] = INTERPRETER_LIBDEVICE
