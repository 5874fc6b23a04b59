"""Typed configuration spaces, problems and device limits of kernel families."""

from __future__ import annotations

import dataclasses
import itertools
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from kernelcast.exceptions import InvalidParameterError
from kernelcast.measurement.records import Scalar, canonical_json

DTYPES: tuple[str, ...] = ("float16", "bfloat16", "float32")
"""Element types the built-in families know; each family lists the ones it supports."""

_DTYPE_ALIASES = {"fp16": "float16", "half": "float16", "bf16": "bfloat16", "fp32": "float32", "float": "float32"}


def parse_dtype(value: str, allowed: Sequence[str] = DTYPES, owner: str = "measure") -> str:
    """Return the canonical dtype name for ``value`` (``fp16`` -> ``float16``), or fail naming the allowed."""
    name = _DTYPE_ALIASES.get(value.lower(), value.lower())
    if name not in allowed:
        raise InvalidParameterError(
            f"The 'dtype' parameter of {owner} must be one of {', '.join(map(repr, allowed))}. "
            f"Got {value!r} instead."
        )
    return name


@dataclasses.dataclass(frozen=True)
class Param:
    """One tunable knob: its name and the values it may take, in order."""

    name: str
    values: tuple[Scalar, ...]

    def __post_init__(self) -> None:
        if not self.values:
            raise InvalidParameterError(f"The parameter {self.name!r} must have at least one value.")
        object.__setattr__(self, "values", tuple(self.values))


class ConfigSpace:
    """The Cartesian product of a family variant's knobs.

    Validity against a problem and a device is the family's to decide (:meth:`Family.check_config`);
    the space itself only knows names and allowed values.

    Parameters
    ----------
    params : sequence of Param
        The knobs, in the order configurations are enumerated.
    """

    def __init__(self, params: Sequence[Param]) -> None:
        names = [p.name for p in params]
        if len(set(names)) != len(names):
            raise InvalidParameterError(f"Parameter names of a space must be unique. Got {names!r}.")
        self.params: tuple[Param, ...] = tuple(params)

    @property
    def names(self) -> tuple[str, ...]:
        """Knob names, in order."""
        return tuple(p.name for p in self.params)

    def __len__(self) -> int:
        return math.prod(len(p.values) for p in self.params)

    def __iter__(self) -> Iterator[dict[str, Scalar]]:
        for values in itertools.product(*(p.values for p in self.params)):
            yield dict(zip(self.names, values))

    def validate(self, config: Mapping[str, Any], owner: str = "config") -> dict[str, Scalar]:
        """Return ``config`` as a plain dict if every knob is present with an allowed value.

        Raises
        ------
        InvalidParameterError
            Naming the unknown, missing or out-of-space knob and what is allowed.
        """
        unknown = sorted(set(config) - set(self.names))
        if unknown:
            raise InvalidParameterError(
                f"Unknown knob(s) {unknown!r} in {owner}; the space has {list(self.names)!r}."
            )
        missing = [n for n in self.names if n not in config]
        if missing:
            raise InvalidParameterError(f"Missing knob(s) {missing!r} in {owner}; the space has {list(self.names)!r}.")
        out: dict[str, Scalar] = {}
        for p in self.params:
            value = config[p.name]
            if value not in p.values:
                raise InvalidParameterError(
                    f"The {p.name!r} knob of {owner} must be one of {list(p.values)!r}. Got {value!r} instead."
                )
            out[p.name] = value
        return out

    def sample(self, n: int, seed: int = 0) -> list[dict[str, Scalar]]:
        """Draw ``n`` distinct configurations uniformly (all of them if ``n`` >= the space size).

        With one seed, ``sample(n)`` is a subset of ``sample(m)`` for ``n < m``.
        """
        size = len(self)
        if n >= size:
            return list(self)
        rng = np.random.default_rng(seed)
        # A prefix of one permutation: with the same seed, a larger sample contains a smaller one, so a
        # resumed `random:N` measurement with a larger N only measures what is new.
        picks = sorted(rng.permutation(size)[:n].tolist())
        radices = [len(p.values) for p in self.params]
        configs = []
        for flat in picks:
            idx = []
            for radix in reversed(radices):
                flat, r = divmod(flat, radix)
                idx.append(r)
            idx.reverse()
            configs.append({p.name: p.values[i] for p, i in zip(self.params, idx)})
        return configs

    def describe(self) -> dict[str, list[Scalar]]:
        """Return ``{knob: values}``, for listings."""
        return {p.name: list(p.values) for p in self.params}


