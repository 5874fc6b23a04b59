"""Row-wise softmax ``out[i, :] = exp(x[i, :] - max_i) / sum(exp(x[i, :] - max_i))`` of an M x N matrix.

Every variant computes in fp32 and stores in the input dtype; a program handles ``BLOCK_M`` rows.

Variants
--------
single_block
    The whole row in one ``BLOCK_N``-wide block (``BLOCK_N >= N``): one read, one write.
online
    One pass over column blocks keeping a running max and a running sum rescaled by ``exp(m_old - m_new)``,
    then a normalize pass: two reads, one write.
two_pass
    A max pass, a sum-of-exponentials pass, then a normalize pass: three reads, one write.
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

# Rows past M (in the last program) re-read row M - 1 so every lane stays finite; their stores are masked.


@triton.jit
def softmax_single_block_kernel(
    x_ptr, out_ptr, M, N, stride_xm, stride_om,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    row_mask = rows < M
    rows64 = tl.minimum(rows, M - 1).to(tl.int64)
    cols = tl.arange(0, BLOCK_N)
    col_mask = cols < N
    x = tl.load(x_ptr + rows64[:, None] * stride_xm + cols[None, :], mask=col_mask[None, :], other=-float("inf"))
    x = x.to(tl.float32)
    row_max = tl.max(x, axis=1)
    num = tl.exp(x - row_max[:, None])
    den = tl.sum(num, axis=1)
    y = num / den[:, None]
    tl.store(out_ptr + rows64[:, None] * stride_om + cols[None, :], y.to(out_ptr.dtype.element_ty),
             mask=row_mask[:, None] & col_mask[None, :])


def launch_single_block(x: torch.Tensor, out: torch.Tensor, config: Mapping[str, Scalar]) -> None:
    """Launch the single-block kernel for ``out = softmax(x, dim=1)`` with ``config``."""
    M, N = x.shape
    grid = (triton.cdiv(M, int(config["BLOCK_M"])),)
    softmax_single_block_kernel[grid](
        x, out, M, N, x.stride(0), out.stride(0),
        BLOCK_M=config["BLOCK_M"], BLOCK_N=config["BLOCK_N"],
        num_warps=config["num_warps"],
    )


@triton.jit
def softmax_online_kernel(
    x_ptr, out_ptr, M, N, stride_xm, stride_om,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    row_mask = rows < M
    rows64 = tl.minimum(rows, M - 1).to(tl.int64)
    x_rows = x_ptr + rows64[:, None] * stride_xm
    out_rows = out_ptr + rows64[:, None] * stride_om
    # Running max m and running sum l of exp(x - m); l is rescaled whenever m grows.
    m = tl.full((BLOCK_M,), -float("inf"), tl.float32)
    l = tl.zeros((BLOCK_M,), tl.float32)
    for start in range(0, N, BLOCK_N):
        cols = start + tl.arange(0, BLOCK_N)
        x = tl.load(x_rows + cols[None, :], mask=(cols < N)[None, :], other=-float("inf")).to(tl.float32)
        m_new = tl.maximum(m, tl.max(x, axis=1))
        l = l * tl.exp(m - m_new) + tl.sum(tl.exp(x - m_new[:, None]), axis=1)
        m = m_new
    inv_l = 1.0 / l
    for start in range(0, N, BLOCK_N):
        cols = start + tl.arange(0, BLOCK_N)
        col_mask = cols < N
        x = tl.load(x_rows + cols[None, :], mask=col_mask[None, :], other=-float("inf")).to(tl.float32)
        y = tl.exp(x - m[:, None]) * inv_l[:, None]
        tl.store(out_rows + cols[None, :], y.to(out_ptr.dtype.element_ty),
                 mask=row_mask[:, None] & col_mask[None, :])


def launch_online(x: torch.Tensor, out: torch.Tensor, config: Mapping[str, Scalar]) -> None:
    """Launch the online (running max and sum) kernel for ``out = softmax(x, dim=1)`` with ``config``."""
    M, N = x.shape
    grid = (triton.cdiv(M, int(config["BLOCK_M"])),)
    softmax_online_kernel[grid](
        x, out, M, N, x.stride(0), out.stride(0),
        BLOCK_M=config["BLOCK_M"], BLOCK_N=config["BLOCK_N"],
        num_warps=config["num_warps"], num_stages=config["num_stages"],
    )


@triton.jit
def softmax_two_pass_kernel(
    x_ptr, out_ptr, M, N, stride_xm, stride_om,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    row_mask = rows < M
    rows64 = tl.minimum(rows, M - 1).to(tl.int64)
    x_rows = x_ptr + rows64[:, None] * stride_xm
    out_rows = out_ptr + rows64[:, None] * stride_om
    m = tl.full((BLOCK_M,), -float("inf"), tl.float32)
    for start in range(0, N, BLOCK_N):
        cols = start + tl.arange(0, BLOCK_N)
        x = tl.load(x_rows + cols[None, :], mask=(cols < N)[None, :], other=-float("inf")).to(tl.float32)
        m = tl.maximum(m, tl.max(x, axis=1))
    l = tl.zeros((BLOCK_M,), tl.float32)
    for start in range(0, N, BLOCK_N):
        cols = start + tl.arange(0, BLOCK_N)
        x = tl.load(x_rows + cols[None, :], mask=(cols < N)[None, :], other=-float("inf")).to(tl.float32)
        l += tl.sum(tl.exp(x - m[:, None]), axis=1)
    inv_l = 1.0 / l
    for start in range(0, N, BLOCK_N):
        cols = start + tl.arange(0, BLOCK_N)
        col_mask = cols < N
        x = tl.load(x_rows + cols[None, :], mask=col_mask[None, :], other=-float("inf")).to(tl.float32)
        y = tl.exp(x - m[:, None]) * inv_l[:, None]
        tl.store(out_rows + cols[None, :], y.to(out_ptr.dtype.element_ty),
                 mask=row_mask[:, None] & col_mask[None, :])


def launch_two_pass(x: torch.Tensor, out: torch.Tensor, config: Mapping[str, Scalar]) -> None:
    """Launch the max-pass / sum-pass / normalize kernel for ``out = softmax(x, dim=1)`` with ``config``."""
    M, N = x.shape
    grid = (triton.cdiv(M, int(config["BLOCK_M"])),)
    softmax_two_pass_kernel[grid](
        x, out, M, N, x.stride(0), out.stride(0),
        BLOCK_M=config["BLOCK_M"], BLOCK_N=config["BLOCK_N"],
        num_warps=config["num_warps"], num_stages=config["num_stages"],
    )


class SoftmaxFamily(RowwiseFamily):
    """Row-wise softmax of an M x N matrix in fp16, bf16 or fp32, computed in fp32."""

    name = "softmax"
    dtypes = ("float16", "bfloat16", "float32")
    variants = ("single_block", "online", "two_pass")
    default_shapes = ("4096x4096", "32768x1024", "8192x50257", "1000x3000", "127x4097", "16384x128",
                      "2048x32000")
    description = "out = softmax(x, dim=1) of an M x N matrix, fp32 math"

    _SPACES = {"single_block": SINGLE_BLOCK_SPACE, "online": LOOPED_SPACE, "two_pass": LOOPED_SPACE}
    _KERNELS = {
        "single_block": (softmax_single_block_kernel, launch_single_block),
        "online": (softmax_online_kernel, launch_online),
        "two_pass": (softmax_two_pass_kernel, launch_two_pass),
    }
    # The fp32 row block is the one live tile: the running max and sum are per row, not per element.
    _LIVE_TILES = {"single_block": 1, "online": 1, "two_pass": 1}

    def _warmup_args(self, problem: Problem) -> tuple[Any, ...]:
        dt = torch_dtype(problem.dtype)
        M, N = problem["M"], problem["N"]
        return (dt, dt, M, N, N, N)

    def make_inputs(self, problem: Problem, *, device: str, seed: int) -> dict[str, torch.Tensor]:
        """Logits ``x`` with normal entries of standard deviation 2."""
        gen = torch.Generator(device=device).manual_seed(seed)
        x = torch.randn((problem["M"], problem["N"]), generator=gen, device=device, dtype=torch.float32) * 2.0
        return {"x": x.to(torch_dtype(problem.dtype))}

    def reference(self, problem: Problem, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """``torch.softmax`` of ``x`` in float32."""
        return torch.softmax(inputs["x"].float(), dim=1)

    def tolerance(self, dtype: str) -> tuple[float, float]:
        """Probabilities are small, so the absolute tolerance is tight and the relative one is the storage's."""
        return {"float16": (1e-5, 2e-3), "bfloat16": (1e-5, 1e-2), "float32": (1e-6, 1e-4)}[dtype]

    def flops(self, problem: Problem) -> float:
        """``5 M N``: per element a max, a subtraction, an exponential, an addition and a multiplication."""
        return 5.0 * problem["M"] * problem["N"]

    def min_bytes(self, problem: Problem) -> float:
        """X read once, out written once."""
        return float(2 * problem["M"] * problem["N"] * element_bytes(problem.dtype))
