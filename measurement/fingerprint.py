"""Device fingerprint: what GPU, in what state, with what software, a measurement ran on."""

from __future__ import annotations

import logging
import platform
import shutil
import subprocess
from typing import Any

logger = logging.getLogger(__name__)

_NVSMI_FIELDS = (
    "temperature.gpu",
    "power.draw",
    "clocks.sm",
    "clocks.max.sm",
    "clocks.mem",
    "driver_version",
)


_NVML: dict[int, Any] = {}


def _nvml_handle(index: int) -> Any:
    """NVML handle of GPU ``index``, initialising NVML once per process (init costs milliseconds)."""
    if index not in _NVML:
        import pynvml

        if not _NVML:
            pynvml.nvmlInit()
        _NVML[index] = pynvml.nvmlDeviceGetHandleByIndex(index)
    return _NVML[index]


def telemetry(index: int = 0) -> dict[str, Any]:
    """Current temperature (C), power (W) and clocks (MHz) of GPU ``index``; empty where unreadable."""
    try:
        import pynvml

        handle = _nvml_handle(index)
        return {
            "temperature_c": pynvml.nvmlDeviceGetTemperature(handle, pynvml.NVML_TEMPERATURE_GPU),
            "power_w": pynvml.nvmlDeviceGetPowerUsage(handle) / 1000.0,
            "sm_clock_mhz": pynvml.nvmlDeviceGetClockInfo(handle, pynvml.NVML_CLOCK_SM),
            "max_sm_clock_mhz": pynvml.nvmlDeviceGetMaxClockInfo(handle, pynvml.NVML_CLOCK_SM),
            "mem_clock_mhz": pynvml.nvmlDeviceGetClockInfo(handle, pynvml.NVML_CLOCK_MEM),
            "driver": _text(pynvml.nvmlSystemGetDriverVersion()),
        }
    except Exception as exc:  # noqa: BLE001 - telemetry is best effort; fall back to nvidia-smi
        logger.debug("pynvml unavailable (%s); trying nvidia-smi", exc)
    if shutil.which("nvidia-smi") is None:
        return {}
    try:
        out = subprocess.run(
            ["nvidia-smi", f"--id={index}", f"--query-gpu={','.join(_NVSMI_FIELDS)}", "--format=csv,noheader,nounits"],
            capture_output=True, text=True, timeout=20, check=True,
        ).stdout.strip().split(", ")
    except (subprocess.SubprocessError, OSError) as exc:
        logger.debug("nvidia-smi failed: %s", exc)
        return {}
    values = dict(zip(_NVSMI_FIELDS, out))
    return {
        "temperature_c": _number(values.get("temperature.gpu")),
        "power_w": _number(values.get("power.draw")),
        "sm_clock_mhz": _number(values.get("clocks.sm")),
        "max_sm_clock_mhz": _number(values.get("clocks.max.sm")),
        "mem_clock_mhz": _number(values.get("clocks.mem")),
        "driver": values.get("driver_version"),
    }


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _number(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def software_versions() -> dict[str, str | None]:
    """Versions of Python, torch, CUDA (as torch sees it) and Triton."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    try:
        import torch

        versions["torch"] = torch.__version__
        versions["cuda"] = torch.version.cuda
    except ImportError:
        versions["torch"] = None
    try:
        import triton

        versions["triton"] = triton.__version__
    except ImportError:
        versions["triton"] = None
    return versions


def device_fingerprint(index: int = 0) -> dict[str, Any]:
    """Static identity and current state of CUDA device ``index`` plus software versions.

    Returns
    -------
    dict
        ``name``, ``compute_capability``, ``sm_count``, ``memory_bytes``, ``l2_bytes``, telemetry fields
        (``temperature_c``, ``power_w``, ``sm_clock_mhz``, ``max_sm_clock_mhz``, ``driver``) and versions.
    """
    import torch

    props = torch.cuda.get_device_properties(index)
    return {
        "name": props.name,
        "compute_capability": f"{props.major}.{props.minor}",
        "sm_count": props.multi_processor_count,
        "memory_bytes": int(props.total_memory),
        "l2_bytes": int(getattr(props, "L2_cache_size", 0)),
        "host": platform.node(),
        **telemetry(index),
        **software_versions(),
    }


def interpreter_fingerprint() -> dict[str, Any]:
    """Fingerprint of a CPU run under ``TRITON_INTERPRET=1`` (correctness only, no timings)."""
    return {"name": INTERPRETER_DEVICE, "host": platform.node(), "processor": platform.processor(),
            **software_versions()}


INTERPRETER_DEVICE = "cpu-interpreter"
"""Device name of records made by the Triton interpreter."""
