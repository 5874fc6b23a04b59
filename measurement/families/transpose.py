"""Transpose ``out = x.T`` of an M x N matrix into a contiguous N x M matrix: a memory-bound copy.

Variants
--------
tiled
    One program per ``BLOCK_M x BLOCK_N`` tile: a coalesced load of x, ``tl.trans`` (a layout change through
    shared memory), a coalesced store of out. Tiles are ordered in groups of ``GROUP_M`` tile rows.
naive
    A 1D grid over out's elements in order, ``BLOCK`` per program: coalesced stores, strided gathers from x.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import triton
import triton.language as tl

from kernelcast.measurement.families._base import Family, element_bytes, shared_memory_reason, torch_dtype
from kernelcast.measurement.families._resources import register_reason
from kernelcast.measurement.records import Scalar
from kernelcast.measurement.space import ConfigSpace, DeviceLimits, Param, Problem


@triton.jit
def transpose_tiled_kernel(
    x_ptr, out_ptr, M, N, stride_xm, stride_om,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, GROUP_M: tl.constexpr,
):
    pid = tl.program_id(0)
    num_pid_m = tl.cdiv(M, BLOCK_M)
    num_pid_n = tl.cdiv(N, BLOCK_N)
    # Grouped ordering: GROUP_M consecutive tile rows run together, so the out rows they write stay open in L2.
    num_pid_in_group = GROUP_M * num_pid_n
    group_id = pid // num_pid_in_group
    first_pid_m = group_id * GROUP_M
    group_size_m = min(num_pid_m - first_pid_m, GROUP_M)
    pid_m = first_pid_m + ((pid % num_pid_in_group) % group_size_m)
    pid_n = (pid % num_pid_in_group) // group_size_m

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    x_ptrs = x_ptr + offs_m.to(tl.int64)[:, None] * stride_xm + offs_n[None, :]
    tile = tl.load(x_ptrs, mask=(offs_m[:, None] < M) & (offs_n[None, :] < N))
    out_ptrs = out_ptr + offs_n.to(tl.int64)[:, None] * stride_om + offs_m[None, :]
    tl.store(out_ptrs, tl.trans(tile), mask=(offs_n[:, None] < N) & (offs_m[None, :] < M))


def launch_tiled(x: torch.Tensor, out: torch.Tensor, config: Mapping[str, Scalar]) -> None:
    """Launch the tiled transpose kernel for ``out = x.T`` with ``config``."""
    M, N = x.shape
    grid = (triton.cdiv(M, int(config["BLOCK_M"])) * triton.cdiv(N, int(config["BLOCK_N"])),)
    transpose_tiled_kernel[grid](
        x, out, M, N, x.stride(0), out.stride(0),
        BLOCK_M=config["BLOCK_M"], BLOCK_N=config["BLOCK_N"], GROUP_M=config["GROUP_M"],
        num_warps=config["num_warps"],
    )


@triton.jit
def transpose_naive_kernel(
    x_ptr, out_ptr, M, N, stride_xm, stride_om, numel,
    BLOCK: tl.constexpr,
):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < numel
    n = offs // M
    m = offs % M
    values = tl.load(x_ptr + m * stride_xm + n, mask=mask)
    tl.store(out_ptr + n * stride_om + m, values, mask=mask)


def launch_naive(x: torch.Tensor, out: torch.Tensor, config: Mapping[str, Scalar]) -> None:
    """Launch the element-wise transpose kernel for ``out = x.T`` with ``config``."""
    M, N = x.shape
    numel = x.numel()
    grid = (triton.cdiv(numel, int(config["BLOCK"])),)
    transpose_naive_kernel[grid](
        x, out, M, N, x.stride(0), out.stride(0), numel,
        BLOCK=config["BLOCK"],
        num_warps=config["num_warps"],
    )


_KERNELS = {
    "tiled": (transpose_tiled_kernel, launch_tiled),
    "naive": (transpose_naive_kernel, launch_naive),
}


class TransposeFamily(Family):
    """``out = x.T`` (M x N in, contiguous N x M out) in fp16, bf16 or fp32."""

    name = "transpose"
    dims = ("M", "N")
    dtypes = ("float16", "bfloat16", "float32")
    variants = ("tiled", "naive")
    default_shapes = ("4096x4096", "8192x8192", "8192x1024", "1024x8192", "1000x3000", "127x4097", "32768x64")
    description = "out = x.T, an M x N matrix into a contiguous N x M one"

    _TILED_SPACE = ConfigSpace([
        Param("BLOCK_M", (16, 32, 64, 128, 256)),
        Param("BLOCK_N", (16, 32, 64, 128, 256)),
        Param("GROUP_M", (1, 4, 8)),
        Param("num_warps", (1, 2, 4, 8, 16)),
    ])
    _NAIVE_SPACE = ConfigSpace([
        Param("BLOCK", tuple(2**k for k in range(7, 15))),  # 128 .. 16384
        Param("num_warps", (1, 2, 4, 8, 16, 32)),
    ])

    def space(self, variant: str) -> ConfigSpace:
        """Tile sizes, tile grouping and warps (``tiled``, 375 configurations), or block and warps (``naive``, 48)."""
        self.check_variant(variant)
        return self._TILED_SPACE if variant == "tiled" else self._NAIVE_SPACE

    def check_config(
        self, variant: str, config: Mapping[str, Any], problem: Problem, limits: DeviceLimits
    ) -> str | None:
        """A tile must fit in shared memory (for ``tl.trans``) and in registers."""
        super().check_config(variant, config, problem, limits)
        size = element_bytes(problem.dtype)
        warps = int(config["num_warps"])
        if variant == "naive":
            return register_reason(-(-int(config["BLOCK"]) * size // 4), warps, limits)
        tile = int(config["BLOCK_M"]) * int(config["BLOCK_N"])
        return shared_memory_reason(tile * size, limits) or register_reason(-(-tile * size // 4), warps, limits)

    def source_objects(self, variant: str) -> Sequence[Any]:
        """The variant's kernel and its launcher."""
        self.check_variant(variant)
        return _KERNELS[variant]

    def make_inputs(self, problem: Problem, *, device: str, seed: int) -> dict[str, torch.Tensor]:
        """``x`` standard normal."""
        gen = torch.Generator(device=device).manual_seed(seed)
        x = torch.randn((problem["M"], problem["N"]), generator=gen, device=device, dtype=torch.float32)
        return {"x": x.to(torch_dtype(problem.dtype))}

    def new_output(self, problem: Problem, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Empty N x M tensor of the problem dtype."""
        x = inputs["x"]
        return torch.empty((problem["N"], problem["M"]), device=x.device, dtype=x.dtype)

    def launch(
        self,
        variant: str,
        config: Mapping[str, Scalar],
        problem: Problem,
        inputs: Mapping[str, torch.Tensor],
        out: torch.Tensor,
    ) -> None:
        """Run the variant's kernel into ``out``."""
        self.check_variant(variant)
        _KERNELS[variant][1](inputs["x"], out, config)

    def compile(self, variant: str, config: Mapping[str, Scalar], problem: Problem) -> list[Any]:
        """Compile the variant's kernel for ``problem`` without launching it."""
        self.check_variant(variant)
        M, N = problem["M"], problem["N"]
        dt = torch_dtype(problem.dtype)
        if variant == "naive":
            return [transpose_naive_kernel.warmup(
                dt, dt, M, N, N, M, M * N,
                grid=(triton.cdiv(M * N, int(config["BLOCK"])),),
                BLOCK=config["BLOCK"],
                num_warps=config["num_warps"],
            )]
        return [transpose_tiled_kernel.warmup(
            dt, dt, M, N, N, M,
            grid=(triton.cdiv(M, int(config["BLOCK_M"])) * triton.cdiv(N, int(config["BLOCK_N"])),),
            BLOCK_M=config["BLOCK_M"], BLOCK_N=config["BLOCK_N"], GROUP_M=config["GROUP_M"],
            num_warps=config["num_warps"],
        )]

    def reference(self, problem: Problem, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """``x.T`` as a contiguous float32 matrix."""
        return inputs["x"].float().t().contiguous()

    def tolerance(self, dtype: str) -> tuple[float, float]:
        """A copy is exact."""
        return (0.0, 0.0)

    def flops(self, problem: Problem) -> float:
        """A transpose does no arithmetic: 0."""
        return 0.0

    def min_bytes(self, problem: Problem) -> float:
        """Input read once, output written once."""
        return float(2 * problem["M"] * problem["N"] * element_bytes(problem.dtype))
