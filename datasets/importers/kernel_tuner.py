"""Import Kernel Tuner cache files as records.

A Kernel Tuner cache (gzipped or plain JSON) is one kernel tuned on one GPU::

    {"device_name", "kernel_name", "problem_size", "tune_params_keys", "tune_params", ["objective"],
     "cache": {"v1,v2,...": {<param>: value, ..., "time": ms, "times": [...], "compile_time": ms, ...}}}

How a cache entry becomes a :class:`~kernelcast.measurement.records.Record`:

- ``family`` is ``"kernel_tuner/<kernel_name>"``, ``variant`` is ``"default"``.
- ``source_hash`` hashes the kernel name and ``tune_params_keys``: a cache holds no kernel source text, so two
  different sources with one kernel name and one set of parameter names share an identity.
- ``config`` holds the entry's tune parameters, typed as in the file.
- ``problem`` holds ``problem_size`` as named dimensions: a list ``[4096, 4096]`` becomes
  ``{"n0": 4096, "n1": 4096}`` and a single number ``20000000`` becomes ``{"n0": 20000000}``, so one problem has
  one spelling whichever form the file used (list items and single values may also be names, kept as
  strings); any other value is kept as ``{"problem_size": <canonical JSON>}``.
- ``dtype`` is ``float<PRECISION>`` where the entry has a ``PRECISION`` parameter of 16, 32 or 64 (CLBlast
  kernels), else ``"float32"`` (the benchmark kernels here are single precision; the file does not say).
- ``device`` is ``device_name``; the ``device`` argument overrides it (and is required where it is empty).
  The fingerprint keeps the file's ``device_name`` either way.
- ``status``: a number in ``time`` is ``ok``; the failure strings map as :data:`FAILURE_STATUSES` says; the
  failure value ``1e20`` of old Kernel Tuner versions is a ``runtime_error``. Anything else is an error.
- ``samples_ms`` are all repetitions ``times``, normalised to ms. ``compile_time_ms`` is ``compile_time``,
  which Kernel Tuner always measures in ms (in the files whose times are in seconds, compile times match the
  other GPUs'), so the time unit never applies to it. Other observables (``GFLOP/s``, timestamps) are dropped.

Units. Kernel Tuner writes ms, but some published caches hold seconds (the benchmark hub's pnpoly caches
from the RTX 2080 Ti and TITAN RTX). The unit of ``time`` and ``times`` is decided per file, in this order,
and written to the record's protocol (``time_unit_in_file`` and ``time_unit_basis``):

1. ``override``: the ``time_unit`` argument (``"s"``, ``"ms"`` or ``"us"``);
2. ``file``: a unit the file states (``time_unit``/``timeunit`` at its top or in its ``metadata``);
3. ``cross-device``: caches of one kernel (same name, problem size and parameter names) imported in one call
   are compared. Taking the cache with the largest median runtime as being in ms, a cache whose median is
   more than :data:`SECONDS_GAP` times smaller is in seconds, provided that read as seconds it lands within
   :data:`SAME_KERNEL_SPREAD` of that reference (GPUs of one kernel and problem differ by far less than 100x;
   s versus ms is 1000x); a gap that fits neither is an error that asks for ``time_unit``. A kernel whose
   caches are all in seconds cannot be told this way;
4. ``assumed``: a lone cache is taken to be in ms, with a warning.

``time`` must be the mean of ``times`` (it is, in every Kernel Tuner version): where the two disagree by more
than 10x the file's units cannot be trusted and the import stops with an error.

Interrupted runs. Kernel Tuner appends entries to the cache as it goes and closes the JSON only at the end,
so the cache of an interrupted run lacks its closing braces and may end with a trailing comma or half an
entry. Such a file is read entry by entry; every complete entry is kept and the count is logged.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import statistics
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from kernelcast.datasets.importers._reading import malformed, read_text, sniff_format
from kernelcast.datasets.importers.ktt import read_ktt
from kernelcast.exceptions import invalid_choice
from kernelcast.measurement.records import Record, Status, canonical_json, source_hash

logger = logging.getLogger(__name__)

ORIGIN = "import:kernel_tuner"

FAILURE_STATUSES: dict[str, Status] = {
    "CompilationFailedConfig": Status.COMPILE_ERROR,
    "RuntimeFailedConfig": Status.RUNTIME_ERROR,
    "InvalidConfig": Status.INVALID_CONFIG,
}
"""Kernel Tuner's failure strings (in ``time``) and the status each becomes."""

