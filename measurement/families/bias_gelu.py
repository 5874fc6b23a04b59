"""Fused bias and GELU ``out = gelu(x + bias)`` of an M x N matrix, bias (length N) broadcast over rows.

GELU is the tanh approximation (``torch.nn.functional.gelu(z, approximate="tanh")``, as in GPT-2 and
BERT's fused kernels): ``0.5 z (1 + tanh(sqrt(2/pi) (z + 0.044715 z^3)))``, computed in fp32 through the
identity ``0.5 (1 + tanh(u)) = sigmoid(2 u)``.

Variants
--------
tiled
    A 2D grid of ``BLOCK_M x BLOCK_N`` tiles; each program loads its slice of the bias once.
flat
    A 1D grid over the flattened matrix, ``BLOCK`` elements per program; the bias index is ``offset % N``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import triton
import triton.language as tl

from kernelcast.measurement.families._base import Family, element_bytes, torch_dtype
from kernelcast.measurement.families._resources import register_reason
from kernelcast.measurement.records import Scalar
from kernelcast.measurement.space import ConfigSpace, DeviceLimits, Param, Problem


@triton.jit
def _gelu_tanh(z):
    # 0.5 * z * (1 + tanh(u)) == z * sigmoid(2u), u = sqrt(2/pi) * (z + 0.044715 z^3)
    u = 0.7978845608028654 * (z + 0.044715 * z * z * z)
    return z * tl.sigmoid(2.0 * u)


@triton.jit
def bias_gelu_tiled_kernel(
    x_ptr, bias_ptr, out_ptr, M, N, stride_xm, stride_om,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    rows64 = rows.to(tl.int64)
    col_mask = cols < N
    mask = (rows < M)[:, None] & col_mask[None, :]
    x = tl.load(x_ptr + rows64[:, None] * stride_xm + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    bias = tl.load(bias_ptr + cols, mask=col_mask, other=0.0).to(tl.float32)
    y = _gelu_tanh(x + bias[None, :])
    tl.store(out_ptr + rows64[:, None] * stride_om + cols[None, :], y.to(out_ptr.dtype.element_ty), mask=mask)


def launch_tiled(x: torch.Tensor, bias: torch.Tensor, out: torch.Tensor, config: Mapping[str, Scalar]) -> None:
    """Launch the 2D-tiled bias-GELU kernel with ``config``."""
    M, N = x.shape
    # Rows go on grid axis 0 (up to 2**31 - 1 programs); column tiles on axis 1 (at most 65,535).
    grid = (triton.cdiv(M, int(config["BLOCK_M"])), triton.cdiv(N, int(config["BLOCK_N"])))
    bias_gelu_tiled_kernel[grid](
        x, bias, out, M, N, x.stride(0), out.stride(0),
        BLOCK_M=config["BLOCK_M"], BLOCK_N=config["BLOCK_N"],
        num_warps=config["num_warps"],
    )


@triton.jit
def bias_gelu_flat_kernel(
    x_ptr, bias_ptr, out_ptr, numel, N,
    BLOCK: tl.constexpr,
):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < numel
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    bias = tl.load(bias_ptr + offs % N, mask=mask, other=0.0).to(tl.float32)
    y = _gelu_tanh(x + bias)
    tl.store(out_ptr + offs, y.to(out_ptr.dtype.element_ty), mask=mask)


def launch_flat(x: torch.Tensor, bias: torch.Tensor, out: torch.Tensor, config: Mapping[str, Scalar]) -> None:
    """Launch the flat 1D bias-GELU kernel with ``config`` (``x`` and ``out`` contiguous)."""
    numel, N = x.numel(), x.shape[1]
    grid = (triton.cdiv(numel, int(config["BLOCK"])),)
    bias_gelu_flat_kernel[grid](
        x, bias, out, numel, N,
        BLOCK=config["BLOCK"],
        num_warps=config["num_warps"],
    )


_KERNELS = {
    "tiled": (bias_gelu_tiled_kernel, launch_tiled),
    "flat": (bias_gelu_flat_kernel, launch_flat),
}


class BiasGeluFamily(Family):
    """``gelu_tanh(x + bias)`` in fp16, bf16 or fp32, computed in fp32."""

    name = "bias_gelu"
    dims = ("M", "N")
    dtypes = ("float16", "bfloat16", "float32")
    variants = ("tiled", "flat")
    default_shapes = ("4096x4096", "8192x16384", "32768x3072", "16384x11008", "1000x3000", "127x4097")
    description = "out = gelu_tanh(x + bias) of an M x N matrix, bias broadcast over rows"

    _TILED_SPACE = ConfigSpace([
        Param("BLOCK_M", (1, 2, 4, 8, 16, 32, 64)),
        Param("BLOCK_N", tuple(2**k for k in range(5, 13))),  # 32 .. 4096
        Param("num_warps", (1, 2, 4, 8, 16)),
    ])
    _FLAT_SPACE = ConfigSpace([
        Param("BLOCK", tuple(2**k for k in range(7, 16))),  # 128 .. 32768
        Param("num_warps", (1, 2, 4, 8, 16, 32)),
    ])

    def space(self, variant: str) -> ConfigSpace:
        """Tile or block size and warps: ``tiled`` has 280 configurations, ``flat`` 54."""
        self.check_variant(variant)
        return self._TILED_SPACE if variant == "tiled" else self._FLAT_SPACE

    def check_config(
        self, variant: str, config: Mapping[str, Any], problem: Problem, limits: DeviceLimits
    ) -> str | None:
        """The fp32 block must fit in registers; the tiled grid's column axis must stay within 65,535."""
        super().check_config(variant, config, problem, limits)
        warps = int(config["num_warps"])
        if variant == "flat":
            return register_reason(int(config["BLOCK"]), warps, limits)
        bm, bn = int(config["BLOCK_M"]), int(config["BLOCK_N"])
        tiles_n = triton.cdiv(problem["N"], bn)
        if tiles_n > 65_535:
            return f"N={problem['N']} needs {tiles_n} column tiles of BLOCK_N={bn}; grid axis 1 allows 65535"
        return register_reason(bm * bn, warps, limits)

    def source_objects(self, variant: str) -> Sequence[Any]:
        """The variant's kernel, the shared GELU helper and the launcher."""
        self.check_variant(variant)
        kernel, launcher = _KERNELS[variant]
        return (kernel, _gelu_tanh, launcher)

    def make_inputs(self, problem: Problem, *, device: str, seed: int) -> dict[str, torch.Tensor]:
        """``x`` normal with standard deviation 2 (covers GELU's bend and both tails); ``bias`` standard normal."""
        gen = torch.Generator(device=device).manual_seed(seed)
        dtype = torch_dtype(problem.dtype)
        M, N = problem["M"], problem["N"]
        x = torch.randn((M, N), generator=gen, device=device, dtype=torch.float32) * 2.0
        bias = torch.randn((N,), generator=gen, device=device, dtype=torch.float32)
        return {"x": x.to(dtype), "bias": bias.to(dtype)}

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
        _KERNELS[variant][1](inputs["x"], inputs["bias"], out, config)

    def compile(self, variant: str, config: Mapping[str, Scalar], problem: Problem) -> list[Any]:
        """Compile the variant's kernel for ``problem`` without launching it."""
        self.check_variant(variant)
        M, N = problem["M"], problem["N"]
        dt = torch_dtype(problem.dtype)
        if variant == "flat":
            return [bias_gelu_flat_kernel.warmup(
                dt, dt, dt, M * N, N,
                grid=(triton.cdiv(M * N, int(config["BLOCK"])),),
                BLOCK=config["BLOCK"],
                num_warps=config["num_warps"],
            )]
        return [bias_gelu_tiled_kernel.warmup(
            dt, dt, dt, M, N, N, N,
            grid=(triton.cdiv(M, int(config["BLOCK_M"])), triton.cdiv(N, int(config["BLOCK_N"]))),
            BLOCK_M=config["BLOCK_M"], BLOCK_N=config["BLOCK_N"],
            num_warps=config["num_warps"],
        )]

    def reference(self, problem: Problem, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """``gelu(x + bias, approximate="tanh")`` in float32."""
        return torch.nn.functional.gelu(inputs["x"].float() + inputs["bias"].float(), approximate="tanh")

    def tolerance(self, dtype: str) -> tuple[float, float]:
        """The storage's rounding of outputs of order one; fp32 allows for the GPU's fast exponential."""
        return {"float16": (1e-3, 2e-3), "bfloat16": (1e-2, 1e-2), "float32": (1e-5, 1e-5)}[dtype]

    def flops(self, problem: Problem) -> float:
        """``10 M N``: the bias add, then GELU's cube (2), scale and add (3), tanh (1) and final products (3)."""
        return 10.0 * problem["M"] * problem["N"]

    def min_bytes(self, problem: Problem) -> float:
        """Bias and x read once, out written once."""
        M, N = problem["M"], problem["N"]
        return float((2 * M * N + N) * element_bytes(problem.dtype))
