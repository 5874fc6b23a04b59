"""Matmul variant ``splitk``: the K loop split across ``SPLIT_K`` programs per C tile, summed by fp32 atomics.

Program ``(tile, split)`` multiplies every ``SPLIT_K``-th ``BLOCK_K`` slice of K, starting at slice ``split``,
and adds its fp32 partial tile into a zeroed fp32 workspace with ``tl.atomic_add``; the launcher zeroes the
workspace first and casts it into C last, so both are timed. More programs than ``blocked`` for small M x N
and long K, for the price of the atomics, the zeroing and the cast (and a summation order that varies).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import triton
import triton.language as tl

from kernelcast.measurement.records import Scalar


@triton.jit
def matmul_splitk_kernel(
    a_ptr, b_ptr, acc_ptr, M, N, K,
    stride_am, stride_ak, stride_bk, stride_bn, stride_cm, stride_cn,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, SPLIT_K: tl.constexpr,
):
    pid = tl.program_id(0)
    split = tl.program_id(1)
    num_pid_n = tl.cdiv(N, BLOCK_N)
    pid_m = pid // num_pid_n
    pid_n = pid % num_pid_n

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = split * BLOCK_K + tl.arange(0, BLOCK_K)
    a_ptrs = a_ptr + offs_m[:, None] * stride_am + offs_k[None, :] * stride_ak
    b_ptrs = b_ptr + offs_k[:, None] * stride_bk + offs_n[None, :] * stride_bn
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k in range(0, tl.cdiv(K, BLOCK_K * SPLIT_K)):
        k_left = K - k * BLOCK_K * SPLIT_K
        a = tl.load(a_ptrs, mask=(offs_m[:, None] < M) & (offs_k[None, :] < k_left), other=0.0)
        b = tl.load(b_ptrs, mask=(offs_k[:, None] < k_left) & (offs_n[None, :] < N), other=0.0)
        acc = tl.dot(a, b, acc)
        a_ptrs += BLOCK_K * SPLIT_K * stride_ak
        b_ptrs += BLOCK_K * SPLIT_K * stride_bk
    acc_ptrs = acc_ptr + offs_m[:, None] * stride_cm + offs_n[None, :] * stride_cn
    # Only the sum after the kernel matters, so the adds need no ordering among themselves.
    tl.atomic_add(acc_ptrs, acc, mask=(offs_m[:, None] < M) & (offs_n[None, :] < N), sem="relaxed")


def splitk_grid(M: int, N: int, config: Mapping[str, Scalar]) -> tuple[int, int]:
    """``(C tiles, SPLIT_K)`` programs."""
    tiles = triton.cdiv(M, int(config["BLOCK_M"])) * triton.cdiv(N, int(config["BLOCK_N"]))
    return (tiles, int(config["SPLIT_K"]))


def launch_splitk(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, config: Mapping[str, Scalar]) -> None:
    """Zero an fp32 accumulator (``c`` itself when fp32), run the split-K kernel into it, cast into ``c``."""
    M, K = a.shape
    N = b.shape[1]
    acc = c if c.dtype == torch.float32 else torch.empty((M, N), device=c.device, dtype=torch.float32)
    acc.zero_()
    matmul_splitk_kernel[splitk_grid(M, N, config)](
        a, b, acc, M, N, K,
        a.stride(0), a.stride(1), b.stride(0), b.stride(1), acc.stride(0), acc.stride(1),
        BLOCK_M=config["BLOCK_M"], BLOCK_N=config["BLOCK_N"], BLOCK_K=config["BLOCK_K"], SPLIT_K=config["SPLIT_K"],
        num_warps=config["num_warps"], num_stages=config["num_stages"],
    )
    if acc is not c:
        c.copy_(acc)


def warmup_splitk(dtype: torch.dtype, config: Mapping[str, Scalar], M: int, N: int, K: int) -> list[Any]:
    """Compile the split-K kernel with the arguments :func:`launch_splitk` passes for contiguous inputs."""
    return [matmul_splitk_kernel.warmup(
        dtype, dtype, torch.float32, M, N, K, K, 1, N, 1, N, 1,
        grid=splitk_grid(M, N, config),
        BLOCK_M=config["BLOCK_M"], BLOCK_N=config["BLOCK_N"], BLOCK_K=config["BLOCK_K"], SPLIT_K=config["SPLIT_K"],
        num_warps=config["num_warps"], num_stages=config["num_stages"],
    )]
