"""GBMSurrogate: LightGBM forecasts of log runtime with CQR intervals, p_fail, calibrated pairs and bins.

Models, all LightGBM on the :class:`~kernelcast.surrogate.features.Featurizer` matrix:

- a mean model of ``ln(time_ms)`` and two quantile models at ``(1 -/+ coverage) / 2``
  (:class:`~kernelcast.surrogate.cqr.ConformalQuantileRegressor`), made valid by conformalized quantile
  regression on the calibration split;
- a binary classifier of failure (any status other than ``ok``) giving ``p_fail``.

Calibration, pairwise probabilities, speedup bins and the MEASURE/SKIP/DEFER rule with its conformal risk
control guarantee are shared with the other tabular surrogates: see
:mod:`kernelcast.surrogate._calibrated`. Saved as LightGBM text files plus ``model.json``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import lightgbm as lgb
import numpy as np
import polars as pl

from kernelcast.exceptions import InvalidParameterError, invalid_choice
from kernelcast.surrogate._calibrated import CalibratedSurrogate, RawForecast
from kernelcast.surrogate.cqr import ConformalQuantileRegressor
from kernelcast.surrogate.ranking import check_rank_params
from kernelcast.surrogate.tasks import log_time, ok_mask, require_records, task_balanced_weights, task_ids

UPDATE_MODES: tuple[str, ...] = ("refit", "warm_start")
"""Allowed values of ``GBMSurrogate.update_mode``."""

TASK_WEIGHTINGS: tuple[str, ...] = ("equal", "records")
"""Allowed values of ``GBMSurrogate.task_weighting``."""

_BOOSTER_FILES = {"mean": "mean.txt", "lower": "lower.txt", "upper": "upper.txt"}


class GBMSurrogate(CalibratedSurrogate):
    """Selective gradient-boosted surrogate of kernel runtimes (scikit-learn estimator contract).

    Parameters
    ----------
    coverage : float, default=0.9
        Nominal coverage of the log-time interval.
    skip_error_rate : float, default=0.05
        Target rate of skipping a candidate that would beat the incumbent (see ``decide``).
    pair_calibration : {"isotonic", "temperature"}, default="isotonic"
        How pairwise probabilities are calibrated.
    min_calibration_pairs : int, default=100
        Fewer improving (candidate, incumbent) calibration pairs than this make every decision DEFER.
    incumbent_top_fraction : float, default=0.25
        Calibration incumbents are drawn from this best fraction of each task.
    use_compiled_metadata : bool, default=False
        Feed compiler metadata (registers, shared memory, warps, stages, and the occupancy derived from them)
        to the log-time models. Only useful when candidates are compiled before they are screened; without
        it a candidate is described the same way before and after compiling.
    centering : bool, default=True
        Forecast ``level(task) + shape(x)``: the LightGBM models learn the log time minus the task's level
        (:class:`~kernelcast.surrogate.level.TaskLevelModel`); False: they learn the log time itself.
    device_features : {"architecture", "all"}, default="architecture"
        Device features the LightGBM models see: only architecture-determined ones (compute capability,
        per-SM limits), or also GPU-scale ones (:data:`~kernelcast.surrogate.features.SCALE_FEATURES`).
    task_weighting : {"equal", "records"}, default="equal"
        How the log-time models weigh the training records: every task the same in all (each record
        ``1 / records of its task``), or every record the same, so that tasks measured densely (a complete
        space of thousands of configurations) outweigh sampled ones. On the H200 store (154,003 records), equal
        task weights raised pairwise accuracy on held-out shape groups by 0.004 to 0.008 (seeds 0-2) and on
        the irregular held-out shapes by 0.013, and on held-out source variants from 0.715 to 0.813. Within
        seen tasks (random split) pooled pairwise accuracy fell from 0.954 to 0.941 while Kendall tau per
        task rose from 0.834 to 0.841 (``benchmarks/results/gbm_task_weighting.json``). Models saved before
        this option load as ``"records"``, which is how they were trained.
    rank_weight : float, default=1.0
        Weight of a within-task pairwise ranking loss (RankNet) added to the mean model's squared error
        (:class:`~kernelcast.surrogate.ranking.PairwiseRankObjective`): the trees then also learn the order of
        close candidates, which squared error on log time underweights. 0: squared error alone, as models
        saved before this option were trained. Against squared error with 300 rounds, on the same splits
        of the H200 store (175,561 records; ``benchmarks/gbm_ablation.py --ablation rank_loss``, results in
        ``benchmarks/results/gbm_rank_loss.json``), this default raised pairwise accuracy on held-out shape
        groups from 0.885/0.904/0.871 to 0.900/0.924/0.885 (seeds 0-2) and Kendall tau by 0.03-0.04; on
        the irregular held-out shapes from 0.893 to 0.913, on held-out source variants from 0.794 to 0.840,
        and within seen tasks from 0.941 to 0.959. ECE stayed within 0.01 of its value, except 0.130 to
        0.177 on the variants; MAPE fell on two shape seeds and rose within seen tasks (0.107 to 0.135).
    rank_temperature : float, default=0.1
        Scale of the ranking loss, in log-time units.
    rank_partners : int, default=8
        Partners drawn per record and boosting round, within its task.
    rank_min_gap : float, default=0.05
        Pairs whose log times differ by this much or less carry no ranking loss.
    n_estimators : int, default=600
        Boosting rounds of the mean model (it orders the candidates; see ``rank_weight`` for the measured
        effect of 600 rounds with the ranking loss against 300 without).
    quantile_estimators : int, default=150
        Boosting rounds of each quantile model. They shape the predictive scale that pairwise probabilities
        and the SKIP rule standardise by: with 60 rounds, on held-out H200 shapes, the ECE of pairwise
        probabilities rose from 0.011 to 0.032 and the realised skip error from 0.058 to 0.076.
    fail_estimators : int, default=100
        Boosting rounds of the failure classifier (50 rounds of 15 leaves tripled its Brier score).
    learning_rate : float, default=0.08
    num_leaves : int, default=63
        Leaves per tree of the mean model.
    quantile_num_leaves : int, default=31
        Leaves per tree of the quantile models and the failure classifier.
    min_child_samples : int, default=20
    subsample : float, default=0.8
    colsample_bytree : float, default=0.9
    reg_lambda : float, default=0.0
        LightGBM hyperparameters shared by all models.
    update_mode : {"refit", "warm_start"}, default="refit"
        ``update``: refit on all records seen, or add ``update_estimators`` rounds fitted on the new ones.
    update_estimators : int, default=100
        Rounds added per warm-start update.
    compiled_inference : bool, default=False
        Forecast with the boosters compiled to native code by lleaves (same predictions to float rounding,
        about six times faster; see :mod:`kernelcast.surrogate._lleaves`). Compiled on the first forecast
        after ``fit``/``load`` and cached on disk; needs ``pip install 'kernelcast[fast]'``.
    n_jobs : int or None, default=1
        LightGBM threads (None: OpenMP's default, all cores). One by default: on cores shared with other
        processes LightGBM's OpenMP threads spin-wait, and a 2-thread fit on a busy 2-core machine ran 70
        times slower than a 1-thread fit (448 s against 6 s). Raise it on a dedicated machine.
    random_state : int or None, default=0
        Seed.

    Attributes
    ----------
    regressor_ : ConformalQuantileRegressor
        Mean and quantile models.
    fail_booster_ : lightgbm.Booster or None
        Failure classifier (None when training had a single class).
    fail_rate_ : float
        Training failure rate, the p_fail used when there is no classifier.
    featurizer_ : Featurizer
        The feature layout, saved with the model.
    level_model_ : TaskLevelModel or None
        Task levels (with ``centering``).
    calibration_ : CalibrationState or None
        Set by ``calibrate``.
    training_data_ : dict
        Identity of the training records (key hash, row count, dataset path).
    """

    model_name = "gbm"
    _saved_before: ClassVar[dict[str, Any]] = {"task_weighting": "records", "rank_weight": 0.0}

    def __init__(
        self,
        *,
        coverage: float = 0.9,
        skip_error_rate: float = 0.05,
        pair_calibration: str = "isotonic",
        min_calibration_pairs: int = 100,
        incumbent_top_fraction: float = 0.25,
        use_compiled_metadata: bool = False,
        centering: bool = True,
        device_features: str = "architecture",
        task_weighting: str = "equal",
        rank_weight: float = 1.0,
        rank_temperature: float = 0.1,
        rank_partners: int = 8,
        rank_min_gap: float = 0.05,
        n_estimators: int = 600,
        quantile_estimators: int = 150,
        fail_estimators: int = 100,
        learning_rate: float = 0.08,
        num_leaves: int = 63,
        quantile_num_leaves: int = 31,
        min_child_samples: int = 20,
        subsample: float = 0.8,
        colsample_bytree: float = 0.9,
        reg_lambda: float = 0.0,
        update_mode: str = "refit",
        update_estimators: int = 100,
        compiled_inference: bool = False,
        n_jobs: int | None = 1,
        random_state: int | None = 0,
    ) -> None:
        self.coverage = coverage
        self.skip_error_rate = skip_error_rate
        self.pair_calibration = pair_calibration
        self.min_calibration_pairs = min_calibration_pairs
        self.incumbent_top_fraction = incumbent_top_fraction
        self.use_compiled_metadata = use_compiled_metadata
        self.centering = centering
        self.device_features = device_features
        self.task_weighting = task_weighting
        self.rank_weight = rank_weight
        self.rank_temperature = rank_temperature
        self.rank_partners = rank_partners
        self.rank_min_gap = rank_min_gap
        self.n_estimators = n_estimators
        self.quantile_estimators = quantile_estimators
        self.fail_estimators = fail_estimators
        self.learning_rate = learning_rate
        self.num_leaves = num_leaves
        self.quantile_num_leaves = quantile_num_leaves
        self.min_child_samples = min_child_samples
        self.subsample = subsample
        self.colsample_bytree = colsample_bytree
        self.reg_lambda = reg_lambda
        self.update_mode = update_mode
        self.update_estimators = update_estimators
        self.compiled_inference = compiled_inference
        self.n_jobs = n_jobs
        self.random_state = random_state

    def _validate_params(self) -> None:
        super()._validate_params()
        if self.task_weighting not in TASK_WEIGHTINGS:
            raise invalid_choice("task_weighting", type(self).__name__, self.task_weighting, TASK_WEIGHTINGS)
        check_rank_params(self.rank_weight, self.rank_temperature, self.rank_partners, self.rank_min_gap,
                          type(self).__name__)
        if self.update_mode not in UPDATE_MODES:
            raise invalid_choice("update_mode", type(self).__name__, self.update_mode, UPDATE_MODES)
        for name in ("fail_estimators", "update_estimators"):
            value = getattr(self, name)
            if not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
                raise InvalidParameterError(
                    f"The {name!r} parameter of {type(self).__name__} must be a positive int. Got {value!r} instead."
                )

    def _make_regressor(self) -> ConformalQuantileRegressor:
        categorical = [self.featurizer_.feature_names_.index(c) for c in self.featurizer_.categorical_features_]
        return ConformalQuantileRegressor(
            coverage=self.coverage,
            n_estimators=self.n_estimators,
            quantile_estimators=self.quantile_estimators,
            learning_rate=self.learning_rate,
            num_leaves=self.num_leaves,
            quantile_num_leaves=self.quantile_num_leaves,
            min_child_samples=self.min_child_samples,
            subsample=self.subsample,
            colsample_bytree=self.colsample_bytree,
            reg_lambda=self.reg_lambda,
            rank_weight=self.rank_weight,
            rank_temperature=self.rank_temperature,
            rank_partners=self.rank_partners,
            rank_min_gap=self.rank_min_gap,
            categorical_features=tuple(categorical),
            n_jobs=self.n_jobs,
            random_state=self.random_state,
        )

    def _record_weights(self, records: pl.DataFrame, ok: np.ndarray) -> np.ndarray | None:
        """``task_weighting="equal"``: every task of ``records`` the same total weight over its ok rows."""
        return task_balanced_weights(task_ids(records)[ok]) if self.task_weighting == "equal" else None

    def _fit_models(self, X_ok: np.ndarray, y_ok: np.ndarray, X_all: np.ndarray, failed: np.ndarray,
                    sample_weight: np.ndarray | None = None, groups: np.ndarray | None = None) -> None:
        self.compiled_ = None
        self.regressor_ = self._make_regressor()
        self.regressor_._validate_params()
        self.regressor_.fit(X_ok, y_ok, sample_weight=sample_weight, groups=groups)
        self.fail_rate_ = float(failed.mean()) if failed.size else 0.0
        self.fail_booster_ = None
        if 0 < failed.sum() < failed.size:
            params = self.regressor_.lgb_params("binary", num_leaves=self.quantile_num_leaves)
            categorical = list(self.regressor_.categorical_features)
            order = np.random.default_rng(self.regressor_._seed()).permutation(X_all.shape[0])  # see cqr.fit
            data = lgb.Dataset(X_all[order], failed[order].astype(np.float64),
                               categorical_feature=categorical or "auto", params={"verbosity": -1})
            self.fail_booster_ = lgb.train(params, data, num_boost_round=self.fail_estimators)

    def _predictors(self) -> dict[str, Any]:
        """The boosters, or their lleaves-compiled twins with ``compiled_inference`` (compiled once, lazily)."""
        boosters: dict[str, Any] = dict(self.regressor_.boosters_)
        if self.fail_booster_ is not None:
            boosters["fail"] = self.fail_booster_
        if not self.compiled_inference:
            return boosters
        compiled = getattr(self, "compiled_", None)
        if compiled is None or set(compiled) != set(boosters):
            from kernelcast.surrogate._lleaves import CompiledBooster

            compiled = {name: CompiledBooster(b, n_jobs=self.n_jobs or 1) for name, b in boosters.items()}
            self.compiled_ = compiled
        return compiled

    def _raw_forecast(self, X: np.ndarray, X_fail: np.ndarray) -> RawForecast:
        boosters = self._predictors()
        # LightGBM predicts with OpenMP's default (every core) unless told: a loaded model has no num_threads
        threads = {} if self.compiled_inference else {"num_threads": self.n_jobs or 0}
        mean = boosters["mean"].predict(X, **threads)
        lower = boosters["lower"].predict(X, **threads)
        upper = boosters["upper"].predict(X, **threads)
        if self.fail_booster_ is not None:
            p_fail = boosters["fail"].predict(X_fail, **threads)
        else:
            p_fail = np.full(X.shape[0], self.fail_rate_)
        return RawForecast(mean=mean, lower=np.minimum(lower, upper), upper=np.maximum(lower, upper), p_fail=p_fail)

    def update(self, records: pl.DataFrame) -> GBMSurrogate:
        """Learn from new records: refit on everything (``update_mode="refit"``) or warm-start.

        Warm start adds ``update_estimators`` boosting rounds to each log-time model, fitted on the new
        ``ok`` records only (LightGBM ``init_model``); the feature layout and the failure classifier stay.
        In both modes the calibration is kept; re-run ``calibrate`` on fresh held-out records to restore
        its guarantees exactly.
        """
        if self.update_mode == "refit":
            super().update(records)
            return self
        self._check_fitted()
        require_records(records, "The new records")
        ok = ok_mask(records)
        if not ok.any():
            return self
        X_full, _ = self._feature_matrices(records)
        y = log_time(records)
        if self.level_model_ is not None:
            y = y - self.task_level(records, X_full)
        X = self._model_matrix(X_full)[ok]
        y = y[ok]
        weight = self._record_weights(records, ok)
        low = (1.0 - self.coverage) / 2.0
        objectives = {"mean": ("regression", None), "lower": ("quantile", low), "upper": ("quantile", 1.0 - low)}
        categorical = list(self.regressor_.categorical_features)
        for name, (objective, alpha) in objectives.items():
            if name == "mean":
                params = self.regressor_.mean_params(y, task_ids(records)[ok], weight)
            else:
                params = self.regressor_.lgb_params(objective, alpha, num_leaves=self.quantile_num_leaves)
            data = lgb.Dataset(X, y, weight=weight, categorical_feature=categorical or "auto",
                                params={"verbosity": -1})
            self.regressor_.boosters_[name] = lgb.train(
                params, data, num_boost_round=self.update_estimators, init_model=self.regressor_.boosters_[name],
                keep_training_booster=False,
            )
        self.compiled_ = None  # recompiled on the next forecast
        if self.training_records_ is not None:
            new = records.select([c for c in self.training_records_.columns if c in records.columns])
            self.training_records_ = pl.concat([self.training_records_, new], how="diagonal_relaxed")
        return self

    def _save_models(self, path: Path) -> dict[str, Any]:
        for name, file in _BOOSTER_FILES.items():
            self.regressor_.boosters_[name].save_model(str(path / file))
        fail_file = None
        if self.fail_booster_ is not None:
            fail_file = "fail.txt"
            self.fail_booster_.save_model(str(path / fail_file))
        elif (path / "fail.txt").exists():
            (path / "fail.txt").unlink()
        return {
            "boosters": dict(_BOOSTER_FILES),
            "fail_booster": fail_file,
            "fail_rate": self.fail_rate_,
            "categorical_features": list(self.regressor_.categorical_features),
        }

    def _load_models(self, path: Path, state: Mapping[str, Any]) -> None:
        self.compiled_ = None
        self.regressor_ = self._make_regressor()
        self.regressor_.boosters_ = {
            name: lgb.Booster(model_file=str(path / file)) for name, file in state["boosters"].items()
        }
        self.regressor_.n_features_in_ = self.n_features_in_
        self.fail_rate_ = float(state["fail_rate"])
        fail_file = state.get("fail_booster")
        self.fail_booster_ = lgb.Booster(model_file=str(path / fail_file)) if fail_file else None
