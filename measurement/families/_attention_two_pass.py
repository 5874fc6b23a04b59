"""Attention variant ``two_pass``: FlashAttention-1-style forward that reads K twice and never rescales.

One program owns a block of ``BLOCK_M`` query rows of one (batch, head). The first loop over the key blocks
computes only the row maximum ``m`` and the normaliser ``l`` of the softmax (two scalars per row); the second
loop recomputes ``Q K^T`` and accumulates the already normalised ``exp2(qk - m) / l`` times V, so the output
accumulator is never rescaled. It trades a second read of K (and a second ``Q K^T``) for fewer vector ops.
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
def attention_two_pass_kernel(
    q_ptr, k_ptr, v_ptr, o_ptr, qk_scale, H, S, stride_b, stride_h, stride_s,
    HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, CAUSAL: tl.constexpr,
):
    start_m = tl.program_id(0)
    off_bh = tl.program_id(1)
    base = (off_bh // H) * stride_b + (off_bh % H) * stride_h
    offs_m = start_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    qo_offs = offs_m[:, None] * stride_s + offs_d[None, :]
    q = tl.load(q_ptr + base + qo_offs, mask=offs_m[:, None] < S, other=0.0)
    if CAUSAL:
        hi = tl.minimum(S, (start_m + 1) * BLOCK_M)  # keys past the block's last query are all masked
    else:
        hi = S

    # Pass 1: row maximum and normaliser (log2 domain). Key 0 is never masked, so m stays finite.
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    for start_n in range(0, hi, BLOCK_N):
        cols = start_n + offs_n
        kt = tl.load(k_ptr + base + cols[None, :] * stride_s + offs_d[:, None], mask=cols[None, :] < S,
                     other=0.0)
        qk = tl.dot(q, kt) * qk_scale
        keep = cols[None, :] < S
        if CAUSAL:
            keep = keep & (offs_m[:, None] >= cols[None, :])
        qk = tl.where(keep, qk, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(qk, 1))
        l_i = l_i * tl.math.exp2(m_i - m_new) + tl.sum(tl.math.exp2(qk - m_new[:, None]), 1)
        m_i = m_new
    inv_l = 1.0 / l_i

    # Pass 2: final probabilities times V; nothing is rescaled.
    acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    for start_n in range(0, hi, BLOCK_N):
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
        p = tl.math.exp2(qk - m_i[:, None]) * inv_l[:, None]
        acc = tl.dot(p.to(v.dtype), v, acc)
    tl.store(o_ptr + base + qo_offs, acc.to(o_ptr.dtype.element_ty),
             mask=offs_m[:, None] < S)


def launch_two_pass(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    o: torch.Tensor,
    config: Mapping[str, Scalar],
    causal: bool,
) -> None:
    """Launch the ``two_pass`` kernel; ``q``, ``k``, ``v`` and ``o`` share one (B, H, S, D) layout."""
    B, H, S, D = q.shape
    stride_b, stride_h, stride_s, _ = q.stride()
    qk_scale = math.log2(math.e) / math.sqrt(D)  # exp(x / sqrt(D)) == exp2(x * qk_scale)
    grid = (triton.cdiv(S, int(config["BLOCK_M"])), B * H)
    attention_two_pass_kernel[grid](
        q, k, v, o, qk_scale, H, S, stride_b, stride_h, stride_s,
        HEAD_DIM=D, BLOCK_M=config["BLOCK_M"], BLOCK_N=config["BLOCK_N"], CAUSAL=causal,
        num_warps=config["num_warps"], num_stages=config["num_stages"],
    )


def warmup_two_pass(
    dtype: torch.dtype, config: Mapping[str, Scalar], B: int, H: int, S: int, D: int, causal: bool
) -> list[Any]:
    """Compile the ``two_pass`` kernel with the arguments that :func:`launch_two_pass` passes."""
    return [attention_two_pass_kernel.warmup(
        dtype, dtype, dtype, dtype, math.log2(math.e) / math.sqrt(D), H, S, H * S * D, S * D, D,
        grid=(triton.cdiv(S, int(config["BLOCK_M"])), B * H),
        HEAD_DIM=D, BLOCK_M=config["BLOCK_M"], BLOCK_N=config["BLOCK_N"], CAUSAL=causal,
        num_warps=config["num_warps"], num_stages=config["num_stages"],
    )]
