"""The baselines share the interface: roofline (JSON coefficients) and random forest (skops files)."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from sklearn.base import clone

from kernelcast.exceptions import NotFittedError
from kernelcast.surrogate import Decision, ForestSurrogate, RooflineSurrogate, load_surrogate
from kernelcast.surrogate.evaluation import metrics as M
from kernelcast.surrogate.tasks import log_time, ok_mask, task_ids


@pytest.mark.parametrize("make", [
    lambda: RooflineSurrogate(),
    lambda: ForestSurrogate(n_estimators=20, n_jobs=1),
])
def test_baseline_fits_ranks_and_round_trips(make, splits, tmp_path):
    model = make()
    assert clone(model).get_params() == model.get_params()
    with pytest.raises(NotFittedError, match="is not fitted yet"):
        model.forecast(splits["test"])
    model.fit(splits["train"]).calibrate(splits["calib"])
    test = splits["test"].filter(pl.Series(ok_mask(splits["test"])))
    fc = model.forecast(test)
    tau = M.kendall_tau(log_time(test), fc.log_time_mean, task_ids(test))
    assert tau > 0.3  # learns something about the configurations
    decisions = model.decide(test, 0.05)
    assert set(decisions) <= {Decision.MEASURE, Decision.SKIP}
    model.save(tmp_path / "m")
    assert not list((tmp_path / "m").glob("*.pkl"))
    loaded = load_surrogate(tmp_path / "m")
    assert type(loaded) is type(model)
    again = loaded.forecast(test)
    np.testing.assert_array_equal(again.log_time_mean, fc.log_time_mean)
    np.testing.assert_array_equal(again.log_time_upper, fc.log_time_upper)


def test_cross_calibration_uses_out_of_group_forecasts(splits):
    from kernelcast.surrogate.evaluation.splits import group_labels

    train = splits["train"]
    model = RooflineSurrogate().fit(train)
    model.cross_calibrate(train, group_labels(train, "device"))
    assert model.calibration_.method == "cross"
    assert model.calibration_.n_records == int(ok_mask(train).sum())
    # Out-of-device residuals are larger than in-sample ones: the cross offset is the wider one.
    in_sample = RooflineSurrogate().fit(train).calibrate(train).calibration_.interval_offset
    assert model.calibration_.interval_offset > in_sample
