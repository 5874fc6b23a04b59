"""Attention variant ``split_kv``: flash-decoding-style forward, keys split across programs, then combined.

The key blocks are cut into ``NUM_SPLITS`` contiguous ranges of whole ``BLOCK_N`` blocks. Kernel 1 runs one
program per (query block, batch * head, split): an online softmax over its range only, writing a normalised
partial output and its log-sum-exp (log2 domain) to fp32 workspaces. Kernel 2 combines the splits of each
row, weighting each partial output by ``exp2(lse_split - max lse)``. More programs than ``fa2`` launches, so
small ``B * H * S`` problems fill the GPU, for the price of the workspace traffic and a second launch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
import triton
import triton.language as tl

from kernelcast.measurement.records import Scalar


@triton.jit
def attention_split_kv_kernel(
    q_ptr, k_ptr, v_ptr, o_part_ptr, lse_part_ptr, qk_scale, H, S, stride_b, stride_h, stride_s,
    HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, NUM_SPLITS: tl.constexpr,
    CAUSAL: tl.constexpr,
):
    start_m = tl.program_id(0)
    off_bh = tl.program_id(1)
    split = tl.program_id(2)
    num_bh = tl.num_programs(1)
    base = (off_bh // H) * stride_b + (off_bh % H) * stride_h
    offs_m = start_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    qo_offs = offs_m[:, None] * stride_s + offs_d[None, :]
    q = tl.load(q_ptr + base + qo_offs, mask=offs_m[:, None] < S, other=0.0)

    keys_per_split = tl.cdiv(tl.cdiv(S, BLOCK_N), NUM_SPLITS) * BLOCK_N
    lo = split * keys_per_split
    hi = tl.minimum(S, lo + keys_per_split)
    if CAUSAL:
        hi = tl.minimum(hi, (start_m + 1) * BLOCK_M)
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    for start_n in range(lo, hi, BLOCK_N):
        cols = start_n + offs_n
        kt = tl.load(k_ptr + base + cols[None, :] * stride_s + offs_d[:, None], mask=cols[None, :] < S,
                     other=0.0)
        v = tl.load(v_ptr + base + cols[:, None] * stride_s + offs_d[None, :], mask=cols[:, None] < S,
                    other=0.0)
        qk = tl.dot(q, kt) * qk_scale
        keep = cols[None, :] < S
        if CAUSAL:
            keep = keep & (offs_m[:, None] >= cols[None, :])
        qk = tl.where(keep, qk, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(qk, 1))
        # Unlike fa2, a split need not hold key 0: a causal row can see no key of a block yet, and
        # exp2(-inf - -inf) would be NaN. Subtracting 0 for such rows keeps p and alpha at exactly 0.
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        p = tl.math.exp2(qk - m_safe[:, None])
        alpha = tl.math.exp2(m_i - m_safe)
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = tl.dot(p.to(v.dtype), v, acc * alpha[:, None])
        m_i = m_new

    # A row that sees no key in this split gets a zero output and lse = -inf: weight 0 in the combine.
    has_keys = l_i > 0.0
    o_part = acc / tl.where(has_keys, l_i, 1.0)[:, None]
    lse = tl.where(has_keys, m_i + tl.log2(tl.where(has_keys, l_i, 1.0)), float("-inf"))
    row = (split * num_bh + off_bh) * S + offs_m  # workspace rows: (NUM_SPLITS, B * H, S)
    tl.store(o_part_ptr + row[:, None] * HEAD_DIM + offs_d[None, :], o_part, mask=offs_m[:, None] < S)
    tl.store(lse_part_ptr + row, lse, mask=offs_m < S)


@triton.jit
def attention_split_kv_combine_kernel(
    o_part_ptr, lse_part_ptr, o_ptr, H, S, stride_b, stride_h, stride_s,
    HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, NUM_SPLITS: tl.constexpr,
):
    start_m = tl.program_id(0)
    off_bh = tl.program_id(1)
    num_bh = tl.num_programs(1)
    offs_m = start_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    row_ok = offs_m < S
    # Split 0 always holds key 0, so the maximum lse of a real row is finite.
    lse_max = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    for split in tl.static_range(NUM_SPLITS):
        lse = tl.load(lse_part_ptr + (split * num_bh + off_bh) * S + offs_m, mask=row_ok, other=0.0)
        lse_max = tl.maximum(lse_max, lse)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    weight_sum = tl.zeros([BLOCK_M], dtype=tl.float32)
    for split in tl.static_range(NUM_SPLITS):
        row = (split * num_bh + off_bh) * S + offs_m
        weight = tl.math.exp2(tl.load(lse_part_ptr + row, mask=row_ok, other=0.0) - lse_max)
        o_part = tl.load(o_part_ptr + row[:, None] * HEAD_DIM + offs_d[None, :], mask=row_ok[:, None],
                         other=0.0)
        acc += weight[:, None] * o_part
        weight_sum += weight
    out = acc / weight_sum[:, None]
    base = (off_bh // H) * stride_b + (off_bh % H) * stride_h
    tl.store(o_ptr + base + offs_m[:, None] * stride_s + offs_d[None, :], out.to(o_ptr.dtype.element_ty),
             mask=row_ok[:, None])


def launch_split_kv(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    o: torch.Tensor,
    config: Mapping[str, Scalar],
    causal: bool,
) -> None:
    """Launch both ``split_kv`` kernels; the fp32 workspaces are allocated here, so they are timed."""
    B, H, S, D = q.shape
    stride_b, stride_h, stride_s, _ = q.stride()
    splits = int(config["NUM_SPLITS"])
    qk_scale = math.log2(math.e) / math.sqrt(D)  # exp(x / sqrt(D)) == exp2(x * qk_scale)
    # Every program writes all its rows (zeros and -inf for an empty split), so no zeroing is needed.
    o_part = torch.empty((splits, B * H, S, D), device=q.device, dtype=torch.float32)
    lse_part = torch.empty((splits, B * H, S), device=q.device, dtype=torch.float32)
    num_m = triton.cdiv(S, int(config["BLOCK_M"]))
    attention_split_kv_kernel[(num_m, B * H, splits)](
        q, k, v, o_part, lse_part, qk_scale, H, S, stride_b, stride_h, stride_s,
        HEAD_DIM=D, BLOCK_M=config["BLOCK_M"], BLOCK_N=config["BLOCK_N"], NUM_SPLITS=splits, CAUSAL=causal,
        num_warps=config["num_warps"], num_stages=config["num_stages"],
    )
    attention_split_kv_combine_kernel[(num_m, B * H)](
        o_part, lse_part, o, H, S, stride_b, stride_h, stride_s,
        HEAD_DIM=D, BLOCK_M=config["BLOCK_M"], NUM_SPLITS=splits, num_warps=config["num_warps"],
    )


def warmup_split_kv(
    dtype: torch.dtype, config: Mapping[str, Scalar], B: int, H: int, S: int, D: int, causal: bool
) -> list[Any]:
    """Compile both ``split_kv`` kernels with the arguments that :func:`launch_split_kv` passes."""
    splits = int(config["NUM_SPLITS"])
    num_m = triton.cdiv(S, int(config["BLOCK_M"]))
    f32 = torch.float32
    split_kernel = attention_split_kv_kernel.warmup(
        dtype, dtype, dtype, f32, f32, math.log2(math.e) / math.sqrt(D), H, S, H * S * D, S * D, D,
        grid=(num_m, B * H, splits),
        HEAD_DIM=D, BLOCK_M=config["BLOCK_M"], BLOCK_N=config["BLOCK_N"], NUM_SPLITS=splits, CAUSAL=causal,
        num_warps=config["num_warps"], num_stages=config["num_stages"],
    )
    combine_kernel = attention_split_kv_combine_kernel.warmup(
        f32, f32, dtype, H, S, H * S * D, S * D, D,
        grid=(num_m, B * H),
        HEAD_DIM=D, BLOCK_M=config["BLOCK_M"], NUM_SPLITS=splits, num_warps=config["num_warps"],
    )
    return [split_kernel, combine_kernel]
