"""The kernel library file: Triton kernels harvested from torch.compile, one JSON object per line.

A library is a JSON-lines file, optionally gzip-compressed (``.jsonl.gz``). The first line is a header::

    {"format": "kernelcast.inductor_library", "format_version": 1, "created_at": ..., "torch": ...,
     "triton": ..., "device": ..., ...}

and every further line is one kernel (:class:`HarvestedKernel`), de-duplicated by the hash of its source text.
A kernel line holds the kernel's full source text (the module Inductor wrote: imports, the
``@triton_heuristics.*`` decorator with ``triton_meta``/``inductor_meta``, the ``@triton.jit`` function), what
the harvest saw at its first launch (every argument as an :class:`ArgSpec`), the configurations Inductor
considered and the one it launched, and the programs that produced it.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any

from kernelcast.exceptions import InvalidParameterError, SchemaVersionError
from kernelcast.measurement.records import Scalar, source_hash, utc_now

FORMAT = "kernelcast.inductor_library"
FORMAT_VERSION = 1
"""Version of the library layout; bump it when a field changes meaning."""

ROLES: tuple[str, ...] = ("in", "out", "in_out")
"""Argument roles: read only, written only (every element), read and written (initial values matter)."""

KINDS: tuple[str, ...] = ("pointwise", "pointwise_2d", "pointwise_3d", "reduction", "persistent_reduction")
"""Kernel kinds the inductor family can launch; anything else is kept in the library but not measurable."""


@dataclasses.dataclass(frozen=True)
class ArgSpec:
    """One argument of a harvested kernel launch, as seen at its first launch.

    Attributes
    ----------
    name : str
        Parameter name in the kernel's ``def`` (``in_ptr0``, ``out_ptr1``, ``xnumel``, ...).
    kind : {"tensor", "scalar"}
        A tensor (pointer) argument or a scalar one.
    dtype : str or None
        Torch dtype name of a tensor (``"float16"``, ``"int64"``, ``"bool"``) or Python type of a scalar.
    shape, stride : tuple of int
        Tensor size and stride (elements); empty for scalars.
    storage_offset : int
        Offset of the tensor's first element in its storage (elements).
    storage_bytes : int
        Size of the tensor's whole storage (bytes); may exceed what the kernel touches.
    role : {"in", "out", "in_out"}
        Whether the kernel reads the argument, writes every element of it, or reads its initial value and
        writes it (in-place buffers, mutated inputs, atomics).
    value : scalar or None
        The value of a scalar argument.
    min, max : float or None
        Smallest and largest finite value of an input tensor before the launch (ints exactly), for making
        inputs of the same range; ``None`` for outputs, bools and empty tensors.
    """

    name: str
    kind: str
    dtype: str | None = None
    shape: tuple[int, ...] = ()
    stride: tuple[int, ...] = ()
    storage_offset: int = 0
    storage_bytes: int = 0
    role: str = "in"
    value: Scalar | None = None
    min: float | None = None
    max: float | None = None

    @property
    def span(self) -> int:
        """Elements from the tensor's first to its last addressable element, ``1 + sum((size-1)*stride)``."""
        if any(s == 0 for s in self.shape):
            return 0
        return 1 + sum((s - 1) * abs(st) for s, st in zip(self.shape, self.stride))

    @property
    def written(self) -> bool:
        """Whether the kernel writes this argument."""
        return self.role in ("out", "in_out")

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form (lists for tuples)."""
        out = dataclasses.asdict(self)
        out["shape"], out["stride"] = list(self.shape), list(self.stride)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str) -> ArgSpec:
        """Build from :meth:`to_dict` output; ``where`` names the file and kernel in errors."""
        try:
            spec = cls(
                name=str(data["name"]), kind=str(data["kind"]), dtype=data.get("dtype"),
                shape=tuple(int(s) for s in data.get("shape", ())),
                stride=tuple(int(s) for s in data.get("stride", ())),
                storage_offset=int(data.get("storage_offset", 0)), storage_bytes=int(data.get("storage_bytes", 0)),
                role=str(data.get("role", "in")), value=data.get("value"), min=data.get("min"), max=data.get("max"),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidParameterError(f"{where}: an entry of 'args' is malformed ({exc!r}): {dict(data)!r}") from None
        if spec.kind not in ("tensor", "scalar"):
            raise InvalidParameterError(f"{where}: the 'kind' of argument {spec.name!r} must be 'tensor' or "
                                        f"'scalar'. Got {spec.kind!r} instead.")
        if spec.role not in ROLES:
            raise InvalidParameterError(f"{where}: the 'role' of argument {spec.name!r} must be one of "
                                        f"{', '.join(map(repr, ROLES))}. Got {spec.role!r} instead.")
        if spec.kind == "tensor" and len(spec.shape) != len(spec.stride):
            raise InvalidParameterError(f"{where}: argument {spec.name!r} has {len(spec.shape)} sizes but "
                                        f"{len(spec.stride)} strides.")
        return spec


@dataclasses.dataclass(frozen=True)
class LaunchConfig:
    """A Triton launch configuration: block sizes (``kwargs``), ``num_warps`` and ``num_stages``."""

    kwargs: Mapping[str, int]
    num_warps: int
    num_stages: int

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form."""
        return {"kwargs": dict(self.kwargs), "num_warps": self.num_warps, "num_stages": self.num_stages}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str) -> LaunchConfig:
        """Build from :meth:`to_dict` output; ``where`` names the file and field in errors."""
        try:
            return cls(kwargs={str(k): int(v) for k, v in dict(data.get("kwargs", {})).items()},
                       num_warps=int(data["num_warps"]), num_stages=int(data["num_stages"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidParameterError(f"{where} is not a launch config ({exc!r}): {data!r}") from None


@dataclasses.dataclass(frozen=True)
class HarvestedKernel:
    """One Triton kernel Inductor generated and launched, with everything needed to launch it again.

    Attributes
    ----------
    kernel_id : str
        :func:`~kernelcast.measurement.records.source_hash` of ``source``; the kernel's identity.
    kernel_name : str
        The ``def`` name, e.g. ``triton_per_fused__softmax_0``.
    kind : str
        One of :data:`KINDS`, or the heuristic's name for kernels the family cannot launch.
    heuristic : str
        The ``triton_heuristics`` decorator (``pointwise``, ``reduction``, ``persistent_reduction``, ...).
    grid_type : str or None
        Inductor's grid class (``Grid1D``, ``Grid2D``, ...).
    dtype : str
        Element type of the program that produced the kernel first (``float16``, ``bfloat16``, ``float32``).
    source : str
        The full source text Inductor wrote for the kernel.
    args : tuple of ArgSpec
        Every positional argument of the launch, in order.
    configs : tuple of LaunchConfig
        The configurations Inductor considered (compiled and, if more than one, benchmarked).
    launched : LaunchConfig or None
        The configuration Inductor launched.
    programs : tuple of dict
        ``{"program", "shape", "dtype"}`` of every harvested program that produced this source.
    triton_meta, inductor_meta : dict
        Inductor's metadata as JSON-safe values (sets become sorted lists, objects their ``repr``).
    missing : tuple of str
        What the harvest could not capture (attribute names that were absent in this torch version).
    measurable : bool
        Whether :class:`~kernelcast.measurement.families.inductor.InductorFamily` can launch it.
    reason : str or None
        Why it is not measurable.
    """

    kernel_id: str
    kernel_name: str
    kind: str
    heuristic: str
    grid_type: str | None
    dtype: str
    source: str
    args: tuple[ArgSpec, ...]
    configs: tuple[LaunchConfig, ...] = ()
    launched: LaunchConfig | None = None
    programs: tuple[Mapping[str, Any], ...] = ()
    triton_meta: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    inductor_meta: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    missing: tuple[str, ...] = ()
    measurable: bool = True
    reason: str | None = None

    @property
    def numels(self) -> dict[str, int]:
        """Scalar arguments named ``*numel`` (``xnumel``, ``ynumel``, ``r0_numel``, ...) by name."""
        return {a.name: int(a.value) for a in self.args
                if a.kind == "scalar" and a.name.endswith("numel") and isinstance(a.value, int)}

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict (JSON) form, one library line."""
        return {
            "kernel_id": self.kernel_id, "kernel_name": self.kernel_name, "kind": self.kind,
            "heuristic": self.heuristic, "grid_type": self.grid_type, "dtype": self.dtype,
            "args": [a.to_dict() for a in self.args], "configs": [c.to_dict() for c in self.configs],
            "launched": self.launched.to_dict() if self.launched else None,
            "programs": [dict(p) for p in self.programs], "triton_meta": dict(self.triton_meta),
            "inductor_meta": dict(self.inductor_meta), "missing": list(self.missing),
            "measurable": self.measurable, "reason": self.reason, "source": self.source,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "kernel") -> HarvestedKernel:
        """Build from :meth:`to_dict` output, checking the fields; errors name ``where`` and the field."""
        for field in ("kernel_id", "kernel_name", "kind", "source", "args", "dtype"):
            if field not in data:
                raise InvalidParameterError(f"{where} lacks the field {field!r} (it has {sorted(data)!r}).")
        if not isinstance(data["source"], str) or not data["source"]:
            raise InvalidParameterError(f"{where}: the field 'source' must be a non-empty string.")
        if source_hash(data["source"]) != data["kernel_id"]:
            raise InvalidParameterError(
                f"{where}: the field 'kernel_id' must be the source hash of 'source' "
                f"({source_hash(data['source'])!r}). Got {data['kernel_id']!r} instead."
            )
        if not isinstance(data["args"], list):
            raise InvalidParameterError(f"{where}: the field 'args' must be a list. Got {type(data['args']).__name__}.")
        where = f"{where} ({data['kernel_id']})"
        launched = data.get("launched")
        return cls(
            kernel_id=str(data["kernel_id"]), kernel_name=str(data["kernel_name"]), kind=str(data["kind"]),
            heuristic=str(data.get("heuristic", "")), grid_type=data.get("grid_type"), dtype=str(data["dtype"]),
            source=data["source"],
            args=tuple(ArgSpec.from_dict(a, where) for a in data["args"]),
            configs=tuple(LaunchConfig.from_dict(c, f"{where} field 'configs'") for c in data.get("configs") or ()),
            launched=LaunchConfig.from_dict(launched, f"{where} field 'launched'") if launched else None,
            programs=tuple(dict(p) for p in data.get("programs") or ()),
            triton_meta=dict(data.get("triton_meta") or {}), inductor_meta=dict(data.get("inductor_meta") or {}),
            missing=tuple(data.get("missing") or ()), measurable=bool(data.get("measurable", True)),
            reason=data.get("reason"),
        )


def _open_text(path: Path, mode: str) -> IO[str]:
    if path.name.endswith(".gz"):
        return gzip.open(path, mode + "t", encoding="utf-8")  # type: ignore[return-value]
    return open(path, mode, encoding="utf-8")


def library_header(**fields: Any) -> dict[str, Any]:
    """A library header line: format, version, creation time and ``fields`` (versions, device, ...)."""
    return {"format": FORMAT, "format_version": FORMAT_VERSION, "created_at": utc_now(), **fields}


def write_library(path: str | os.PathLike[str], header: Mapping[str, Any], kernels: Iterable[HarvestedKernel]) -> int:
    """Write a library file atomically (``.gz`` suffix: gzip); return the number of kernels written.

    Kernels are de-duplicated by ``kernel_id`` (the first is kept).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{path.name}")
    seen: set[str] = set()
    with _open_text(tmp, "w") as handle:
        handle.write(json.dumps(dict(header), sort_keys=True) + "\n")
        for kernel in kernels:
            if kernel.kernel_id in seen:
                continue
            seen.add(kernel.kernel_id)
            handle.write(json.dumps(kernel.to_dict(), sort_keys=True) + "\n")
    os.replace(tmp, path)
    return len(seen)


def read_header(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The header line of a library file (checked)."""
    path = Path(path)
    with _open_text(_existing(path), "r") as handle:
        return _check_header(handle.readline(), path)


def iter_library(path: str | os.PathLike[str]) -> Iterator[HarvestedKernel]:
    """Yield every kernel of a library file, checking the header and each line.

    Raises
    ------
    InvalidParameterError
        Naming the file, the line and the field when the file is not a kernel library or a line is malformed.
    SchemaVersionError
        If the file was written by a newer layout.
    """
    path = Path(path)
    with _open_text(_existing(path), "r") as handle:
        _check_header(handle.readline(), path)
        for number, line in enumerate(handle, start=2):
            if not line.strip():
                continue
            where = f"The kernel library {str(path)!r}, line {number},"
            try:
                data = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InvalidParameterError(f"{where} is not JSON: {exc}") from None
            if not isinstance(data, dict):
                raise InvalidParameterError(f"{where} must hold a JSON object. Got {type(data).__name__}.")
            yield HarvestedKernel.from_dict(data, where)


def read_library(path: str | os.PathLike[str]) -> dict[str, HarvestedKernel]:
    """All kernels of a library file by ``kernel_id`` (see :func:`iter_library`)."""
    out: dict[str, HarvestedKernel] = {}
    for kernel in iter_library(path):
        out.setdefault(kernel.kernel_id, kernel)
    return out


def _existing(path: Path) -> Path:
    if not path.is_file():
        raise InvalidParameterError(f"The kernel library {str(path)!r} does not exist (or is not a file).")
    return path


def _check_header(line: str, path: Path) -> dict[str, Any]:
    try:
        header = json.loads(line) if line.strip() else None
    except (json.JSONDecodeError, UnicodeDecodeError):
        header = None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise InvalidParameterError(
            f"The kernel library {str(path)!r} must start with a header line whose field 'format' is {FORMAT!r} "
            f"(written by kernelcast.measurement.harvest). Got {line[:120]!r}."
        )
    version = header.get("format_version")
    if not isinstance(version, int):
        raise InvalidParameterError(f"The header of the kernel library {str(path)!r} lacks an int 'format_version'.")
    if version > FORMAT_VERSION:
        raise SchemaVersionError(f"The kernel library {path}", version, FORMAT_VERSION)
    return header
