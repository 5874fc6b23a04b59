"""Attention forward ``O = softmax(Q K^T / sqrt(D) [+ causal mask]) V`` for Q, K, V, O of shape (B, H, S, D).

Variants
--------
fa2
    FlashAttention-2: one pass over K and V with an online softmax (``_attention_fa2``).
two_pass
    FlashAttention-1 style: one pass for the row max and normaliser, a second for normalised ``P V``,
    no rescaling of the accumulator (``_attention_two_pass``).
split_kv
    Flash-decoding style: keys split over ``NUM_SPLITS`` programs writing partial outputs and log-sum-exps,
    then a small combine kernel (``_attention_split_kv``).

The problem option ``causal`` (bool, default ``False``) masks keys after the query position; it is part of
the record's ``problem`` field.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import torch

from kernelcast.exceptions import InvalidParameterError, invalid_choice
from kernelcast.measurement.families._attention_fa2 import attention_fa2_kernel, launch_fa2, warmup_fa2
from kernelcast.measurement.families._attention_split_kv import (
    attention_split_kv_combine_kernel,
    attention_split_kv_kernel,
    launch_split_kv,
    warmup_split_kv,
)
from kernelcast.measurement.families._attention_two_pass import (
    attention_two_pass_kernel,
    launch_two_pass,
    warmup_two_pass,
)
from kernelcast.measurement.families._base import Family, element_bytes, shared_memory_reason, torch_dtype
from kernelcast.measurement.records import Scalar
from kernelcast.measurement.space import ConfigSpace, DeviceLimits, Param, Problem

HEAD_DIMS: tuple[int, ...] = (16, 32, 64, 128, 256)
"""Head dimensions the kernels support (``tl.arange`` needs a power of two; ``tl.dot`` at least 16)."""

MAX_GRID_Y = 65_535
"""CUDA's limit on the second grid dimension, which holds ``B * H``."""

MAX_INT32_OFFSET = 2**31 - 1
"""Kernels index elements with 32-bit offsets."""

_Tensor = torch.Tensor
_Launcher = Callable[[_Tensor, _Tensor, _Tensor, _Tensor, Mapping[str, Scalar], bool], None]
_Warmup = Callable[[torch.dtype, Mapping[str, Scalar], int, int, int, int, bool], list[Any]]

_COMMON = [
    Param("BLOCK_M", (16, 32, 64, 128)),
    Param("BLOCK_N", (16, 32, 64, 128)),
    Param("num_warps", (2, 4, 8)),
    Param("num_stages", (1, 2, 3, 4)),
]


