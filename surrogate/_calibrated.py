"""CalibratedSurrogate: what every tabular surrogate shares on top of its own regression models.

A subclass brings a point forecast of the log runtime, raw lower/upper quantiles at the nominal
``coverage``, and optionally a failure probability (:meth:`CalibratedSurrogate._raw_forecast`). With
``centering`` the subclass models learn the log time minus the task's level and
:class:`~kernelcast.surrogate.level.TaskLevelModel` adds the level back. This base class turns them into the
full :class:`~kernelcast.surrogate._base.Surrogate` interface:

- :meth:`~CalibratedSurrogate.calibrate` (held-out records, never the training ones), or
  :meth:`~CalibratedSurrogate.cross_calibrate` (out-of-group forecasts of the training records), computes
  1. the CQR offset that makes ``[lower - q, upper + q]`` a valid ``coverage`` interval;
  2. conformal predictive distributions of normalised residuals, against a runtime
     (``(y - mean) / scale``) and against a known configuration of the same task (the gap between two
     forecasts), from which speedup-bin probabilities and ``P(faster than the incumbent)`` are read;
  3. a pairwise calibrator (isotonic or temperature) on within-task pairs, ties within noise excluded;
  4. the SKIP thresholds of :meth:`~CalibratedSurrogate.decide`, by conformal risk control.
- :meth:`~CalibratedSurrogate.save` / :meth:`~CalibratedSurrogate.load` write JSON metadata next to the
  subclass's model files, never pickle.

The decision rule and its guarantee
-----------------------------------
For a candidate ``x`` and the incumbent of its task, the score is how many predictive scales slower than
the incumbent the candidate is forecast to be: ``s = (mean(x) - ln t_inc) / scale(x)`` when only the
incumbent's runtime ``t_inc`` is known, or ``s = (mean(x) - mean(inc)) / sqrt(scale(x)**2 + scale(inc)**2)``
when its configuration is known too (``decide(..., incumbent=row)``; this form cancels any error the model
makes on the task as a whole, e.g. on an unseen GPU). ``decide`` returns SKIP when ``s > lam``, MEASURE
otherwise; each form has its own ``lam``, chosen on calibration data by conformal risk control
(:func:`~kernelcast.surrogate.conformal.risk_control_threshold`) among calibration (candidate, incumbent)
pairs in which the candidate *would beat* the incumbent (measured strictly faster).

The exchangeable unit of that control (``CalibrationState.skip_unit``) is the *task* wherever the calibration
data has at least ``1/skip_error_rate - 1`` tasks with such pairs: the loss of a task is the fraction of its
improving pairs that score above ``lam``, and ``lam`` is the lowest threshold at which the tasks' losses
plus one sum to at most ``skip_error_rate * (n_tasks + 1)``. With fewer tasks (e.g. a handful of kernels on
a few GPUs) the unit falls back to the *pair*: at most a fraction ``skip_error_rate`` of the improving pairs
may score above ``lam``, with the ``(n + 1)`` correction.

Guarantee: with task units, for a new task exchangeable with the calibration tasks, the expected fraction
of its would-be improvers that the rule skips is at most ``skip_error_rate``; with pair units, for a new
(candidate, incumbent) pair exchangeable with the calibration pairs,
``P(SKIP | candidate beats incumbent) <= alpha``. Both hold in expectation over the draw of the calibration
data. Tasks are the honest unit: pairs of one task share its forecast errors, so pair units overstate
how much evidence there is, and a new task of another kind than the calibration ones is where the realised
error drifts.

Assumptions, stated plainly: (1) exchangeability — the calibration records come from the same kind of
tasks (kernels, shapes, GPUs) as the candidates being screened; a held-out GPU or kernel family breaks it
unless calibration is done across such groups (:meth:`cross_calibrate`, which assumes the new group is
exchangeable with the training groups), and the evaluation suite measures how far the realised error then
drifts; (2) the incumbent is drawn as in calibration: the runtime of a record at a uniformly random rank
among the best ``incumbent_top_fraction`` of its task (:func:`~kernelcast.surrogate.tasks.incumbent_pairs`);
(3) the bound holds on average over draws of tasks: a single draw of a few unusual tasks can land above
it, and the realised error pooled over pairs weighs large tasks more than the task-unit guarantee does. With
fewer than ``max(min_calibration_pairs, 1/skip_error_rate - 1)`` improving pairs no threshold is
trustworthy and every decision is DEFER, as it is before :meth:`calibrate`.
"""

from __future__ import annotations

import abc
import dataclasses
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import polars as pl
from scipy.special import ndtri
from sklearn.base import BaseEstimator

from kernelcast.exceptions import InvalidParameterError, NotFittedError, invalid_choice
from kernelcast.surrogate import _artifact
from kernelcast.surrogate._base import CANDIDATE_COLUMNS, TASK_COLUMNS, Decision, Forecast, Surrogate
from kernelcast.surrogate.bins import bin_probabilities
from kernelcast.surrogate.conformal import ResidualDistribution, cqr_offset, risk_control_threshold
from kernelcast.surrogate.features import COMPILED_COLUMNS, SCALE_FEATURES, Featurizer, task_groups
from kernelcast.surrogate.level import TaskLevelModel
from kernelcast.surrogate.pairwise import PAIR_CALIBRATION_METHODS, PairCalibrator, uncalibrated_proba
from kernelcast.surrogate.tasks import (
    incumbent_pairs,
    is_tie,
    log_time,
    ok_mask,
    relative_noise,
    require_candidates,
    require_records,
    task_ids,
    task_labels,
    within_task_pairs,
)