@dataclasses.dataclass(frozen=True)
class Problem:
    """What a kernel computes: named integer dimensions, an element type, and optional layout options.

    Attributes
    ----------
    dims : mapping of str to int
        Named sizes, e.g. ``{"M": 4096, "N": 4096, "K": 4096}``.
    dtype : str
        Element type, e.g. ``"float16"``.
    options : mapping of str to scalar
        Family-specific options (e.g. ``{"causal": True}``).
    """

    dims: Mapping[str, int]
    dtype: str
    options: Mapping[str, Scalar] = dataclasses.field(default_factory=dict)

    def as_dict(self) -> dict[str, Scalar]:
        """The record's ``problem`` field: dimensions and options (dtype is a separate field)."""
        return {**dict(self.dims), **dict(self.options)}

    def __getitem__(self, name: str) -> int:
        return self.dims[name]

    def __hash__(self) -> int:
        return hash((canonical_json(self.as_dict()), self.dtype))

    def label(self) -> str:
        """Short human label, e.g. ``M=4096,N=4096,K=4096 float16``."""
        return ",".join(f"{k}={v}" for k, v in self.as_dict().items()) + f" {self.dtype}"


_SHAPE_SEP = re.compile(r"[x,×]")


def parse_shape(text: str, dims: Sequence[str], owner: str = "measure") -> dict[str, int]:
    """Parse ``"4096x4096x512"`` (positional) or ``"M=4096,N=4096,K=512"`` (named) into a dims dict."""
    text = text.strip()
    usage = f"'{'x'.join(dims)}' (e.g. {'x'.join(['1024'] * len(dims))}) or '{','.join(d + '=1024' for d in dims)}'"
    if not text:
        raise InvalidParameterError(f"The 'shape' parameter of {owner} must be {usage}. Got an empty string.")
    parts = [p.strip() for p in _SHAPE_SEP.split(text) if p.strip()]
    out: dict[str, int] = {}
    if all("=" in p for p in parts):
        for part in parts:
            name, _, value = part.partition("=")
            name = name.strip()
            if name not in dims:
                raise InvalidParameterError(
                    f"The 'shape' parameter of {owner} names an unknown dimension {name!r}; "
                    f"the dimensions are {list(dims)!r}. Got {text!r}."
                )
            out[name] = _positive_int(value, name, text, owner)
    elif any("=" in p for p in parts):
        raise InvalidParameterError(
            f"The 'shape' parameter of {owner} must be {usage}; do not mix forms. Got {text!r}."
        )
    else:
        if len(parts) != len(dims):
            raise InvalidParameterError(
                f"The 'shape' parameter of {owner} must have {len(dims)} sizes {list(dims)!r}, as {usage}. "
                f"Got {text!r}."
            )
        out = {d: _positive_int(p, d, text, owner) for d, p in zip(dims, parts)}
    missing = [d for d in dims if d not in out]
    if missing:
        raise InvalidParameterError(
            f"The 'shape' parameter of {owner} lacks {missing!r}; it must be {usage}. Got {text!r}."
        )
    return {d: out[d] for d in dims}


def _positive_int(value: str, name: str, text: str, owner: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise InvalidParameterError(
            f"Dimension {name!r} in the 'shape' parameter of {owner} must be a positive int. Got {value!r} in {text!r}."
        ) from None
    if number <= 0:
        raise InvalidParameterError(
            f"Dimension {name!r} in the 'shape' parameter of {owner} must be a positive int. Got {number} in {text!r}."
        )
    return number


@dataclasses.dataclass(frozen=True)
class DeviceLimits:
    """Resource limits of a target GPU that decide whether a configuration can run on it.

    Attributes
    ----------
    name : str
        Device name.
    sm_count : int
        Streaming multiprocessors.
    max_shared_bytes_per_block : int
        Opt-in shared memory per block (bytes).
    regs_per_sm : int
        32-bit registers per SM.
    max_threads_per_sm : int
        Resident threads per SM.
    l2_bytes : int
        L2 cache size (bytes).
    compute_capability : tuple of int
        (major, minor).
    """

    name: str = "NVIDIA H100 80GB HBM3"
    sm_count: int = 132
    max_shared_bytes_per_block: int = 232_448
    regs_per_sm: int = 65_536
    max_threads_per_sm: int = 2_048
    l2_bytes: int = 52_428_800
    compute_capability: tuple[int, int] = (9, 0)

    @classmethod
    def hopper(cls) -> DeviceLimits:
        """Limits of an H100/H200 (the default target when no GPU is present)."""
        return cls()

    @classmethod
    def from_torch(cls, device_index: int = 0) -> DeviceLimits:
        """Read the limits of CUDA device ``device_index`` through torch (needs a GPU)."""
        import torch

        props = torch.cuda.get_device_properties(device_index)
        return cls(
            name=props.name,
            sm_count=props.multi_processor_count,
            max_shared_bytes_per_block=int(getattr(props, "shared_memory_per_block_optin", 232_448)),
            regs_per_sm=int(getattr(props, "regs_per_multiprocessor", 65_536)),
            max_threads_per_sm=int(getattr(props, "max_threads_per_multi_processor", 2_048)),
            l2_bytes=int(getattr(props, "L2_cache_size", 52_428_800)),
            compute_capability=(props.major, props.minor),
        )
