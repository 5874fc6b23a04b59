"""Measurement: time Triton kernels on a real GPU, safely, into versioned records.

Importing this package does not import torch or triton; the families and workers do, when used.
"""

from kernelcast.measurement.benchmarker import Benchmarker, Candidate, candidates_for
from kernelcast.measurement.protocol import Protocol, time_kernel
from kernelcast.measurement.records import (
    SCHEMA_VERSION,
    CompiledInfo,
    Record,
    Status,
    TimingStats,
)
from kernelcast.measurement.space import ConfigSpace, DeviceLimits, Param, Problem
from kernelcast.measurement.worker import IsolatedWorker, WorkerResult

__all__ = [
    "SCHEMA_VERSION",
    "Benchmarker",
    "Candidate",
    "CompiledInfo",
    "ConfigSpace",
    "DeviceLimits",
    "IsolatedWorker",
    "Param",
    "Problem",
    "Protocol",
    "Record",
    "Status",
    "TimingStats",
    "WorkerResult",
    "candidates_for",
    "time_kernel",
]
