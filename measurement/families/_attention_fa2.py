"""Attention variant ``fa2``: FlashAttention-2 forward, one pass over K and V with an online softmax.

One program owns a block of ``BLOCK_M`` query rows of one (batch, head) and loops over the keys in blocks of
``BLOCK_N``, keeping a running row maximum ``m``, normaliser ``l`` and unnormalised output ``acc``; both are
rescaled by ``exp2(m_old - m_new)`` whenever the maximum grows, and ``acc / l`` is written once at the end.
The softmax scale is folded with ``log2(e)`` so the kernel uses ``exp2``.
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
def attention_fa2_kernel(
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

    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    if CAUSAL:
        hi = tl.minimum(S, (start_m + 1) * BLOCK_M)  # keys past the block's last query are all masked
    else:
        hi = S
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
        # Key 0 is in the first block and never masked, so m_new is finite from the first iteration on.
        m_new = tl.maximum(m_i, tl.max(qk, 1))
        p = tl.math.exp2(qk - m_new[:, None])
        alpha = tl.math.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = tl.dot(p.to(v.dtype), v, acc * alpha[:, None])
        m_i = m_new
    out = acc / l_i[:, None]
    tl.store(o_ptr + base + qo_offs, out.to(o_ptr.dtype.element_ty),
             mask=offs_m[:, None] < S)


def launch_fa2(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    o: torch.Tensor,
    config: Mapping[str, Scalar],
    causal: bool,
) -> None:
    """Launch the ``fa2`` kernel; ``q``, ``k``, ``v`` and ``o`` share one (B, H, S, D) layout."""
    B, H, S, D = q.shape
    stride_b, stride_h, stride_s, _ = q.stride()
    qk_scale = math.log2(math.e) / math.sqrt(D)  # exp(x / sqrt(D)) == exp2(x * qk_scale)
    grid = (triton.cdiv(S, int(config["BLOCK_M"])), B * H)
    attention_fa2_kernel[grid](
        q, k, v, o, qk_scale, H, S, stride_b, stride_h, stride_s,
        HEAD_DIM=D, BLOCK_M=config["BLOCK_M"], BLOCK_N=config["BLOCK_N"], CAUSAL=causal,
        num_warps=config["num_warps"], num_stages=config["num_stages"],
    )


def warmup_fa2(
    dtype: torch.dtype, config: Mapping[str, Scalar], B: int, H: int, S: int, D: int, causal: bool
) -> list[Any]:
    """Compile the ``fa2`` kernel with the arguments that :func:`launch_fa2` passes."""
    return [attention_fa2_kernel.warmup(
        dtype, dtype, dtype, dtype, math.log2(math.e) / math.sqrt(D), H, S, H * S * D, S * D, D,
        grid=(triton.cdiv(S, int(config["BLOCK_M"])), B * H),
        HEAD_DIM=D, BLOCK_M=config["BLOCK_M"], BLOCK_N=config["BLOCK_N"], CAUSAL=causal,
        num_warps=config["num_warps"], num_stages=config["num_stages"],
    )]
