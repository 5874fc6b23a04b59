"""Fixtures of the search tests: a small hand-made measured space, a Kernel Tuner replay, a test surrogate."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import polars as pl
import pytest
from scipy.special import ndtr

from kernelcast.datasets.store import Store, records_frame
from kernelcast.exceptions import NotFittedError
from kernelcast.measurement.records import Record, Status, canonical_json
from kernelcast.surrogate._base import Decision, Forecast, Surrogate

TOY_FAMILY = "toy/axpy"
TOY_PROBLEM = {"n": 4096}
TOY_DEVICES = {"NVIDIA GeForce RTX 3090": 1.0, "NVIDIA TITAN RTX": 1.4}
BLOCKS = (16, 32, 64, 128, 256, 512)
WARPS = (1, 2, 4, 8)
UNROLLS = (1, 2, 4)
VECS = (1, 2, 4, 8)


def toy_time_ms(block: int, warps: int, unroll: int, vec: int, device_factor: float = 1.0) -> float:
    """A smooth runtime landscape with one best configuration: BLOCK=128, WARPS=4, UNROLL=2, VEC=4."""
    return device_factor * (1.0 + 0.15 * (math.log2(block) - 7) ** 2 + 0.2 * abs(math.log2(warps) - 2)
                            + 0.1 * (unroll == 1) + 0.01 * unroll + 0.05 * abs(math.log2(vec) - 2))


def toy_records(devices: Sequence[str] = tuple(TOY_DEVICES), n_samples: int = 8, seed: int = 0) -> list[Record]:
    """Every stored configuration of the toy space on ``devices``.

    Not stored (a restriction excludes them): BLOCK=16 with WARPS=8 and BLOCK=512 with WARPS=1.
    Stored as compile errors: BLOCK=512 with UNROLL=4 (2 s of compile time each).
    """
    rng = np.random.default_rng(seed)
    out = []
    for device in devices:
        for block in BLOCKS:
            for warps in WARPS:
                if (block, warps) in ((16, 8), (512, 1)):
                    continue
                for unroll in UNROLLS:
                    for vec in VECS:
                        config = {"BLOCK": block, "WARPS": warps, "UNROLL": unroll, "VEC": vec}
                        common = dict(family=TOY_FAMILY, variant="default", source_hash="toy0000000000000",
                                      config=config, problem=TOY_PROBLEM, dtype="float32", device=device,
                                      origin="test:toy")
                        if block == 512 and unroll == 4:
                            out.append(Record(status=Status.COMPILE_ERROR, error="ptxas: too many resources",
                                              compile_time_ms=2000.0, **common))
                            continue
                        base = toy_time_ms(block, warps, unroll, vec, TOY_DEVICES[device])
                        samples = base * (1.0 + 0.02 * rng.standard_normal(n_samples))
                        out.append(Record(status=Status.OK, samples_ms=tuple(samples), compile_time_ms=50.0, **common))
    return out


@pytest.fixture(scope="session")
def toy_frame() -> pl.DataFrame:
    """The toy space on two devices as a record frame (264 stored configurations per device)."""
    return records_frame(toy_records())


@pytest.fixture(scope="session")
def toy_store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    """The toy space on two devices in a store directory."""
    store = Store(tmp_path_factory.mktemp("toy") / "dataset")
    store.append(toy_records())
    return store


@pytest.fixture(scope="session")
def pnpoly_frame(shared_data: Any) -> pl.DataFrame:
    """Kernel Tuner's pnpoly cache of the RTX 3090 (4,092 configurations, 318 runtime failures), imported."""
    from kernelcast.datasets.importers import import_kernel_tuner

    return records_frame(import_kernel_tuner([shared_data / "kernel_tuner" / "pnpoly" / "RTX_3090.json.gz"],
                                             time_unit="ms"))