LEGACY_FAILURE_TIME = 1e20
"""The ``time`` that Kernel Tuner versions before 0.4 wrote for a configuration that failed to run."""

MS_PER_UNIT: dict[str, float] = {"s": 1000.0, "ms": 1.0, "us": 1e-3}
"""Milliseconds per unit of ``time``/``times``, for each allowed ``time_unit``."""

SECONDS_GAP = 100.0
"""A cache whose median runtime is this many times below its kernel's reference is a seconds candidate."""

SAME_KERNEL_SPREAD = 30.0
"""Largest ratio expected between median runtimes of one kernel and problem on two GPUs."""

_UNIT_NAMES = {
    "s": "s", "sec": "s", "second": "s", "seconds": "s",
    "ms": "ms", "msec": "ms", "millisecond": "ms", "milliseconds": "ms",
    "us": "us", "usec": "us", "microsecond": "us", "microseconds": "us", "µs": "us",
}  # fmt: skip
_HEADER_FIELDS = ("kernel_name", "problem_size", "tune_params_keys", "tune_params", "cache")


@dataclasses.dataclass(frozen=True)
class KernelTunerCache:
    """The content of one Kernel Tuner cache file.

    Attributes
    ----------
    path : Path
        The file.
    device_name, kernel_name : str
        As in the file (``device_name`` may be empty).
    problem_size : object
        As in the file (a number, a list, or a string).
    tune_params_keys : tuple of str
        Names of the tune parameters, in the file's order.
    tune_params : dict of str to list
        The values each parameter was tuned over.
    objective : str or None
        The objective the run optimised (Kernel Tuner's default, ``"time"``, where the file names none).
    entries : dict of str to dict
        Cache entries by their key (``"v1,v2,..."``).
    declared_unit : str or None
        The unit of ``time`` the file itself states, if any.
    recovered : bool
        Whether the file was left open by an interrupted run and its entries were recovered one by one.
    """

    path: Path
    device_name: str
    kernel_name: str
    problem_size: Any
    tune_params_keys: tuple[str, ...]
    tune_params: dict[str, list[Any]]
    objective: str | None
    entries: dict[str, dict[str, Any]]
    declared_unit: str | None
    recovered: bool

    @property
    def kernel_identity(self) -> str:
        """Canonical JSON of what makes two caches the same kernel and problem (on different GPUs)."""
        return canonical_json([self.kernel_name, self.problem_size, list(self.tune_params_keys)])

    def median_time(self) -> float | None:
        """Median of the numeric ``time`` values, in the file's unit; ``None`` where nothing ran."""
        times = [e["time"] for e in self.entries.values() if _is_measured_time(e.get("time"))]
        return statistics.median(times) if times else None


# -- parsing -----------------------------------------------------------------------------------------
def _skip(text: str, pos: int, chars: str = " \t\r\n") -> int:
    while pos < len(text) and text[pos] in chars:
        pos += 1
    return pos


def _recover_object(text: str, pos: int, decoder: json.JSONDecoder, tolerant_key: str | None) -> tuple[dict, int, bool]:
    """Decode the JSON object at ``text[pos]`` member by member, stopping quietly where the text ends.

    The member named ``tolerant_key`` is itself decoded member by member (the cache's entries).

    Returns
    -------
    members : dict
        Every member decoded completely.
    pos : int
        Where decoding stopped.
    closed : bool
        Whether the object's closing brace was reached.
    """
    members: dict[str, Any] = {}
    pos = _skip(text, pos)
    if pos >= len(text) or text[pos] != "{":
        return members, pos, False
    pos += 1
    while True:
        pos = _skip(text, pos, " \t\r\n,")  # a trailing comma is what an open Kernel Tuner cache ends with
        if pos >= len(text):
            return members, pos, False
        if text[pos] == "}":
            return members, pos + 1, True
        try:
            key, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError:
            return members, pos, False
        pos = _skip(text, pos)
        if pos >= len(text) or text[pos] != ":" or not isinstance(key, str):
            return members, pos, False
        pos = _skip(text, pos + 1)
        if key == tolerant_key:
            value, pos, closed = _recover_object(text, pos, decoder, None)
            members[key] = value
            if not closed:
                return members, pos, False
            continue
        try:
            members[key], pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError:
            return members, pos, False


