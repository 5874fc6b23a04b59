"""The inner CQR estimator: scikit-learn's estimator checks, the explicit calibration step, coverage."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.utils.estimator_checks import parametrize_with_checks

from kernelcast.exceptions import InvalidParameterError, NotFittedError
from kernelcast.surrogate.cqr import ConformalQuantileRegressor


def _expected_failures(estimator):
    # Bagging draws rows at random, so integer weights are not the same as repeated rows (LightGBM's own
    # estimators mark this check the same way).
    return {"check_sample_weight_equivalence_on_dense_data": "row bagging is random, not weight-equivalent"}


@parametrize_with_checks(
    [ConformalQuantileRegressor(n_estimators=20, quantile_estimators=10, min_child_samples=2, num_leaves=7, n_jobs=1)],
    expected_failed_checks=_expected_failures,
)
def test_sklearn_compatible_estimator(estimator, check):
    check(estimator)


def _heteroscedastic(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.uniform(-2, 2, size=(n, 3))
    y = np.sin(2 * X[:, 0]) + X[:, 1] + (0.1 + 0.4 * np.abs(X[:, 2])) * rng.standard_normal(n)
    return X, y


def test_predict_interval_needs_conformalize():
    X, y = _heteroscedastic(300, 0)
    model = ConformalQuantileRegressor(n_estimators=20, quantile_estimators=20, n_jobs=1).fit(X, y)
    with pytest.raises(NotFittedError, match="call conformalize"):
        model.predict_interval(X)
    with pytest.raises(NotFittedError, match="not fitted yet"):
        ConformalQuantileRegressor().predict(X)
    with pytest.raises(InvalidParameterError, match="'coverage' parameter of ConformalQuantileRegressor"):
        ConformalQuantileRegressor(coverage=1.5).fit(X, y)


def test_cqr_coverage_is_near_nominal_on_held_out_data():
    X, y = _heteroscedastic(6000, 1)
    model = ConformalQuantileRegressor(coverage=0.9, n_estimators=200, quantile_estimators=200, num_leaves=15,
                                       learning_rate=0.1,
                                       n_jobs=1)
    model.fit(X[:2000], y[:2000]).conformalize(X[2000:4000], y[2000:4000])
    lower, upper = model.predict_interval(X[4000:])
    coverage = np.mean((y[4000:] >= lower) & (y[4000:] <= upper))
    assert 0.87 <= coverage <= 0.93
    # Adaptive: intervals are wider where the noise is larger.
    width = upper - lower
    noisy = np.abs(X[4000:, 2]) > 1.5
    assert width[noisy].mean() > 1.5 * width[np.abs(X[4000:, 2]) < 0.5].mean()


def test_rank_loss_needs_groups_and_fits_with_them():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 3))
    y = X[:, 0] + 0.1 * rng.normal(size=300)
    model = ConformalQuantileRegressor(n_estimators=30, quantile_estimators=10, rank_weight=1.0, n_jobs=1)
    with pytest.raises(InvalidParameterError, match="rank_weight=1.0 needs groups"):
        model.fit(X, y)
    with pytest.raises(InvalidParameterError, match=r"groups must have one label per row, shape \(300,\)"):
        model.fit(X, y, groups=np.zeros(10))
    pred = model.fit(X, y, groups=np.arange(300) % 5).predict(X)
    assert np.corrcoef(pred, y)[0, 1] > 0.9
