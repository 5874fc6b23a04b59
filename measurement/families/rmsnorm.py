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

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import triton
import triton.language as tl

from kernelcast.measurement.families._base import Family, element_bytes, shared_memory_reason, torch_dtype
from kernelcast.measurement.families._resources import register_reason
from kernelcast.measurement.records import Scalar
from kernelcast.measurement.space import ConfigSpace, DeviceLimits, Param, Problem

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


_KERNELS = {
    "single_block": (rmsnorm_single_block_kernel, launch_single_block),
    "looped": (rmsnorm_looped_kernel, launch_looped),
}
_LIVE_TILES = {"single_block": 1, "looped": 2}
"""fp32 ``BLOCK_M x BLOCK_N`` tiles live at once: the row, plus the looped variant's accumulator."""


class RMSNormFamily(Family):
    """RMS norm forward with weight over the last dim, in fp16, bf16 or fp32 with fp32 statistics."""

    name = "rmsnorm"
    dims = ("M", "N")
    dtypes = ("float16", "bfloat16", "float32")
    variants = ("single_block", "looped")
    default_shapes = ("4096x4096", "32768x1024", "16384x5120", "8192x8192", "1000x3000", "127x4097")
    description = "out = x * rsqrt(mean(x**2, dim=1) + 1e-6) * weight of an M x N matrix, fp32 statistics"

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
        """Rows per program (``BLOCK_M``), block width, warps and, for ``looped``, pipeline depth.

        ``single_block`` has 390 configurations; ``looped`` has 800.
        """
        self.check_variant(variant)
        return self._SINGLE_BLOCK_SPACE if variant == "single_block" else self._LOOPED_SPACE

    def check_config(
        self, variant: str, config: Mapping[str, Any], problem: Problem, limits: DeviceLimits
    ) -> str | None:
        """A single block must cover the row; fp32 tiles must fit in registers; pipelined tiles in shared memory."""
        super().check_config(variant, config, problem, limits)
        bm, bn, warps = int(config["BLOCK_M"]), int(config["BLOCK_N"]), int(config["num_warps"])
        if variant == "single_block" and bn < problem["N"]:
            return f"the single_block variant holds a whole row in one block, but BLOCK_N={bn} < N={problem['N']}"
        if variant == "looped":
            stages = int(config["num_stages"])
            reason = shared_memory_reason(max(stages - 1, 0) * bm * bn * element_bytes(problem.dtype), limits)
            if reason:
                return reason
        return register_reason(_LIVE_TILES[variant] * bm * bn, warps, limits)

    def source_objects(self, variant: str) -> Sequence[Any]:
        """The variant's kernel and its launcher."""
        self.check_variant(variant)
        return _KERNELS[variant]

    def make_inputs(self, problem: Problem, *, device: str, seed: int) -> dict[str, torch.Tensor]:
        """``x`` standard normal; ``weight`` random near 1."""
        gen = torch.Generator(device=device).manual_seed(seed)
        dtype = torch_dtype(problem.dtype)
        M, N = problem["M"], problem["N"]
        x = torch.randn((M, N), generator=gen, device=device, dtype=torch.float32)
        w = 1.0 + 0.1 * torch.randn((N,), generator=gen, device=device, dtype=torch.float32)
        return {"x": x.to(dtype), "weight": w.to(dtype)}

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
        _KERNELS[variant][1](inputs["x"], inputs["weight"], out, config)

    def compile(self, variant: str, config: Mapping[str, Scalar], problem: Problem) -> list[Any]:
        """Compile the variant's kernel for ``problem`` without launching it."""
        self.check_variant(variant)
        M, N = problem["M"], problem["N"]
        dt = torch_dtype(problem.dtype)
        grid = (triton.cdiv(M, int(config["BLOCK_M"])),)
        kernel = _KERNELS[variant][0]
        if variant == "single_block":
            return [kernel.warmup(
                dt, dt, dt, M, N, N, N, EPS, grid=grid,
                BLOCK_M=config["BLOCK_M"], BLOCK_N=config["BLOCK_N"],
                num_warps=config["num_warps"],
            )]
        return [kernel.warmup(
            dt, dt, dt, M, N, N, N, EPS, grid=grid,
            BLOCK_M=config["BLOCK_M"], BLOCK_N=config["BLOCK_N"],
            num_warps=config["num_warps"], num_stages=config["num_stages"],
        )]

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
