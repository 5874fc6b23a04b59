"""Shared checks of the built-in families: run a variant against its reference, and compare compile with launch.

The checks are fixtures (tests import nothing from ``tests/``): ``run_variant`` launches a variant into a
NaN-poisoned output and compares it with the reference; ``kernel_calls`` records what a family passes to its
Triton kernels in ``compile`` (``warmup``) and in ``launch``, without running them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import pytest
import torch

from kernelcast.measurement.families import Family
from kernelcast.measurement.records import Scalar
from kernelcast.measurement.space import DeviceLimits

HOPPER = DeviceLimits.hopper()


def _run_variant(
    family: Family, variant: str, config: Mapping[str, Scalar], shape: str, dtype: str, seed: int = 0,
    inputs: Mapping[str, torch.Tensor] | None = None,
) -> torch.Tensor:
    problem = family.problem(shape, dtype)
    reason = family.check_config(variant, config, problem, HOPPER)
    assert reason is None, f"{variant} {config} rejected for {shape}: {reason}"
    if inputs is None:
        inputs = family.make_inputs(problem, device="cpu", seed=seed)
    out = family.new_output(problem, inputs)
    out.fill_(float("nan"))
    family.launch(variant, config, problem, inputs, out)
    assert not torch.isnan(out).any(), f"{variant} {config} {shape} {dtype} left NaN in the output"
    ref = family.reference(problem, inputs)
    assert ref.dtype in (torch.float32, torch.float64)
    atol, rtol = family.tolerance(dtype)
    got = out.to(ref.dtype)
    assert got.shape == ref.shape
    err = (got - ref).abs().max().item()
    assert torch.allclose(got, ref, atol=atol, rtol=rtol), (
        f"{variant} {config} {shape} {dtype}: max abs error {err:.3g} (atol={atol}, rtol={rtol})"
    )
    return out


@pytest.fixture
def run_variant() -> Callable[..., torch.Tensor]:
    """``run_variant(family, variant, config, shape, dtype, seed=0, inputs=None)`` -> the checked output."""
    return _run_variant


def _describe_arg(arg: Any) -> Any:
    """A tensor (or warmup's dtype stand-in) by its dtype; any other argument by its type and value."""
    if hasattr(arg, "data_ptr") or type(arg).__name__ == "MockTensor":
        return ("tensor", arg.dtype)
    return (type(arg).__name__, arg)


@pytest.fixture
def kernel_calls(monkeypatch: pytest.MonkeyPatch) -> Callable[..., list[dict[str, Any]]]:
    """``kernel_calls(family, variant, action)`` -> one dict per kernel call ``action()`` made, not run.

    Each dict holds the kernel name, whether it was a warmup, the described positional arguments and the
    keyword arguments (constexprs, ``num_warps``, ``num_stages``).
    """

    def record(family: Family, variant: str, action: Callable[[], Any]) -> list[dict[str, Any]]:
        calls: list[dict[str, Any]] = []
        for obj in family.source_objects(variant):
            if not hasattr(obj, "run"):
                continue

            def fake_run(*args: Any, grid: Any, warmup: bool, _name: str = obj.fn.__name__, **kwargs: Any) -> None:
                calls.append({"kernel": _name, "warmup": warmup, "args": [_describe_arg(a) for a in args],
                              "kwargs": dict(kwargs), "grid": grid})

            monkeypatch.setattr(obj, "run", fake_run, raising=False)
        action()
        monkeypatch.undo()
        return calls

    return record