MIN_SCALE = 1e-3
"""Smallest predictive scale of a log runtime (0.1%): keeps standardised gaps finite."""

DEVICE_FEATURE_MODES: tuple[str, ...] = ("architecture", "all")
"""Allowed values of a surrogate's ``device_features``."""

MIN_PAIRS_FOR_PAIR_CALIBRATION = 50
"""Fewer non-tied calibration pairs than this leave pairwise probabilities uncalibrated (``Phi(z)``)."""

KEEP_COLUMNS: tuple[str, ...] = (
    *CANDIDATE_COLUMNS, "status", "time_ms", "cv", "rse_median", "n_samples", "n_regs", "n_spills", "shared_bytes",
    "num_warps", "num_stages",
)
"""Columns of the training records a surrogate keeps for :meth:`CalibratedSurrogate.update`."""


@dataclasses.dataclass(frozen=True)
class RawForecast:
    """A subclass's uncalibrated forecasts, each of shape (n,): log-time mean, raw quantiles, failure probability."""

    mean: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    p_fail: np.ndarray | None


@dataclasses.dataclass(frozen=True)
class CalibrationState:
    """What :meth:`CalibratedSurrogate.calibrate` learned (see the module docstring).

    Attributes
    ----------
    method : str
        ``"split"`` (held-out records) or ``"cross"`` (out-of-group forecasts, :meth:`cross_calibrate`).
    n_records : int
        Calibration records with a valid runtime.
    interval_offset : float
        CQR offset ``q`` (``inf`` with too few records).
    residuals : ResidualDistribution
        Normalised residuals ``(y - mean) / scale``: the predictive distribution against a measured runtime.
    pair_residuals : ResidualDistribution
        Normalised within-task pair residuals ``((y_a - y_b) - (mean_a - mean_b)) / sqrt(scale_a**2 +
        scale_b**2)``, symmetrised: the predictive distribution of a log-time gap to a known configuration.
    pair_calibrator : PairCalibrator or None
        ``None`` with fewer than :data:`MIN_PAIRS_FOR_PAIR_CALIBRATION` non-tied pairs.
    n_pairs : int
        Within-task, non-tied pairs seen.
    skip_threshold : float or None
        ``lam`` of the SKIP rule against a runtime alone; ``None`` means every such decision is DEFER.
    skip_threshold_relative : float or None
        ``lam`` of the SKIP rule against a known incumbent configuration.
    n_improver_pairs, n_incumbent_pairs : int
        Calibration (candidate, incumbent) pairs in which the candidate beats the incumbent, and all of them.
    skip_unit : {"task", "pair"}
        The exchangeable unit of the SKIP thresholds' risk control (see the module docstring); ``"pair"`` for
        models saved before it was recorded.
    n_improver_tasks : int
        Calibration tasks with at least one improving pair.
    """

    method: str
    n_records: int
    interval_offset: float
    residuals: ResidualDistribution
    pair_residuals: ResidualDistribution
    pair_calibrator: PairCalibrator | None
    n_pairs: int
    skip_threshold: float | None
    skip_threshold_relative: float | None
    n_improver_pairs: int
    n_incumbent_pairs: int
    skip_unit: str = "pair"
    n_improver_tasks: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe state."""
        return {
            "method": self.method,
            "n_records": self.n_records,
            "interval_offset": self.interval_offset,
            "residuals": self.residuals.to_dict(),
            "pair_residuals": self.pair_residuals.to_dict(),
            "pair_calibrator": self.pair_calibrator.to_dict() if self.pair_calibrator is not None else None,
            "n_pairs": self.n_pairs,
            "skip_threshold": self.skip_threshold,
            "skip_threshold_relative": self.skip_threshold_relative,
            "n_improver_pairs": self.n_improver_pairs,
            "n_incumbent_pairs": self.n_incumbent_pairs,
            "skip_unit": self.skip_unit,
            "n_improver_tasks": self.n_improver_tasks,
        }

    @classmethod
    def from_dict(cls, state: Mapping[str, Any]) -> CalibrationState:
        """Inverse of :meth:`to_dict` (after :func:`~kernelcast.surrogate._artifact.json_safe`)."""

        def threshold(key: str) -> float | None:
            value = state.get(key)
            return None if value is None else _artifact.float_from_json(value)

        return cls(
            method=str(state["method"]),
            n_records=int(state["n_records"]),
            interval_offset=_artifact.float_from_json(state["interval_offset"]),
            residuals=ResidualDistribution.from_dict(state["residuals"]),
            pair_residuals=ResidualDistribution.from_dict(state["pair_residuals"]),
            pair_calibrator=(
                PairCalibrator.from_dict(state["pair_calibrator"]) if state.get("pair_calibrator") else None
            ),
            n_pairs=int(state["n_pairs"]),
            skip_threshold=threshold("skip_threshold"),
            skip_threshold_relative=threshold("skip_threshold_relative"),
            n_improver_pairs=int(state["n_improver_pairs"]),
            n_incumbent_pairs=int(state["n_incumbent_pairs"]),
            skip_unit=str(state.get("skip_unit", "pair")),
            n_improver_tasks=int(state.get("n_improver_tasks", 0)),
        )


def _as_incumbents(incumbent_ms: float | Sequence[float] | np.ndarray, n: int, what: str) -> np.ndarray:
    values = np.broadcast_to(np.asarray(incumbent_ms, dtype=np.float64), (n,)) if np.ndim(incumbent_ms) == 0 else (
        np.asarray(incumbent_ms, dtype=np.float64))
    if values.shape != (n,):
        raise InvalidParameterError(
            f"The {what!r} parameter must be one runtime or one per candidate ({n}). Got shape {values.shape} instead."
        )
    if not np.all(np.isfinite(values) & (values > 0)):
        raise InvalidParameterError(f"The {what!r} parameter must hold positive finite runtimes in ms.")
    return values


def _scale_of(forecast: Forecast) -> np.ndarray:
    if forecast.log_time_scale is not None:
        return forecast.log_time_scale
    return np.ones(len(forecast))


def _broadcast(forecast: Forecast, n: int) -> Forecast:
    def rep(a: np.ndarray | None) -> np.ndarray | None:
        return None if a is None else np.repeat(a, n)

    return Forecast(log_time_mean=np.repeat(forecast.log_time_mean, n), log_time_lower=np.repeat(
        forecast.log_time_lower, n), log_time_upper=np.repeat(forecast.log_time_upper, n), coverage=forecast.coverage,
        p_fail=rep(forecast.p_fail), log_time_scale=rep(forecast.log_time_scale))


def _check_same_task(a: pl.DataFrame, b: pl.DataFrame) -> None:
    same = np.ones(a.height, dtype=bool)
    for col in TASK_COLUMNS:
        same &= (a[col] == b[col]).fill_null(False).to_numpy()
    if not same.all():
        raise InvalidParameterError(
            f"Runtimes are compared only within a task ({', '.join(TASK_COLUMNS)}); pair "
            f"{int(np.flatnonzero(~same)[0])} spans two tasks."
        )


class CalibratedSurrogate(Surrogate, BaseEstimator):
    """Shared calibration, forecasting, decisions and persistence (see the module docstring).

    Subclasses define ``__init__`` with keyword-only hyperparameters that include the common ones
    (``coverage``, ``skip_error_rate``, ``pair_calibration``, ``min_calibration_pairs``,
    ``incumbent_top_fraction``, ``random_state``), and implement :meth:`_fit_models`,
    :meth:`_raw_forecast`, :meth:`_save_models` and :meth:`_load_models`.
    """

    model_name: ClassVar[str] = "base"
    """Name under which the surrogate is registered (``kernelcast train --model NAME``)."""

    _saved_before: ClassVar[dict[str, Any]] = {}
    """Values of hyperparameters added later, for models saved without them (how those were trained)."""

    coverage: float
    skip_error_rate: float
    pair_calibration: str
    min_calibration_pairs: int
    incumbent_top_fraction: float
    random_state: int | None

    # -- subclass hooks -----------------------------------------------------------------------------
    @abc.abstractmethod
    def _fit_models(self, X_ok: np.ndarray, y_ok: np.ndarray, X_all: np.ndarray, failed: np.ndarray,
                    sample_weight: np.ndarray | None = None, groups: np.ndarray | None = None) -> None:
        """Fit the models: log-time ``y_ok`` on ``X_ok`` (ok records), ``failed`` (bool) on ``X_all``.

        ``X_all`` is built without compiled metadata (see :meth:`_raw_forecast`).

        With ``centering``, ``y_ok`` is the log time minus the task level. ``sample_weight`` (shape of
        ``y_ok``) weighs the ok records for the log-time models (:meth:`_record_weights`); None: equal weights.
        ``groups`` (shape of ``y_ok``) is each ok record's task id, for models that learn within-task order.
        """

    def _record_weights(self, records: pl.DataFrame, ok: np.ndarray) -> np.ndarray | None:
        """Weights of the ``ok`` rows of ``records`` for the log-time models (None: every record the same)."""
        return None

    @abc.abstractmethod
    def _raw_forecast(self, X: np.ndarray, X_fail: np.ndarray) -> RawForecast:
        """Uncalibrated forecasts of the subclass models, before the task level.

        ``X`` (shape (n, d)) is the matrix of the log-time models, ``X_fail`` that of the failure model (the
        same unless ``use_compiled_metadata``: compiled metadata never feeds the failure model, because a
        configuration rejected before compiling has none, which would give the failure away).
        """

    @abc.abstractmethod
    def _save_models(self, path: Path) -> dict[str, Any]:
        """Write the model files into ``path``; return JSON-safe state for ``model.json``."""

    @abc.abstractmethod
    def _load_models(self, path: Path, state: Mapping[str, Any]) -> None:
        """Read back what :meth:`_save_models` wrote."""

    # -- validation ---------------------------------------------------------------------------------
    def _validate_common_params(self) -> None:
        owner = type(self).__name__
        for name in ("coverage", "skip_error_rate"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and 0.0 < value < 1.0):
                raise InvalidParameterError(
                    f"The {name!r} parameter of {owner} must be a float in (0, 1). Got {value!r} instead."
                )
        if self.pair_calibration not in PAIR_CALIBRATION_METHODS:
            allowed = ", ".join(map(repr, PAIR_CALIBRATION_METHODS))
            raise InvalidParameterError(
                f"The 'pair_calibration' parameter of {owner} must be one of {allowed}. "
                f"Got {self.pair_calibration!r} instead."
            )
        if not (isinstance(self.min_calibration_pairs, int) and self.min_calibration_pairs >= 1):
            raise InvalidParameterError(
                f"The 'min_calibration_pairs' parameter of {owner} must be a positive int. "
                f"Got {self.min_calibration_pairs!r} instead."
            )
        device_features = getattr(self, "device_features", "all")
        if device_features not in DEVICE_FEATURE_MODES:
            raise invalid_choice("device_features", owner, device_features, DEVICE_FEATURE_MODES)
        if not (isinstance(self.incumbent_top_fraction, int | float) and 0.0 < self.incumbent_top_fraction <= 1.0):
            raise InvalidParameterError(
                f"The 'incumbent_top_fraction' parameter of {owner} must be a float in (0, 1]. "
                f"Got {self.incumbent_top_fraction!r} instead."
            )

    def _validate_params(self) -> None:
        """Check every hyperparameter (subclasses extend)."""
        self._validate_common_params()

    def _check_fitted(self) -> None:
        if not hasattr(self, "featurizer_"):
            raise NotFittedError(
                f"This {type(self).__name__} instance is not fitted yet. Call 'fit' with a record frame before "
                "forecasting."
            )

    @property
    def is_calibrated(self) -> bool:
        """Whether :meth:`calibrate` has run since the last :meth:`fit`."""
        return getattr(self, "calibration_", None) is not None

    # -- fitting ------------------------------------------------------------------------------------
    def fit(
        self,
        records: pl.DataFrame,
        y: None = None,
        *,
        sources: Mapping[str, str] | pl.DataFrame | None = None,
        data_path: str | os.PathLike[str] | None = None,
    ) -> CalibratedSurrogate:
        """Learn from a record frame (failures included): log-time models on ``ok`` records, p_fail on all.

        Parameters
        ----------
        records : polars.DataFrame
            Records in the store's row layout.
        y : None
            Unused: the target is ``ln(time_ms)`` of the records.
        sources : mapping or DataFrame, optional
            Kernel source texts by ``source_hash`` (``Store.sources()``), for source features.
        data_path : path-like, optional
            The dataset the records came from, saved in the model's training-data identity.

        Returns
        -------
        self
        """
        self._validate_params()
        require_records(records, "The training records")
        if y is not None:
            raise InvalidParameterError(
                f"{type(self).__name__}.fit takes its target from the records' time_ms; pass y=None."
            )
        ok = ok_mask(records)
        if ok.sum() < 2:
            raise InvalidParameterError(
                f"{type(self).__name__}.fit needs at least 2 records with status 'ok' and a runtime. "
                f"Got {int(ok.sum())}."
            )
        self.featurizer_ = Featurizer().fit(records, sources=sources)
        X, X_fail = self._feature_matrices(records)
        y = log_time(records)
        self.level_model_ = None
        if getattr(self, "centering", False):
            family, roofline = self._level_inputs(X)
            self.level_model_ = TaskLevelModel().fit(
                np.asarray(task_labels(records))[ok], family[ok], roofline[ok], y[ok]
            )
            y = y - self.task_level(records, X)
        X_model = self._model_matrix(X)
        self._fit_models(X_model[ok], y[ok], self._model_matrix(X_fail), ~ok,
                         sample_weight=self._record_weights(records, ok), groups=task_ids(records)[ok])
        self.n_features_in_ = X.shape[1]
        self.feature_names_ = list(self.featurizer_.feature_names_)
        self.training_data_ = _artifact.training_identity(records, data_path)
        self.training_records_ = records.select([c for c in KEEP_COLUMNS if c in records.columns])
        self.calibration_: CalibrationState | None = None
        return self

    def _level_inputs(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Family names and roofline times (ms) of the rows of a feature matrix."""
        names = self.featurizer_.feature_names_
        codes = X[:, names.index("family")]
        vocabulary = np.array(self.featurizer_.families_ + ["?"], dtype=object)
        family = vocabulary[np.where(np.isfinite(codes), codes, len(vocabulary) - 1).astype(np.int64)]
        return family.astype(str), X[:, names.index("derived.roofline_ms")]

    def task_level(self, frame: pl.DataFrame, X: np.ndarray) -> np.ndarray:
        """Level (mean log time, shape (n,)) of each row's task, computed once per distinct task."""
        tasks, codes, first = task_groups(frame, TASK_COLUMNS)
        family, roofline = self._level_inputs(X[first])
        labels = np.array(["|".join(t) for t in tasks], dtype=object).astype(str)
        levels = self.level_model_.predict(labels, family, roofline)
        return np.full(codes.shape[0], levels[0]) if levels.size == 1 else levels[codes]

    def _model_matrix(self, X: np.ndarray, *, copy: bool = True) -> np.ndarray:
        """The matrix the subclass models see: GPU-scale features blanked with ``device_features="architecture"``.

        ``copy=False`` blanks them in ``X`` itself (for a matrix nothing else reads afterwards).
        """
        if getattr(self, "device_features", "all") != "architecture":
            return X
        names = self.featurizer_.feature_names_
        if copy:
            X = X.copy()
        X[:, [names.index(n) for n in SCALE_FEATURES if n in names]] = np.nan
        return X

    def _feature_matrices(self, frame: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """Feature matrices of the log-time models and of the failure model (see :meth:`_raw_forecast`).

        Without ``use_compiled_metadata`` the compiled-metadata columns are dropped before featurizing, so a
        candidate is described the same way whether or not it has been compiled yet.
        """
        bare = frame.drop([c for c in COMPILED_COLUMNS if c in frame.columns])
        X_fail = self.featurizer_.transform(bare)
        if getattr(self, "use_compiled_metadata", False):
            return self.featurizer_.transform(frame), X_fail
        return X_fail, X_fail

    def _predict_raw(self, frame: pl.DataFrame) -> RawForecast:
        """Uncalibrated forecasts of a candidate frame: the subclass models plus the task level, if any."""
        X, X_fail = self._feature_matrices(frame)
        level = self.task_level(frame, X) if getattr(self, "level_model_", None) is not None else None
        X_model = self._model_matrix(X, copy=False)  # fresh matrices: blank the scale features in place
        raw = self._raw_forecast(X_model, X_model if X_fail is X else self._model_matrix(X_fail, copy=False))
        if level is None:
            return raw
        return RawForecast(mean=raw.mean + level, lower=raw.lower + level, upper=raw.upper + level, p_fail=raw.p_fail)

    def calibrate(self, records: pl.DataFrame) -> CalibratedSurrogate:
        """Calibrate intervals, pairwise probabilities and the SKIP thresholds on held-out ``records``.

        The records must not overlap the training records (their forecasts would be optimistic); with
        nothing to hold out, use :meth:`cross_calibrate`.

        Returns
        -------
        self
        """
        self._check_fitted()
        require_records(records, "The calibration records")
        frame = records.filter(pl.Series(ok_mask(records)))
        raw = self._predict_raw(frame) if frame.height else None
        self.calibration_ = self._calibration_from_raw(frame, raw, method="split")
        return self

    def cross_calibrate(
        self,
        records: pl.DataFrame,
        groups: Sequence[Any] | np.ndarray,
        *,
        sources: Mapping[str, str] | pl.DataFrame | None = None,
        max_folds: int = 5,
    ) -> CalibratedSurrogate:
        """Calibrate on out-of-group forecasts of the training records themselves (cross-conformal).

        The groups (e.g. GPUs, or problem shapes) are dealt into at most ``max_folds`` folds; for each fold a
        clone with the same hyperparameters is fitted on the other folds and forecasts the fold. The
        pooled out-of-fold forecasts then calibrate this model, fitted on all of ``records``, exactly as
        :meth:`calibrate` would. This measures errors on *unseen groups*, so the guarantees carry over to
        a new group that is exchangeable with the training groups (a new GPU like the training GPUs);
        as with CV+ (Barber et al., 2021) the finite-sample coverage guarantee weakens to ``1 - 2 alpha``
        in the worst case, and is usually close to ``1 - alpha``.

        Parameters
        ----------
        records : polars.DataFrame
            The records this surrogate was fitted on (checked by their identity hash).
        groups : array-like of shape (n,)
            Group label of each record; at least two distinct groups.
        sources : mapping or DataFrame, optional
            Source texts, as for :meth:`fit`.
        max_folds : int
            Most folds.

        Returns
        -------
        self
        """
        from sklearn.base import clone

        self._check_fitted()
        require_records(records, "The training records")
        identity = _artifact.training_identity(records, None)["key_sha256"]
        if identity != self.training_data_["key_sha256"]:
            raise InvalidParameterError(
                f"cross_calibrate needs the records this {type(self).__name__} was fitted on (key hash "
                f"{self.training_data_['key_sha256'][:12]}); got records with key hash {identity[:12]}."
            )
        labels = np.asarray(groups).astype(str)
        if labels.shape != (records.height,):
            raise InvalidParameterError(
                f"groups must hold one label per record ({records.height}). Got shape {labels.shape} instead."
            )
        unique = np.unique(labels)
        if unique.size < 2:
            raise InvalidParameterError("cross_calibrate needs at least two groups; use calibrate on held-out records.")
        seed = self.random_state if isinstance(self.random_state, int) else 0
        shuffled = np.random.default_rng(seed).permutation(unique)
        n_folds = min(max_folds, unique.size)
        fold_of_group = {g: i % n_folds for i, g in enumerate(shuffled)}
        fold = np.array([fold_of_group[g] for g in labels])
        ok = ok_mask(records)
        mean = np.full(records.height, np.nan)
        lower = np.full(records.height, np.nan)
        upper = np.full(records.height, np.nan)
        for k in range(n_folds):
            inside = fold == k
            train = records.filter(pl.Series(~inside))
            if ok_mask(train).sum() < 2:
                continue
            member = clone(self)
            if "compiled_inference" in member.get_params():  # fold models forecast once: not worth compiling
                member.set_params(compiled_inference=False)
            member.fit(train, sources=sources)
            target = inside & ok
            if not target.any():
                continue
            raw = member._predict_raw(records.filter(pl.Series(target)))
            mean[target], lower[target], upper[target] = raw.mean, raw.lower, raw.upper
        have = ok & np.isfinite(mean)
        frame = records.filter(pl.Series(have))
        raw_all = RawForecast(mean=mean[have], lower=lower[have], upper=upper[have], p_fail=None)
        self.calibration_ = self._calibration_from_raw(frame, raw_all if frame.height else None, method="cross")
        return self

    def _calibration_from_raw(self, frame: pl.DataFrame, raw: RawForecast | None, *, method: str) -> CalibrationState:
        """Everything :meth:`calibrate` learns, from ``ok`` records and their raw forecasts."""
        if raw is None or frame.height == 0:
            empty = np.zeros(0)
            frame = frame.head(0)
            raw = RawForecast(empty, empty, empty, None)
        y = log_time(frame)
        offset = cqr_offset(raw.lower, raw.upper, y, self.coverage) if frame.height else math.inf
        scale = self._scale(raw)
        residuals = ResidualDistribution.from_residuals((y - raw.mean) / scale)

        seed = self.random_state if isinstance(self.random_state, int) else 0
        pairs = within_task_pairs(frame, seed=seed, exclude_ties=False)
        gap_sd = np.sqrt(scale[pairs.a] ** 2 + scale[pairs.b] ** 2)
        pair_resid = ((y[pairs.a] - y[pairs.b]) - (raw.mean[pairs.a] - raw.mean[pairs.b])) / gap_sd
        pair_residuals = ResidualDistribution.from_residuals(np.concatenate([pair_resid, -pair_resid]))
        noise = relative_noise(frame)
        untied = ~is_tie(y[pairs.a], y[pairs.b], noise[pairs.a], noise[pairs.b])
        calibrator = None
        if untied.sum() >= MIN_PAIRS_FOR_PAIR_CALIBRATION:
            z = self._pair_score(raw.mean, scale, pairs.a[untied], pairs.b[untied])
            calibrator = PairCalibrator(method=self.pair_calibration).fit(z, pairs.a_faster[untied])

        inc = incumbent_pairs(frame, incumbent_top_fraction=self.incumbent_top_fraction, seed=seed + 1)
        absolute = (raw.mean[inc.candidate] - np.log(inc.incumbent_ms)) / scale[inc.candidate]
        relative = self._pair_score(raw.mean, scale, inc.incumbent, inc.candidate)
        n_improvers = int(inc.improver.sum())
        need = math.ceil(1.0 / self.skip_error_rate) - 1
        improver_tasks = inc.task[inc.improver]
        n_tasks = int(np.unique(improver_tasks).size)
        unit = "task" if n_tasks >= need else "pair"
        units = improver_tasks if unit == "task" else None
        enough = n_improvers >= max(self.min_calibration_pairs, need)

        def threshold(scores: np.ndarray) -> float | None:
            return risk_control_threshold(scores[inc.improver], self.skip_error_rate, units) if enough else None

        return CalibrationState(
            method=method,
            n_records=frame.height,
            interval_offset=offset,
            residuals=residuals,
            pair_residuals=pair_residuals,
            pair_calibrator=calibrator,
            n_pairs=int(untied.sum()),
            skip_threshold=threshold(absolute),
            skip_threshold_relative=threshold(relative),
            n_improver_pairs=n_improvers,
            n_incumbent_pairs=len(inc),
            skip_unit=unit,
            n_improver_tasks=n_tasks,
        )

    def update(self, records: pl.DataFrame) -> CalibratedSurrogate:
        """Refit on the training records plus ``records``, keeping the current calibration.

        The kept calibration was computed for the previous model; re-run :meth:`calibrate` on fresh
        held-out records to restore the guarantees exactly.
        """
        self._check_fitted()
        require_records(records, "The new records")
        old = getattr(self, "training_records_", None)
        if old is None:
            raise InvalidParameterError(
                f"This {type(self).__name__} was loaded from disk without its training records; fit it again "
                "on the full record frame instead of updating it."
            )
        calibration = self.calibration_
        identity_path = self.training_data_.get("data_path")
        new = records.select([c for c in old.columns if c in records.columns])
        combined = pl.concat([old, new], how="diagonal_relaxed").unique(
            subset=["source_hash", "config_json", "problem_json", "dtype", "device"], keep="last", maintain_order=True
        )
        self.fit(combined, data_path=identity_path)
        self.calibration_ = calibration
        return self

    # -- forecasting --------------------------------------------------------------------------------
    def _scale(self, raw: RawForecast) -> np.ndarray:
        """Predictive scale of the log time: raw interval half-width over the normal quantile of ``coverage``."""
        z = float(ndtri(0.5 + self.coverage / 2.0))
        return np.maximum((raw.upper - raw.lower) / (2.0 * z), MIN_SCALE)

    @staticmethod
    def _pair_score(mean: np.ndarray, scale: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Standardised gap ``(mean_b - mean_a) / sqrt(scale_a**2 + scale_b**2)``: positive when a is faster."""
        return (mean[b] - mean[a]) / np.sqrt(scale[a] ** 2 + scale[b] ** 2)

    def forecast(self, candidates: pl.DataFrame) -> Forecast:
        """Forecast a candidate frame: log-time mean, interval (``-inf``/``inf`` before calibrate), p_fail.

        Returns
        -------
        Forecast
            Arrays of shape (n,), natural log of milliseconds.
        """
        self._check_fitted()
        require_candidates(candidates)
        return self._forecast_from_raw(self._predict_raw(candidates))

    def _forecast_from_raw(self, raw: RawForecast) -> Forecast:
        scale = self._scale(raw)
        q = self.calibration_.interval_offset if self.is_calibrated else math.inf
        if math.isinf(q):
            lower = np.full(raw.mean.shape, -np.inf)
            upper = np.full(raw.mean.shape, np.inf)
        else:
            lower, upper = raw.lower - q, raw.upper + q
            crossed = lower > upper  # a negative offset can cross a narrow raw interval: collapse it
            mid = 0.5 * (lower + upper)
            lower, upper = np.where(crossed, mid, lower), np.where(crossed, mid, upper)
        return Forecast(
            log_time_mean=raw.mean,
            log_time_lower=lower,
            log_time_upper=upper,
            coverage=self.coverage,
            p_fail=raw.p_fail,
            log_time_scale=scale,
        )

    def _forecast_of(self, frame: pl.DataFrame | None, n: int, what: str) -> Forecast | None:
        """Forecast of an optional companion frame (one row, broadcast to ``n``, or ``n`` rows)."""
        if frame is None:
            return None
        require_candidates(frame, f"The frame {what}")
        if frame.height not in (1, n):
            raise InvalidParameterError(f"The frame {what} must have 1 or {n} rows. Got {frame.height}.")
        fc = self.forecast(frame)
        if frame.height == 1 and n != 1:
            fc = _broadcast(fc, n)
        return fc

    def pairwise_proba(
        self, forecast: Forecast, a: np.ndarray, b: np.ndarray, *, calibrated: bool = True
    ) -> np.ndarray:
        """``P(candidate a[i] faster than b[i])`` from one :class:`Forecast` and index arrays (shape (m,)).

        The caller guarantees that each pair lies within one task. Uncalibrated (``Phi(z)``) before
        :meth:`calibrate` or with ``calibrated=False``.
        """
        self._check_fitted()
        z = self._pair_score(forecast.log_time_mean, _scale_of(forecast), np.asarray(a), np.asarray(b))
        if calibrated and self.is_calibrated and self.calibration_.pair_calibrator is not None:
            return self.calibration_.pair_calibrator.predict_proba(z)
        return uncalibrated_proba(z)

    def predict_proba_faster(
        self, candidates_a: pl.DataFrame, candidates_b: pl.DataFrame, *, calibrated: bool = True
    ) -> np.ndarray:
        """Calibrated probability, shape (n,), that ``candidates_a[i]`` is faster than ``candidates_b[i]``.

        Raises
        ------
        InvalidParameterError
            If the frames differ in length or a pair spans two tasks.
        """
        self._check_fitted()
        require_candidates(candidates_a, "The frame candidates_a")
        require_candidates(candidates_b, "The frame candidates_b")
        if candidates_a.height != candidates_b.height:
            raise InvalidParameterError(
                f"candidates_a and candidates_b must have one row per pair. Got {candidates_a.height} and "
                f"{candidates_b.height} rows."
            )
        _check_same_task(candidates_a, candidates_b)
        both = pl.concat([candidates_a.select(CANDIDATE_COLUMNS), candidates_b.select(CANDIDATE_COLUMNS)])
        fc = self.forecast(both)
        n = candidates_a.height
        return self.pairwise_proba(fc, np.arange(n), np.arange(n, 2 * n), calibrated=calibrated)

    def _gap_cdf(self, forecast: Forecast, reference: Forecast | None) -> Any:
        """``v -> P(ln t - anchor <= v)`` per candidate: anchor 0 (absolute) or the reference's log time."""
        scale = _scale_of(forecast)
        state = self.calibration_ if self.is_calibrated else None
        if reference is None:
            center, sd = forecast.log_time_mean, scale
            dist = state.residuals if state is not None and state.residuals.n else None
        else:
            center = forecast.log_time_mean - reference.log_time_mean
            sd = np.sqrt(scale**2 + _scale_of(reference) ** 2)
            dist = state.pair_residuals if state is not None and state.pair_residuals.n else None
        if dist is None:
            from scipy.special import ndtr

            return lambda v: ndtr((v - center) / sd)
        return lambda v: dist.cdf((v - center) / sd)

    def proba_better_from_forecast(
        self, forecast: Forecast, incumbent_ms: float | Sequence[float], *, incumbent: Forecast | None = None
    ) -> np.ndarray:
        """``P(time < incumbent)`` per candidate, shape (n,), from the conformal predictive distribution.

        With the incumbent's forecast (its configuration is known) the gap to it is forecast, which
        cancels any bias the model has on the whole task; otherwise the runtime ``incumbent_ms`` is used.
        """
        inc = _as_incumbents(incumbent_ms, len(forecast), "incumbent_ms")
        if incumbent is not None:
            return self._gap_cdf(forecast, incumbent)(np.zeros(len(forecast)))
        return self._gap_cdf(forecast, None)(np.log(inc))

    def predict_proba_better(
        self, candidates: pl.DataFrame, incumbent_ms: float | Sequence[float], *, incumbent: pl.DataFrame | None = None
    ) -> np.ndarray:
        """Probability, shape (n,), that each candidate runs faster than the incumbent (``incumbent_ms``).

        ``incumbent``: optional candidate frame of the incumbent configuration (1 or n rows).
        """
        fc = self.forecast(candidates)
        return self.proba_better_from_forecast(fc, incumbent_ms, incumbent=self._forecast_of(
            incumbent, len(fc), "incumbent"))

    def bin_proba_from_forecast(
        self, forecast: Forecast, reference_ms: float | Sequence[float], *, reference: Forecast | None = None
    ) -> np.ndarray:
        """Speedup-bin probabilities, shape (n, 8), of ``reference / time`` (see :mod:`~kernelcast.surrogate.bins`).

        With the reference's forecast the log-time gap to it is forecast (see :meth:`proba_better_from_forecast`).
        """
        ref = _as_incumbents(reference_ms, len(forecast), "reference_ms")
        if reference is not None:
            return bin_probabilities(self._gap_cdf(forecast, reference), np.zeros(len(forecast)))
        return bin_probabilities(self._gap_cdf(forecast, None), np.log(ref))

    def predict_bin_proba(
        self, candidates: pl.DataFrame, reference_ms: float | Sequence[float], *, reference: pl.DataFrame | None = None
    ) -> np.ndarray:
        """Probabilities, shape (n, 8), of the eight half-octave speedup bins of ``reference_ms / time``.

        ``reference``: optional candidate frame of the reference configuration (1 or n rows).
        """
        fc = self.forecast(candidates)
        return self.bin_proba_from_forecast(fc, reference_ms, reference=self._forecast_of(
            reference, len(fc), "reference"))

    # -- deciding -----------------------------------------------------------------------------------
    def decision_scores(
        self, forecast: Forecast, incumbent_ms: float | Sequence[float], *, incumbent: Forecast | None = None
    ) -> np.ndarray:
        """Scores, shape (n,): how many predictive scales slower than the incumbent; SKIP above the threshold.

        ``(mean - ln incumbent_ms) / scale``, or with the incumbent's forecast
        ``(mean - mean_inc) / sqrt(scale**2 + scale_inc**2)``.
        """
        inc = _as_incumbents(incumbent_ms, len(forecast), "incumbent_ms")
        scale = _scale_of(forecast)
        if incumbent is not None:
            return (forecast.log_time_mean - incumbent.log_time_mean) / np.sqrt(scale**2 + _scale_of(incumbent) ** 2)
        return (forecast.log_time_mean - np.log(inc)) / scale

    def decide_from_forecast(
        self, forecast: Forecast, incumbent_ms: float | Sequence[float], *, incumbent: Forecast | None = None
    ) -> list[Decision]:
        """:meth:`decide` for a :class:`Forecast` already computed (and the incumbent's, if known)."""
        self._check_fitted()
        scores = self.decision_scores(forecast, incumbent_ms, incumbent=incumbent)
        threshold = None
        if self.is_calibrated:
            state = self.calibration_
            threshold = state.skip_threshold_relative if incumbent is not None else state.skip_threshold
        if threshold is None:
            return [Decision.DEFER] * len(forecast)
        return [Decision.SKIP if s > threshold else Decision.MEASURE for s in scores.tolist()]

    def decide(
        self,
        candidates: pl.DataFrame,
        incumbent_ms: float | Sequence[float],
        *,
        incumbent: pl.DataFrame | None = None,
    ) -> list[Decision]:
        """MEASURE, SKIP or DEFER per candidate against the incumbent runtime(s) (ms) of its task.

        SKIP only when the conformal-risk-controlled rule of the module docstring says the candidate is
        confidently slower; every decision is DEFER before :meth:`calibrate` or when calibration had too few
        improving pairs (see ``min_calibration_pairs``).

        Parameters
        ----------
        candidates : polars.DataFrame
            Candidate frame, n rows.
        incumbent_ms : float or sequence of float
            Measured runtime of the incumbent of each candidate's task (ms).
        incumbent : polars.DataFrame, optional
            Candidate frame of the incumbent configuration (1 or n rows). When given, the rule compares
            forecasts of the two configurations, which is robust to a model that is off on a whole task
            (an unseen GPU); it has its own calibrated threshold.
        """
        fc = self.forecast(candidates)
        return self.decide_from_forecast(fc, incumbent_ms, incumbent=self._forecast_of(incumbent, len(fc), "incumbent"))

    # -- persistence --------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str], *, extra: Mapping[str, Any] | None = None) -> Path:
        """Write the model directory ``path`` (JSON metadata plus model files, no pickle); return it.

        ``extra`` is stored under ``"extra"`` in ``model.json`` (the CLI keeps the split there).
        """
        self._check_fitted()
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        model_state = self._save_models(path)
        from kernelcast.surrogate._artifact import versions

        _artifact.write_metadata(path, {
            "model": self.model_name,
            "class": f"{type(self).__module__}:{type(self).__qualname__}",
            "params": self.get_params(deep=False),
            "feature_names": self.feature_names_,
            "featurizer": self.featurizer_.to_dict(),
            "training_data": self.training_data_,
            "calibration": self.calibration_.to_dict() if self.is_calibrated else None,
            "level_model": self.level_model_.to_dict() if getattr(self, "level_model_", None) is not None else None,
            "model_state": model_state,
            "versions": versions(),
            "extra": dict(extra or {}),
        })
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> CalibratedSurrogate:
        """Read a model directory written by :meth:`save` (checks the feature schema version first)."""
        path = Path(path)
        meta = _artifact.read_metadata(path)
        expected = f"{cls.__module__}:{cls.__qualname__}"
        if meta.get("class") != expected:
            raise InvalidParameterError(
                f"The model in {str(path)!r} is a {meta.get('class')!r}, not a {expected!r}; load it with "
                "kernelcast.surrogate.load_surrogate."
            )
        model = cls(**{**cls._saved_before, **meta["params"]})
        model.featurizer_ = Featurizer.from_dict(meta["featurizer"], what=f"The model in {str(path)!r}")
        model.feature_names_ = list(meta["feature_names"])
        if model.feature_names_ != model.featurizer_.feature_names_:
            raise InvalidParameterError(
                f"The model in {str(path)!r} is inconsistent: its feature names differ from its featurizer's."
            )
        model.n_features_in_ = len(model.feature_names_)
        model.training_data_ = dict(meta["training_data"])
        model.training_records_ = None
        model.calibration_ = CalibrationState.from_dict(meta["calibration"]) if meta.get("calibration") else None
        model.level_model_ = TaskLevelModel.from_dict(meta["level_model"]) if meta.get("level_model") else None
        model._load_models(path, meta.get("model_state") or {})
        model.metadata_ = meta
        return model
