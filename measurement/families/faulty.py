"""A deliberately broken family, for testing that failures become records and runs go on.

Not a built-in: register it with ``register_family(FaultyFamily)`` where a test or benchmark needs it.
Every variant copies a vector ``out = x`` except where its name says otherwise:

``ok``            correct copy.
``wrong``         writes ``x + 1``: checked and recorded as ``incorrect``.
``oob_store``     stores far outside the output: an illegal address on a GPU (the worker is replaced).
``infinite_loop`` spins forever on a condition that never holds: a ``timeout``.
``huge_shared``   a matmul tile needing ~512 KB of shared memory: ``out_of_resources`` on a GPU.
``raise``         the Python launcher raises: ``runtime_error``.
``abort``         the launcher aborts the whole process: ``runtime_error`` with the exit code.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import triton
import triton.language as tl

from kernelcast.measurement.families._base import Family, torch_dtype
from kernelcast.measurement.families.matmul import matmul_blocked_kernel
from kernelcast.measurement.records import Scalar
from kernelcast.measurement.space import ConfigSpace, DeviceLimits, Param, Problem


@triton.jit
def copy_kernel(x_ptr, out_ptr, n, shift, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    tl.store(out_ptr + offs, tl.load(x_ptr + offs, mask=mask) + shift, mask=mask)


@triton.jit
def oob_store_kernel(x_ptr, out_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    # 2**40 elements past the end: far outside any allocation.
    tl.store(out_ptr + offs + 1099511627776, tl.load(x_ptr + offs, mask=offs < n, other=0.0))


@triton.jit
def spin_kernel(x_ptr, out_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    # Inputs are finite, so flag == flag always holds; volatile loads keep the compiler from deleting the loop.
    flag = tl.load(x_ptr, volatile=True)
    i = 0
    while flag == flag:
        i += 1
        flag = tl.load(x_ptr + (i % 2), volatile=True)
    tl.store(out_ptr + offs, tl.load(x_ptr + offs, mask=offs < n), mask=offs < n)


class FaultyFamily(Family):
    """Kernels that fail in every way a measurement can fail (see the module docstring)."""

    name = "faulty"
    dims = ("N",)
    dtypes = ("float32", "float16")
    variants = ("ok", "wrong", "oob_store", "infinite_loop", "huge_shared", "raise", "abort")
    default_shapes = ("4096",)
    description = "deliberately broken kernels for isolation tests"

    def space(self, variant: str) -> ConfigSpace:
        """One knob, the block size."""
        self.check_variant(variant)
        return ConfigSpace([Param("BLOCK", (128, 256)), Param("num_warps", (4,))])

    def check_config(self, variant: str, config: Mapping[str, Any], problem: Problem,
                     limits: DeviceLimits) -> str | None:
        """Accept everything, so the failures happen at compile or run time."""
        self.space(variant).validate(config)
        return None

    def source_objects(self, variant: str) -> Sequence[Any]:
        """The kernel each variant runs."""
        self.check_variant(variant)
        kernel = {"oob_store": oob_store_kernel, "infinite_loop": spin_kernel,
                  "huge_shared": matmul_blocked_kernel}.get(variant, copy_kernel)
        return (kernel, FaultyFamily.launch)

    def make_inputs(self, problem: Problem, *, device: str, seed: int) -> dict[str, torch.Tensor]:
        """A random vector."""
        gen = torch.Generator(device=device).manual_seed(seed)
        x = torch.randn((problem["N"],), generator=gen, device=device).to(torch_dtype(problem.dtype))
        return {"x": x}

    def new_output(self, problem: Problem, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Like the input."""
        return torch.empty_like(inputs["x"])

    def launch(self, variant: str, config: Mapping[str, Scalar], problem: Problem,
               inputs: Mapping[str, torch.Tensor], out: torch.Tensor) -> None:
        """Run the variant's kernel (or fail in Python, for ``raise`` and ``abort``)."""
        x, n, block = inputs["x"], problem["N"], int(config["BLOCK"])
        grid = (triton.cdiv(n, block),)
        if variant == "raise":
            raise ValueError("the launcher of the 'raise' variant always raises")
        if variant == "abort":
            os.abort()
        if variant == "oob_store":
            oob_store_kernel[grid](x, out, n, BLOCK=block)
        elif variant == "infinite_loop":
            spin_kernel[grid](x, out, n, BLOCK=block)
        elif variant == "huge_shared":
            a = x.new_empty((256, 256))
            matmul_blocked_kernel[(1,)](a, a, a, 256, 256, 256, 256, 1, 256, 1, 256, 1,
                                        BLOCK_M=256, BLOCK_N=256, BLOCK_K=256, GROUP_M=1, num_warps=4, num_stages=4)
            out.copy_(x)
        else:
            copy_kernel[grid](x, out, n, 1.0 if variant == "wrong" else 0.0, BLOCK=block)

    def compile(self, variant: str, config: Mapping[str, Scalar], problem: Problem) -> list[Any]:
        """Compile the variant's kernel (nothing to compile for ``raise`` and ``abort``)."""
        dt = torch_dtype(problem.dtype)
        n, block = problem["N"], int(config["BLOCK"])
        grid = (triton.cdiv(n, block),)
        if variant in ("raise", "abort"):
            return []
        if variant == "oob_store":
            return [oob_store_kernel.warmup(dt, dt, n, grid=grid, BLOCK=block)]
        if variant == "infinite_loop":
            return [spin_kernel.warmup(dt, dt, n, grid=grid, BLOCK=block)]
        if variant == "huge_shared":
            return [matmul_blocked_kernel.warmup(dt, dt, dt, 256, 256, 256, 256, 1, 256, 1, 256, 1, grid=(1,),
                                                 BLOCK_M=256, BLOCK_N=256, BLOCK_K=256, GROUP_M=1, num_warps=4,
                                                 num_stages=4)]
        return [copy_kernel.warmup(dt, dt, n, 0.0, grid=grid, BLOCK=block)]

    def reference(self, problem: Problem, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The input itself."""
        return inputs["x"].float()

    def flops(self, problem: Problem) -> float:
        """None."""
        return 0.0

    def min_bytes(self, problem: Problem) -> float:
        """Read and write the vector."""
        return 2.0 * problem["N"] * torch.finfo(torch_dtype(problem.dtype)).bits / 8
