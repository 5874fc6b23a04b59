"""A LightGBM regressor with conformalized quantile intervals (CQR), as a scikit-learn estimator.

Order of calls (MAPIE v1 style: calibration is an explicit step)::

    reg = ConformalQuantileRegressor(coverage=0.9).fit(X_train, y_train)
    reg.conformalize(X_calib, y_calib)
    mean = reg.predict(X)                       # (n,)
    lower, upper = reg.predict_interval(X)      # (n,), (n,); needs conformalize

The :class:`~kernelcast.surrogate.gbm.GBMSurrogate` uses it for its point and quantile models of log time;
it is usable alone on any numeric matrix (NaN allowed: LightGBM treats it as missing).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import lightgbm as lgb
import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.exceptions import NotFittedError as SklearnNotFittedError
from sklearn.utils import check_random_state
from sklearn.utils.validation import _check_sample_weight, validate_data

from kernelcast.exceptions import InvalidParameterError, NotFittedError
from kernelcast.surrogate.conformal import cqr_offset
from kernelcast.surrogate.ranking import PairwiseRankObjective, check_rank_params


class EstimatorNotFittedError(NotFittedError, SklearnNotFittedError):
    """kernelcast's :class:`~kernelcast.exceptions.NotFittedError`, also scikit-learn's (for its checks)."""


def _check_fraction(value: float, name: str, owner: str, *, open_right: bool = True) -> None:
    upper_ok = value < 1.0 if open_right else value <= 1.0
    if not (isinstance(value, int | float) and 0.0 < value and upper_ok):
        bound = "(0, 1)" if open_right else "(0, 1]"
        raise InvalidParameterError(
            f"The {name!r} parameter of {owner} must be a float in {bound}. Got {value!r} instead."
        )


def _check_positive_int(value: int, name: str, owner: str) -> None:
    if not (isinstance(value, int | np.integer) and not isinstance(value, bool) and value >= 1):
        raise InvalidParameterError(f"The {name!r} parameter of {owner} must be a positive int. Got {value!r} instead.")


class ConformalQuantileRegressor(RegressorMixin, BaseEstimator):
    """LightGBM mean model plus lower/upper quantile models, made valid by CQR on a calibration split.

    Parameters
    ----------
    coverage : float, default=0.9
        Nominal coverage of :meth:`predict_interval`; the quantile models target
        ``(1 - coverage) / 2`` and ``(1 + coverage) / 2``.
    n_estimators : int, default=300
        Boosting rounds of the mean model.
    quantile_estimators : int, default=150
        Boosting rounds of each quantile model.
    learning_rate : float, default=0.08
        Shrinkage.
    num_leaves : int, default=63
        Leaves per tree of the mean model.
    quantile_num_leaves : int, default=31
        Leaves per tree of the quantile models (they only shape the interval; CQR makes it valid).
    min_child_samples : int, default=20
        Minimum samples per leaf.
    subsample : float, default=0.8
        Row fraction per round (bagging every round when below 1).
    colsample_bytree : float, default=0.9
        Feature fraction per tree.
    reg_lambda : float, default=0.0
        L2 regularisation of leaf values.
    rank_weight : float, default=0.0
        Weight of a within-group pairwise ranking loss added to the mean model's squared error
        (:class:`~kernelcast.surrogate.ranking.PairwiseRankObjective`; ``fit`` then needs ``groups``).
        0: squared error alone.
    rank_temperature : float, default=0.1
        Scale of the ranking loss, in target units.
    rank_partners : int, default=8
        Partners drawn per row and boosting round for the ranking loss.
    rank_min_gap : float, default=0.05
        Pairs whose targets differ by this much or less carry no ranking loss.
    categorical_features : sequence of int, default=()
        Column indices holding categorical codes (non-negative integers; NaN is missing).
    n_jobs : int or None, default=1
        LightGBM threads (None: OpenMP's default, all cores). One by default: on cores shared with other
        processes LightGBM's OpenMP threads spin-wait, and a 2-thread fit on a busy 2-core machine ran 70
        times slower than a 1-thread fit (448 s against 6 s). Raise it on a dedicated machine.
    random_state : int or None, default=0
        Seed.

    Attributes
    ----------
    boosters_ : dict of str to lightgbm.Booster
        ``"mean"``, ``"lower"``, ``"upper"``.
    n_features_in_ : int
        Number of features seen in ``fit``.
    interval_offset_ : float
        CQR correction from :meth:`conformalize` (``inf`` with too few calibration points).
    n_calibration_ : int
        Number of calibration points.
    """

    def __init__(
        self,
        *,
        coverage: float = 0.9,
        n_estimators: int = 300,
        quantile_estimators: int = 150,
        learning_rate: float = 0.08,
        num_leaves: int = 63,
        quantile_num_leaves: int = 31,
        min_child_samples: int = 20,
        subsample: float = 0.8,
        colsample_bytree: float = 0.9,
        reg_lambda: float = 0.0,
        rank_weight: float = 0.0,
        rank_temperature: float = 0.1,
        rank_partners: int = 8,
        rank_min_gap: float = 0.05,
        categorical_features: Sequence[int] = (),
        n_jobs: int | None = 1,
        random_state: int | None = 0,
    ) -> None:
        self.coverage = coverage
        self.n_estimators = n_estimators
        self.quantile_estimators = quantile_estimators
        self.learning_rate = learning_rate
        self.num_leaves = num_leaves
        self.quantile_num_leaves = quantile_num_leaves
        self.min_child_samples = min_child_samples
        self.subsample = subsample
        self.colsample_bytree = colsample_bytree
        self.reg_lambda = reg_lambda
        self.rank_weight = rank_weight
        self.rank_temperature = rank_temperature
        self.rank_partners = rank_partners
        self.rank_min_gap = rank_min_gap
        self.categorical_features = categorical_features
        self.n_jobs = n_jobs
        self.random_state = random_state

    def __sklearn_tags__(self):  # noqa: D105
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        return tags

    def _validate_params(self) -> None:
        owner = type(self).__name__
        _check_fraction(self.coverage, "coverage", owner)
        _check_positive_int(self.n_estimators, "n_estimators", owner)
        _check_positive_int(self.quantile_estimators, "quantile_estimators", owner)
        _check_positive_int(self.num_leaves, "num_leaves", owner)
        _check_positive_int(self.quantile_num_leaves, "quantile_num_leaves", owner)
        _check_positive_int(self.min_child_samples, "min_child_samples", owner)
        _check_fraction(self.subsample, "subsample", owner, open_right=False)
        _check_fraction(self.colsample_bytree, "colsample_bytree", owner, open_right=False)
        check_rank_params(self.rank_weight, self.rank_temperature, self.rank_partners, self.rank_min_gap, owner)
        if not (isinstance(self.learning_rate, int | float) and self.learning_rate > 0):
            raise InvalidParameterError(
                f"The 'learning_rate' parameter of {owner} must be a positive float. "
                f"Got {self.learning_rate!r} instead."
            )

    def _seed(self) -> int:
        if isinstance(self.random_state, int | np.integer):
            return int(self.random_state)
        return int(check_random_state(self.random_state).randint(0, 2**31 - 1))

    def lgb_params(
        self, objective: str, alpha: float | None = None, *, num_leaves: int | None = None
    ) -> dict[str, object]:
        """LightGBM parameters of one of the models (``num_leaves`` defaults to the mean model's)."""
        seed = self._seed()
        params: dict[str, object] = {
            "objective": objective,
            "learning_rate": self.learning_rate,
            "num_leaves": num_leaves or self.num_leaves,
            "min_data_in_leaf": self.min_child_samples,
            "feature_fraction": self.colsample_bytree,
            "bagging_fraction": self.subsample,
            "bagging_freq": 1 if self.subsample < 1.0 else 0,
            "lambda_l2": self.reg_lambda,
            "seed": seed,
            "verbosity": -1,
            "num_threads": self.n_jobs or 0,
        }
        if alpha is not None:
            params["alpha"] = alpha
        return params

    def mean_params(
        self, y: np.ndarray, groups: np.ndarray | None, sample_weight: np.ndarray | None = None
    ) -> dict[str, object]:
        """LightGBM parameters of the mean model for targets ``y`` (shape (n,)).

        Squared error, or with ``rank_weight > 0`` the :class:`~kernelcast.surrogate.ranking.PairwiseRankObjective`
        over ``groups`` (shape (n,), rows aligned with ``y``).
        """
        params = self.lgb_params("regression")
        if self.rank_weight > 0:
            params["objective"] = PairwiseRankObjective(
                y, groups, sample_weight, rank_weight=self.rank_weight, temperature=self.rank_temperature,
                partners=self.rank_partners, min_gap=self.rank_min_gap, seed=self._seed())
        return params

    def fit(
        self, X: np.ndarray, y: np.ndarray, sample_weight: np.ndarray | None = None, groups: np.ndarray | None = None
    ) -> ConformalQuantileRegressor:
        """Fit the mean and quantile models on ``X`` (shape (n, d), NaN allowed) and ``y`` (shape (n,)).

        ``groups`` (shape (n,)) labels the rows whose order the ranking loss learns (tasks); it is needed,
        and only used, when ``rank_weight > 0``.
        """
        self._validate_params()
        X, y = validate_data(self, X, y, ensure_all_finite="allow-nan", dtype=np.float64, y_numeric=True)
        if X.shape[0] < 2:
            raise InvalidParameterError(
                f"{type(self).__name__} needs at least 2 samples to fit; got {X.shape[0]} sample."
            )
        if self.rank_weight > 0:
            if groups is None:
                raise InvalidParameterError(
                    f"{type(self).__name__} with rank_weight={self.rank_weight!r} needs groups (one label per row) "
                    "in fit; pass groups=, or set rank_weight=0."
                )
            groups = np.asarray(groups)
            if groups.shape != (X.shape[0],):
                raise InvalidParameterError(
                    f"groups must have one label per row, shape ({X.shape[0]},). Got shape {groups.shape}."
                )
        if sample_weight is not None:
            sample_weight = _check_sample_weight(sample_weight, X, dtype=np.float64, ensure_non_negative=True)
            if not np.any(sample_weight > 0):
                raise InvalidParameterError("Sample weights must contain at least one non-zero number.")
        # LightGBM's trees depend on row order (among near-equal splits), and a store lists records grouped
        # by task and device; on the Kernel Tuner data that grouping cost 0.2 of Kendall tau on an unseen
        # GPU. A seeded shuffle makes the fit independent of how the records happen to be stored.
        order = np.random.default_rng(self._seed()).permutation(X.shape[0])
        X, y = X[order], y[order]
        if sample_weight is not None:
            sample_weight = sample_weight[order]
        params_mean = self.mean_params(y, groups[order] if self.rank_weight > 0 else None, sample_weight)
        categorical = [int(c) for c in self.categorical_features if 0 <= int(c) < X.shape[1]]
        low = (1.0 - self.coverage) / 2.0
        rounds = {"mean": self.n_estimators, "lower": self.quantile_estimators, "upper": self.quantile_estimators}
        params = {
            "mean": params_mean,
            "lower": self.lgb_params("quantile", low, num_leaves=self.quantile_num_leaves),
            "upper": self.lgb_params("quantile", 1.0 - low, num_leaves=self.quantile_num_leaves),
        }
        self.boosters_ = {}
        for name in ("mean", "lower", "upper"):
            data = lgb.Dataset(X, y, weight=sample_weight, categorical_feature=categorical or "auto",
                               free_raw_data=True, params={"verbosity": -1})
            self.boosters_[name] = lgb.train(params[name], data, num_boost_round=rounds[name])
        for attr in ("interval_offset_", "n_calibration_"):
            if hasattr(self, attr):
                delattr(self, attr)
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, "boosters_"):
            raise EstimatorNotFittedError(
                f"This {type(self).__name__} instance is not fitted yet. Call 'fit' with training data before "
                "using this estimator."
            )

    def _matrix(self, X: np.ndarray) -> np.ndarray:
        self._check_fitted()
        return validate_data(self, X, reset=False, ensure_all_finite="allow-nan", dtype=np.float64)

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Mean forecast, shape (n,)."""
        X = self._matrix(X)
        return self.boosters_["mean"].predict(X)

    def predict_quantiles(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Raw (not conformalized) lower and upper quantile forecasts, each shape (n,); lower <= upper."""
        X = self._matrix(X)
        lower = self.boosters_["lower"].predict(X)
        upper = self.boosters_["upper"].predict(X)
        return np.minimum(lower, upper), np.maximum(lower, upper)

    def conformalize(self, X_calib: np.ndarray, y_calib: np.ndarray) -> ConformalQuantileRegressor:
        """Compute the CQR offset on held-out ``X_calib`` (shape (m, d)) and ``y_calib`` (shape (m,))."""
        X_calib = self._matrix(X_calib)
        y_calib = np.asarray(y_calib, dtype=np.float64)
        lower, upper = self.predict_quantiles(X_calib)
        self.interval_offset_ = cqr_offset(lower, upper, y_calib, self.coverage)
        self.n_calibration_ = int(y_calib.size)
        return self

    def predict_interval(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Conformalized interval ``[lower, upper]`` at level ``coverage``, each shape (n,).

        Raises
        ------
        NotFittedError
            Before :meth:`fit`, or before :meth:`conformalize` ("call conformalize before predict_interval").
        """
        self._check_fitted()
        if not hasattr(self, "interval_offset_"):
            raise EstimatorNotFittedError(
                f"This {type(self).__name__} is not conformalized yet: call conformalize(X_calib, y_calib) "
                "before predict_interval."
            )
        lower, upper = self.predict_quantiles(X)
        q = self.interval_offset_
        if math.isinf(q):
            return np.full(lower.shape, -np.inf), np.full(upper.shape, np.inf)
        return lower - q, upper + q
