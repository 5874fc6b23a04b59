"""Matrix multiplication ``C = A @ B`` (A: M x K, B: K x N, row-major), fp32 accumulation.

Variants
--------
blocked
    One program per C tile, tiles grouped along M (``GROUP_M``) for L2 reuse.
splitk
    ``SPLIT_K`` programs per C tile share its K loop and sum through fp32 atomics (``_matmul_splitk``).
persistent
    ``min(tiles, PROGRAMS_PER_SM * SMs)`` programs loop over the C tiles with a stride (``_matmul_persistent``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch
import triton
import triton.language as tl

from kernelcast.measurement.families._base import Family, element_bytes, shared_memory_reason, torch_dtype
from kernelcast.measurement.families._matmul_persistent import (
    device_sm_count,
    launch_persistent,
    matmul_persistent_kernel,
    persistent_grid,
    warmup_persistent,
)
from kernelcast.measurement.families._matmul_splitk import (
    launch_splitk,
    matmul_splitk_kernel,
    splitk_grid,
    warmup_splitk,
)
from kernelcast.measurement.records import Scalar
from kernelcast.measurement.space import ConfigSpace, DeviceLimits, Param, Problem


@triton.jit
def matmul_blocked_kernel(
    a_ptr, b_ptr, c_ptr, M, N, K,
    stride_am, stride_ak, stride_bk, stride_bn, stride_cm, stride_cn,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):
    pid = tl.program_id(0)
    num_pid_m = tl.cdiv(M, BLOCK_M)
    num_pid_n = tl.cdiv(N, BLOCK_N)
    # Grouped ordering: GROUP_M consecutive row-tiles share the B columns they read, for L2 reuse.
    num_pid_in_group = GROUP_M * num_pid_n
    group_id = pid // num_pid_in_group
    first_pid_m = group_id * GROUP_M
    group_size_m = min(num_pid_m - first_pid_m, GROUP_M)
    pid_m = first_pid_m + ((pid % num_pid_in_group) % group_size_m)
    pid_n = (pid % num_pid_in_group) // group_size_m

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    a_ptrs = a_ptr + offs_m[:, None] * stride_am + offs_k[None, :] * stride_ak
    b_ptrs = b_ptr + offs_k[:, None] * stride_bk + offs_n[None, :] * stride_bn
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k in range(0, tl.cdiv(K, BLOCK_K)):
        k_left = K - k * BLOCK_K
        a = tl.load(a_ptrs, mask=(offs_m[:, None] < M) & (offs_k[None, :] < k_left), other=0.0)
        b = tl.load(b_ptrs, mask=(offs_k[:, None] < k_left) & (offs_n[None, :] < N), other=0.0)
        acc = tl.dot(a, b, acc)
        a_ptrs += BLOCK_K * stride_ak
        b_ptrs += BLOCK_K * stride_bk
    c_ptrs = c_ptr + offs_m[:, None] * stride_cm + offs_n[None, :] * stride_cn
    tl.store(c_ptrs, acc.to(c_ptr.dtype.element_ty), mask=(offs_m[:, None] < M) & (offs_n[None, :] < N))


def _grid(problem: Problem, config: Mapping[str, Scalar]) -> tuple[int]:
    return (triton.cdiv(problem["M"], int(config["BLOCK_M"])) * triton.cdiv(problem["N"], int(config["BLOCK_N"])),)


def launch_blocked(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, config: Mapping[str, Scalar]) -> None:
    """Launch the blocked kernel for ``c = a @ b`` with ``config``."""
    M, K = a.shape
    N = b.shape[1]
    grid = (triton.cdiv(M, int(config["BLOCK_M"])) * triton.cdiv(N, int(config["BLOCK_N"])),)
    matmul_blocked_kernel[grid](
        a, b, c, M, N, K,
        a.stride(0), a.stride(1), b.stride(0), b.stride(1), c.stride(0), c.stride(1),
        BLOCK_M=config["BLOCK_M"], BLOCK_N=config["BLOCK_N"], BLOCK_K=config["BLOCK_K"], GROUP_M=config["GROUP_M"],
        num_warps=config["num_warps"], num_stages=config["num_stages"],
    )


_TILE_PARAMS = [
    Param("BLOCK_M", (16, 32, 64, 128)),
    Param("BLOCK_N", (16, 32, 64, 128)),
    Param("BLOCK_K", (16, 32, 64, 128)),
]
"""Tile knobs of the ``splitk`` and ``persistent`` variants."""


class MatmulFamily(Family):
    """``C = A @ B`` in fp16, bf16 or fp32 with fp32 accumulation."""

    name = "matmul"
    dims = ("M", "N", "K")
    dtypes = ("float16", "bfloat16", "float32")
    variants = ("blocked", "splitk", "persistent")
    default_shapes = ("4096x4096x4096", "1024x1024x1024", "8192x8192x1024", "4000x3000x2000", "512x12288x4096",
                      "127x255x1023")
    description = "C = A @ B, row-major, fp32 accumulation"

    _SPACE = ConfigSpace([
        Param("BLOCK_M", (16, 32, 64, 128, 256)),
        Param("BLOCK_N", (16, 32, 64, 128, 256)),
        Param("BLOCK_K", (16, 32, 64, 128)),
        Param("GROUP_M", (1, 8)),
        Param("num_warps", (2, 4, 8)),
        Param("num_stages", (2, 3, 4, 5)),
    ])
    _SPACES: ClassVar[dict[str, ConfigSpace]] = {
        "blocked": _SPACE,
        "splitk": ConfigSpace([
            *_TILE_PARAMS,
            Param("SPLIT_K", (2, 4, 8, 16)),
            Param("num_warps", (2, 4, 8)),
            Param("num_stages", (2, 3, 4)),
        ]),
        "persistent": ConfigSpace([
            *_TILE_PARAMS,
            Param("GROUP_M", (1, 8)),
            Param("PROGRAMS_PER_SM", (1, 2, 4)),
            Param("num_warps", (4, 8)),
            Param("num_stages", (2, 3, 4)),
        ]),
    }
    _SOURCES: ClassVar[dict[str, tuple[Any, ...]]] = {
        "blocked": (matmul_blocked_kernel, launch_blocked),
        "splitk": (matmul_splitk_kernel, splitk_grid, launch_splitk),
        "persistent": (matmul_persistent_kernel, device_sm_count, persistent_grid, launch_persistent),
    }
    _LAUNCHERS: ClassVar[dict[str, Any]] = {
        "blocked": launch_blocked, "splitk": launch_splitk, "persistent": launch_persistent,
    }

    def space(self, variant: str) -> ConfigSpace:
        """Tile sizes, warps and pipeline depth, and each variant's own knobs.

        ``blocked`` (2,400 configurations) adds the L2 grouping ``GROUP_M``; ``splitk`` (2,304) the number of
        programs per C tile ``SPLIT_K``; ``persistent`` (2,304) ``GROUP_M`` and ``PROGRAMS_PER_SM``, the
        grid size as a multiple of the SM count.
        """
        return self._SPACES[self.check_variant(variant)]

    def check_config(
        self, variant: str, config: Mapping[str, Any], problem: Problem, limits: DeviceLimits
    ) -> str | None:
        """Shared memory of the pipelined A and B tiles, the accumulator's registers per thread, and per variant.

        ``splitk`` needs at least one ``BLOCK_K`` slice of K per split; ``persistent`` needs its
        ``PROGRAMS_PER_SM`` programs to fit on one SM together (shared memory, accumulator registers, threads).
        """
        super().check_config(variant, config, problem, limits)
        bm, bn, bk = int(config["BLOCK_M"]), int(config["BLOCK_N"]), int(config["BLOCK_K"])
        stages, warps = int(config["num_stages"]), int(config["num_warps"])
        smem = stages * (bm * bk + bk * bn) * element_bytes(problem.dtype)
        reason = shared_memory_reason(smem, limits)
        if reason:
            return reason
        acc_regs = bm * bn // (32 * warps)
        if acc_regs > 256:
            return f"the {bm}x{bn} fp32 accumulator needs {acc_regs} registers per thread with {warps} warps (max 255)"
        if variant == "splitk":
            split_k, k_slices = int(config["SPLIT_K"]), -(-problem["K"] // bk)
            if split_k > k_slices:
                return f"SPLIT_K={split_k} exceeds the {k_slices} slices of BLOCK_K={bk} in K={problem['K']}"
        if variant == "persistent":
            return _co_residency_reason(int(config["PROGRAMS_PER_SM"]), smem, bm * bn, warps, limits)
        return None

    def source_objects(self, variant: str) -> Sequence[Any]:
        """The variant's kernel and launch code."""
        return self._SOURCES[self.check_variant(variant)]

    def make_inputs(self, problem: Problem, *, device: str, seed: int) -> dict[str, torch.Tensor]:
        """A and B with standard normal entries scaled by ``K**-0.25`` (outputs of order one)."""
        gen = torch.Generator(device=device).manual_seed(seed)
        dtype = torch_dtype(problem.dtype)
        M, N, K = problem["M"], problem["N"], problem["K"]
        scale = K ** -0.25
        a = (torch.randn((M, K), generator=gen, device=device, dtype=torch.float32) * scale).to(dtype)
        b = (torch.randn((K, N), generator=gen, device=device, dtype=torch.float32) * scale).to(dtype)
        return {"a": a, "b": b}

    def new_output(self, problem: Problem, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Empty M x N tensor of the problem dtype."""
        a = inputs["a"]
        return torch.empty((problem["M"], problem["N"]), device=a.device, dtype=a.dtype)

    def launch(
        self,
        variant: str,
        config: Mapping[str, Scalar],
        problem: Problem,
        inputs: Mapping[str, torch.Tensor],
        out: torch.Tensor,
    ) -> None:
        """Run the variant into ``out`` (``splitk`` zeroes and casts its fp32 accumulator here, timed)."""
        self._LAUNCHERS[self.check_variant(variant)](inputs["a"], inputs["b"], out, config)

    def compile(self, variant: str, config: Mapping[str, Scalar], problem: Problem) -> list[Any]:
        """Compile the variant's kernel for contiguous inputs of ``problem`` without launching it."""
        M, N, K = problem["M"], problem["N"], problem["K"]
        dt = torch_dtype(problem.dtype)
        if self.check_variant(variant) == "splitk":
            return warmup_splitk(dt, config, M, N, K)
        if variant == "persistent":
            return warmup_persistent(dt, config, M, N, K, DeviceLimits().sm_count)
        return [matmul_blocked_kernel.warmup(
            dt, dt, dt, M, N, K, K, 1, N, 1, N, 1,
            grid=_grid(problem, config),
            BLOCK_M=config["BLOCK_M"], BLOCK_N=config["BLOCK_N"], BLOCK_K=config["BLOCK_K"], GROUP_M=config["GROUP_M"],
            num_warps=config["num_warps"], num_stages=config["num_stages"],
        )]

    def reference(self, problem: Problem, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """``A @ B`` in float32."""
        return inputs["a"].float() @ inputs["b"].float()

    def tolerance(self, dtype: str) -> tuple[float, float]:
        """fp32 runs through tf32 on tensor cores, so it gets the fp16 tolerance."""
        return {"float16": (2e-2, 1e-2), "bfloat16": (6e-2, 2e-2), "float32": (2e-2, 1e-2)}[dtype]

    def flops(self, problem: Problem) -> float:
        """``2 M N K``."""
        return 2.0 * problem["M"] * problem["N"] * problem["K"]

    def min_bytes(self, problem: Problem) -> float:
        """A and B read once, C written once."""
        M, N, K = problem["M"], problem["N"], problem["K"]
        return float((M * K + K * N + M * N) * element_bytes(problem.dtype))


def _co_residency_reason(
    programs_per_sm: int, smem_bytes: int, acc_values: int, warps: int, limits: DeviceLimits
) -> str | None:
    """Reason string when ``programs_per_sm`` programs cannot be resident on one SM together, else ``None``.

    Shared memory is compared with the per-block opt-in limit (an SM has slightly more, 228 KiB on Hopper);
    registers count only the fp32 accumulators (``acc_values`` per program), which must leave some room.
    """
    if programs_per_sm * smem_bytes > limits.max_shared_bytes_per_block:
        return (
            f"PROGRAMS_PER_SM={programs_per_sm} programs need {programs_per_sm * smem_bytes} bytes of shared "
            f"memory on one SM; {limits.name} allows {limits.max_shared_bytes_per_block}"
        )
    if programs_per_sm * acc_values >= limits.regs_per_sm:
        return (
            f"PROGRAMS_PER_SM={programs_per_sm} fp32 accumulators alone need {programs_per_sm * acc_values} "
            f"registers on one SM; {limits.name} has {limits.regs_per_sm}"
        )
    threads = programs_per_sm * 32 * warps
    if threads > limits.max_threads_per_sm:
        return (
            f"PROGRAMS_PER_SM={programs_per_sm} programs of {warps} warps need {threads} threads on one SM; "
            f"{limits.name} allows {limits.max_threads_per_sm}"
        )
    return None
