from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest
from scipy.stats import spearmanr

from kernelcast.exceptions import InvalidParameterError
from kernelcast.measurement.space import ConfigSpace, Param
from kernelcast.search import ReplayOracle
from kernelcast.search.adapt import KnobEncoder, TaskAdapter, adaptable
from kernelcast.surrogate._base import Decision


def _task_frame(toy_frame: pl.DataFrame) -> pl.DataFrame:
    return toy_frame.filter(pl.col("device") == "NVIDIA GeForce RTX 3090")


def _space(toy_frame: pl.DataFrame) -> ConfigSpace:
    oracle = ReplayOracle(toy_frame)
    (task,) = oracle.list_tasks("device=3090")
    return oracle.space(task)


def test_knob_encoder_scales_indices_and_one_hot_encodes_words():
    space = ConfigSpace([Param("BLOCK", (16, 32, 64, 128, 256)), Param("order", ("col", "row")),
                         Param("fixed", (4,))])
    encoder = KnobEncoder(space)
    assert encoder.n_inputs == 3
    X = encoder.encode([{"BLOCK": 16, "order": "row", "fixed": 4}, {"BLOCK": 64, "order": "col", "fixed": 4}])
    np.testing.assert_allclose(X, [[0.0, 0.0, 1.0], [0.5, 1.0, 0.0]])


def test_the_adapter_learns_a_task_the_prior_gets_wrong(toy_frame, make_prior):
    # the prior puts the best BLOCK at 32; the task's is 128. After 24 measurements the corrected forecast
    # ranks the unmeasured configurations much better and points at the right BLOCK.
    frame = _task_frame(toy_frame).filter(pl.col("status") == "ok")
    prior = make_prior()
    adapter = TaskAdapter(prior, _space(toy_frame))
    rng = np.random.default_rng(0)
    measured = rng.choice(frame.height, 24, replace=False)
    adapter.update(frame[measured])
    rest = frame.filter(~pl.Series(np.isin(np.arange(frame.height), measured)))
    truth = np.log(rest["time_ms"].to_numpy())
    before = spearmanr(prior.forecast(rest).log_time_mean, truth).statistic
    after = spearmanr(adapter.forecast(rest).log_time_mean, truth).statistic
    assert after > before + 0.3
    best = json.loads(rest["config_json"][int(np.argmin(adapter.forecast(rest).log_time_mean))])
    assert best["BLOCK"] == 128
    assert json.loads(rest["config_json"][int(np.argmin(prior.forecast(rest).log_time_mean))])["BLOCK"] == 32
    # the interval moves with the mean; the prior's scale is kept
    corrected = adapter.forecast(rest)
    np.testing.assert_allclose(corrected.log_time_upper - corrected.log_time_mean,
                               prior.forecast(rest).log_time_upper - prior.forecast(rest).log_time_mean)


def test_the_adapter_waits_for_enough_records_and_starts_over_on_fit(toy_frame, make_prior):
    frame = _task_frame(toy_frame).filter(pl.col("status") == "ok")
    adapter = TaskAdapter(make_prior(), _space(toy_frame), min_records=3)
    adapter.update(frame.head(2))
    np.testing.assert_array_equal(adapter.correction(frame), 0.0)
    adapter.update(frame.slice(2, 6))
    assert np.abs(adapter.correction(frame)).max() > 0.01
    assert adapter.fit(frame.head(0)).records_ is None
    np.testing.assert_array_equal(adapter.correction(frame), 0.0)


def test_the_adapter_decides_with_the_prior_rule_on_corrected_forecasts(toy_frame, make_prior):
    frame = _task_frame(toy_frame).filter(pl.col("status") == "ok")
    prior = make_prior()
    adapter = TaskAdapter(prior, _space(toy_frame))
    adapter.update(frame.head(30))
    candidates = frame.slice(30, 10)
    decisions = adapter.decide(candidates, 1.0, incumbent=frame.head(1))
    forecast, incumbent = prior.seen[-1]
    np.testing.assert_allclose(forecast.log_time_mean, adapter.forecast(candidates).log_time_mean)
    assert len(incumbent) == 10  # the incumbent's corrected forecast, broadcast to the candidates
    np.testing.assert_allclose(incumbent.log_time_mean, adapter.forecast(frame.head(1)).log_time_mean[0])
    assert set(decisions) <= {Decision.MEASURE, Decision.SKIP}


def test_the_adapter_needs_a_prior_that_decides_on_given_forecasts(toy_frame, knn_surrogate, make_prior):
    assert adaptable(make_prior())
    assert not adaptable(knn_surrogate)
    with pytest.raises(InvalidParameterError, match="needs a prior whose rule applies to given forecasts"):
        TaskAdapter(knn_surrogate, _space(toy_frame))
    with pytest.raises(InvalidParameterError, match=r"'min_records' parameter of TaskAdapter must be an int >= 2"):
        TaskAdapter(make_prior(), _space(toy_frame), min_records=1)


def test_the_correction_is_unsure_far_from_what_was_measured(toy_frame, make_prior):
    frame = _task_frame(toy_frame).filter(pl.col("status") == "ok")
    small_blocks = frame.filter(pl.col("config_json").str.contains('"BLOCK":(16|32),'))
    adapter = TaskAdapter(make_prior(), _space(toy_frame))
    adapter.update(small_blocks.head(30))
    near = frame.filter(pl.col("config_json").str.contains('"BLOCK":32,'))
    far = frame.filter(pl.col("config_json").str.contains('"BLOCK":512,'))
    assert adapter.uncertainty(far).mean() > 2.0 * adapter.uncertainty(near).mean()
    # the forecast's scale is the prior's widened by that uncertainty: wider far away
    prior_scale = make_prior().forecast(far).log_time_scale
    assert np.all(adapter.forecast(far).log_time_scale > prior_scale)
    assert adapter.forecast(far).log_time_scale.mean() > adapter.forecast(near).log_time_scale.mean()
