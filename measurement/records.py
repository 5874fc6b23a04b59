"""The one record schema: what happened when a candidate kernel was measured.

A :class:`Record` is immutable and versioned (:data:`SCHEMA_VERSION`). Every attempted candidate becomes a
record, failures included, each with a :class:`Status` and an error text; no infinite time is ever written.
:func:`record_to_row` and :func:`row_from_record` map a record to and from a flat dict of plain Python values
(the Parquet row layout that ``kernelcast.datasets`` stores); nested parts travel as canonical JSON strings.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from enum import Enum
from typing import Any

from kernelcast.exceptions import InvalidParameterError, SchemaVersionError

SCHEMA_VERSION = 1
"""Version of the record layout. Bump it when a field is added, removed or changes meaning."""

Scalar = int | float | str | bool
ConfigDict = Mapping[str, Scalar]


class Status(str, Enum):
    """Outcome of one measurement attempt."""

    OK = "ok"
    COMPILE_ERROR = "compile_error"
    RUNTIME_ERROR = "runtime_error"
    TIMEOUT = "timeout"
    INCORRECT = "incorrect"
    INVALID_CONFIG = "invalid_config"
    OUT_OF_RESOURCES = "out_of_resources"

    @classmethod
    def parse(cls, value: str | Status) -> Status:
        """Return the status named ``value``, with an error that lists the allowed names."""
        try:
            return cls(value)
        except ValueError:
            allowed = ", ".join(repr(s.value) for s in cls)
            raise InvalidParameterError(
                f"The 'status' of a record must be one of {allowed}. Got {value!r} instead."
            ) from None


def canonical_json(value: Any) -> str:
    """Serialise ``value`` deterministically (sorted keys, no spaces): the form used in keys and hashes."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)


def source_hash(text: str) -> str:
    """Return the identity of a kernel source text: the first 16 hex digits of its SHA-256."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def utc_now() -> str:
    """Return the current UTC time as an ISO-8601 string with microseconds."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="microseconds")


@dataclasses.dataclass(frozen=True)
class TimingStats:
    """Summary statistics of the timing samples of one candidate, all in milliseconds.

    Attributes
    ----------
    median_ms, mean_ms, min_ms, max_ms : float
        Location statistics of the samples (ms).
    iqr_ms : float
        Interquartile range of the samples (ms).
    cv : float
        Coefficient of variation, standard deviation over mean (unitless).
    rse_median : float
        Estimated relative standard error of the median, ``1.2533 * std / sqrt(n) / median`` (unitless).
    n_samples : int
        Number of timed repetitions.
    """

    median_ms: float
    mean_ms: float
    min_ms: float
    max_ms: float
    iqr_ms: float
    cv: float
    rse_median: float
    n_samples: int

    @classmethod
    def from_samples(cls, samples_ms: Sequence[float]) -> TimingStats:
        """Compute the statistics of ``samples_ms`` (at least one finite, positive sample, in ms)."""
        import numpy as np

        arr = np.asarray(samples_ms, dtype=np.float64)
        if arr.size == 0 or not np.all(np.isfinite(arr)):
            raise InvalidParameterError(
                f"Timing samples must be a non-empty sequence of finite numbers. Got {list(samples_ms)[:8]!r}."
            )
        median = float(np.median(arr))
        mean = float(arr.mean())
        std = float(arr.std(ddof=1)) if arr.size > 1 else 0.0
        q75, q25 = np.percentile(arr, [75, 25])
        return cls(
            median_ms=median,
            mean_ms=mean,
            min_ms=float(arr.min()),
            max_ms=float(arr.max()),
            iqr_ms=float(q75 - q25),
            cv=std / mean if mean > 0 else 0.0,
            # Asymptotic standard error of the median of a normal sample: sqrt(pi/2) * sigma / sqrt(n).
            rse_median=(1.2533 * std / math.sqrt(arr.size)) / median if median > 0 else 0.0,
            n_samples=int(arr.size),
        )


