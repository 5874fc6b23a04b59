"""RMS norm forward ``out = x / sqrt(mean(x**2) + eps) * weight`` over the last dim of an M x N matrix.

The mean square is per row, in fp32, with ``eps = 1e-6`` (LLaMA's); weight is a length-N vector of the input
dtype. A program handles ``BLOCK_M`` rows.

Variants
--------
single_block
    The whole row in one ``BLOCK_N``-wide block (``BLOCK_N >= N``): one read of x.
looped
    A sum-of-squares loop over column blocks (fp32 block accumulator), then a normalize loop: two reads of x.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import triton
import triton.language as tl

from kernelcast.measurement.families._base import element_bytes, torch_dtype
from kernelcast.measurement.families._rowwise import LOOPED_SPACE, SINGLE_BLOCK_SPACE, RowwiseFamily
from kernelcast.measurement.records import Scalar
from kernelcast.measurement.space import Problem

EPS = 1e-6
"""The epsilon added to the mean square (LLaMA's ``rms_norm_eps``)."""

# Rows past M (in the last program) re-read row M - 1 so every lane stays finite; their stores are masked.


@triton.jit
def rmsnorm_single_block_kernel(
    x_ptr, w_ptr, out_ptr, M, N, stride_xm, stride_om, eps,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    row_mask = rows < M
    rows64 = tl.minimum(rows, M - 1).to(tl.int64)
    cols = tl.arange(0, BLOCK_N)
    col_mask = cols < N
    x = tl.load(x_ptr + rows64[:, None] * stride_xm + cols[None, :], mask=col_mask[None, :], other=0.0)
    x = x.to(tl.float32)
    rstd = tl.rsqrt(tl.sum(x * x, axis=1) / N + eps)
    w = tl.load(w_ptr + cols, mask=col_mask, other=0.0).to(tl.float32)
    y = x * rstd[:, None] * w[None, :]
    tl.store(out_ptr + rows64[:, None] * stride_om + cols[None, :], y.to(out_ptr.dtype.element_ty),
             mask=row_mask[:, None] & col_mask[None, :])


def launch_single_block(x: torch.Tensor, w: torch.Tensor, out: torch.Tensor, config: Mapping[str, Scalar]) -> None:
    """Launch the single-block RMS norm kernel with ``config``."""
    M, N = x.shape
    grid = (triton.cdiv(M, int(config["BLOCK_M"])),)
    rmsnorm_single_block_kernel[grid](
        x, w, out, M, N, x.stride(0), out.stride(0), EPS,
        BLOCK_M=config["BLOCK_M"], BLOCK_N=config["BLOCK_N"],
        num_warps=config["num_warps"],
    )


@triton.jit
def rmsnorm_looped_kernel(
    x_ptr, w_ptr, out_ptr, M, N, stride_xm, stride_om, eps,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    row_mask = rows < M
    rows64 = tl.minimum(rows, M - 1).to(tl.int64)
    x_rows = x_ptr + rows64[:, None] * stride_xm
    out_rows = out_ptr + rows64[:, None] * stride_om
    acc = tl.zeros((BLOCK_M, BLOCK_N), tl.float32)
    for start in range(0, N, BLOCK_N):
        cols = start + tl.arange(0, BLOCK_N)
        x = tl.load(x_rows + cols[None, :], mask=(cols < N)[None, :], other=0.0).to(tl.float32)
        acc += x * x
    rstd = tl.rsqrt(tl.sum(acc, axis=1) / N + eps)
    for start in range(0, N, BLOCK_N):
        cols = start + tl.arange(0, BLOCK_N)
        col_mask = cols < N
        x = tl.load(x_rows + cols[None, :], mask=col_mask[None, :], other=0.0).to(tl.float32)
        w = tl.load(w_ptr + cols, mask=col_mask, other=0.0).to(tl.float32)
        y = x * rstd[:, None] * w[None, :]
        tl.store(out_rows + cols[None, :], y.to(out_ptr.dtype.element_ty),
                 mask=row_mask[:, None] & col_mask[None, :])


def launch_looped(x: torch.Tensor, w: torch.Tensor, out: torch.Tensor, config: Mapping[str, Scalar]) -> None:
    """Launch the two-loop (sum of squares, normalize) RMS norm kernel with ``config``."""
    M, N = x.shape
    grid = (triton.cdiv(M, int(config["BLOCK_M"])),)
    rmsnorm_looped_kernel[grid](
        x, w, out, M, N, x.stride(0), out.stride(0), EPS,
        BLOCK_M=config["BLOCK_M"], BLOCK_N=config["BLOCK_N"],
        num_warps=config["num_warps"], num_stages=config["num_stages"],
    )


class RMSNormFamily(RowwiseFamily):
    """RMS norm forward with weight over the last dim, in fp16, bf16 or fp32 with fp32 statistics."""

    name = "rmsnorm"
    dtypes = ("float16", "bfloat16", "float32")
    variants = ("single_block", "looped")
    default_shapes = ("4096x4096", "32768x1024", "16384x5120", "8192x8192", "1000x3000", "127x4097")
    description = "out = x * rsqrt(mean(x**2, dim=1) + 1e-6) * weight of an M x N matrix, fp32 statistics"

    _SPACES = {"single_block": SINGLE_BLOCK_SPACE, "looped": LOOPED_SPACE}
    _KERNELS = {
        "single_block": (rmsnorm_single_block_kernel, launch_single_block),
        "looped": (rmsnorm_looped_kernel, launch_looped),
    }
    # The row, plus the looped variant's accumulator.
    _LIVE_TILES = {"single_block": 1, "looped": 2}
    _INPUTS = ("x", "weight")

    def _warmup_args(self, problem: Problem) -> tuple[Any, ...]:
        dt = torch_dtype(problem.dtype)
        M, N = problem["M"], problem["N"]
        return (dt, dt, dt, M, N, N, N, EPS)

    def make_inputs(self, problem: Problem, *, device: str, seed: int) -> dict[str, torch.Tensor]:
        """``x`` standard normal; ``weight`` random near 1."""
        gen = torch.Generator(device=device).manual_seed(seed)
        dtype = torch_dtype(problem.dtype)
        M, N = problem["M"], problem["N"]
        x = torch.randn((M, N), generator=gen, device=device, dtype=torch.float32)
        w = 1.0 + 0.1 * torch.randn((N,), generator=gen, device=device, dtype=torch.float32)
        return {"x": x.to(dtype), "weight": w.to(dtype)}

    def reference(self, problem: Problem, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """``x * rsqrt(mean(x**2) + eps) * weight`` in float32."""
        x, w = inputs["x"].float(), inputs["weight"].float()
        return x * torch.rsqrt(x.pow(2).mean(dim=1, keepdim=True) + EPS) * w

    def tolerance(self, dtype: str) -> tuple[float, float]:
        """Outputs are of order one: the storage's rounding, and fp32 summation order for float32."""
        return {"float16": (1e-2, 1e-2), "bfloat16": (5e-2, 2e-2), "float32": (1e-4, 1e-4)}[dtype]

    def flops(self, problem: Problem) -> float:
        """``4 M N``: square and sum, scale by ``rstd``, multiply by weight."""
        return 4.0 * problem["M"] * problem["N"]

    def min_bytes(self, problem: Problem) -> float:
        """Weight and x read once, out written once."""
        M, N = problem["M"], problem["N"]
        return float((2 * M * N + N) * element_bytes(problem.dtype))
