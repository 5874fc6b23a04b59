"""Matmul variant ``persistent``: a fixed grid of programs, each looping over C tiles with a stride.

The launcher starts ``min(tiles, PROGRAMS_PER_SM * SM count)`` programs; program ``p`` computes tiles
``p, p + grid, p + 2 grid, ...`` in the grouped order of ``blocked`` (``GROUP_M`` row tiles share the B
columns they read). Fewer launches of programs and no tail of half-empty waves, for the price of a longer
program that the compiler must keep pipelined across tiles.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import torch
import triton
import triton.language as tl

from kernelcast.measurement.records import Scalar
from kernelcast.measurement.space import DeviceLimits


@triton.jit
def matmul_persistent_kernel(
    a_ptr, b_ptr, c_ptr, M, N, K,
    stride_am, stride_ak, stride_bk, stride_bn, stride_cm, stride_cn,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):
    num_pid_m = tl.cdiv(M, BLOCK_M)
    num_pid_n = tl.cdiv(N, BLOCK_N)
    num_tiles = num_pid_m * num_pid_n
    num_pid_in_group = GROUP_M * num_pid_n
    for tile in range(tl.program_id(0), num_tiles, tl.num_programs(0)):
        group_id = tile // num_pid_in_group
        first_pid_m = group_id * GROUP_M
        group_size_m = min(num_pid_m - first_pid_m, GROUP_M)
        pid_m = first_pid_m + ((tile % num_pid_in_group) % group_size_m)
        pid_n = (tile % num_pid_in_group) // group_size_m

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


@functools.cache
def device_sm_count(device: torch.device) -> int:
    """Streaming multiprocessors of ``device``; a CPU (Triton's interpreter) counts as the default target."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return DeviceLimits().sm_count


def persistent_grid(M: int, N: int, config: Mapping[str, Scalar], sm_count: int) -> tuple[int]:
    """``min(C tiles, PROGRAMS_PER_SM * sm_count)`` programs."""
    tiles = triton.cdiv(M, int(config["BLOCK_M"])) * triton.cdiv(N, int(config["BLOCK_N"]))
    return (min(tiles, int(config["PROGRAMS_PER_SM"]) * sm_count),)


def launch_persistent(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, config: Mapping[str, Scalar]) -> None:
    """Launch ``min(tiles, PROGRAMS_PER_SM * SMs)`` programs of the persistent kernel for ``c = a @ b``."""
    M, K = a.shape
    N = b.shape[1]
    matmul_persistent_kernel[persistent_grid(M, N, config, device_sm_count(c.device))](
        a, b, c, M, N, K,
        a.stride(0), a.stride(1), b.stride(0), b.stride(1), c.stride(0), c.stride(1),
        BLOCK_M=config["BLOCK_M"], BLOCK_N=config["BLOCK_N"], BLOCK_K=config["BLOCK_K"], GROUP_M=config["GROUP_M"],
        num_warps=config["num_warps"], num_stages=config["num_stages"],
    )


def warmup_persistent(
    dtype: torch.dtype, config: Mapping[str, Scalar], M: int, N: int, K: int, sm_count: int
) -> list[Any]:
    """Compile the persistent kernel with the arguments :func:`launch_persistent` passes (contiguous inputs).

    The grid size is not compiled in: the kernel reads it with ``tl.num_programs``.
    """
    return [matmul_persistent_kernel.warmup(
        dtype, dtype, dtype, M, N, K, K, 1, N, 1, N, 1,
        grid=persistent_grid(M, N, config, sm_count),
        BLOCK_M=config["BLOCK_M"], BLOCK_N=config["BLOCK_N"], BLOCK_K=config["BLOCK_K"], GROUP_M=config["GROUP_M"],
        num_warps=config["num_warps"], num_stages=config["num_stages"],
    )]
