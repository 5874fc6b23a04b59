"""RooflineSurrogate: an analytical baseline, a roofline bound scaled by power-law efficiency terms.

Per kernel family ``f``, the log runtime is modelled as

``ln t = c_f + b_f * ln t_roofline + sum_d w_{f,d} ln device_d + sum_e v_{f,e} ln efficiency_e
+ sum_k u_{f,k} ln(1 + knob_k)``

where ``t_roofline = max(flops / peak, min_bytes / bandwidth)`` (from the family's work model and the device
table), the device terms are the logs of bandwidth, peak rates and SM count (so a family without a work
model still scales across GPUs), the efficiency terms are the wave efficiency, waves and occupancy of
:class:`~kernelcast.surrogate.features.Featurizer`, and the knob terms make the efficiency a power law of
each numeric configuration knob. The coefficients are fitted per family by ridge regression on
standardised columns (missing values imputed by the training mean, every column clipped to its training
range at prediction time, so an unseen shape cannot extrapolate the power laws without bound); an unknown
family falls back to one model over the family-independent columns. The raw interval is
``mean +/- z * sigma_f`` with ``sigma_f`` the family's training residual deviation, so CQR on the
calibration split reduces to split conformal regression. ``p_fail`` is the family's training failure rate.

It is a baseline: a log-linear model cannot represent knob interactions (a tile size that is good only with
enough warps). Saved as plain JSON coefficients in ``model.json``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from scipy.special import ndtri

from kernelcast.exceptions import InvalidParameterError
from kernelcast.surrogate._calibrated import CalibratedSurrogate, RawForecast

_DEVICE_COLUMNS = ("device.mem_bandwidth_gbs", "device.fp32_tflops", "device.fp16_tensor_tflops", "device.sm_count")
_EFFICIENCY_COLUMNS = ("derived.wave_efficiency", "derived.waves", "derived.occupancy")
_GLOBAL = "*"


def _log_positive(x: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(x > 0, np.log(x), np.nan)


class RooflineSurrogate(CalibratedSurrogate):
    """Roofline bound times fitted power-law efficiencies, per family (see the module docstring).

    Parameters
    ----------
    coverage, skip_error_rate, pair_calibration, min_calibration_pairs, incumbent_top_fraction
        As for :class:`~kernelcast.surrogate.gbm.GBMSurrogate`.
    ridge_alpha : float, default=1.0
        L2 penalty of the per-family fits (on standardised columns).
    random_state : int or None, default=0
        Seed of calibration pair sampling.

    Attributes
    ----------
    family_models_ : dict
        Per family (and ``"*"`` for unknown families): columns, centring, scaling, coefficients,
        intercept, residual deviation and failure rate.
    """

    model_name = "roofline"

    def __init__(
        self,
        *,
        coverage: float = 0.9,
        skip_error_rate: float = 0.05,
        pair_calibration: str = "isotonic",
        min_calibration_pairs: int = 100,
        incumbent_top_fraction: float = 0.25,
        ridge_alpha: float = 1.0,
        random_state: int | None = 0,
    ) -> None:
        self.coverage = coverage
        self.skip_error_rate = skip_error_rate
        self.pair_calibration = pair_calibration
        self.min_calibration_pairs = min_calibration_pairs
        self.incumbent_top_fraction = incumbent_top_fraction
        self.ridge_alpha = ridge_alpha
        self.random_state = random_state

    def _validate_params(self) -> None:
        super()._validate_params()
        if not (isinstance(self.ridge_alpha, int | float) and self.ridge_alpha >= 0):
            raise InvalidParameterError(
                f"The 'ridge_alpha' parameter of {type(self).__name__} must be a non-negative float. "
                f"Got {self.ridge_alpha!r} instead."
            )

    # -- analytic design matrix ---------------------------------------------------------------------
    def _design(self, X: np.ndarray, knobs: bool) -> tuple[np.ndarray, list[str]]:
        names = self.featurizer_.feature_names_
        index = {n: i for i, n in enumerate(names)}
        cols, labels = [], []
        cols.append(_log_positive(X[:, index["derived.roofline_ms"]]))
        labels.append("ln roofline_ms")
        for c in (*_DEVICE_COLUMNS, *_EFFICIENCY_COLUMNS):
            cols.append(_log_positive(X[:, index[c]]))
            labels.append(f"ln {c}")
        if knobs:
            categorical = set(self.featurizer_.categorical_features_)
            for n in names:
                if n.startswith("config.") and n not in categorical:
                    v = X[:, index[n]]
                    with np.errstate(invalid="ignore"):
                        cols.append(np.where(v >= 0, np.log1p(np.abs(v)), v))
                    labels.append(f"ln1p {n}")
        return np.column_stack(cols), labels

    def _fit_one(self, A: np.ndarray, y: np.ndarray) -> dict[str, Any]:
        finite = np.isfinite(A)
        counts = finite.sum(axis=0)
        usable = counts > 0
        mean = np.where(finite, A, 0.0).sum(axis=0) / np.maximum(counts, 1)
        A = np.where(finite, A, mean)
        std = A.std(axis=0)
        usable &= std > 1e-12
        Z = (A[:, usable] - mean[usable]) / std[usable]
        lo = A[:, usable].min(axis=0) if A.shape[0] else np.zeros(int(usable.sum()))
        hi = A[:, usable].max(axis=0) if A.shape[0] else np.zeros(int(usable.sum()))
        intercept = float(y.mean())
        if Z.shape[1]:
            gram = Z.T @ Z + self.ridge_alpha * np.eye(Z.shape[1])
            coef = np.linalg.solve(gram, Z.T @ (y - intercept))
        else:
            coef = np.zeros(0)
        resid = y - intercept - Z @ coef
        return {
            "columns": np.flatnonzero(usable).tolist(),
            "mean": mean[usable].tolist(),
            "std": std[usable].tolist(),
            "coef": coef.tolist(),
            "lo": lo.tolist(),
            "hi": hi.tolist(),
            "intercept": intercept,
            "sigma": float(max(resid.std(), 1e-3)) if resid.size else 1.0,
        }

    def _fit_models(self, X_ok: np.ndarray, y_ok: np.ndarray, X_all: np.ndarray, failed: np.ndarray,
                    sample_weight: np.ndarray | None = None, groups: np.ndarray | None = None) -> None:
        family_col = self.featurizer_.feature_names_.index("family")
        fam_ok = X_ok[:, family_col]
        fam_all = X_all[:, family_col]
        models: dict[str, dict[str, Any]] = {}
        A_global, _ = self._design(X_ok, knobs=False)
        models[_GLOBAL] = {**self._fit_one(A_global, y_ok), "knobs": False,
                           "fail_rate": float(failed.mean()) if failed.size else 0.0}
        for code, name in enumerate(self.featurizer_.families_):
            rows = fam_ok == code
            if rows.sum() < 2:
                continue
            A, _ = self._design(X_ok[rows], knobs=True)
            fam_failed = failed[fam_all == code]
            models[name] = {**self._fit_one(A, y_ok[rows]), "knobs": True,
                            "fail_rate": float(fam_failed.mean()) if fam_failed.size else 0.0}
        self.family_models_ = models

    def _predict_one(self, model: Mapping[str, Any], X: np.ndarray) -> np.ndarray:
        A, _ = self._design(X, knobs=bool(model["knobs"]))
        cols = np.asarray(model["columns"], dtype=np.int64)
        mean = np.asarray(model["mean"], dtype=np.float64)
        A = A[:, cols] if cols.size else np.zeros((X.shape[0], 0))
        A = np.where(np.isfinite(A), A, mean)
        if cols.size:  # a log-linear model extrapolates wildly: hold each column inside its training range
            A = np.clip(A, np.asarray(model["lo"], dtype=np.float64), np.asarray(model["hi"], dtype=np.float64))
        Z = (A - mean) / np.asarray(model["std"], dtype=np.float64) if cols.size else A
        return model["intercept"] + Z @ np.asarray(model["coef"], dtype=np.float64)

    def _raw_forecast(self, X: np.ndarray, X_fail: np.ndarray) -> RawForecast:
        n = X.shape[0]
        mean = np.empty(n)
        sigma = np.empty(n)
        p_fail = np.empty(n)
        fam = X[:, self.featurizer_.feature_names_.index("family")]
        assigned = np.zeros(n, dtype=bool)
        for code, name in enumerate(self.featurizer_.families_):
            model = self.family_models_.get(name)
            rows = fam == code
            if model is None or not rows.any():
                continue
            mean[rows] = self._predict_one(model, X[rows])
            sigma[rows] = model["sigma"]
            p_fail[rows] = model["fail_rate"]
            assigned |= rows
        rest = ~assigned
        if rest.any():
            model = self.family_models_[_GLOBAL]
            mean[rest] = self._predict_one(model, X[rest])
            sigma[rest] = model["sigma"]
            p_fail[rest] = model["fail_rate"]
        z = float(ndtri(0.5 + self.coverage / 2.0))
        return RawForecast(mean=mean, lower=mean - z * sigma, upper=mean + z * sigma, p_fail=p_fail)

    def _save_models(self, path: Path) -> dict[str, Any]:
        return {"family_models": self.family_models_}

    def _load_models(self, path: Path, state: Mapping[str, Any]) -> None:
        self.family_models_ = {k: dict(v) for k, v in state["family_models"].items()}
