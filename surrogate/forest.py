"""ForestSurrogate: a random-forest baseline with the same interface as the GBM surrogate.

A scikit-learn ``RandomForestRegressor`` of ``ln(time_ms)`` on the
:class:`~kernelcast.surrogate.features.Featurizer` matrix (missing values are supported natively). The raw
interval is the spread of the per-tree predictions (their ``(1 -/+ coverage) / 2`` quantiles), made valid
by CQR on the calibration split like the GBM's quantile models; ``p_fail`` comes from a
``RandomForestClassifier``. Calibration, pairwise probabilities, bins and decisions are shared:
see :mod:`kernelcast.surrogate._calibrated`.

Persistence uses skops (``forest.skops``, ``fail.skops``), never pickle: loading accepts only the
scikit-learn and NumPy types that skops reports for the files, and refuses anything else.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor

from kernelcast.exceptions import InvalidParameterError
from kernelcast.surrogate._calibrated import CalibratedSurrogate, RawForecast

_TRUSTED_PREFIXES = ("sklearn.", "numpy.", "builtins.")


def _skops_load(file: Path) -> Any:
    import skops.io as sio

    untrusted = sio.get_untrusted_types(file=file)
    unexpected = [t for t in untrusted if not t.startswith(_TRUSTED_PREFIXES)]
    if unexpected:
        raise InvalidParameterError(
            f"The model file {str(file)!r} holds types that kernelcast does not load: {unexpected!r}."
        )
    return sio.load(file, trusted=untrusted)


class ForestSurrogate(CalibratedSurrogate):
    """Random-forest surrogate of kernel runtimes (scikit-learn estimator contract).

    Parameters
    ----------
    coverage, skip_error_rate, pair_calibration, min_calibration_pairs, incumbent_top_fraction, \
use_compiled_metadata, centering, device_features
        As for :class:`~kernelcast.surrogate.gbm.GBMSurrogate`.
    n_estimators : int, default=100
        Trees of the regressor (the failure classifier uses half as many).
    min_samples_leaf : int, default=5
        Minimum samples per leaf.
    max_features : float, default=0.5
        Fraction of features tried per split.
    max_samples : float or None, default=0.5
        Bootstrap fraction per tree (keeps trees, and files, small).
    n_jobs : int or None, default=None
        Parallel jobs of scikit-learn.
    random_state : int or None, default=0
        Seed.

    Attributes
    ----------
    forest_ : RandomForestRegressor
    fail_forest_ : RandomForestClassifier or None
    fail_rate_ : float
    """

    model_name = "forest"

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
        n_estimators: int = 100,
        min_samples_leaf: int = 5,
        max_features: float = 0.5,
        max_samples: float | None = 0.5,
        n_jobs: int | None = None,
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
        self.n_estimators = n_estimators
        self.min_samples_leaf = min_samples_leaf
        self.max_features = max_features
        self.max_samples = max_samples
        self.n_jobs = n_jobs
        self.random_state = random_state

    def _fit_models(self, X_ok: np.ndarray, y_ok: np.ndarray, X_all: np.ndarray, failed: np.ndarray,
                    sample_weight: np.ndarray | None = None, groups: np.ndarray | None = None) -> None:
        common = dict(min_samples_leaf=self.min_samples_leaf, max_features=self.max_features,
                      max_samples=self.max_samples, n_jobs=self.n_jobs, random_state=self.random_state)
        self.forest_ = RandomForestRegressor(n_estimators=self.n_estimators, **common).fit(X_ok, y_ok)
        self.fail_rate_ = float(failed.mean()) if failed.size else 0.0
        self.fail_forest_ = None
        if 0 < failed.sum() < failed.size:
            self.fail_forest_ = RandomForestClassifier(n_estimators=max(1, self.n_estimators // 2), **common).fit(
                X_all, failed
            )

    def _raw_forecast(self, X: np.ndarray, X_fail: np.ndarray) -> RawForecast:
        per_tree = np.stack([tree.predict(X) for tree in self.forest_.estimators_])  # (trees, n)
        mean = per_tree.mean(axis=0)
        low = (1.0 - self.coverage) / 2.0
        lower, upper = np.quantile(per_tree, [low, 1.0 - low], axis=0)
        if self.fail_forest_ is not None:
            p_fail = self.fail_forest_.predict_proba(X_fail)[:, list(self.fail_forest_.classes_).index(True)]
        else:
            p_fail = np.full(X.shape[0], self.fail_rate_)
        return RawForecast(mean=mean, lower=lower, upper=upper, p_fail=p_fail)

    def _save_models(self, path: Path) -> dict[str, Any]:
        import skops.io as sio

        sio.dump(self.forest_, path / "forest.skops")
        fail_file = None
        if self.fail_forest_ is not None:
            fail_file = "fail.skops"
            sio.dump(self.fail_forest_, path / fail_file)
        return {"forest": "forest.skops", "fail_forest": fail_file, "fail_rate": self.fail_rate_}

    def _load_models(self, path: Path, state: Mapping[str, Any]) -> None:
        self.forest_ = _skops_load(path / state["forest"])
        fail_file = state.get("fail_forest")
        self.fail_forest_ = _skops_load(path / fail_file) if fail_file else None
        self.fail_rate_ = float(state["fail_rate"])