class KnnSurrogate(Surrogate):
    """A test surrogate: k nearest neighbours on log2 knob values, learning from the records it is given.

    Its interval is ``mean +/- z * scale`` where ``scale`` is the leave-one-out residual spread of its own
    records; it DEFERs until it has ``k + 2`` runtimes, then SKIPs what is confidently slower.
    """

    def __init__(self, *, k: int = 3, z: float = 1.0) -> None:
        self.k = k
        self.z = z

    # -- learning ---------------------------------------------------------------------------------------
    @staticmethod
    def _features(frame: pl.DataFrame) -> np.ndarray:
        rows = [json.loads(c) for c in frame["config_json"]]
        if not rows:
            return np.zeros((0, 0))
        names = sorted(rows[0])
        return np.array([[math.log2(r[n]) if isinstance(r[n], (int, float)) and r[n] > 0 else 0.0 for n in names]
                         for r in rows], dtype=np.float64)

    def fit(self, records: pl.DataFrame, y: Any = None) -> KnnSurrogate:
        self.X_ = np.zeros((0, 0))
        self.y_ = np.zeros(0)
        self.failed_ = np.zeros(0, dtype=bool)
        self.n_updates_ = 0
        return self.update(records) if records.height else self

    def calibrate(self, records: pl.DataFrame) -> KnnSurrogate:
        return self

    def update(self, records: pl.DataFrame) -> KnnSurrogate:
        self._check()
        X = self._features(records)
        ok = (records["status"] == "ok").to_numpy()
        y = np.log(records["time_ms"].fill_null(1.0).to_numpy())
        self.X_ = X if self.X_.size == 0 else np.vstack([self.X_, X])
        self.y_ = np.concatenate([self.y_, np.where(ok, y, np.nan)])
        self.failed_ = np.concatenate([self.failed_, ~ok])
        self.n_updates_ += 1
        return self

    def _check(self) -> None:
        if not hasattr(self, "X_"):
            raise NotFittedError("KnnSurrogate is not fitted: call fit first.")

    # -- forecasting ------------------------------------------------------------------------------------
    def _neighbours(self, X: np.ndarray, X_ref: np.ndarray, exclude_self: bool = False) -> np.ndarray:
        d = ((X[:, None, :] - X_ref[None, :, :]) ** 2).sum(axis=2)
        if exclude_self:
            np.fill_diagonal(d, np.inf)
        return np.argsort(d, axis=1)[:, : self.k]

    def _scale(self) -> float | None:
        ok = ~self.failed_
        if ok.sum() < self.k + 2:
            return None
        X, y = self.X_[ok], self.y_[ok]
        loo = y[self._neighbours(X, X, exclude_self=True)].mean(axis=1)
        return float(max(np.sqrt(np.mean((y - loo) ** 2)), 1e-3))

    def forecast(self, candidates: pl.DataFrame) -> Forecast:
        self._check()
        n = candidates.height
        ok = ~self.failed_
        if ok.sum() == 0:
            return Forecast(np.zeros(n), np.full(n, -np.inf), np.full(n, np.inf), 0.95, p_fail=np.full(n, 0.1))
        X = self._features(candidates)
        mean = self.y_[ok][self._neighbours(X, self.X_[ok])].mean(axis=1)
        p_fail = self.failed_[self._neighbours(X, self.X_)].mean(axis=1)
        scale = self._scale()
        if scale is None:
            return Forecast(mean, np.full(n, -np.inf), np.full(n, np.inf), 0.95, p_fail=p_fail)
        return Forecast(mean, mean - self.z * scale, mean + self.z * scale, 0.95, p_fail=p_fail,
                        log_time_scale=np.full(n, scale))

    def predict_proba_faster(self, candidates_a: pl.DataFrame, candidates_b: pl.DataFrame) -> np.ndarray:
        fa, fb = self.forecast(candidates_a), self.forecast(candidates_b)
        scale = self._scale() or 1.0
        return ndtr((fb.log_time_mean - fa.log_time_mean) / (math.sqrt(2.0) * scale))

    def decide(self, candidates: pl.DataFrame, incumbent_ms: Any) -> list[Decision]:
        fc = self.forecast(candidates)
        if not np.isfinite(fc.log_time_lower).all():
            return [Decision.DEFER] * len(fc)
        log_inc = math.log(float(incumbent_ms))
        return [Decision.SKIP if lo > log_inc else Decision.MEASURE for lo in fc.log_time_lower]


