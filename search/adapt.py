"""In-run learning: a surrogate trained on other tasks learns the searched task from the run's measurements.

A surrogate fitted on other GPUs or other shapes ranks a new task's configurations well but not perfectly:
it is off by a level on the whole task (which a relative rule cancels) and by a smooth, task-specific
distortion (which it does not). :class:`TaskAdapter` wraps such a *prior* surrogate for one search::

    adapter = TaskAdapter(prior, space)        # space: the task's ConfigSpace
    adapter.forecast(candidates)               # prior forecast + correction learned from this run
    adapter.decide(candidates, inc_ms, incumbent=row)
    adapter.update(new_records)                # after each measured batch: refit the correction

The correction is a Gaussian process fitted on the residuals ``ln(time_ms) - prior mean`` of every ``ok``
record of the run, over the task's knobs: a knob of numbers as the index of its value among the sorted
values, scaled to [0, 1] (the order Optuna sees, see :func:`kernelcast.search.loop.distributions`), any
other knob one-hot. Kernel: constant x Matern(5/2) with one length scale per input plus white noise, its
hyperparameters fitted by maximum marginal likelihood whenever the records have grown by half since the
last fit, the GP itself refitted on every update (the run holds at most a budget of records: milliseconds).
Its mean is the residuals' mean, so far from every measured configuration the
forecast returns to the prior plus the task's level. It starts after :attr:`TaskAdapter.min_records`
``ok`` records; before that the prior is used as it is. A fitted correction is kept only while it
predicts each record's residual from the others (leave one out, in closed form) better than the residuals'
mean does: with a prior that already ranks the task well, a correction fitted to a few noisy residuals
would only move the ranking at random, so then the prior is used with the task's level alone.

Decisions are the prior's own calibrated rule (``decide_from_forecast``) applied to the corrected
forecasts: the SKIP threshold stays the one calibrated across GPUs or shapes; the correction moves the
forecasts and widens their predictive scale by its own uncertainty, ``sqrt(prior scale**2 + correction
sd**2)``, so a configuration far from everything measured is harder to SKIP (it is *uncertain*) than one
next to measured ones. :meth:`TaskAdapter.uncertainty` gives that sd to rank candidates by expected
improvement (:class:`~kernelcast.search._base.Screener`, ``ranking="improvement"``). A prior must therefore offer
``decide_from_forecast`` (:func:`adaptable`); a search whose surrogate does not learns through the
surrogate's own :meth:`~kernelcast.surrogate._base.Surrogate.update` instead.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import warnings
from typing import Any

import numpy as np
import polars as pl

from kernelcast.exceptions import InvalidParameterError
from kernelcast.measurement.space import ConfigSpace
from kernelcast.surrogate._base import Decision, Forecast, Surrogate

logger = logging.getLogger(__name__)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclasses.dataclass(frozen=True)
class KnobEncoder:
    """Numeric inputs of a task's configurations for the correction (see the module docstring).

    Attributes
    ----------
    space : ConfigSpace
        The task's space; knobs with a single value are left out.
    """

    space: ConfigSpace

    @property
    def n_inputs(self) -> int:
        """Width of an encoded configuration."""
        return sum(self._width(p.values) for p in self.space.params if len(p.values) > 1)

    @staticmethod
    def _width(values: tuple[Any, ...]) -> int:
        return 1 if all(_is_number(v) for v in values) else len(values)

    def encode(self, configs: list[dict[str, Any]]) -> np.ndarray:
        """Encode ``configs``, shape (n, :attr:`n_inputs`); a value outside the space gets the nearest index."""
        columns: list[np.ndarray] = []
        for param in self.space.params:
            values = param.values
            if len(values) < 2:
                continue
            if all(_is_number(v) for v in values):
                grid = np.asarray(values, dtype=np.float64)
                raw = np.asarray([float(c[param.name]) for c in configs], dtype=np.float64)
                index = np.abs(raw[:, None] - grid[None, :]).argmin(axis=1) if len(configs) else np.zeros(0)
                columns.append(index / (len(values) - 1))
            else:
                position = {v: i for i, v in enumerate(values)}
                onehot = np.zeros((len(configs), len(values)))
                for row, config in enumerate(configs):
                    if config[param.name] in position:
                        onehot[row, position[config[param.name]]] = 1.0
                columns.extend(onehot.T)
        if not columns:
            return np.zeros((len(configs), 0))
        return np.column_stack(columns)


class TaskAdapter(Surrogate):
    """A prior surrogate plus a correction learned from one search's records (see the module docstring).

    Parameters
    ----------
    prior : Surrogate
        A fitted (and, for SKIP decisions, calibrated) surrogate; it is not modified.
    space : ConfigSpace
        The searched task's space.
    min_records : int
        ``ok`` records needed before the correction is used.

    Attributes
    ----------
    records_ : polars.DataFrame or None
        Every record learned from so far (one per configuration, the latest kept).
    gp_ : sklearn GaussianProcessRegressor or None
        The correction in use: ``None`` until :attr:`min_records` ok records, and whenever the fitted GP
        predicts the held-out residuals no better than their mean (:attr:`loo_ratio_` >= 1).
    loo_ratio_ : float
        Leave-one-out mean squared residual of the last fitted GP over that of the residuals' mean.
    offset_ : float
        Mean residual (ln ms) of the ``ok`` records: the task's level relative to the prior.
    n_updates_ : int
        Updates so far.
    """

    def __init__(self, prior: Surrogate, space: ConfigSpace, *, min_records: int = 3) -> None:
        if not adaptable(prior):
            raise InvalidParameterError(
                f"TaskAdapter needs a prior whose rule applies to given forecasts (decide_from_forecast); "
                f"{type(prior).__name__} has none."
            )
        if not (isinstance(min_records, int) and not isinstance(min_records, bool) and min_records >= 2):
            raise InvalidParameterError(
                f"The 'min_records' parameter of TaskAdapter must be an int >= 2. Got {min_records!r} instead."
            )
        self.prior = prior
        self.space = space
        self.min_records = min_records
        self.encoder_ = KnobEncoder(space)
        self.records_: pl.DataFrame | None = None
        self.gp_: Any = None
        self.offset_ = 0.0
        self.n_updates_ = 0
        self.n_tuned_ = 0
        self.kernel_: Any = None
        self.loo_ratio_ = math.nan

    # -- learning -------------------------------------------------------------------------------------
    def fit(self, records: Any, y: Any = None) -> TaskAdapter:
        """Start over from the prior and learn from ``records`` (a record frame of the task)."""
        self.records_, self.gp_, self.kernel_, self.offset_, self.n_tuned_ = None, None, None, 0.0, 0
        return self.update(records) if len(records) else self

    def calibrate(self, records: Any) -> TaskAdapter:
        """Calibration is the prior's; this does nothing and returns ``self``."""
        return self

    def update(self, records: Any) -> TaskAdapter:
        """Add ``records`` (a record frame of the task) and refit the correction on all records so far."""
        self.n_updates_ += 1
        if len(records) == 0:
            return self
        frame = records if self.records_ is None else pl.concat([self.records_, records], how="diagonal_relaxed")
        self.records_ = frame.unique(subset=["config_json"], keep="last", maintain_order=True)
        ok = self.records_.filter((pl.col("status") == "ok") & pl.col("time_ms").is_not_null()
                                  & (pl.col("time_ms") > 0))
        if ok.height < self.min_records:
            return self
        residual = np.log(ok["time_ms"].to_numpy().astype(np.float64)) - self.prior.forecast(ok).log_time_mean
        self.offset_ = float(residual.mean())
        X = self._encode(ok)
        if X.shape[1] == 0 or not np.all(np.isfinite(residual)):
            self.gp_ = None
            return self
        # the kernel's hyperparameters are re-fitted when the records have grown by half since the last fit;
        # in between the GP is refitted with them held (a Cholesky factorisation, no optimisation)
        tuned = self.kernel_ is not None and ok.height < 1.5 * self.n_tuned_
        centred = residual - self.offset_
        gp = _fit_gp(X, centred, kernel=self.kernel_ if tuned else None)
        self.kernel_ = gp.kernel_
        if not tuned:
            self.n_tuned_ = ok.height
        # keep the correction only if it predicts held-out residuals better than their mean (leave one out)
        self.loo_ratio_ = _loo_mse(gp) / float(np.mean((centred * ok.height / (ok.height - 1)) ** 2) or 1e-12)
        self.gp_ = gp if self.loo_ratio_ < 1.0 else None
        return self

    # -- forecasting ----------------------------------------------------------------------------------
    def _encode(self, frame: pl.DataFrame) -> np.ndarray:
        return self.encoder_.encode([json.loads(c) for c in frame["config_json"]])

    def _correct(self, candidates: pl.DataFrame) -> tuple[np.ndarray, np.ndarray | None]:
        """The correction's mean and standard deviation (``None`` before the GP is fitted), shape (n,)."""
        n = len(candidates)
        if self.records_ is None or (self.gp_ is None and self.offset_ == 0.0):
            return np.zeros(n), None
        if self.gp_ is None:
            return np.full(n, self.offset_), None
        mean, std = self.gp_.predict(self._encode(candidates), return_std=True)
        kernel = self.gp_.kernel_
        noise = float(getattr(getattr(kernel, "k2", None), "noise_level", 0.0))
        return self.offset_ + mean, np.sqrt(np.maximum(std**2 - noise, 0.0))

    def correction(self, candidates: pl.DataFrame) -> np.ndarray:
        """Correction of the prior's log-time mean, shape (n,): 0 until :attr:`min_records` ok records."""
        return self._correct(candidates)[0]

    def uncertainty(self, candidates: pl.DataFrame) -> np.ndarray:
        """Standard deviation (ln ms) of :meth:`correction`, shape (n,), without the noise term.

        Before the correction is fitted it is the prior's own predictive scale (1 where it has none).
        """
        std = self._correct(candidates)[1]
        if std is not None:
            return std
        scale = self.prior.forecast(candidates).log_time_scale
        return np.ones(len(candidates)) if scale is None else np.asarray(scale, dtype=np.float64)

    def forecast(self, candidates: Any) -> Forecast:
        """The prior's forecast moved by :meth:`correction`, its scale widened by the correction's uncertainty.

        The log-time mean and interval are moved by the correction; the predictive scale becomes
        ``sqrt(prior scale**2 + correction sd**2)``, so a configuration far from everything measured, where the
        correction is unsure, is harder to SKIP than one next to measured ones.
        """
        base = self.prior.forecast(candidates)
        shift, std = self._correct(candidates)
        scale = base.log_time_scale
        if std is not None and scale is not None:
            scale = np.sqrt(np.asarray(scale, dtype=np.float64) ** 2 + std**2)
        return dataclasses.replace(base, log_time_mean=base.log_time_mean + shift,
                                   log_time_lower=base.log_time_lower + shift,
                                   log_time_upper=base.log_time_upper + shift, log_time_scale=scale)

    def predict_proba_faster(self, candidates_a: Any, candidates_b: Any) -> np.ndarray:
        """Probability, shape (n,), that ``a[i]`` is faster than ``b[i]``, from the corrected forecasts."""
        from scipy.special import ndtr

        fa, fb = self.forecast(candidates_a), self.forecast(candidates_b)
        sa = fa.log_time_scale if fa.log_time_scale is not None else np.ones(len(fa))
        sb = fb.log_time_scale if fb.log_time_scale is not None else np.ones(len(fb))
        return ndtr((fb.log_time_mean - fa.log_time_mean) / np.sqrt(sa**2 + sb**2))

    def decide(self, candidates: Any, incumbent_ms: Any, *, incumbent: Any = None) -> list[Decision]:
        """The prior's calibrated rule on the corrected forecasts (and the incumbent's, when given)."""
        reference = self.forecast(incumbent) if incumbent is not None else None
        return self.decide_from_forecast(self.forecast(candidates), incumbent_ms, incumbent=reference)

    def decide_from_forecast(
        self, forecast: Forecast, incumbent_ms: Any, *, incumbent: Forecast | None = None
    ) -> list[Decision]:
        """:meth:`decide` for forecasts already made by :meth:`forecast` (the incumbent's: 1 or n of them)."""
        if incumbent is not None and len(incumbent) == 1 and len(forecast) != 1:
            incumbent = _repeat(incumbent, len(forecast))
        return list(self.prior.decide_from_forecast(forecast, incumbent_ms, incumbent=incumbent))  # type: ignore[attr-defined]