def _parse_document(path: Path) -> tuple[dict[str, Any], bool]:
    """Return the top-level object of a cache file and whether it had to be recovered entry by entry."""
    text, cut_short = read_text(path)
    if not cut_short:
        try:
            document = json.loads(text)
        except json.JSONDecodeError:
            pass
        else:
            if not isinstance(document, dict):
                raise malformed(path, "(file)", f"is a JSON {type(document).__name__}, not a Kernel Tuner cache")
            return document, False
    document, stop, _ = _recover_object(text, 0, json.JSONDecoder(), tolerant_key="cache")
    if not document:
        raise malformed(path, "(file)", "is not JSON, nor the start of a Kernel Tuner cache")
    entries = document.get("cache")
    if not isinstance(entries, dict):
        raise malformed(path, "cache", "is missing or cut short before its first entry")
    # A cut-short file ends with at most one partial entry; much more unread text means damage mid-file.
    mean_entry_chars = stop / max(1, len(entries))
    if len(text) - stop > 4 * mean_entry_chars + 4096:
        raise malformed(
            path,
            "cache",
            f"is not valid JSON at character {stop} of {len(text)}: the file is damaged, not just cut short",
        )
    logger.warning(
        "%s was not closed (an interrupted Kernel Tuner run or a truncated copy): recovered %d complete entries",
        path,
        len(entries),
    )
    return document, True


def _declared_unit(path: Path, document: Mapping[str, Any]) -> str | None:
    metadata = document.get("metadata")
    for holder, prefix in ((document, ""), (metadata if isinstance(metadata, dict) else {}, "metadata.")):
        for field in ("time_unit", "timeunit"):
            if field in holder:
                value = holder[field]
                unit = _UNIT_NAMES.get(str(value).strip().lower())
                if unit is None:
                    raise malformed(path, prefix + field, f"is {value!r}, not one of {sorted(set(_UNIT_NAMES))}")
                return unit
    return None


def read_cache(path: str | os.PathLike[str]) -> KernelTunerCache:
    """Read one Kernel Tuner cache file, recovering the complete entries of one left open.

    Raises
    ------
    InvalidParameterError
        Where a header field is missing or of the wrong type (the message names the file and the field).
    """
    path = Path(path)
    document, recovered = _parse_document(path)
    for field in _HEADER_FIELDS:
        if field not in document:
            raise malformed(path, field, "is missing")
    device_name = document.get("device_name", "")
    if not isinstance(device_name, str):
        raise malformed(path, "device_name", f"is {device_name!r}, not a string")
    kernel_name = document["kernel_name"]
    if not isinstance(kernel_name, str) or not kernel_name:
        raise malformed(path, "kernel_name", f"is {kernel_name!r}, not a non-empty string")
    keys = document["tune_params_keys"]
    if not isinstance(keys, list) or not keys or not all(isinstance(k, str) for k in keys):
        raise malformed(path, "tune_params_keys", f"is {keys!r}, not a non-empty list of names")
    tune_params = document["tune_params"]
    if not isinstance(tune_params, dict) or not all(isinstance(tune_params.get(k), list) for k in keys):
        raise malformed(path, "tune_params", "is not a mapping from every name in tune_params_keys to a list")
    entries = document["cache"]
    if not isinstance(entries, dict) or not all(isinstance(e, dict) for e in entries.values()):
        raise malformed(path, "cache", "is not a mapping of entry keys to objects")
    objective = document.get("objective", "time")
    return KernelTunerCache(
        path=path,
        device_name=device_name.strip(),
        kernel_name=kernel_name,
        problem_size=document["problem_size"],
        tune_params_keys=tuple(keys),
        tune_params={k: tune_params[k] for k in keys},
        objective=objective if isinstance(objective, str) else None,
        entries=entries,
        declared_unit=_declared_unit(path, document),
        recovered=recovered,
    )


# -- units -------------------------------------------------------------------------------------------
def _is_measured_time(value: Any) -> bool:
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value < LEGACY_FAILURE_TIME
    )


def _check_time_against_times(cache: KernelTunerCache) -> None:
    ratios = []
    for entry in cache.entries.values():
        times = entry.get("times")
        if _is_measured_time(entry.get("time")) and isinstance(times, list) and times:
            mean = sum(times) / len(times) if all(_is_measured_time(t) for t in times) else 0.0
            if mean > 0 and entry["time"] > 0:
                ratios.append(entry["time"] / mean)
    if ratios:
        ratio = statistics.median(ratios)
        if not 0.1 <= ratio <= 10.0:
            raise malformed(
                cache.path,
                "time",
                f"is {ratio:.3g} times the mean of 'times' (median over entries): the two fields are in "
                f"different units, so neither can be trusted",
            )


