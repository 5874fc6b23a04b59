"""The Surrogate base class: forecasts of kernel runtimes, calibrated, with a selective decision rule.

Order of calls::

    surrogate = SomeSurrogate(skip_error_rate=0.05)     # __init__ only stores hyperparameters
    surrogate.fit(train_frame)                          # learns the forecaster; returns self
    surrogate.calibrate(calib_frame)                    # conformal / isotonic step on held-out data; returns self
    surrogate.forecast(candidates)                      # -> Forecast (needs fit; intervals need calibrate)
    surrogate.decide(candidates, incumbent_ms)          # -> list[Decision] (needs calibrate, else all DEFER)
    surrogate.update(new_records)                       # during a search: refit or warm-start on new records

Data arguments are polars DataFrames in the store's row layout (see ``kernelcast.datasets.store``): a
*candidate frame* has at least :data:`CANDIDATE_COLUMNS`; a *record frame* adds the outcome columns
(``status``, ``time_ms``, ``samples_ms``, ...). Runtimes are compared only within a task
(:data:`TASK_COLUMNS`).
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Sequence
from enum import Enum
from typing import Any

import numpy as np

CANDIDATE_COLUMNS: tuple[str, ...] = (
    "family",
    "variant",
    "source_hash",
    "config_json",
    "problem_json",
    "dtype",
    "device",
)
"""Columns that describe a candidate before it is measured."""

TASK_COLUMNS: tuple[str, ...] = ("family", "problem_json", "dtype", "device")
"""Columns that identify a task: runtimes are comparable only within one task."""


class Decision(str, Enum):
    """What the screener does with one candidate."""

    MEASURE = "measure"
    """Send it to the hardware: promising, or too uncertain to skip."""
    SKIP = "skip"
    """Confidently slower than the incumbent: do not spend budget on it."""
    DEFER = "defer"
    """The surrogate abstains (e.g. too little calibration data); the caller decides, usually to measure."""


@dataclasses.dataclass(frozen=True)
class Forecast:
    """A surrogate's forecasts for ``n`` candidates.

    Attributes
    ----------
    log_time_mean : ndarray of shape (n,)
        Point forecast of the natural log of the runtime in milliseconds.
    log_time_lower, log_time_upper : ndarray of shape (n,)
        Calibrated interval of the log runtime at level ``coverage`` (``-inf``/``inf`` where uncalibrated).
    coverage : float
        Nominal coverage of the interval, e.g. 0.9.
    p_fail : ndarray of shape (n,) or None
        Probability that the candidate fails (compile error, out of resources, ...), where modelled.
    log_time_scale : ndarray of shape (n,) or None
        Predictive scale of the log runtime (about one standard deviation), where modelled: what pairwise,
        speedup-bin and decision rules standardise forecast gaps by.
    """

    log_time_mean: np.ndarray
    log_time_lower: np.ndarray
    log_time_upper: np.ndarray
    coverage: float
    p_fail: np.ndarray | None = None
    log_time_scale: np.ndarray | None = None

    @property
    def time_ms(self) -> np.ndarray:
        """Point forecast of the runtime (ms)."""
        return np.exp(self.log_time_mean)

    def __len__(self) -> int:
        return int(self.log_time_mean.shape[0])


class Surrogate(abc.ABC):
    """Base of every runtime forecaster. See the module docstring for the order of calls.

    Subclasses follow scikit-learn's estimator contract: ``__init__`` stores keyword-only hyperparameters
    and does nothing else, ``fit`` and ``calibrate`` return ``self``, learned state ends in ``_``, and every
    forecasting method raises :class:`~kernelcast.exceptions.NotFittedError` before ``fit``.
    """

    @abc.abstractmethod
    def fit(self, records: Any, y: Any = None) -> Surrogate:
        """Learn from a record frame of measured candidates (failures included)."""

    @abc.abstractmethod
    def calibrate(self, records: Any) -> Surrogate:
        """Calibrate intervals, pairwise probabilities and the skip threshold on held-out records."""

    @abc.abstractmethod
    def forecast(self, candidates: Any) -> Forecast:
        """Forecast runtimes of a candidate frame."""

    @abc.abstractmethod
    def predict_proba_faster(self, candidates_a: Any, candidates_b: Any) -> np.ndarray:
        """Calibrated probability, shape (n,), that candidate ``a[i]`` is faster than ``b[i]`` (same task)."""

    @abc.abstractmethod
    def decide(self, candidates: Any, incumbent_ms: float | Sequence[float]) -> list[Decision]:
        """MEASURE, SKIP or DEFER for each candidate against the incumbent runtime(s) (ms) of its task."""

    def predict_bin_proba(self, candidates: Any, reference_ms: float | Sequence[float]) -> np.ndarray:
        """Probabilities, shape (n, 8), of the eight half-octave speedup bins over ``reference_ms``.

        See :mod:`kernelcast.surrogate.bins` for the bin edges (default: not modelled).
        """
        raise NotImplementedError(f"{type(self).__name__} does not forecast speedup bins.")

    def update(self, records: Any) -> Surrogate:
        """Learn from new records during a search (default: refit on everything seen so far)."""
        raise NotImplementedError(f"{type(self).__name__} does not support updates during a search.")
