"""Calibration of pairwise probabilities ``P(a is faster than b)``.

A surrogate scores a within-task pair by ``z = (mean_b - mean_a) / sqrt(scale_a**2 + scale_b**2)``, the
standardised gap between the two log-time forecasts; the *uncalibrated* probability is ``Phi(z)``, which
assumes independent Gaussian errors. Errors of two candidates of one task are correlated, so ``Phi(z)`` is
usually mis-calibrated. :class:`PairCalibrator` learns the map from ``z`` to a calibrated probability on
held-out pairs formed within tasks (ties within measured noise excluded; see
:func:`kernelcast.surrogate.tasks.within_task_pairs`).

Both methods keep ``p(a, b) = 1 - p(b, a)``: they are fitted on each pair in both orientations, and the
isotonic map is antisymmetrised.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import expit, ndtr

from kernelcast.exceptions import InvalidParameterError, NotFittedError, invalid_choice

PAIR_CALIBRATION_METHODS: tuple[str, ...] = ("isotonic", "temperature")
"""Allowed values of a surrogate's ``pair_calibration``."""


MAX_KNOTS = 1024
"""At most this many knots of an isotonic map are kept."""


def uncalibrated_proba(z: np.ndarray) -> np.ndarray:
    """The Gaussian probability ``Phi(z)`` that ``a`` is faster, before calibration."""
    return ndtr(np.asarray(z, dtype=np.float64))


class PairCalibrator:
    """Maps a standardised gap ``z`` to a calibrated ``P(a faster than b)``.

    Parameters
    ----------
    method : {"isotonic", "temperature"}
        ``"isotonic"``: a non-decreasing step function (scikit-learn's ``IsotonicRegression``), then
        antisymmetrised. ``"temperature"``: ``sigmoid(z / T)`` with ``T`` minimising the log loss.

    Attributes
    ----------
    temperature_ : float
        Fitted temperature (``"temperature"``).
    x_, y_ : ndarray
        Knots of the fitted isotonic map (``"isotonic"``).
    n_pairs_ : int
        Number of pairs it was fitted on.
    """

    def __init__(self, *, method: str = "isotonic") -> None:
        self.method = method

    def fit(self, z: np.ndarray, a_faster: np.ndarray) -> PairCalibrator:
        """Fit on scores ``z`` (shape (m,)) and outcomes ``a_faster`` (bool, shape (m,))."""
        if self.method not in PAIR_CALIBRATION_METHODS:
            raise invalid_choice("pair_calibration", "a surrogate", self.method, PAIR_CALIBRATION_METHODS)
        z = np.asarray(z, dtype=np.float64)
        y = np.asarray(a_faster, dtype=np.float64)
        if z.shape != y.shape or z.ndim != 1:
            raise InvalidParameterError(f"z and a_faster must be 1-D of one length. Got {z.shape} and {y.shape}.")
        keep = np.isfinite(z)
        z, y = z[keep], y[keep]
        if z.size == 0:
            raise InvalidParameterError("A pair calibrator needs at least one pair with a finite score.")
        zz = np.concatenate([z, -z])
        yy = np.concatenate([y, 1.0 - y])
        if self.method == "temperature":
            zc = np.clip(zz, -50, 50)

            def loss(log_t: float) -> float:
                p = np.clip(expit(zc / math.exp(log_t)), 1e-12, 1 - 1e-12)
                return float(-np.mean(yy * np.log(p) + (1 - yy) * np.log(1 - p)))

            result = minimize_scalar(loss, bounds=(-6.0, 6.0), method="bounded")
            self.temperature_ = float(math.exp(result.x))
        else:
            from sklearn.isotonic import IsotonicRegression

            iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(zz, yy)
            self.x_ = np.asarray(iso.X_thresholds_, dtype=np.float64)
            self.y_ = np.asarray(iso.y_thresholds_, dtype=np.float64)
            if self.x_.size > MAX_KNOTS:  # keep model files small: resample the step function
                grid = np.unique(np.quantile(zz, np.linspace(0.0, 1.0, MAX_KNOTS)))
                self.x_, self.y_ = grid, np.interp(grid, self.x_, self.y_)
        self.n_pairs_ = int(z.size)
        return self

    def predict_proba(self, z: np.ndarray) -> np.ndarray:
        """Calibrated ``P(a faster than b)`` for scores ``z``, shape like ``z``."""
        if not hasattr(self, "n_pairs_"):
            raise NotFittedError("This PairCalibrator is not fitted yet. Call 'fit' with held-out pairs first.")
        z = np.asarray(z, dtype=np.float64)
        if self.method == "temperature":
            return expit(np.clip(z, -50, 50) / self.temperature_)
        up = np.interp(z, self.x_, self.y_)
        down = np.interp(-z, self.x_, self.y_)
        return 0.5 * (up + 1.0 - down)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe state."""
        if not hasattr(self, "n_pairs_"):
            raise NotFittedError("This PairCalibrator is not fitted yet.")
        state: dict[str, Any] = {"method": self.method, "n_pairs": self.n_pairs_}
        if self.method == "temperature":
            state["temperature"] = self.temperature_
        else:
            state["x"] = self.x_.tolist()
            state["y"] = self.y_.tolist()
        return state

    @classmethod
    def from_dict(cls, state: Mapping[str, Any]) -> PairCalibrator:
        """Inverse of :meth:`to_dict`."""
        out = cls(method=state["method"])
        out.n_pairs_ = int(state["n_pairs"])
        if out.method == "temperature":
            out.temperature_ = float(state["temperature"])
        else:
            out.x_ = np.asarray(state["x"], dtype=np.float64)
            out.y_ = np.asarray(state["y"], dtype=np.float64)
        return out
