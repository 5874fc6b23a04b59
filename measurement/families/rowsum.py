"""Row sum ``out[i] = sum_j x[i, j]`` of an M x N matrix into a length-M fp32 vector, fp32 accumulation.

The output is float32 for every input dtype (the split variant accumulates into it atomically).
A program handles ``BLOCK_M`` rows.

Variants
--------
single_block
    The whole row in one ``BLOCK_N``-wide block (``BLOCK_N >= N``), reduced with one ``tl.sum``.
looped
    A loop over column blocks into a ``BLOCK_M x BLOCK_N`` fp32 accumulator, reduced once at the end.
split
    A 2D grid: ``SPLIT_N`` programs share each row block, each sums a contiguous run of column blocks and
    ``tl.atomic_add``-s its partial sums into the output, which the launch zeroes first (and is timed).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import triton
import triton.language as tl

from kernelcast.measurement.families._base import element_bytes, torch_dtype
from kernelcast.measurement.families._rowwise import RowwiseFamily
from kernelcast.measurement.records import Scalar
from kernelcast.measurement.space import ConfigSpace, Param, Problem

# Rows past M (in the last row block) re-read row M - 1 so no load needs a row mask; their stores are masked.


@triton.jit
def rowsum_single_block_kernel(
    x_ptr, out_ptr, M, N, stride_xm,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    rows64 = tl.minimum(rows, M - 1).to(tl.int64)
    cols = tl.arange(0, BLOCK_N)
    x = tl.load(x_ptr + rows64[:, None] * stride_xm + cols[None, :], mask=(cols < N)[None, :], other=0.0)
    tl.store(out_ptr + rows, tl.sum(x.to(tl.float32), axis=1), mask=rows < M)


def launch_single_block(x: torch.Tensor, out: torch.Tensor, config: Mapping[str, Scalar]) -> None:
    """Launch the single-block row sum kernel with ``config``."""
    M, N = x.shape
    grid = (triton.cdiv(M, int(config["BLOCK_M"])),)
    rowsum_single_block_kernel[grid](
        x, out, M, N, x.stride(0),
        BLOCK_M=config["BLOCK_M"], BLOCK_N=config["BLOCK_N"],
        num_warps=config["num_warps"],
    )


@triton.jit
def rowsum_looped_kernel(
    x_ptr, out_ptr, M, N, stride_xm,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    rows64 = tl.minimum(rows, M - 1).to(tl.int64)
    x_rows = x_ptr + rows64[:, None] * stride_xm
    acc = tl.zeros((BLOCK_M, BLOCK_N), tl.float32)
    for start in range(0, N, BLOCK_N):
        cols = start + tl.arange(0, BLOCK_N)
        acc += tl.load(x_rows + cols[None, :], mask=(cols < N)[None, :], other=0.0).to(tl.float32)
    tl.store(out_ptr + rows, tl.sum(acc, axis=1), mask=rows < M)


def launch_looped(x: torch.Tensor, out: torch.Tensor, config: Mapping[str, Scalar]) -> None:
    """Launch the looped row sum kernel with ``config``."""
    M, N = x.shape
    grid = (triton.cdiv(M, int(config["BLOCK_M"])),)
    rowsum_looped_kernel[grid](
        x, out, M, N, x.stride(0),
        BLOCK_M=config["BLOCK_M"], BLOCK_N=config["BLOCK_N"],
        num_warps=config["num_warps"], num_stages=config["num_stages"],
    )


@triton.jit
def rowsum_split_kernel(
    x_ptr, out_ptr, M, N, stride_xm,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, SPLIT_N: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    rows64 = tl.minimum(rows, M - 1).to(tl.int64)
    x_rows = x_ptr + rows64[:, None] * stride_xm
    blocks_per_split = tl.cdiv(tl.cdiv(N, BLOCK_N), SPLIT_N)
    col_start = tl.program_id(1) * blocks_per_split * BLOCK_N
    col_end = tl.minimum(col_start + blocks_per_split * BLOCK_N, N)
    acc = tl.zeros((BLOCK_M, BLOCK_N), tl.float32)
    for start in range(col_start, col_end, BLOCK_N):
        cols = start + tl.arange(0, BLOCK_N)
        acc += tl.load(x_rows + cols[None, :], mask=(cols < col_end)[None, :], other=0.0).to(tl.float32)
    tl.atomic_add(out_ptr + rows, tl.sum(acc, axis=1), mask=rows < M)


def launch_split(x: torch.Tensor, out: torch.Tensor, config: Mapping[str, Scalar]) -> None:
    """Zero ``out``, then launch the split row sum kernel with ``config`` (it accumulates atomically)."""
    M, N = x.shape
    out.zero_()
    grid = (triton.cdiv(M, int(config["BLOCK_M"])), int(config["SPLIT_N"]))
    rowsum_split_kernel[grid](
        x, out, M, N, x.stride(0),
        BLOCK_M=config["BLOCK_M"], BLOCK_N=config["BLOCK_N"], SPLIT_N=config["SPLIT_N"],
        num_warps=config["num_warps"], num_stages=config["num_stages"],
    )


class RowSumFamily(RowwiseFamily):
    """Row sums of an M x N matrix in fp16, bf16 or fp32 into an fp32 vector."""

    name = "rowsum"
    dtypes = ("float16", "bfloat16", "float32")
    variants = ("single_block", "looped", "split")
    default_shapes = ("4096x4096", "32768x1024", "8192x50257", "1000x3000", "127x4097", "65536x64", "64x262144")
    description = "out = x.sum(dim=1) of an M x N matrix into float32, fp32 accumulation"

    # Its own spaces: up to 32 (single_block) or 16 rows per program, and the split variant's column splits;
    # 468, 1,000 and 3,375 configurations.
    _SPACES = {
        "single_block": ConfigSpace([
            Param("BLOCK_M", (1, 2, 4, 8, 16, 32)),
            Param("BLOCK_N", tuple(2**k for k in range(4, 17))),  # 16 .. 65536
            Param("num_warps", (1, 2, 4, 8, 16, 32)),
        ]),
        "looped": ConfigSpace([
            Param("BLOCK_M", (1, 2, 4, 8, 16)),
            Param("BLOCK_N", tuple(2**k for k in range(5, 15))),  # 32 .. 16384
            Param("num_warps", (1, 2, 4, 8, 16)),
            Param("num_stages", (1, 2, 3, 4)),
        ]),
        "split": ConfigSpace([
            Param("BLOCK_M", (1, 2, 4, 8, 16)),
            Param("BLOCK_N", tuple(2**k for k in range(5, 14))),  # 32 .. 8192
            Param("SPLIT_N", (2, 4, 8, 16, 32)),
            Param("num_warps", (1, 2, 4, 8, 16)),
            Param("num_stages", (1, 2, 3)),
        ]),
    }
    _KERNELS = {
        "single_block": (rowsum_single_block_kernel, launch_single_block),
        "looped": (rowsum_looped_kernel, launch_looped),
        "split": (rowsum_split_kernel, launch_split),
    }
    # The loaded block, plus the looped accumulator.
    _LIVE_TILES = {"single_block": 1, "looped": 2, "split": 2}

    def _coverage_reason(self, variant: str, config: Mapping[str, Any], problem: Problem) -> str | None:
        """A single block must cover the row; a split needs a column block per split."""
        if reason := super()._coverage_reason(variant, config, problem):
            return reason
        if variant == "split":
            bn, N = int(config["BLOCK_N"]), problem["N"]
            split, blocks = int(config["SPLIT_N"]), triton.cdiv(N, bn)
            if split > blocks:
                return (f"SPLIT_N={split} splits a row into more parts than its {blocks} column block(s) of "
                        f"BLOCK_N={bn} (N={N}); some programs would sum nothing")
        return None

    def _warmup_args(self, problem: Problem) -> tuple[Any, ...]:
        M, N = problem["M"], problem["N"]
        return (torch_dtype(problem.dtype), torch.float32, M, N, N)

    def _grid(self, variant: str, config: Mapping[str, Scalar], problem: Problem) -> tuple[int, ...]:
        """One program per ``BLOCK_M`` rows, times ``SPLIT_N`` for the split variant."""
        rows = super()._grid(variant, config, problem)
        return (*rows, int(config["SPLIT_N"])) if variant == "split" else rows

    def make_inputs(self, problem: Problem, *, device: str, seed: int) -> dict[str, torch.Tensor]:
        """``x`` standard normal."""
        gen = torch.Generator(device=device).manual_seed(seed)
        x = torch.randn((problem["M"], problem["N"]), generator=gen, device=device, dtype=torch.float32)
        return {"x": x.to(torch_dtype(problem.dtype))}

    def new_output(self, problem: Problem, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Empty length-M float32 tensor (the split variant's launcher zeroes it, timed)."""
        return torch.empty((problem["M"],), device=inputs["x"].device, dtype=torch.float32)

    def reference(self, problem: Problem, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Row sums accumulated in float64, returned as float32."""
        return inputs["x"].double().sum(dim=1).float()

    def tolerance(self, dtype: str) -> tuple[float, float]:
        """The output is fp32 for every dtype: sums of order ``sqrt(N)`` with fp32 accumulation-order error."""
        return {"float16": (2e-3, 1e-4), "bfloat16": (2e-3, 1e-4), "float32": (2e-3, 1e-4)}[dtype]

    def flops(self, problem: Problem) -> float:
        """``M N``: one addition per element."""
        return float(problem["M"] * problem["N"])

    def min_bytes(self, problem: Problem) -> float:
        """Input read once, the fp32 output written once."""
        M, N = problem["M"], problem["N"]
        return float(M * N * element_bytes(problem.dtype) + 4 * M)
