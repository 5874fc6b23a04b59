"""Split-conformal building blocks: CQR offsets, a conformal predictive distribution, risk control.

Every guarantee here assumes that the calibration examples and the test example are *exchangeable*
(for instance, drawn i.i.d. from one distribution): a model used on a task unlike its calibration data
(another GPU, another kernel) keeps its formulas but loses the guarantee.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from kernelcast.exceptions import InvalidParameterError


def conformal_quantile(scores: np.ndarray, level: float) -> float:
    """The split-conformal quantile: the ``ceil((n + 1) * level)``-th smallest of ``n`` scores.

    Returns ``inf`` when ``n`` is too small for the level (fewer than ``level / (1 - level)`` scores),
    the abstaining answer (crepes returns an infinite interval there).
    """
    scores = np.sort(np.asarray(scores, dtype=np.float64))
    n = scores.size
    rank = math.ceil((n + 1) * level)
    if n == 0 or rank > n:
        return math.inf
    return float(scores[max(rank, 1) - 1])


def cqr_offset(lower: np.ndarray, upper: np.ndarray, y: np.ndarray, coverage: float) -> float:
    """Conformalized quantile regression (Romano, Patterson and Candes, 2019): the interval correction.

    With conformity scores ``E_i = max(lower_i - y_i, y_i - upper_i)`` on ``n`` calibration points, the
    interval ``[lower(x) - q, upper(x) + q]`` with ``q`` the :func:`conformal_quantile` of ``E`` at
    ``coverage`` contains a new exchangeable ``y`` with probability at least ``coverage``.

    Parameters
    ----------
    lower, upper : ndarray of shape (n,)
        Raw quantile-model predictions on the calibration points.
    y : ndarray of shape (n,)
        Calibration targets.
    coverage : float
        Nominal coverage in (0, 1).

    Returns
    -------
    float
        The offset ``q`` (may be negative when the raw intervals are too wide; ``inf`` with too few points).
    """
    scores = np.maximum(np.asarray(lower) - np.asarray(y), np.asarray(y) - np.asarray(upper))
    return conformal_quantile(scores, coverage)


@dataclasses.dataclass(frozen=True)
class ResidualDistribution:
    """A conformal predictive distribution from normalized calibration residuals.

    With residuals ``r_i = (y_i - mean_i) / scale_i`` on ``n`` calibration points, the predictive CDF of a
    new target at ``v`` is ``(#{r_i < (v - mean) / scale} + 1/2) / (n + 1)`` (a smoothed conformal
    predictive system, Vovk et al. 2017): for an exchangeable test point, the CDF value of its true
    target is (close to) uniform, so probabilities read from it are calibrated. The residuals are kept as
    at most ``max_points`` quantiles so that a model file stays small.

    Attributes
    ----------
    quantiles : ndarray
        Sorted residual quantiles.
    n : int
        Number of calibration residuals they summarise.
    """

    quantiles: np.ndarray
    n: int

    @classmethod
    def from_residuals(cls, residuals: np.ndarray, max_points: int = 2001) -> ResidualDistribution:
        """Summarise ``residuals`` (shape (n,), finite)."""
        r = np.sort(np.asarray(residuals, dtype=np.float64)[np.isfinite(residuals)])
        if r.size > max_points:
            r = np.quantile(r, np.linspace(0.0, 1.0, max_points))
        return cls(quantiles=r, n=int(np.isfinite(residuals).sum()))

    def cdf(self, z: np.ndarray) -> np.ndarray:
        """``P(residual <= z)`` for an array ``z``; 0.5 everywhere for an empty distribution."""
        z = np.asarray(z, dtype=np.float64)
        m = self.quantiles.size
        if m == 0:
            return np.full(z.shape, 0.5)
        # Interpolated rank among the stored quantiles, mapped to the smoothed (n + 1) denominator.
        rank = np.interp(z, self.quantiles, np.linspace(0.0, self.n - 1, m) + 0.5, left=0.0, right=self.n)
        return (rank + 0.5) / (self.n + 1)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe state."""
        return {"quantiles": self.quantiles.tolist(), "n": self.n}

    @classmethod
    def from_dict(cls, state: Mapping[str, Any]) -> ResidualDistribution:
        """Inverse of :meth:`to_dict`."""
        return cls(quantiles=np.asarray(state["quantiles"], dtype=np.float64), n=int(state["n"]))


def risk_control_threshold(scores: np.ndarray, alpha: float, groups: np.ndarray | None = None) -> float | None:
    """Conformal risk control (Angelopoulos et al., 2022) of a miss rate with a binary, monotone loss.

    The rule acts on a case when its score exceeds ``lam``. Without ``groups`` every calibration positive
    is one exchangeable unit with loss ``1{score > lam}``; with ``groups`` a unit is a group (e.g. a task)
    and its loss is the *fraction* of its positives scoring above ``lam``. Either loss is non-increasing in
    ``lam`` and bounded by ``B = 1``. Given ``n`` units, the threshold
    ``lam = inf{ lam : (sum_i L_i(lam) + B) / (n + 1) <= alpha }`` guarantees ``E[L_new(lam)] <= alpha`` for
    a new unit exchangeable with them: a new positive's miss probability, or with groups the expected miss
    rate within a new group.

    Parameters
    ----------
    scores : ndarray of shape (m,)
        Scores of the calibration positives.
    alpha : float
        Target risk in (0, 1).
    groups : ndarray of shape (m,), optional
        Group label of each positive; the groups are the exchangeable units.

    Returns
    -------
    float or None
        The threshold, or ``None`` when there are fewer than ``1/alpha - 1`` units and no finite threshold
        meets the bound.
    """
    if not 0.0 < alpha < 1.0:
        raise InvalidParameterError(f"The risk level must be in (0, 1). Got {alpha!r} instead.")
    s = np.asarray(scores, dtype=np.float64)
    if groups is None:
        weights = np.ones(s.size)
        n_units = s.size
    else:
        groups = np.asarray(groups)
        if groups.shape != s.shape:
            raise InvalidParameterError(
                f"groups must hold one label per score ({s.size}). Got shape {groups.shape} instead."
            )
        _, unit, counts = np.unique(groups, return_inverse=True, return_counts=True)
        weights = 1.0 / counts[unit.reshape(-1)]
        n_units = counts.size
    budget = alpha * (n_units + 1) - 1.0 + 1e-12  # total loss allowed above the threshold (B = 1)
    if n_units == 0 or budget < 0:
        return None
    order = np.argsort(-s, kind="stable")
    above = np.cumsum(weights[order])  # loss of the units if every score down to this one were above lam
    if above[-1] <= budget:
        return -math.inf
    # The first score that cannot be above lam: lam at it leaves only strictly higher scores above.
    return float(s[order][np.searchsorted(above, budget, side="right")])