@dataclasses.dataclass(frozen=True)
class CompiledInfo:
    """What the compiler reports for one compiled kernel (``None`` where unknown).

    Attributes
    ----------
    n_regs : int or None
        Registers per thread.
    n_spills : int or None
        Registers spilled to local memory per thread.
    shared_bytes : int or None
        Shared memory per block (bytes).
    num_warps, num_stages : int or None
        Warps per program and software-pipelining depth of the launch.
    """

    n_regs: int | None = None
    n_spills: int | None = None
    shared_bytes: int | None = None
    num_warps: int | None = None
    num_stages: int | None = None


@dataclasses.dataclass(frozen=True)
class Record:
    """One measurement attempt of one candidate: a kernel source, a configuration, a problem, a device.

    Attributes
    ----------
    family : str
        Kernel family or kernel name (e.g. ``"matmul"``, ``"kernel_tuner/convolution"``).
    variant : str
        Source variant within the family (e.g. ``"splitk"``); ``"default"`` for single-source families.
    source_hash : str
        :func:`source_hash` of the kernel source text.
    config : mapping of str to scalar
        The configuration (constexpr knobs, ``num_warps``, ``num_stages``, ...).
    problem : mapping of str to scalar
        The problem (named dimensions and any layout options), without the dtype.
    dtype : str
        Element type of the problem, e.g. ``"float16"``.
    device : str
        Device name, e.g. ``"NVIDIA H100 80GB HBM3"``.
    status : Status
        Outcome of the attempt.
    samples_ms : tuple of float
        Every timed repetition (ms); empty unless timed.
    stats : TimingStats or None
        Statistics of ``samples_ms``; ``None`` unless timed.
    compiled : CompiledInfo or None
        Compiler report, where the kernel compiled.
    compile_time_ms : float or None
        Wall time of compilation (ms).
    error : str or None
        Error text of a failed attempt.
    protocol : mapping
        The benchmark protocol settings used.
    fingerprint : mapping
        Device fingerprint of the run (GPU, clocks, temperature, software versions).
    origin : str
        What produced the record, e.g. ``"kernelcast.measure"`` or ``"import:kernel_tuner"``.
    created_at : str
        ISO-8601 UTC time the record was made.
    source_text : str or None
        The kernel source text; the store keeps it once per ``source_hash``, not once per record.
    schema_version : int
        Version of this layout.
    """

    family: str
    variant: str
    source_hash: str
    config: ConfigDict
    problem: ConfigDict
    dtype: str
    device: str
    status: Status
    samples_ms: tuple[float, ...] = ()
    stats: TimingStats | None = None
    compiled: CompiledInfo | None = None
    compile_time_ms: float | None = None
    error: str | None = None
    protocol: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    fingerprint: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    origin: str = "kernelcast.measure"
    created_at: str = dataclasses.field(default_factory=utc_now)
    source_text: str | None = dataclasses.field(default=None, compare=False, repr=False)
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        object.__setattr__(self, "status", Status.parse(self.status))
        object.__setattr__(self, "samples_ms", tuple(float(s) for s in self.samples_ms))
        if any(not math.isfinite(s) for s in self.samples_ms):
            raise InvalidParameterError(
                f"A record's samples_ms must be finite; failures are statuses, not infinite times. "
                f"Got {self.samples_ms[:8]!r}."
            )
        if self.status is Status.OK and self.samples_ms and self.stats is None:
            object.__setattr__(self, "stats", TimingStats.from_samples(self.samples_ms))

    @property
    def time_ms(self) -> float | None:
        """Median runtime (ms) of an ``ok`` timed record, else ``None``."""
        return self.stats.median_ms if self.stats is not None else None

    @property
    def key(self) -> tuple[str, str, str, str, str]:
        """De-duplication key: (source hash, config, problem, dtype, device)."""
        return record_key(self.source_hash, self.config, self.problem, self.dtype, self.device)


def record_key(
    source_hash_: str, config: ConfigDict, problem: ConfigDict, dtype: str, device: str
) -> tuple[str, str, str, str, str]:
    """Return the de-duplication key of a candidate on a device."""
    return (source_hash_, canonical_json(dict(config)), canonical_json(dict(problem)), dtype, device)


