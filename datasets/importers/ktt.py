"""Import KTT (Kernel Tuning Toolkit) tuning outputs as records.

A KTT output (JSON, plain or gzipped) is one kernel tuned on one device::

    {"Metadata": {"Device", "TimeUnit", "KttVersion", "ComputeApi", ...},
     "Results": [{"KernelName", "Status", "Configuration": [{"Name", "Value", ...}, ...],
                  "ComputationResults": [{"Duration", "CompilationData": {...}, ...}], ...}, ...]}

How a result becomes a :class:`~kernelcast.measurement.records.Record`:

- ``family`` is ``"ktt/<KernelName>"``, ``variant`` ``"default"``; ``source_hash`` hashes the kernel name and
  the parameter names (the output holds no source text).
- ``config`` is the ``Configuration`` list as a mapping from ``Name`` to ``Value``. KTT lists problem
  constants (e.g. ``IMAGE_WIDTH``) among the parameters and states no problem size, so ``problem`` is empty
  unless the caller gives one.
- ``dtype`` is ``"float32"`` unless the caller says otherwise; ``device`` is ``Metadata.Device`` unless
  overridden.
- ``status`` maps ``Status`` as :data:`KTT_STATUSES` says.
- ``samples_ms`` holds one sample: the sum of the ``Duration`` of the result's kernel launches, converted
  from ``Metadata.TimeUnit`` (microseconds in KTT's default) to ms. KTT reports one duration per
  configuration, so there is no repeat noise to learn from these records (``n_samples`` is 1).
- ``compiled`` takes ``RegistersCount`` and ``LocalMemorySize`` (OpenCL's "local" memory is CUDA's shared
  memory) from the first launch's ``CompilationData``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kernelcast.datasets.importers._reading import load_json, malformed
from kernelcast.exceptions import invalid_choice
from kernelcast.measurement.records import CompiledInfo, Record, Status, canonical_json, source_hash

logger = logging.getLogger(__name__)

ORIGIN = "import:ktt"

KTT_STATUSES: dict[str, Status] = {
    "Ok": Status.OK,
    "CompilationFailed": Status.COMPILE_ERROR,
    "ComputationFailed": Status.RUNTIME_ERROR,
    "ValidationFailed": Status.INCORRECT,
    "DeviceLimitsExceeded": Status.OUT_OF_RESOURCES,
}
"""KTT's result statuses and the status each becomes."""

MS_PER_KTT_UNIT: dict[str, float] = {
    "Nanoseconds": 1e-6,
    "Microseconds": 1e-3,
    "Milliseconds": 1.0,
    "Seconds": 1000.0,
}
"""Milliseconds per unit, for each ``Metadata.TimeUnit`` KTT writes."""

