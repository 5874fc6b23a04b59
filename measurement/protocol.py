"""The timing protocol: one function, readable top to bottom.

:func:`time_kernel` follows Triton's ``do_bench`` habits -- warm-up, an L2 flush before every repetition,
CUDA events around the kernel alone -- and repeats until the relative standard error of the median falls
under a target or a cap is reached. Every sample is returned, not only a summary.

Two refinements over ``do_bench``. Each chunk of repetitions is queued behind a short GPU sleep, so the host
has enqueued every launch before the GPU reaches the first: no host launch gap falls inside a timed
interval, which matters for kernels of a few hundred microseconds. And *racing*: once ``min_reps`` are
timed, a candidate whose median is over ``race_factor`` times the fastest median already measured on the
same problem stops repeating -- its rank is settled -- and keeps its samples (its ``rse_median`` says how
precise it is).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import numpy as np

from kernelcast.exceptions import InvalidParameterError


@dataclasses.dataclass(frozen=True)
class Protocol:
    """Settings of the benchmark protocol; every record stores them.

    Attributes
    ----------
    warmup_ms : float
        Time spent running the kernel before timing (ms); at least one run.
    min_reps, max_reps : int
        Fewest and most timed repetitions.
    target_rse : float
        Stop once the relative standard error of the median is at most this (e.g. 0.005 = 0.5%).
    max_time_ms : float
        Stop once this much kernel time has been timed (ms), even short of ``target_rse``.
    flush_l2 : bool
        Overwrite a buffer of twice the L2 size before each repetition so every run starts cold.
    check : bool
        Compare the output with the family's reference before timing.
    inputs_reuse : int
        Candidates of one problem that share a set of random inputs in a worker (they are checked to be
        unmodified after every candidate, and regenerated after any failure).
    race_factor : float or None
        Stop after ``min_reps`` once the median exceeds this multiple of the problem's fastest median so far;
        ``None`` disables racing.
    run_timeout_s : float
        Per-candidate wall-time limit in the GPU worker (s); past it the worker is killed and replaced.
    compile_timeout_s : float
        Per-candidate wall-time limit of compilation (s).
    """

    warmup_ms: float = 2.0
    min_reps: int = 10
    max_reps: int = 300
    target_rse: float = 0.005
    max_time_ms: float = 400.0
    flush_l2: bool = True
    check: bool = True
    race_factor: float | None = 1.5
    inputs_reuse: int = 32
    run_timeout_s: float = 60.0
    compile_timeout_s: float = 300.0

    def __post_init__(self) -> None:
        for name in ("min_reps", "max_reps", "inputs_reuse"):
            if int(getattr(self, name)) < 1:
                raise InvalidParameterError(f"The {name!r} parameter of Protocol must be a positive int. "
                                            f"Got {getattr(self, name)!r} instead.")
        if self.max_reps < self.min_reps:
            raise InvalidParameterError(
                f"The 'max_reps' parameter of Protocol must be >= min_reps ({self.min_reps}). Got {self.max_reps}."
            )
        if self.race_factor is not None and not self.race_factor > 1:
            raise InvalidParameterError(f"The 'race_factor' parameter of Protocol must be > 1 or None. "
                                        f"Got {self.race_factor!r} instead.")
        for name in ("warmup_ms", "target_rse", "max_time_ms", "run_timeout_s", "compile_timeout_s"):
            if not float(getattr(self, name)) > 0:
                raise InvalidParameterError(f"The {name!r} parameter of Protocol must be positive. "
                                            f"Got {getattr(self, name)!r} instead.")

    def as_dict(self) -> dict[str, Any]:
        """The settings as a plain dict (stored in every record)."""
        return dataclasses.asdict(self)


def rse_of_median(samples_ms: np.ndarray) -> float:
    """Relative standard error of the median, ``sqrt(pi/2) * std / sqrt(n) / median`` (unitless)."""
    if samples_ms.size < 2:
        return math.inf
    median = float(np.median(samples_ms))
    return 1.2533 * float(samples_ms.std(ddof=1)) / math.sqrt(samples_ms.size) / median if median > 0 else math.inf


QUEUE_AHEAD_CYCLES_PER_REP = 200_000
"""GPU sleep queued per repetition of a chunk (clock cycles; ~100 us at 2 GHz), covering the host's enqueue time."""


def time_kernel(
    fn: Callable[[], Any],
    protocol: Protocol,
    *,
    l2_bytes: int = 50 * 2**20,
    incumbent_ms: float | None = None,
) -> list[float]:
    """Time ``fn`` on the current CUDA device under ``protocol``; return every sample (ms).

    Parameters
    ----------
    fn : callable
        Launches the kernel once (asynchronously).
    protocol : Protocol
        Warm-up, repetitions, stopping rule.
    l2_bytes : int
        L2 cache size of the device (bytes); the flush buffer is twice that.
    incumbent_ms : float, optional
        Fastest median measured so far on the same problem (ms), for racing.
    """
    import torch

    # 1. Warm-up: module load and caches stay out of the numbers; estimate the time of one call.
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    fn()
    end.record()
    torch.cuda.synchronize()
    estimate_ms = max(start.elapsed_time(end), 1e-3)
    for _ in range(max(0, math.ceil(protocol.warmup_ms / estimate_ms) - 1)):
        fn()
    torch.cuda.synchronize()

    # 2. A buffer larger than L2, overwritten before every repetition so each run starts with a cold cache.
    flush = torch.empty(2 * l2_bytes // 4, dtype=torch.int32, device="cuda") if protocol.flush_l2 else None

    # 3. Repetitions in chunks of events around the kernel alone, each chunk queued behind a GPU sleep so no
    #    host launch gap is timed; stop on the RSE target, a cap, or once the candidate has lost the race.
    samples: list[float] = []
    chunk = protocol.min_reps
    while True:
        starts = [torch.cuda.Event(enable_timing=True) for _ in range(chunk)]
        ends = [torch.cuda.Event(enable_timing=True) for _ in range(chunk)]
        torch.cuda._sleep(min(chunk * QUEUE_AHEAD_CYCLES_PER_REP, 100_000_000))
        for s, e in zip(starts, ends):
            if flush is not None:
                flush.zero_()
            s.record()
            fn()
            e.record()
        torch.cuda.synchronize()
        samples.extend(s.elapsed_time(e) for s, e in zip(starts, ends))
        arr = np.asarray(samples)
        if len(samples) >= protocol.max_reps or arr.sum() >= protocol.max_time_ms:
            break
        if rse_of_median(arr) <= protocol.target_rse:
            break
        if protocol.race_factor and incumbent_ms and float(np.median(arr)) > protocol.race_factor * incumbent_ms:
            break
        chunk = min(protocol.max_reps - len(samples), max(protocol.min_reps, len(samples)))
    return samples
