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

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import triton
import triton.language as tl

from kernelcast.measurement.families._base import Family, element_bytes, shared_memory_reason, torch_dtype
from kernelcast.measurement.families._resources import register_reason
from kernelcast.measurement.records import Scalar
from kernelcast.measurement.space import ConfigSpace, DeviceLimits, Param, Problem

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


_KERNELS = {
    "single_block": (softmax_single_block_kernel, launch_single_block),
    "online": (softmax_online_kernel, launch_online),
    "two_pass": (softmax_two_pass_kernel, launch_two_pass),
}


class SoftmaxFamily(Family):
    """Row-wise softmax of an M x N matrix in fp16, bf16 or fp32, computed in fp32."""

    name = "softmax"
    dims = ("M", "N")
    dtypes = ("float16", "bfloat16", "float32")
    variants = ("single_block", "online", "two_pass")
    default_shapes = ("4096x4096", "32768x1024", "8192x50257", "1000x3000", "127x4097", "16384x128",
                      "2048x32000")
    description = "out = softmax(x, dim=1) of an M x N matrix, fp32 math"

    _SINGLE_BLOCK_SPACE = ConfigSpace([
        Param("BLOCK_M", (1, 2, 4, 8, 16)),
        Param("BLOCK_N", tuple(2**k for k in range(4, 17))),  # 16 .. 65536
        Param("num_warps", (1, 2, 4, 8, 16, 32)),
    ])
    _LOOPED_SPACE = ConfigSpace([
        Param("BLOCK_M", (1, 2, 4, 8)),
        Param("BLOCK_N", tuple(2**k for k in range(5, 15))),  # 32 .. 16384
        Param("num_warps", (1, 2, 4, 8, 16)),
        Param("num_stages", (1, 2, 3, 4)),
    ])

    def space(self, variant: str) -> ConfigSpace:
        """Rows per program (``BLOCK_M``), block width, warps and, for the looped variants, pipeline depth.

        ``single_block`` has 390 configurations; ``online`` and ``two_pass`` have 800 each.
        """
        self.check_variant(variant)
        return self._SINGLE_BLOCK_SPACE if variant == "single_block" else self._LOOPED_SPACE

    def check_config(
        self, variant: str, config: Mapping[str, Any], problem: Problem, limits: DeviceLimits
    ) -> str | None:
        """A single block must cover the row; the fp32 tile must fit in registers; pipelined tiles in shared memory."""
        super().check_config(variant, config, problem, limits)
        bm, bn, warps = int(config["BLOCK_M"]), int(config["BLOCK_N"]), int(config["num_warps"])
        if variant == "single_block" and bn < problem["N"]:
            return f"the single_block variant holds a whole row in one block, but BLOCK_N={bn} < N={problem['N']}"
        if variant != "single_block":
            stages = int(config["num_stages"])
            reason = shared_memory_reason(max(stages - 1, 0) * bm * bn * element_bytes(problem.dtype), limits)
            if reason:
                return reason
        return register_reason(bm * bn, warps, limits)

    def source_objects(self, variant: str) -> Sequence[Any]:
        """The variant's kernel and its launcher."""
        self.check_variant(variant)
        return _KERNELS[variant]

    def make_inputs(self, problem: Problem, *, device: str, seed: int) -> dict[str, torch.Tensor]:
        """Logits ``x`` with normal entries of standard deviation 2."""
        gen = torch.Generator(device=device).manual_seed(seed)
        x = torch.randn((problem["M"], problem["N"]), generator=gen, device=device, dtype=torch.float32) * 2.0
        return {"x": x.to(torch_dtype(problem.dtype))}

    def new_output(self, problem: Problem, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Empty M x N tensor of the problem dtype."""
        x = inputs["x"]
        return torch.empty((problem["M"], problem["N"]), device=x.device, dtype=x.dtype)

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
        grid = (triton.cdiv(M, int(config["BLOCK_M"])),)
        kernel = _KERNELS[variant][0]
        if variant == "single_block":
            return [kernel.warmup(
                dt, dt, M, N, N, N, grid=grid,
                BLOCK_M=config["BLOCK_M"], BLOCK_N=config["BLOCK_N"],
                num_warps=config["num_warps"],
            )]
        return [kernel.warmup(
            dt, dt, M, N, N, N, grid=grid,
            BLOCK_M=config["BLOCK_M"], BLOCK_N=config["BLOCK_N"],
            num_warps=config["num_warps"], num_stages=config["num_stages"],
        )]

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