def detect_time_units(caches: Sequence[KernelTunerCache], time_unit: str | None = None) -> dict[Path, tuple[str, str]]:
    """Decide the unit of ``time``/``times`` of each cache (see the module docstring).

    Parameters
    ----------
    caches : sequence of KernelTunerCache
        The caches imported together; those of one kernel on several GPUs are compared with each other.
    time_unit : {"s", "ms", "us"} or None
        Unit to use for every cache, overriding detection.

    Returns
    -------
    dict of Path to (unit, basis)
        For each cache file, its unit (``"s"``, ``"ms"`` or ``"us"``) and how that was decided
        (``"override"``, ``"file"``, ``"cross-device"`` or ``"assumed"``).
    """
    if time_unit is not None and time_unit not in MS_PER_UNIT:
        raise invalid_choice("time_unit", "the Kernel Tuner importer", time_unit, MS_PER_UNIT)
    for cache in caches:
        _check_time_against_times(cache)
    units: dict[Path, tuple[str, str]] = {}
    groups: dict[str, list[KernelTunerCache]] = {}
    for cache in caches:
        if time_unit is not None:
            units[cache.path] = (time_unit, "override")
        elif cache.declared_unit is not None:
            units[cache.path] = (cache.declared_unit, "file")
        else:
            groups.setdefault(cache.kernel_identity, []).append(cache)
    for group in groups.values():
        medians = {c.path: c.median_time() for c in group}
        known = {p: m for p, m in medians.items() if m is not None and m > 0}
        if len(known) < 2:
            for cache in group:
                logger.warning(
                    "assuming %s holds ms (Kernel Tuner's unit): it states no unit and no other GPU's cache of "
                    "kernel %r was imported with it to compare; pass time_unit to be sure",
                    cache.path,
                    cache.kernel_name,
                )
                units[cache.path] = ("ms", "assumed")
            continue
        reference_path = max(known, key=known.__getitem__)
        reference = known[reference_path]
        for cache in group:
            median = known.get(cache.path)
            if median is None or reference / median <= SECONDS_GAP:
                units[cache.path] = ("ms", "cross-device")
                continue
            as_ms = median * MS_PER_UNIT["s"]
            if not 1.0 / SAME_KERNEL_SPREAD <= as_ms / reference <= SAME_KERNEL_SPREAD:
                raise malformed(
                    cache.path,
                    "time",
                    f"has a median of {median:.4g}, {reference / median:.3g} times below that of "
                    f"{reference_path} ({reference:.4g}); that fits neither ms nor seconds, so pass time_unit",
                )
            logger.info(
                "%s holds seconds: its median time %.4g is %.0f times below %s's %.4g ms",
                cache.path,
                median,
                reference / median,
                reference_path.name,
                reference,
            )
            units[cache.path] = ("s", "cross-device")
    return units


# -- records -----------------------------------------------------------------------------------------
def problem_from_size(problem_size: Any) -> dict[str, Any]:
    """Map Kernel Tuner's ``problem_size`` to a problem dict (see the module docstring)."""
    if isinstance(problem_size, (int, str)) and not isinstance(problem_size, bool):
        return {"n0": problem_size}
    if isinstance(problem_size, list) and all(
        isinstance(v, (int, str)) and not isinstance(v, bool) for v in problem_size
    ):
        return {f"n{i}": v for i, v in enumerate(problem_size)}
    return {"problem_size": canonical_json(problem_size)}


def _space_size(tune_params: Mapping[str, list[Any]]) -> int:
    return math.prod(len(v) for v in tune_params.values())


