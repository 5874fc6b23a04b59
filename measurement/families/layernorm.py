"""Layer norm forward ``out = (x - mean) / sqrt(var + eps) * weight + bias`` over the last dim of an M x N matrix.

Statistics are per row, in fp32, with the biased variance and ``eps = 1e-5``; weight and bias are length-N
vectors of the input dtype. A program handles ``BLOCK_M`` rows.

Variants
--------
single_block
    The whole row in one ``BLOCK_N``-wide block (``BLOCK_N >= N``): one read of x.
looped
    Column-block loops: a sum pass for the mean, a squared-deviation pass for the variance, then a normalize
    pass (fp32 block accumulators, as in Triton's tutorial): three reads of x.
welford
    One statistics pass with a Welford update per lane (count, mean, M2), lanes merged with the parallel
    variance formula of Chan et al., then a normalize pass: two reads of x.
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

EPS = 1e-5
"""The epsilon added to the variance (PyTorch's ``nn.LayerNorm`` default)."""

# Rows past M (in the last program) re-read row M - 1 so every lane stays finite; their stores are masked.


@triton.jit
def layernorm_single_block_kernel(
    x_ptr, w_ptr, b_ptr, out_ptr, M, N, stride_xm, stride_om, eps,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    row_mask = rows < M
    rows64 = tl.minimum(rows, M - 1).to(tl.int64)
    cols = tl.arange(0, BLOCK_N)
    col_mask = cols < N
    x = tl.load(x_ptr + rows64[:, None] * stride_xm + cols[None, :], mask=col_mask[None, :], other=0.0)
    x = x.to(tl.float32)
    mean = tl.sum(x, axis=1) / N
    xc = tl.where(col_mask[None, :], x - mean[:, None], 0.0)
    var = tl.sum(xc * xc, axis=1) / N
    rstd = tl.rsqrt(var + eps)
    w = tl.load(w_ptr + cols, mask=col_mask, other=0.0).to(tl.float32)
    b = tl.load(b_ptr + cols, mask=col_mask, other=0.0).to(tl.float32)
    y = xc * rstd[:, None] * w[None, :] + b[None, :]
    tl.store(out_ptr + rows64[:, None] * stride_om + cols[None, :], y.to(out_ptr.dtype.element_ty),
             mask=row_mask[:, None] & col_mask[None, :])


def launch_single_block(
    x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, out: torch.Tensor, config: Mapping[str, Scalar]
) -> None:
    """Launch the single-block layer norm kernel with ``config``."""
    M, N = x.shape
    grid = (triton.cdiv(M, int(config["BLOCK_M"])),)
    layernorm_single_block_kernel[grid](
        x, w, b, out, M, N, x.stride(0), out.stride(0), EPS,
        BLOCK_M=config["BLOCK_M"], BLOCK_N=config["BLOCK_N"],
        num_warps=config["num_warps"],
    )


@triton.jit
def layernorm_looped_kernel(
    x_ptr, w_ptr, b_ptr, out_ptr, M, N, stride_xm, stride_om, eps,
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
        acc += tl.load(x_rows + cols[None, :], mask=(cols < N)[None, :], other=0.0).to(tl.float32)
    mean = tl.sum(acc, axis=1) / N
    acc = tl.zeros((BLOCK_M, BLOCK_N), tl.float32)
    for start in range(0, N, BLOCK_N):
        cols = start + tl.arange(0, BLOCK_N)
        col_mask = cols < N
        x = tl.load(x_rows + cols[None, :], mask=col_mask[None, :], other=0.0).to(tl.float32)
        xc = tl.where(col_mask[None, :], x - mean[:, None], 0.0)
        acc += xc * xc
    rstd = tl.rsqrt(tl.sum(acc, axis=1) / N + eps)
    for start in range(0, N, BLOCK_N):
        cols = start + tl.arange(0, BLOCK_N)
        col_mask = cols < N
        x = tl.load(x_rows + cols[None, :], mask=col_mask[None, :], other=0.0).to(tl.float32)
        w = tl.load(w_ptr + cols, mask=col_mask, other=0.0).to(tl.float32)
        b = tl.load(b_ptr + cols, mask=col_mask, other=0.0).to(tl.float32)
        y = (x - mean[:, None]) * rstd[:, None] * w[None, :] + b[None, :]
        tl.store(out_rows + cols[None, :], y.to(out_ptr.dtype.element_ty),
                 mask=row_mask[:, None] & col_mask[None, :])


def launch_looped(
    x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, out: torch.Tensor, config: Mapping[str, Scalar]
) -> None:
    """Launch the three-loop (mean, variance, normalize) layer norm kernel with ``config``."""
    M, N = x.shape
    grid = (triton.cdiv(M, int(config["BLOCK_M"])),)
    layernorm_looped_kernel[grid](
        x, w, b, out, M, N, x.stride(0), out.stride(0), EPS,
        BLOCK_M=config["BLOCK_M"], BLOCK_N=config["BLOCK_N"],
        num_warps=config["num_warps"], num_stages=config["num_stages"],
    )


@triton.jit
def layernorm_welford_kernel(
    x_ptr, w_ptr, b_ptr, out_ptr, M, N, stride_xm, stride_om, eps,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    row_mask = rows < M
    rows64 = tl.minimum(rows, M - 1).to(tl.int64)
    x_rows = x_ptr + rows64[:, None] * stride_xm
    out_rows = out_ptr + rows64[:, None] * stride_om
    # Per-lane Welford state: each lane j sees columns j, j + BLOCK_N, ... of its row.
    count = tl.zeros((BLOCK_N,), tl.float32)
    lane_mean = tl.zeros((BLOCK_M, BLOCK_N), tl.float32)
    lane_m2 = tl.zeros((BLOCK_M, BLOCK_N), tl.float32)
    for start in range(0, N, BLOCK_N):
        cols = start + tl.arange(0, BLOCK_N)
        col_mask = cols < N
        x = tl.load(x_rows + cols[None, :], mask=col_mask[None, :], other=0.0).to(tl.float32)
        count += col_mask.to(tl.float32)
        delta = x - lane_mean
        lane_mean += tl.where(col_mask[None, :], delta / tl.maximum(count, 1.0)[None, :], 0.0)
        lane_m2 += tl.where(col_mask[None, :], delta * (x - lane_mean), 0.0)
    # Merge the lanes: mean = sum(n_j mean_j) / N, M2 = sum(M2_j + n_j (mean_j - mean)^2).
    mean = tl.sum(lane_mean * count[None, :], axis=1) / N
    dev = lane_mean - mean[:, None]
    var = tl.sum(lane_m2 + count[None, :] * dev * dev, axis=1) / N
    rstd = tl.rsqrt(var + eps)
    for start in range(0, N, BLOCK_N):
        cols = start + tl.arange(0, BLOCK_N)
        col_mask = cols < N
        x = tl.load(x_rows + cols[None, :], mask=col_mask[None, :], other=0.0).to(tl.float32)
        w = tl.load(w_ptr + cols, mask=col_mask, other=0.0).to(tl.float32)
        b = tl.load(b_ptr + cols, mask=col_mask, other=0.0).to(tl.float32)
        y = (x - mean[:, None]) * rstd[:, None] * w[None, :] + b[None, :]
        tl.store(out_rows + cols[None, :], y.to(out_ptr.dtype.element_ty),
                 mask=row_mask[:, None] & col_mask[None, :])


def launch_welford(
    x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, out: torch.Tensor, config: Mapping[str, Scalar]
) -> None:
    """Launch the one-pass Welford layer norm kernel with ``config``."""
    M, N = x.shape
    grid = (triton.cdiv(M, int(config["BLOCK_M"])),)
    layernorm_welford_kernel[grid](
        x, w, b, out, M, N, x.stride(0), out.stride(0), EPS,
        BLOCK_M=config["BLOCK_M"], BLOCK_N=config["BLOCK_N"],
        num_warps=config["num_warps"], num_stages=config["num_stages"],
    )


class LayerNormFamily(RowwiseFamily):
    """Layer norm forward with weight and bias over the last dim, in fp16, bf16 or fp32 with fp32 statistics."""

    name = "layernorm"
    dtypes = ("float16", "bfloat16", "float32")
    variants = ("single_block", "looped", "welford")
    default_shapes = ("4096x4096", "32768x1024", "16384x768", "8192x8192", "1000x3000", "127x4097",
                      "4096x12288")
    description = "out = layer_norm(x, [N], weight, bias, eps=1e-5) of an M x N matrix, fp32 statistics"

    _SPACES = {"single_block": SINGLE_BLOCK_SPACE, "looped": LOOPED_SPACE, "welford": LOOPED_SPACE}
    _KERNELS = {
        "single_block": (layernorm_single_block_kernel, launch_single_block),
        "looped": (layernorm_looped_kernel, launch_looped),
        "welford": (layernorm_welford_kernel, launch_welford),
    }
    # The row, plus an accumulator, plus Welford's mean and M2.
    _LIVE_TILES = {"single_block": 1, "looped": 2, "welford": 3}
    _INPUTS = ("x", "weight", "bias")

    def _warmup_args(self, problem: Problem) -> tuple[Any, ...]:
        dt = torch_dtype(problem.dtype)
        M, N = problem["M"], problem["N"]
        return (dt, dt, dt, dt, M, N, N, N, EPS)

    def make_inputs(self, problem: Problem, *, device: str, seed: int) -> dict[str, torch.Tensor]:
        """``x`` normal with mean 1 and standard deviation 2; ``weight`` near 1 and ``bias`` near 0, both random."""
        gen = torch.Generator(device=device).manual_seed(seed)
        dtype = torch_dtype(problem.dtype)
        M, N = problem["M"], problem["N"]
        x = torch.randn((M, N), generator=gen, device=device, dtype=torch.float32) * 2.0 + 1.0
        w = 1.0 + 0.1 * torch.randn((N,), generator=gen, device=device, dtype=torch.float32)
        b = 0.1 * torch.randn((N,), generator=gen, device=device, dtype=torch.float32)
        return {"x": x.to(dtype), "weight": w.to(dtype), "bias": b.to(dtype)}

    def reference(self, problem: Problem, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """``torch.nn.functional.layer_norm`` in float32."""
        x, w, b = inputs["x"].float(), inputs["weight"].float(), inputs["bias"].float()
        return torch.nn.functional.layer_norm(x, (problem["N"],), w, b, eps=EPS)

    def tolerance(self, dtype: str) -> tuple[float, float]:
        """Outputs are of order one: the storage's rounding, and fp32 summation order for float32."""
        return {"float16": (1e-2, 1e-2), "bfloat16": (5e-2, 2e-2), "float32": (1e-4, 1e-4)}[dtype]

    def flops(self, problem: Problem) -> float:
        """``7 M N``: sum, centre, square and sum, scale by ``rstd``, multiply by weight, add bias."""
        return 7.0 * problem["M"] * problem["N"]

    def min_bytes(self, problem: Problem) -> float:
        """Input, weight and bias read once, output written once."""
        M, N = problem["M"], problem["N"]
        return float((2 * M * N + 2 * N) * element_bytes(problem.dtype))
