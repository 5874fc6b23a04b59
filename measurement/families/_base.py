"""The Family base class: one Triton kernel source (or a few variants), its space, problem and reference.

A benchmarker uses a family in this order, for one candidate ``(variant, config, problem)``:

1. :meth:`Family.check_config` -- cheap, no GPU: is the config in the space and valid on the device?
   A reason string makes an ``invalid_config`` record.
2. :meth:`Family.compile` -- compile only (``JITFunction.warmup``), in a CPU worker, so compilation runs in
   parallel with timing; it fills Triton's on-disk cache and returns the compiled kernel(s).
3. :meth:`Family.make_inputs` -- fresh random inputs on the device (never zeros).
4. :meth:`Family.new_output`, then the benchmarker poisons it (NaN) before the run.
5. :meth:`Family.launch` -- run the kernel once into the output; the same call is what gets timed.
6. :meth:`Family.reference` -- the PyTorch result, compared with :meth:`Family.tolerance`.

:meth:`Family.flops` and :meth:`Family.min_bytes` give the roofline quantities of a problem.
Subclasses set :attr:`name`, :attr:`dims`, :attr:`dtypes`, :attr:`variants` and :attr:`default_shapes`.
"""

from __future__ import annotations

import abc
import inspect
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from kernelcast.exceptions import InvalidParameterError, invalid_choice
from kernelcast.measurement.records import Scalar, source_hash
from kernelcast.measurement.space import ConfigSpace, DeviceLimits, Problem, parse_dtype, parse_shape

if TYPE_CHECKING:
    import torch

TORCH_DTYPES: dict[str, str] = {"float16": "float16", "bfloat16": "bfloat16", "float32": "float32"}


def torch_dtype(name: str) -> torch.dtype:
    """Return the torch dtype named ``name`` (``"float16"`` -> ``torch.float16``)."""
    import torch

    return getattr(torch, TORCH_DTYPES[name])


def element_bytes(dtype: str) -> int:
    """Bytes per element of ``dtype``."""
    return {"float16": 2, "bfloat16": 2, "float32": 4}[dtype]