def cache_records(cache: KernelTunerCache, *, unit: str, basis: str, device: str | None = None) -> list[Record]:
    """Turn every entry of ``cache`` into a record.

    Parameters
    ----------
    cache : KernelTunerCache
        A cache read by :func:`read_cache`.
    unit : {"s", "ms", "us"}
        Unit of the cache's ``time`` and ``times``.
    basis : str
        How ``unit`` was decided; written to each record's protocol.
    device : str, optional
        Device name to use instead of the file's ``device_name`` (required where that is empty).
    """
    path = cache.path
    if device is not None and not device.strip():
        raise malformed(path, "device_name", "override given is empty")
    if device is None and not cache.device_name:
        raise malformed(path, "device_name", "is empty or missing; name the GPU with device= (CLI: --device NAME)")
    if device is not None and cache.device_name and device != cache.device_name:
        logger.warning("%s: using device %r instead of the file's device_name %r", path, device, cache.device_name)
    device_name = device if device is not None else cache.device_name
    scale = MS_PER_UNIT[unit]
    hash_ = source_hash(canonical_json({"kernel_name": cache.kernel_name, "tune_params_keys": cache.tune_params_keys}))
    problem = problem_from_size(cache.problem_size)
    protocol = {
        "source": "kernel_tuner",
        "objective": cache.objective,
        "time_unit_in_file": unit,
        "time_unit_basis": basis,
        "file": path.name,
        "kernel_name": cache.kernel_name,
        "tune_params": cache.tune_params,
        "space_product_size": _space_size(cache.tune_params),
        "recovered_from_open_cache": cache.recovered,
    }
    fingerprint = {"device_name": cache.device_name}
    family = f"kernel_tuner/{cache.kernel_name}"
    records = []
    for key, entry in cache.entries.items():
        where = f"cache[{key!r}]"
        config: dict[str, Any] = {}
        for name in cache.tune_params_keys:
            if name not in entry:
                raise malformed(path, f"{where}.{name}", "is missing")
            value = entry[name]
            if not isinstance(value, (int, float, str, bool)):
                raise malformed(path, f"{where}.{name}", f"is {value!r}, not a number or string")
            config[name] = value
        if "time" not in entry:
            raise malformed(path, f"{where}.time", "is missing")
        time_value = entry["time"]
        compile_time = entry.get("compile_time")
        compile_time_ms = float(compile_time) if _is_measured_time(compile_time) else None
        precision = config.get("PRECISION")
        dtype = f"float{precision}" if precision in (16, 32, 64) else "float32"
        common = dict(
            family=family,
            variant="default",
            source_hash=hash_,
            config=config,
            problem=problem,
            dtype=dtype,
            device=device_name,
            compile_time_ms=compile_time_ms,
            protocol=protocol,
            fingerprint=fingerprint,
            origin=ORIGIN,
        )
        if isinstance(time_value, str):
            if time_value not in FAILURE_STATUSES:
                allowed = ", ".join(repr(s) for s in FAILURE_STATUSES)
                raise malformed(path, f"{where}.time", f"is {time_value!r}: neither a number nor one of {allowed}")
            records.append(Record(status=FAILURE_STATUSES[time_value], error=time_value, **common))
            continue
        if (
            isinstance(time_value, (int, float))
            and not isinstance(time_value, bool)
            and (not math.isfinite(time_value) or time_value >= LEGACY_FAILURE_TIME)
        ):
            records.append(Record(status=Status.RUNTIME_ERROR, error=f"failure time value {time_value!r}", **common))
            continue
        if not _is_measured_time(time_value) or time_value <= 0:
            raise malformed(path, f"{where}.time", f"is {time_value!r}, not a positive number or failure string")
        times = entry.get("times")
        if times is None:
            raise malformed(path, f"{where}.times", "is missing for a configuration that ran")
        if not isinstance(times, list) or not times or not all(_is_measured_time(t) and t > 0 for t in times):
            raise malformed(path, f"{where}.times", "is not a non-empty list of positive numbers")
        records.append(Record(status=Status.OK, samples_ms=tuple(t * scale for t in times), **common))
    return records


def import_kernel_tuner(
    paths: Iterable[str | os.PathLike[str]],
    *,
    device: str | None = None,
    time_unit: str | None = None,
) -> list[Record]:
    """Read Kernel Tuner caches and KTT outputs (told apart by content) as records.

    Import the caches of one kernel on several GPUs in one call: their runtimes are compared to find files
    whose times are in seconds (see the module docstring).

    Parameters
    ----------
    paths : iterable of path-like
        Kernel Tuner cache files (``.json`` or ``.json.gz``, complete or left open) and KTT output files.
    device : str, optional
        Device name for every file, overriding the name in the file (required where that is empty).
    time_unit : {"s", "ms", "us"}, optional
        Unit of the times in every file, overriding detection.

    Returns
    -------
    list of Record
        One record per cache entry (per KTT result), failures included.
    """
    caches: list[KernelTunerCache] = []
    records: list[Record] = []
    for path in map(Path, paths):
        if sniff_format(path) == "ktt":
            records.extend(read_ktt(path, device=device, time_unit=time_unit))
        else:
            caches.append(read_cache(path))
    units = detect_time_units(caches, time_unit)
    for cache in caches:
        unit, basis = units[cache.path]
        records.extend(cache_records(cache, unit=unit, basis=basis, device=device))
    return records
