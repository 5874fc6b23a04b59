"""The RowwiseFamily base: an M x N matrix reduced or normalised along its rows, ``BLOCK_M`` rows per program.

softmax, layernorm, rmsnorm and rowsum have one shape. A ``single_block`` variant holds a whole row in one
``BLOCK_N``-wide block; looped variants walk the row in ``BLOCK_N``-wide column blocks, pipelined
``num_stages`` deep. A configuration is valid when its programs cover the row, its pipelined tiles fit in
shared memory and its live fp32 tiles fit in registers. Each variant is one Triton kernel and one Python
launcher that takes the inputs, the output and the config.

:class:`RowwiseFamily` holds that shape once. A subclass fills four tables (:attr:`~RowwiseFamily._SPACES`,
:attr:`~RowwiseFamily._KERNELS`, :attr:`~RowwiseFamily._LIVE_TILES`, :attr:`~RowwiseFamily._INPUTS`),
gives the kernel's positional arguments for ``compile`` (:meth:`~RowwiseFamily._warmup_args`) and keeps
what is its own: inputs, reference, tolerance and roofline.

The kernels and launchers stay in the family modules, as written: their text is the variant's source, and
its hash keys every measured record, so only family-class logic lives here.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch
import triton

from kernelcast.measurement.families._base import Family, element_bytes, shared_memory_reason
from kernelcast.measurement.families._resources import register_reason
from kernelcast.measurement.records import Scalar
from kernelcast.measurement.space import ConfigSpace, DeviceLimits, Param, Problem

SINGLE_BLOCK_SPACE = ConfigSpace([
    Param("BLOCK_M", (1, 2, 4, 8, 16)),
    Param("BLOCK_N", tuple(2**k for k in range(4, 17))),  # 16 .. 65536
    Param("num_warps", (1, 2, 4, 8, 16, 32)),
])
"""Rows per program, a block as wide as the row, and warps: 390 configurations."""

LOOPED_SPACE = ConfigSpace([
    Param("BLOCK_M", (1, 2, 4, 8)),
    Param("BLOCK_N", tuple(2**k for k in range(5, 15))),  # 32 .. 16384
    Param("num_warps", (1, 2, 4, 8, 16)),
    Param("num_stages", (1, 2, 3, 4)),
])
"""Rows per program, column-block width, warps and pipeline depth: 800 configurations."""


class RowwiseFamily(Family):
    """A row-wise family over an M x N matrix; see the module docstring for what a subclass supplies."""

    dims = ("M", "N")

    _SPACES: ClassVar[dict[str, ConfigSpace]]
    """Variant -> its configuration space."""
    _KERNELS: ClassVar[dict[str, tuple[Any, Any]]]
    """Variant -> ``(Triton kernel, launcher)``: the variant's source objects, in the order they are hashed."""
    _LIVE_TILES: ClassVar[dict[str, int]]
    """Variant -> fp32 ``BLOCK_M x BLOCK_N`` tiles a program keeps live at once (for the register estimate)."""
    _INPUTS: ClassVar[tuple[str, ...]] = ("x",)
    """Names of the inputs a launcher takes, in its order, before ``out`` and ``config``."""

    def space(self, variant: str) -> ConfigSpace:
        """The variant's space from :attr:`_SPACES`."""
        return self._SPACES[self.check_variant(variant)]

    def check_config(
        self, variant: str, config: Mapping[str, Any], problem: Problem, limits: DeviceLimits
    ) -> str | None:
        """The programs must cover the row; pipelined tiles must fit in shared memory; fp32 tiles in registers.

        Every variant but ``single_block`` is pipelined: its space has ``num_stages``.
        """
        super().check_config(variant, config, problem, limits)
        bm, bn, warps = int(config["BLOCK_M"]), int(config["BLOCK_N"]), int(config["num_warps"])
        if reason := self._coverage_reason(variant, config, problem):
            return reason
        if variant != "single_block":
            stages = int(config["num_stages"])
            reason = shared_memory_reason(max(stages - 1, 0) * bm * bn * element_bytes(problem.dtype), limits)
            if reason:
                return reason
        return register_reason(self._LIVE_TILES[variant] * bm * bn, warps, limits)

    def _coverage_reason(self, variant: str, config: Mapping[str, Any], problem: Problem) -> str | None:
        """Why the variant's programs do not cover a row as it needs, or ``None``.

        Called by :meth:`check_config` before the resource checks; a subclass with a variant that splits rows
        extends it.
        """
        bn, N = int(config["BLOCK_N"]), problem["N"]
        if variant == "single_block" and bn < N:
            return f"the single_block variant holds a whole row in one block, but BLOCK_N={bn} < N={N}"
        return None

    def source_objects(self, variant: str) -> Sequence[Any]:
        """The variant's kernel and its launcher."""
        return self._KERNELS[self.check_variant(variant)]

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
        """Run the variant's launcher on the :attr:`_INPUTS` into ``out``."""
        launcher = self._KERNELS[self.check_variant(variant)][1]
        launcher(*(inputs[name] for name in self._INPUTS), out, config)

    def compile(self, variant: str, config: Mapping[str, Scalar], problem: Problem) -> list[Any]:
        """Compile the variant's kernel for ``problem`` without launching it, with the launcher's arguments."""
        kernel = self._KERNELS[self.check_variant(variant)][0]
        # The launchers pass every knob of the variant's space, and only those, as a keyword of the launch.
        knobs = {name: config[name] for name in self._SPACES[variant].names}
        return [kernel.warmup(*self._warmup_args(problem), grid=self._grid(variant, config, problem), **knobs)]

    @abc.abstractmethod
    def _warmup_args(self, problem: Problem) -> tuple[Any, ...]:
        """The kernel's positional arguments for contiguous inputs of ``problem``, tensors given by dtype."""

    def _grid(self, variant: str, config: Mapping[str, Scalar], problem: Problem) -> tuple[int, ...]:
        """The launch grid, as the launchers compute it: one program per ``BLOCK_M`` rows."""
        return (triton.cdiv(problem["M"], int(config["BLOCK_M"])),)