class AttentionFamily(Family):
    """Scaled dot-product attention forward in fp16, bf16 or fp32 with fp32 softmax and accumulation."""

    name = "attention"
    dims = ("B", "H", "S", "D")
    dtypes = ("float16", "bfloat16", "float32")
    variants = ("fa2", "two_pass", "split_kv")
    default_shapes = ("4x16x1024x64", "1x32x4096x128", "8x12x512x64", "2x8x1000x64", "16x16x128x32",
                      "1x8x8192x128")
    description = "O = softmax(Q K^T / sqrt(D) [causal]) V, Q/K/V/O of shape (B, H, S, D)"

    problem_options: ClassVar[dict[str, bool]] = {"causal": False}
    """Problem options and their defaults."""

    _SPACES: ClassVar[dict[str, ConfigSpace]] = {
        "fa2": ConfigSpace(_COMMON),
        "two_pass": ConfigSpace(_COMMON),
        "split_kv": ConfigSpace([*_COMMON, Param("NUM_SPLITS", (2, 4, 8, 16))]),
    }
    _SOURCES: ClassVar[dict[str, tuple[Any, ...]]] = {
        "fa2": (attention_fa2_kernel, launch_fa2),
        "two_pass": (attention_two_pass_kernel, launch_two_pass),
        "split_kv": (attention_split_kv_kernel, attention_split_kv_combine_kernel, launch_split_kv),
    }
    _LAUNCHERS: ClassVar[dict[str, _Launcher]] = {
        "fa2": launch_fa2, "two_pass": launch_two_pass, "split_kv": launch_split_kv,
    }
    _WARMUPS: ClassVar[dict[str, _Warmup]] = {
        "fa2": warmup_fa2, "two_pass": warmup_two_pass, "split_kv": warmup_split_kv,
    }

    # -- problem and space --------------------------------------------------------------------------
    def problem(self, shape: str | Mapping[str, int], dtype: str, **options: Scalar) -> Problem:
        """Build a problem; ``causal`` defaults to ``False`` and is always recorded."""
        unknown = sorted(set(options) - set(self.problem_options))
        if unknown:
            raise invalid_choice("option", self.name, unknown[0], self.problem_options)
        return super().problem(shape, dtype, causal=_as_bool(options.get("causal", False)))

    def check_problem(self, problem: Problem) -> None:
        """``D`` must be in :data:`HEAD_DIMS`; ``B * H`` and the tensor size must fit the kernels' offsets."""
        B, H, S, D = (problem[d] for d in self.dims)
        if D not in HEAD_DIMS:
            raise InvalidParameterError(
                f"The head dimension 'D' of an attention problem must be one of {list(HEAD_DIMS)!r}. "
                f"Got {D} instead."
            )
        if B * H > MAX_GRID_Y:
            raise InvalidParameterError(
                f"B * H of an attention problem must be at most {MAX_GRID_Y} (one grid row each). "
                f"Got {B * H} instead."
            )
        if B * H * S * D > MAX_INT32_OFFSET:
            raise InvalidParameterError(
                "B * H * S * D of an attention problem must be below 2**31 (32-bit offsets). "
                f"Got {B * H * S * D} instead."
            )
        _causal(problem)

    def space(self, variant: str) -> ConfigSpace:
        """Query and key block sizes, warps and pipeline depth; ``split_kv`` adds ``NUM_SPLITS``.

        ``fa2`` and ``two_pass`` have 192 configurations, ``split_kv`` 768.
        """
        return self._SPACES[self.check_variant(variant)]

    def check_config(
        self, variant: str, config: Mapping[str, Any], problem: Problem, limits: DeviceLimits
    ) -> str | None:
        """Shared memory of the Q tile and the pipelined K and V tiles, registers of the fp32 tiles, splits.

        The shared-memory figure is an estimate, ``(BLOCK_M D + num_stages 2 BLOCK_N D)`` elements; the
        register figure counts the fp32 accumulator ``BLOCK_M x D`` and score tile ``BLOCK_M x BLOCK_N``
        spread over ``32 num_warps`` threads, which must stay under 255 per thread.
        """
        super().check_config(variant, config, problem, limits)
        bm, bn = int(config["BLOCK_M"]), int(config["BLOCK_N"])
        stages, warps = int(config["num_stages"]), int(config["num_warps"])
        B, H, S, D = problem["B"], problem["H"], problem["S"], problem["D"]
        smem = (bm * D + stages * 2 * bn * D) * element_bytes(problem.dtype)
        reason = shared_memory_reason(smem, limits)
        if reason:
            return reason
        threads = 32 * warps
        regs = (bm * D + bm * bn) // threads
        if regs > 255:
            return (
                f"the fp32 {bm}x{D} accumulator and {bm}x{bn} score tile need {regs} registers per thread "
                f"with {warps} warps (max 255)"
            )
        if variant == "split_kv":
            splits = int(config["NUM_SPLITS"])
            kv_blocks = -(-S // bn)
            if splits > kv_blocks:
                return f"NUM_SPLITS={splits} exceeds the {kv_blocks} key blocks of BLOCK_N={bn} in S={S}"
            if splits * B * H * S * D > MAX_INT32_OFFSET:
                return (
                    f"the fp32 workspace of NUM_SPLITS={splits} partial outputs has "
                    f"{splits * B * H * S * D} elements, past 32-bit offsets"
                )
        return None

    # -- source -------------------------------------------------------------------------------------
    def source_objects(self, variant: str) -> Sequence[Any]:
        """The variant's kernel(s) and launcher."""
        return self._SOURCES[self.check_variant(variant)]

    # -- running ------------------------------------------------------------------------------------
    def make_inputs(self, problem: Problem, *, device: str, seed: int) -> dict[str, torch.Tensor]:
        """Q, K and V with standard normal entries, contiguous (B, H, S, D)."""
        gen = torch.Generator(device=device).manual_seed(seed)
        shape = tuple(problem[d] for d in self.dims)
        dtype = torch_dtype(problem.dtype)
        return {
            name: torch.randn(shape, generator=gen, device=device, dtype=torch.float32).to(dtype)
            for name in ("q", "k", "v")
        }

    def new_output(self, problem: Problem, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Empty (B, H, S, D) tensor like Q."""
        return torch.empty_like(inputs["q"])

    def launch(
        self,
        variant: str,
        config: Mapping[str, Scalar],
        problem: Problem,
        inputs: Mapping[str, torch.Tensor],
        out: torch.Tensor,
    ) -> None:
        """Run the variant into ``out``; Q, K, V and ``out`` share one layout with unit stride along D."""
        q, k, v = inputs["q"], inputs["k"], inputs["v"]
        if not (q.stride() == k.stride() == v.stride() == out.stride()) or q.stride(-1) != 1:
            raise InvalidParameterError(
                "The Q, K, V and output tensors of attention must share one layout with unit stride along D. "
                f"Got strides {q.stride()}, {k.stride()}, {v.stride()} and {out.stride()}."
            )
        self._LAUNCHERS[self.check_variant(variant)](q, k, v, out, config, _causal(problem))

    def compile(self, variant: str, config: Mapping[str, Scalar], problem: Problem) -> list[Any]:
        """Compile the variant's kernel(s) for contiguous inputs of ``problem`` without launching them."""
        warmup = self._WARMUPS[self.check_variant(variant)]
        B, H, S, D = (problem[d] for d in self.dims)
        return warmup(torch_dtype(problem.dtype), config, B, H, S, D, _causal(problem))

    def reference(self, problem: Problem, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """PyTorch's scaled dot-product attention in float32."""
        q, k, v = (inputs[n].float() for n in ("q", "k", "v"))
        return torch.nn.functional.scaled_dot_product_attention(
            q, k, v, is_causal=_causal(problem), scale=problem["D"] ** -0.5
        )

    def tolerance(self, dtype: str) -> tuple[float, float]:
        """fp32 ``tl.dot`` runs through tf32 on tensor cores, so it gets the fp16 tolerance."""
        return {"float16": (1e-2, 1e-2), "bfloat16": (5e-2, 5e-2), "float32": (1e-2, 1e-2)}[dtype]

    # -- roofline -----------------------------------------------------------------------------------
    def flops(self, problem: Problem) -> float:
        """``4 B H S^2 D`` (two matrix products), half of it when causal."""
        B, H, S, D = (problem[d] for d in self.dims)
        full = 4.0 * B * H * S * S * D
        return full / 2 if _causal(problem) else full

    def min_bytes(self, problem: Problem) -> float:
        """Q, K and V read once, O written once."""
        B, H, S, D = (problem[d] for d in self.dims)
        return float(4 * B * H * S * D * element_bytes(problem.dtype))


def _causal(problem: Problem) -> bool:
    """The problem's ``causal`` option (``False`` when absent)."""
    return _as_bool(problem.options.get("causal", False))


def _as_bool(value: Any) -> bool:
    """The ``causal`` option as a bool; accepts bools, 0/1 and the strings true/false/1/0 (from a CLI)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0"):
        return value.strip().lower() in ("true", "1")
    raise InvalidParameterError(f"The 'causal' option of attention must be a bool. Got {value!r} instead.")
