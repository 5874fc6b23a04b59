"""The level of a task: the mean log runtime over its configurations, known or forecast.

Tree models that see raw GPU-scale features (bandwidth, SM count, peak rates) split on them to tell the
training GPUs apart, and then route an unseen GPU to an arbitrary one of them: its configurations get
ranked like that GPU's. :class:`~kernelcast.surrogate.gbm.GBMSurrogate` therefore splits a forecast in two,

``ln t(x) = level(task) + shape(x)``

where the *shape* model learns ``ln t - (task mean)`` from configuration, problem and architecture
features, and :class:`TaskLevelModel` supplies the level: the observed mean for a task seen in training,
else a roofline forecast ``c_f + b_f * ln(roofline_ms + LAUNCH_FLOOR_MS)`` fitted per family over the
training tasks, with ``b_f`` shrunk towards 1 (runtime proportional to the roofline bound) by a ridge
prior worth :data:`PRIOR_TASKS` tasks. A family without a work model gets the mean of its task means.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

LAUNCH_FLOOR_MS = 0.003
"""A kernel launch costs a few microseconds whatever the work: added to the roofline bound."""

PRIOR_TASKS = 4.0
"""Weight of the prior ``b_f = 1`` in units of tasks one log unit apart."""


def _fit_line(x: np.ndarray, m: np.ndarray) -> tuple[float, float]:
    """``(c, b)`` minimising ``sum (m - c - b x)^2 + PRIOR_TASKS (b - 1)^2``."""
    xc = x - x.mean()
    mc = m - m.mean()
    b = float((xc @ mc + PRIOR_TASKS) / (xc @ xc + PRIOR_TASKS))
    return float(m.mean() - b * x.mean()), b


class TaskLevelModel:
    """Task levels (mean log runtime) of seen tasks, and a roofline forecast of unseen ones.

    Attributes
    ----------
    known_ : dict of str to float
        Observed mean log runtime of each training task, by task label.
    families_ : dict of str to dict
        Per family: ``{"c": ..., "b": ...}`` (``b`` is None for a family without a work model).
    global_ : dict
        The same over all training tasks, for unknown families.
    """

    def fit(self, task: np.ndarray, family: np.ndarray, roofline_ms: np.ndarray, y: np.ndarray) -> TaskLevelModel:
        """Fit on training rows: task labels, family names, roofline times (ms, NaN unknown), log times."""
        task = np.asarray(task).astype(str)
        labels, inverse = np.unique(task, return_inverse=True)
        counts = np.bincount(inverse)
        means = np.bincount(inverse, weights=y) / counts
        first = np.zeros(labels.size, dtype=np.int64)
        first[inverse[::-1]] = np.arange(task.size)[::-1]  # a row of each task
        task_family = np.asarray(family).astype(str)[first]
        with np.errstate(divide="ignore", invalid="ignore"):
            task_x = np.log(np.asarray(roofline_ms, dtype=np.float64)[first] + LAUNCH_FLOOR_MS)
        self.known_ = dict(zip(labels.tolist(), means.tolist()))
        self.families_ = {f: self._fit_group(task_x[task_family == f], means[task_family == f])
                          for f in np.unique(task_family).tolist()}
        self.global_ = self._fit_group(task_x, means)
        return self

    @staticmethod
    def _fit_group(x: np.ndarray, m: np.ndarray) -> dict[str, float | None]:
        finite = np.isfinite(x)
        if finite.all() and x.size:
            c, b = _fit_line(x, m)
            return {"c": c, "b": b}
        return {"c": float(m.mean()) if m.size else 0.0, "b": None}

    def predict(self, task: np.ndarray, family: np.ndarray, roofline_ms: np.ndarray) -> np.ndarray:
        """Level of each row, shape (n,): the observed mean of a seen task, else the roofline forecast."""
        task = np.asarray(task).astype(str)
        family = np.asarray(family).astype(str)
        with np.errstate(divide="ignore", invalid="ignore"):
            x = np.log(np.asarray(roofline_ms, dtype=np.float64) + LAUNCH_FLOOR_MS)
        out = np.empty(task.size)
        for f in np.unique(family):
            rows = family == f
            line = self.families_.get(f, self.global_)
            if line["b"] is not None:
                pred = line["c"] + line["b"] * x[rows]
                out[rows] = np.where(np.isfinite(pred), pred, self.global_["c"])
            else:
                out[rows] = line["c"]
        known = np.array([self.known_.get(t, np.nan) for t in task])
        return np.where(np.isfinite(known), known, out)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe state."""
        return {"known": self.known_, "families": self.families_, "global": self.global_}

    @classmethod
    def from_dict(cls, state: Mapping[str, Any]) -> TaskLevelModel:
        """Inverse of :meth:`to_dict`."""
        out = cls()
        out.known_ = {str(k): float(v) for k, v in state["known"].items()}
        out.families_ = {str(k): dict(v) for k, v in state["families"].items()}
        out.global_ = dict(state["global"])
        return out