def adaptable(surrogate: Surrogate) -> bool:
    """Whether :class:`TaskAdapter` can wrap ``surrogate`` (its rule applies to given forecasts)."""
    return callable(getattr(surrogate, "decide_from_forecast", None))


def _repeat(forecast: Forecast, n: int) -> Forecast:
    def rep(a: np.ndarray | None) -> np.ndarray | None:
        return None if a is None else np.repeat(np.asarray(a), n)

    return Forecast(log_time_mean=rep(forecast.log_time_mean), log_time_lower=rep(forecast.log_time_lower),
                    log_time_upper=rep(forecast.log_time_upper), coverage=forecast.coverage,
                    p_fail=rep(forecast.p_fail), log_time_scale=rep(forecast.log_time_scale))


def _loo_mse(gp: Any) -> float:
    """Mean squared leave-one-out residual of a fitted GP regressor (closed form: ``alpha_i / (K^-1)_ii``)."""
    from scipy.linalg import cho_solve

    inverse = cho_solve((gp.L_, True), np.eye(gp.L_.shape[0]))
    return float(np.mean((np.ravel(gp.alpha_) / np.diag(inverse)) ** 2))


def _fit_gp(X: np.ndarray, y: np.ndarray, kernel: Any = None) -> Any:
    """Constant x Matern(5/2, one length scale per input) + white noise, by maximum marginal likelihood.

    With ``kernel`` (a fitted kernel), its hyperparameters are kept and only the GP is refitted.
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.gaussian_process import GaussianProcessRegressor
    from sklearn.gaussian_process.kernels import ConstantKernel, Matern, WhiteKernel

    optimizer: Any = "fmin_l_bfgs_b"
    if kernel is None:
        variance = float(max(np.var(y), 1e-4))
        kernel = (ConstantKernel(variance, (1e-4, 10.0))
                  * Matern(length_scale=np.full(X.shape[1], 0.5), length_scale_bounds=(0.05, 20.0), nu=2.5)
                  + WhiteKernel(0.1 * variance, (1e-5, 1.0)))
    else:
        optimizer = None
    gp = GaussianProcessRegressor(kernel=kernel, normalize_y=False, optimizer=optimizer, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        gp.fit(X, y)
    if not math.isfinite(gp.log_marginal_likelihood_value_):
        logger.warning("the task correction's fit did not converge; its mean is used alone")
    return gp