ROW_COLUMNS: tuple[str, ...] = (
    "schema_version",
    "family",
    "variant",
    "source_hash",
    "config_json",
    "problem_json",
    "dtype",
    "device",
    "status",
    "time_ms",
    "samples_ms",
    "mean_ms",
    "min_ms",
    "max_ms",
    "iqr_ms",
    "cv",
    "rse_median",
    "n_samples",
    "n_regs",
    "n_spills",
    "shared_bytes",
    "num_warps",
    "num_stages",
    "compile_time_ms",
    "error",
    "protocol_json",
    "fingerprint_json",
    "origin",
    "created_at",
)
"""Column order of the stored row layout."""

COMPILED_COLUMNS: tuple[str, ...] = ("n_regs", "n_spills", "shared_bytes", "num_warps", "num_stages")
"""The row columns of compiler metadata (:class:`CompiledInfo`), known once a candidate is compiled."""


def record_to_row(record: Record) -> dict[str, Any]:
    """Flatten ``record`` into a dict of plain values, one per :data:`ROW_COLUMNS` entry."""
    stats = record.stats
    compiled = record.compiled or CompiledInfo()
    return {
        "schema_version": record.schema_version,
        "family": record.family,
        "variant": record.variant,
        "source_hash": record.source_hash,
        "config_json": canonical_json(dict(record.config)),
        "problem_json": canonical_json(dict(record.problem)),
        "dtype": record.dtype,
        "device": record.device,
        "status": record.status.value,
        "time_ms": stats.median_ms if stats else None,
        "samples_ms": list(record.samples_ms),
        "mean_ms": stats.mean_ms if stats else None,
        "min_ms": stats.min_ms if stats else None,
        "max_ms": stats.max_ms if stats else None,
        "iqr_ms": stats.iqr_ms if stats else None,
        "cv": stats.cv if stats else None,
        "rse_median": stats.rse_median if stats else None,
        "n_samples": stats.n_samples if stats else 0,
        "n_regs": compiled.n_regs,
        "n_spills": compiled.n_spills,
        "shared_bytes": compiled.shared_bytes,
        "num_warps": compiled.num_warps,
        "num_stages": compiled.num_stages,
        "compile_time_ms": record.compile_time_ms,
        "error": record.error,
        "protocol_json": canonical_json(dict(record.protocol)),
        "fingerprint_json": canonical_json(dict(record.fingerprint)),
        "origin": record.origin,
        "created_at": record.created_at,
    }


def row_to_record(row: Mapping[str, Any], source_text: str | None = None) -> Record:
    """Rebuild a :class:`Record` from a stored row; refuse rows of a newer schema version."""
    version = int(row["schema_version"])
    if version > SCHEMA_VERSION:
        raise SchemaVersionError("A record", version, SCHEMA_VERSION)
    compiled_fields = ("n_regs", "n_spills", "shared_bytes", "num_warps", "num_stages")
    compiled = (
        CompiledInfo(**{f: row[f] for f in compiled_fields})
        if any(row.get(f) is not None for f in compiled_fields)
        else None
    )
    stats = None
    if row.get("time_ms") is not None:
        stats = TimingStats(
            median_ms=row["time_ms"],
            mean_ms=row["mean_ms"],
            min_ms=row["min_ms"],
            max_ms=row["max_ms"],
            iqr_ms=row["iqr_ms"],
            cv=row["cv"],
            rse_median=row["rse_median"],
            n_samples=row["n_samples"],
        )
    return Record(
        family=row["family"],
        variant=row["variant"],
        source_hash=row["source_hash"],
        config=json.loads(row["config_json"]),
        problem=json.loads(row["problem_json"]),
        dtype=row["dtype"],
        device=row["device"],
        status=Status(row["status"]),
        samples_ms=tuple(row["samples_ms"] or ()),
        stats=stats,
        compiled=compiled,
        compile_time_ms=row["compile_time_ms"],
        error=row["error"],
        protocol=json.loads(row["protocol_json"]),
        fingerprint=json.loads(row["fingerprint_json"]),
        origin=row["origin"],
        created_at=row["created_at"],
        source_text=source_text,
        schema_version=version,
    )