@pytest.fixture
def make_knn() -> Any:
    """A factory of test surrogates fitted on the given records (none: it learns from the search's own)."""
    def make(records: pl.DataFrame | None = None) -> KnnSurrogate:
        return KnnSurrogate().fit(records if records is not None else records_frame([]))

    return make


@pytest.fixture
def knn_surrogate(make_knn: Any) -> KnnSurrogate:
    """A fresh, empty test surrogate (it learns from the search's own records)."""
    return make_knn()


def canonical(config: dict[str, Any]) -> str:
    """The canonical JSON of a config (as search results and stores key it)."""
    return canonical_json(config)


class TablePrior(Surrogate):
    """A test prior: forecasts a runtime function of the config, decides with a relative rule on forecasts.

    ``decide_from_forecast`` SKIPs a candidate forecast more than ``threshold`` predictive scales slower than
    the incumbent's forecast (or, without it, than the incumbent runtime), like the GBM's relative rule, and
    records what it was given.
    """

    def __init__(self, time_ms: Any, *, scale: float = 0.1, threshold: float = 2.0) -> None:
        self.time_ms = time_ms
        self.scale = scale
        self.threshold = threshold
        self.seen: list[tuple[Forecast, Forecast | None]] = []

    def fit(self, records: Any, y: Any = None) -> TablePrior:
        return self

    def calibrate(self, records: Any) -> TablePrior:
        return self

    def forecast(self, candidates: pl.DataFrame) -> Forecast:
        mean = np.log([self.time_ms(json.loads(c)) for c in candidates["config_json"]]).astype(np.float64)
        n = mean.shape[0]
        return Forecast(mean, mean - 1.645 * self.scale, mean + 1.645 * self.scale, 0.9, p_fail=np.zeros(n),
                        log_time_scale=np.full(n, self.scale))

    def predict_proba_faster(self, candidates_a: pl.DataFrame, candidates_b: pl.DataFrame) -> np.ndarray:
        fa, fb = self.forecast(candidates_a), self.forecast(candidates_b)
        return ndtr((fb.log_time_mean - fa.log_time_mean) / (math.sqrt(2.0) * self.scale))

    def decide(self, candidates: pl.DataFrame, incumbent_ms: Any, *, incumbent: Any = None) -> list[Decision]:
        reference = self.forecast(incumbent) if incumbent is not None else None
        return self.decide_from_forecast(self.forecast(candidates), incumbent_ms, incumbent=reference)

    def decide_from_forecast(self, forecast: Forecast, incumbent_ms: Any, *,
                             incumbent: Forecast | None = None) -> list[Decision]:
        self.seen.append((forecast, incumbent))
        scale = forecast.log_time_scale
        if incumbent is not None:
            gap = (forecast.log_time_mean - incumbent.log_time_mean) / np.sqrt(scale**2 + incumbent.log_time_scale**2)
        else:
            gap = (forecast.log_time_mean - np.log(incumbent_ms)) / scale
        return [Decision.SKIP if g > self.threshold else Decision.MEASURE for g in gap]


def distorted_toy_time_ms(config: dict[str, Any]) -> float:
    """The toy landscape as a prior trained elsewhere sees it: right about WARPS, UNROLL and VEC, but it puts
    the best BLOCK at 32 instead of 128."""
    return toy_time_ms(config["BLOCK"] * 4 if config["BLOCK"] <= 128 else config["BLOCK"] * 16, config["WARPS"],
                       config["UNROLL"], config["VEC"])


@pytest.fixture
def make_prior() -> Any:
    """A factory of :class:`TablePrior` on the distorted toy landscape."""
    def make(**kwargs: Any) -> TablePrior:
        return TablePrior(distorted_toy_time_ms, **kwargs)

    return make
