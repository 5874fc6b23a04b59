"""GBMSurrogate: the estimator contract, forecasts, decisions, updates and persistence."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest
from sklearn.base import clone

from kernelcast.exceptions import InvalidParameterError, NotFittedError, SchemaVersionError
from kernelcast.surrogate import Decision, GBMSurrogate, load_surrogate
from kernelcast.surrogate._base import CANDIDATE_COLUMNS
from kernelcast.surrogate.features import FEATURE_SCHEMA_VERSION

SMALL = dict(n_estimators=60, quantile_estimators=40, fail_estimators=20, num_leaves=15, n_jobs=1)


def test_estimator_contract():
    model = GBMSurrogate(n_estimators=7, coverage=0.8)
    params = model.get_params()
    assert params["n_estimators"] == 7
    assert params["coverage"] == 0.8
    twin = clone(model)
    assert twin is not model
    assert twin.get_params() == params
    assert model.set_params(num_leaves=5) is model
    assert model.num_leaves == 5
    with pytest.raises(TypeError):
        GBMSurrogate(7)  # keyword-only hyperparameters
    assert not [k for k in vars(model) if k.endswith("_")]  # __init__ learns nothing


def test_not_fitted_error_before_fit(splits):
    model = GBMSurrogate()
    for call in (lambda: model.forecast(splits["test"]), lambda: model.decide(splits["test"], 1.0),
                 lambda: model.calibrate(splits["calib"]), lambda: model.save("unused")):
        with pytest.raises(NotFittedError, match="GBMSurrogate instance is not fitted yet"):
            call()


def test_fit_returns_self_and_learns_attributes_with_underscores(splits):
    model = GBMSurrogate(**SMALL)
    before = set(vars(model))
    assert model.fit(splits["train"]) is model
    learned = set(vars(model)) - before
    assert learned
    assert all(k.endswith("_") for k in learned)
    assert model.calibrate(splits["calib"]) is model


def test_invalid_parameters_fail_at_fit_with_sklearn_style_messages(splits):
    with pytest.raises(InvalidParameterError, match="The 'coverage' parameter of GBMSurrogate must be a float in"):
        GBMSurrogate(coverage=2.0).fit(splits["train"])
    with pytest.raises(InvalidParameterError, match="'update_mode' parameter of GBMSurrogate must be one of"):
        GBMSurrogate(update_mode="sometimes").fit(splits["train"])
    with pytest.raises(InvalidParameterError, match="lacks the column"):
        GBMSurrogate().fit(splits["train"].drop("time_ms"))


def test_forecast_shapes_and_uncalibrated_intervals(splits):
    model = GBMSurrogate(**SMALL).fit(splits["train"])
    fc = model.forecast(splits["test"])
    n = splits["test"].height
    assert fc.log_time_mean.shape == (n,)
    assert fc.p_fail.shape == (n,)
    assert np.all(np.isneginf(fc.log_time_lower))
    assert np.all(np.isposinf(fc.log_time_upper))
    assert model.decide(splits["test"], 1.0) == [Decision.DEFER] * n  # not calibrated: abstain
    # Failures are predicted where they happen: the out-of-resources configurations.
    failed = (splits["test"]["status"] != "ok").to_numpy()
    assert fc.p_fail[failed].mean() > 0.5 > fc.p_fail[~failed].mean()


def test_pairwise_probabilities_are_antisymmetric_and_within_task(fitted_gbm, splits):
    test = splits["test"].filter(pl.col("status") == "ok")
    task = test.filter((pl.col("device") == test["device"][0]) & (pl.col("problem_json") == test["problem_json"][0]))
    a, b = task.head(20), task.slice(20, 20)
    p_ab = fitted_gbm.predict_proba_faster(a, b)
    p_ba = fitted_gbm.predict_proba_faster(b, a)
    np.testing.assert_allclose(p_ab + p_ba, 1.0, atol=1e-9)
    other = test.filter(pl.col("device") != test["device"][0]).head(20)
    with pytest.raises(InvalidParameterError, match="compared only within a task"):
        fitted_gbm.predict_proba_faster(a, other)


def test_bin_probabilities(fitted_gbm, splits):
    test = splits["test"].filter(pl.col("status") == "ok").head(50)
    proba = fitted_gbm.predict_bin_proba(test, 0.1)
    assert proba.shape == (50, 8)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    relative = fitted_gbm.predict_bin_proba(test, 0.1, reference=test.head(1))
    np.testing.assert_allclose(relative.sum(axis=1), 1.0)


def test_decisions_with_and_without_the_incumbent_configuration(fitted_gbm, splits):
    test = splits["test"].filter(pl.col("status") == "ok")
    task = test.filter((pl.col("device") == test["device"][0]) & (pl.col("problem_json") == test["problem_json"][0]))
    best = task.sort("time_ms").head(1)
    decisions = fitted_gbm.decide(task, float(best["time_ms"][0]), incumbent=best)
    assert set(decisions) <= {Decision.MEASURE, Decision.SKIP}
    assert Decision.SKIP in decisions
    worst = task.sort("time_ms").tail(1)
    # Against a very slow incumbent nearly everything may beat it: nothing confidently slower is skipped.
    lenient = fitted_gbm.decide(task, float(worst["time_ms"][0]) * 10)
    assert lenient.count(Decision.SKIP) == 0


def test_too_little_calibration_means_every_decision_is_defer(splits):
    model = GBMSurrogate(**SMALL).fit(splits["train"])
    model.calibrate(splits["calib"].head(30))
    assert model.calibration_.skip_threshold is None
    assert model.decide(splits["test"], 0.1) == [Decision.DEFER] * splits["test"].height
    model.calibrate(splits["calib"].head(0))
    assert np.all(np.isposinf(model.forecast(splits["test"]).log_time_upper))  # abstaining interval


def test_save_load_round_trip_gives_identical_forecasts(fitted_gbm, splits, tmp_path):
    fitted_gbm.save(tmp_path / "gbm")
    assert not list((tmp_path / "gbm").glob("*.pkl"))
    loaded = load_surrogate(tmp_path / "gbm")
    assert isinstance(loaded, GBMSurrogate)
    assert loaded.get_params() == fitted_gbm.get_params()
    a, b = fitted_gbm.forecast(splits["test"]), loaded.forecast(splits["test"])
    for field in ("log_time_mean", "log_time_lower", "log_time_upper", "p_fail", "log_time_scale"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    assert loaded.decide(splits["test"], 0.1) == fitted_gbm.decide(splits["test"], 0.1)
    for field in ("skip_unit", "n_improver_tasks", "skip_threshold", "skip_threshold_relative"):
        assert getattr(loaded.calibration_, field) == getattr(fitted_gbm.calibration_, field)
    head = splits["test"].head(10)
    np.testing.assert_array_equal(loaded.predict_proba_faster(head, head.reverse()),
                                  fitted_gbm.predict_proba_faster(head, head.reverse()))
    meta = json.loads((tmp_path / "gbm" / "model.json").read_text())
    assert meta["feature_names"] == fitted_gbm.feature_names_
    assert meta["training_data"]["n_rows"] == splits["train"].height
    assert len(meta["training_data"]["key_sha256"]) == 64


def test_loading_another_feature_schema_version_names_both(fitted_gbm, tmp_path):
    fitted_gbm.save(tmp_path / "gbm")
    file = tmp_path / "gbm" / "model.json"
    meta = json.loads(file.read_text())
    meta["feature_schema_version"] = 999
    file.write_text(json.dumps(meta))
    with pytest.raises(SchemaVersionError,
                       match=f"feature schema version 999.*builds features with version {FEATURE_SCHEMA_VERSION}"):
        GBMSurrogate.load(tmp_path / "gbm")


@pytest.mark.parametrize("mode", ["refit", "warm_start"])
@pytest.mark.parametrize("rank_weight", [0.0, 1.0])
def test_update_learns_from_new_records(splits, mode, rank_weight):
    model = GBMSurrogate(**SMALL, update_mode=mode, rank_weight=rank_weight).fit(splits["train"])
    model.calibrate(splits["calib"])
    calibration = model.calibration_
    ok = splits["test"].filter(pl.col("status") == "ok")

    def error() -> float:
        return float(np.abs(model.forecast(ok).log_time_mean - np.log(ok["time_ms"].to_numpy())).mean())

    before = error()
    assert model.update(splits["test"]) is model
    assert model.calibration_ is calibration
    assert error() < before  # it has now seen these records
    if rank_weight == 0.0:
        assert error() < 0.1


def test_candidate_frames_need_only_candidate_columns(fitted_gbm, splits):
    fc = fitted_gbm.forecast(splits["test"].select(CANDIDATE_COLUMNS))
    assert len(fc) == splits["test"].height


@pytest.mark.parametrize("use_compiled", [False, True])
def test_compiled_metadata_never_gives_failures_away(splits, use_compiled):
    """Configurations rejected before compiling have no compiled metadata; p_fail must not read it."""
    model = GBMSurrogate(**SMALL, use_compiled_metadata=use_compiled).fit(splits["train"])
    with_meta = model.forecast(splits["test"])
    bare = model.forecast(splits["test"].select(CANDIDATE_COLUMNS))
    np.testing.assert_array_equal(with_meta.p_fail, bare.p_fail)
    if not use_compiled:  # a candidate is described the same way before and after compiling
        np.testing.assert_array_equal(with_meta.log_time_mean, bare.log_time_mean)
    failed = (splits["test"]["status"] != "ok").to_numpy()
    assert bare.p_fail[failed].mean() > 0.5 > bare.p_fail[~failed].mean()


def test_compiled_inference_matches_lightgbm(splits, tmp_path, monkeypatch):
    pytest.importorskip("lleaves")
    monkeypatch.setenv("KERNELCAST_CACHE", str(tmp_path / "cache"))
    plain = GBMSurrogate(**SMALL).fit(splits["train"]).calibrate(splits["calib"])
    fast = clone(plain).set_params(compiled_inference=True).fit(splits["train"]).calibrate(splits["calib"])
    a, b = plain.forecast(splits["test"]), fast.forecast(splits["test"])
    for field in ("log_time_mean", "log_time_lower", "log_time_upper", "p_fail"):
        np.testing.assert_allclose(getattr(a, field), getattr(b, field), rtol=0, atol=1e-9)
    assert list((tmp_path / "cache" / "lleaves").glob("*.o"))  # compiled once, cached on disk


def test_task_balanced_weights_give_every_task_the_same_total():
    from kernelcast.surrogate.tasks import task_balanced_weights

    tasks = np.array([0, 0, 0, 0, 1, 2, 2])
    w = task_balanced_weights(tasks)
    assert w.mean() == pytest.approx(1.0)
    totals = [w[tasks == t].sum() for t in (0, 1, 2)]
    np.testing.assert_allclose(totals, totals[0])
    assert task_balanced_weights(np.array([], dtype=np.int64)).size == 0


@pytest.mark.parametrize("weighting", ["equal", "records"])
def test_task_weighting_reaches_the_log_time_models(splits, weighting, monkeypatch):
    """With ``equal`` every task of the training records carries the same total weight in the log-time
    models (one task here is cut to a tenth of its records); with ``records`` every record weighs the same."""
    from kernelcast.surrogate.cqr import ConformalQuantileRegressor
    from kernelcast.surrogate.tasks import ok_mask, task_ids

    train = splits["train"]
    tasks = task_ids(train)
    first = tasks == tasks[0]
    train = train.filter(pl.Series(~first | (np.cumsum(first) % 10 == 0)))  # an unbalanced task
    seen = {}
    fit = ConformalQuantileRegressor.fit

    def spy(self, X, y, sample_weight=None, groups=None):
        seen["weight"] = sample_weight
        return fit(self, X, y, sample_weight=sample_weight, groups=groups)

    monkeypatch.setattr(ConformalQuantileRegressor, "fit", spy)
    GBMSurrogate(**SMALL, task_weighting=weighting).fit(train)
    ok_tasks = task_ids(train)[ok_mask(train)]
    if weighting == "records":
        assert seen["weight"] is None
        return
    w = seen["weight"]
    assert w.shape == ok_tasks.shape and w.mean() == pytest.approx(1.0)
    totals = np.array([w[ok_tasks == t].sum() for t in np.unique(ok_tasks)])
    assert np.unique(ok_tasks).size >= 2 and np.ptp(totals) < 1e-9 * totals.max()


def test_task_weighting_changes_the_fit_and_models_saved_before_it_load_as_records(splits, tmp_path):
    equal = GBMSurrogate(**SMALL).fit(splits["train"])
    records = GBMSurrogate(**SMALL, task_weighting="records").fit(splits["train"])
    assert equal.task_weighting == "equal"
    assert not np.allclose(equal.forecast(splits["test"]).log_time_mean,
                           records.forecast(splits["test"]).log_time_mean)
    records.save(tmp_path / "old")
    file = tmp_path / "old" / "model.json"
    meta = json.loads(file.read_text())
    del meta["params"]["task_weighting"]  # as written before the option existed
    file.write_text(json.dumps(meta))
    loaded = load_surrogate(tmp_path / "old")
    assert loaded.task_weighting == "records"
    np.testing.assert_array_equal(loaded.forecast(splits["test"]).log_time_mean,
                                  records.forecast(splits["test"]).log_time_mean)
    with pytest.raises(InvalidParameterError, match="'task_weighting' parameter of GBMSurrogate must be one of"):
        GBMSurrogate(task_weighting="tasks").fit(splits["train"])


def test_rank_loss_reaches_the_mean_model_and_models_saved_before_it_load_without_it(splits, tmp_path, monkeypatch):
    """The mean model gets the within-task ranking loss with the training records' task ids; a model saved
    before the option existed loads with ``rank_weight=0``, how it was trained."""
    from kernelcast.surrogate import ranking
    from kernelcast.surrogate.tasks import ok_mask, task_ids

    seen = {}
    init = ranking.PairwiseRankObjective.__init__

    def spy(self, y, groups, sample_weight=None, **kwargs):
        seen.update(groups=np.asarray(groups), kwargs=kwargs)
        init(self, y, groups, sample_weight, **kwargs)

    monkeypatch.setattr(ranking.PairwiseRankObjective, "__init__", spy)
    train = splits["train"]
    ranked = GBMSurrogate(**SMALL, rank_weight=2.0, rank_partners=3).fit(train)
    assert seen["kwargs"]["rank_weight"] == 2.0 and seen["kwargs"]["partners"] == 3
    ok_tasks = task_ids(train)[ok_mask(train)]
    assert sorted(np.bincount(seen["groups"])) == sorted(np.bincount(ok_tasks))  # same tasks, rows shuffled
    plain = GBMSurrogate(**SMALL, rank_weight=0.0).fit(train)
    assert not np.allclose(ranked.forecast(splits["test"]).log_time_mean, plain.forecast(splits["test"]).log_time_mean)
    plain.save(tmp_path / "old")
    file = tmp_path / "old" / "model.json"
    meta = json.loads(file.read_text())
    for key in ("rank_weight", "rank_temperature", "rank_partners", "rank_min_gap"):
        del meta["params"][key]  # as written before the option existed
    file.write_text(json.dumps(meta))
    loaded = load_surrogate(tmp_path / "old")
    assert loaded.rank_weight == 0.0
    np.testing.assert_array_equal(loaded.forecast(splits["test"]).log_time_mean,
                                  plain.forecast(splits["test"]).log_time_mean)
    with pytest.raises(InvalidParameterError, match="'rank_partners' parameter of GBMSurrogate must be a positive int"):
        GBMSurrogate(rank_partners=0).fit(train)