_SHORT_UNITS = {"ns": "Nanoseconds", "us": "Microseconds", "ms": "Milliseconds", "s": "Seconds"}


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def read_ktt(
    path: str | os.PathLike[str],
    *,
    device: str | None = None,
    time_unit: str | None = None,
    problem: Mapping[str, Any] | None = None,
    dtype: str = "float32",
) -> list[Record]:
    """Read one KTT output file as records, one per result, failures included.

    Parameters
    ----------
    path : path-like
        The KTT JSON output (plain or gzipped).
    device : str, optional
        Device name to use instead of ``Metadata.Device`` (required where that is absent or empty).
    time_unit : {"s", "ms", "us", "ns"}, optional
        Unit of ``Duration``, overriding ``Metadata.TimeUnit`` (required where that is absent).
    problem : mapping, optional
        The problem the kernel solved; KTT outputs do not state it (default: empty).
    dtype : str
        Element type of the problem.

    Raises
    ------
    InvalidParameterError
        Where a field is missing or unreadable; the message names the file and the field.
    """
    path = Path(path)
    document = load_json(path)
    if not isinstance(document, dict):
        raise malformed(path, "(file)", f"is a JSON {type(document).__name__}, not a KTT output")
    metadata = document.get("Metadata")
    if not isinstance(metadata, dict):
        raise malformed(path, "Metadata", "is missing or not an object")
    results = document.get("Results")
    if not isinstance(results, list):
        raise malformed(path, "Results", "is missing or not a list")

    file_device = metadata.get("Device")
    file_device = file_device.strip() if isinstance(file_device, str) else ""
    if device is None and not file_device:
        raise malformed(path, "Metadata.Device", "is missing or empty; name the GPU with device= (CLI: --device)")
    if device is not None and file_device and device != file_device:
        logger.warning("%s: using device %r instead of the file's Metadata.Device %r", path, device, file_device)
    device_name = device if device is not None else file_device

    if time_unit is not None:
        if time_unit not in _SHORT_UNITS:
            raise invalid_choice("time_unit", "the KTT importer", time_unit, _SHORT_UNITS)
        unit_name, basis = _SHORT_UNITS[time_unit], "override"
    else:
        unit_name, basis = metadata.get("TimeUnit"), "file"
        if unit_name not in MS_PER_KTT_UNIT:
            raise malformed(
                path, "Metadata.TimeUnit", f"is {unit_name!r}, not one of {sorted(MS_PER_KTT_UNIT)}; pass time_unit"
            )
    scale = MS_PER_KTT_UNIT[unit_name]

    protocol = {
        "source": "ktt",
        "time_unit_in_file": next(k for k, v in _SHORT_UNITS.items() if v == unit_name),
        "time_unit_basis": basis,
        "file": path.name,
        "ktt_version": metadata.get("KttVersion"),
        "compute_api": metadata.get("ComputeApi"),
    }
    fingerprint = {"device_name": file_device, "platform": metadata.get("Platform")}
    problem_dict = dict(problem or {})
    records: list[Record] = []
    for index, result in enumerate(results):
        where = f"Results[{index}]"
        if not isinstance(result, dict):
            raise malformed(path, where, "is not an object")
        kernel = result.get("KernelName")
        if not isinstance(kernel, str) or not kernel:
            raise malformed(path, f"{where}.KernelName", f"is {kernel!r}, not a non-empty string")
        parameters = result.get("Configuration")
        if not isinstance(parameters, list):
            raise malformed(path, f"{where}.Configuration", "is missing or not a list")
        config: dict[str, Any] = {}
        for j, parameter in enumerate(parameters):
            if not isinstance(parameter, dict) or not isinstance(parameter.get("Name"), str):
                raise malformed(path, f"{where}.Configuration[{j}].Name", "is missing")
            value = parameter.get("Value")
            if not isinstance(value, (int, float, str, bool)):
                raise malformed(path, f"{where}.Configuration[{j}].Value", f"is {value!r}, not a number or string")
            config[parameter["Name"]] = value
        status_name = result.get("Status")
        if status_name not in KTT_STATUSES:
            allowed = ", ".join(repr(s) for s in KTT_STATUSES)
            raise malformed(path, f"{where}.Status", f"is {status_name!r}, not one of {allowed}")
        status = KTT_STATUSES[status_name]
        launches = result.get("ComputationResults") or []
        if not isinstance(launches, list) or not all(isinstance(launch, dict) for launch in launches):
            raise malformed(path, f"{where}.ComputationResults", "is not a list of objects")
        compiled = None
        if launches and isinstance(launches[0].get("CompilationData"), dict):
            data = launches[0]["CompilationData"]
            compiled = CompiledInfo(n_regs=data.get("RegistersCount"), shared_bytes=data.get("LocalMemorySize"))
        samples: tuple[float, ...] = ()
        if status is Status.OK:
            durations = [launch.get("Duration") for launch in launches]
            if not durations or not all(_number(d) and d > 0 for d in durations):
                raise malformed(
                    path, f"{where}.ComputationResults[].Duration", "is missing or not positive for an 'Ok' result"
                )
            samples = (sum(durations) * scale,)
        records.append(
            Record(
                family=f"ktt/{kernel}",
                variant="default",
                source_hash=source_hash(canonical_json({"ktt_kernel": kernel, "parameters": sorted(config)})),
                config=config,
                problem=problem_dict,
                dtype=dtype,
                device=device_name,
                status=status,
                samples_ms=samples,
                compiled=compiled,
                error=None if status is Status.OK else f"KTT status {status_name}",
                protocol=protocol,
                fingerprint=fingerprint,
                origin=ORIGIN,
            )
        )
    return records