class Family(abc.ABC):
    """A kernel family. See the module docstring for the order in which its methods are called."""

    name: ClassVar[str]
    """Registry name, e.g. ``"matmul"``."""
    dims: ClassVar[tuple[str, ...]]
    """Names of the problem dimensions, in the order of a positional shape, e.g. ``("M", "N", "K")``."""
    dtypes: ClassVar[tuple[str, ...]] = ("float16", "bfloat16", "float32")
    """Element types the family supports."""
    variants: ClassVar[tuple[str, ...]] = ("default",)
    """Source variants; the first is the default."""
    default_shapes: ClassVar[tuple[str, ...]] = ()
    """Shapes a user would meet, as positional shape strings; the first is the default."""
    description: ClassVar[str] = ""
    """One line on what the family computes."""

    # -- problem and space --------------------------------------------------------------------------
    def problem(self, shape: str | Mapping[str, int], dtype: str, **options: Scalar) -> Problem:
        """Build and validate a :class:`Problem` from a shape string or dict and a dtype name."""
        dims = parse_shape(shape, self.dims, owner=self.name) if isinstance(shape, str) else dict(shape)
        if set(dims) != set(self.dims) or any(not isinstance(v, int) or v <= 0 for v in dims.values()):
            raise InvalidParameterError(
                f"The shape of a {self.name} problem must give positive ints for {list(self.dims)!r}. Got {dims!r}."
            )
        problem = Problem(dims={d: dims[d] for d in self.dims}, dtype=parse_dtype(dtype, self.dtypes, self.name),
                          options=dict(options))
        self.check_problem(problem)
        return problem

    def check_problem(self, problem: Problem) -> None:  # noqa: B027 - optional hook
        """Raise :class:`InvalidParameterError` if the family cannot solve ``problem``."""

    def check_variant(self, variant: str) -> str:
        """Return ``variant`` if the family has it, else raise naming the allowed ones."""
        if variant not in self.variants:
            raise invalid_choice("variant", self.name, variant, self.variants)
        return variant

    @abc.abstractmethod
    def space(self, variant: str) -> ConfigSpace:
        """The configuration space of ``variant``."""

    def check_config(
        self, variant: str, config: Mapping[str, Any], problem: Problem, limits: DeviceLimits
    ) -> str | None:
        """Return why ``config`` cannot run on ``problem`` and ``limits``, or ``None`` if it can.

        Raises :class:`InvalidParameterError` if the config is not in the space at all; a reason string
        is for configurations that are in the space but do not fit this problem or device.
        """
        self.space(variant).validate(config, owner=f"{self.name}/{variant} config")
        return None

    def configs(self, variant: str, problem: Problem, limits: DeviceLimits) -> list[dict[str, Scalar]]:
        """Every configuration of ``variant`` that is valid for ``problem`` on ``limits``."""
        return [c for c in self.space(variant) if self.check_config(variant, c, problem, limits) is None]

    # -- source -------------------------------------------------------------------------------------
    @abc.abstractmethod
    def source_objects(self, variant: str) -> Sequence[Any]:
        """The Triton kernels (JIT functions) and Python launchers whose text is the variant's source."""

    def source(self, variant: str) -> str:
        """The source text of ``variant``: its kernels and launch code, as written."""
        texts = []
        for obj in self.source_objects(variant):
            fn = getattr(obj, "fn", obj)  # a JITFunction wraps the Python function in .fn
            texts.append(inspect.getsource(fn))
        return "\n\n".join(texts)

    def source_hash(self, variant: str) -> str:
        """:func:`~kernelcast.measurement.records.source_hash` of :meth:`source`."""
        return source_hash(self.source(variant))

    # -- running ------------------------------------------------------------------------------------
    @abc.abstractmethod
    def make_inputs(self, problem: Problem, *, device: str, seed: int) -> dict[str, torch.Tensor]:
        """Fresh random inputs for ``problem`` on ``device`` (never all zeros)."""

    @abc.abstractmethod
    def new_output(self, problem: Problem, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """An uninitialised output tensor; the benchmarker poisons it before the correctness run."""

    @abc.abstractmethod
    def launch(
        self,
        variant: str,
        config: Mapping[str, Scalar],
        problem: Problem,
        inputs: Mapping[str, torch.Tensor],
        out: torch.Tensor,
    ) -> None:
        """Run the kernel once, writing ``out``. Any zeroing the kernel needs happens here (and is timed)."""

    @abc.abstractmethod
    def compile(self, variant: str, config: Mapping[str, Scalar], problem: Problem) -> list[Any]:
        """Compile without launching (``JITFunction.warmup``); return the compiled kernel(s)."""

    @abc.abstractmethod
    def reference(self, problem: Problem, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The PyTorch result for ``inputs``, computed in float32 or better."""

    def tolerance(self, dtype: str) -> tuple[float, float]:
        """``(atol, rtol)`` for comparing the kernel's output with :meth:`reference`."""
        return {"float16": (1e-2, 1e-2), "bfloat16": (5e-2, 5e-2), "float32": (1e-3, 1e-3)}[dtype]

    # -- roofline -----------------------------------------------------------------------------------
    @abc.abstractmethod
    def flops(self, problem: Problem) -> float:
        """Floating-point operations of the problem."""

    @abc.abstractmethod
    def min_bytes(self, problem: Problem) -> float:
        """Fewest bytes the problem must move through device memory (each input read once, output written once)."""

    # -- listing ------------------------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        """A plain-dict summary for ``kernelcast families``."""
        return {
            "name": self.name,
            "description": self.description,
            "dims": list(self.dims),
            "dtypes": list(self.dtypes),
            "variants": {v: {"space": self.space(v).describe(), "size": len(self.space(v))} for v in self.variants},
            "default_shapes": list(self.default_shapes),
        }


def shared_memory_reason(needed_bytes: int, limits: DeviceLimits) -> str | None:
    """Reason string when a block needs more shared memory than ``limits`` allow, else ``None``."""
    if needed_bytes > limits.max_shared_bytes_per_block:
        return (
            f"needs {needed_bytes} bytes of shared memory per block; {limits.name} allows "
            f"{limits.max_shared_bytes_per_block}"
        )
    return None
