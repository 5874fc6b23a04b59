"""Within-task pairs, ties within noise, incumbent pairs, and task levels."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest

from kernelcast.datasets.store import records_frame
from kernelcast.measurement.records import Record, Status
from kernelcast.surrogate.level import LAUNCH_FLOOR_MS, PRIOR_TASKS, TaskLevelModel
from kernelcast.surrogate.tasks import incumbent_pairs, relative_noise, task_ids, within_task_pairs


def _frame(times: dict[str, list[float]]) -> pl.DataFrame:
    records = []
    for device, values in times.items():
        for i, t in enumerate(values):
            records.append(Record(family="f", variant="v", source_hash="h", config={"x": i}, problem={"n": 1},
                                  dtype="float32", device=device, status=Status.OK,
                                  samples_ms=(t * 0.999, t, t * 1.001)))
    return records_frame(records)


def test_pairs_stay_within_tasks_and_skip_ties():
    frame = _frame({"A": [1.0, 1.0001, 2.0, 4.0], "B": [1.0, 3.0]})
    pairs = within_task_pairs(frame)
    tasks = task_ids(frame)
    assert np.array_equal(tasks[pairs.a], tasks[pairs.b])
    # Task A: 6 pairs, minus the tie (1.0, 1.0001); task B: 1 pair.
    assert len(pairs) == 6 - 1 + 1
    times = frame["time_ms"].to_numpy()
    np.testing.assert_array_equal(pairs.a_faster, times[pairs.a] < times[pairs.b])
    assert len(within_task_pairs(frame, exclude_ties=False)) == 7
    assert np.all(relative_noise(frame) >= 0.001)


def test_incumbents_come_from_the_best_fraction_of_their_task():
    frame = _frame({"A": [float(t) for t in range(1, 101)]})
    inc = incumbent_pairs(frame, incumbents_per_task=50, incumbent_top_fraction=0.1, seed=0)
    assert inc.incumbent_ms.max() <= 10.0  # the best 10 of 100
    assert not np.any(inc.candidate == inc.incumbent)
    times = frame["time_ms"].to_numpy()
    np.testing.assert_array_equal(inc.improver, times[inc.candidate] < inc.incumbent_ms)


def test_task_level_known_and_forecast():
    # Two tasks of family f whose mean log time is exactly ln(roofline + floor) + 1.
    roofline = np.array([1.0, 1.0, 10.0, 10.0])
    y = np.log(roofline + LAUNCH_FLOOR_MS) + 1.0
    model = TaskLevelModel().fit(np.array(["t1", "t1", "t2", "t2"]), np.array(["f"] * 4), roofline, y)
    assert model.families_["f"]["b"] == pytest.approx(1.0)  # data and prior agree on slope 1
    assert model.families_["f"]["c"] == pytest.approx(1.0)
    new = model.predict(np.array(["t3", "t1"]), np.array(["f", "f"]), np.array([100.0, 1.0]))
    assert new[0] == pytest.approx(math.log(100.0 + LAUNCH_FLOOR_MS) + 1.0)
    assert new[1] == pytest.approx(y[0])  # a seen task keeps its observed level
    # An unknown family without a work model falls back to the mean of all task means.
    other = model.predict(np.array(["t9"]), np.array(["g"]), np.array([np.nan]))
    assert np.isfinite(other[0])
    assert PRIOR_TASKS > 0
    again = TaskLevelModel.from_dict(model.to_dict())
    np.testing.assert_array_equal(again.predict(np.array(["t3"]), np.array(["f"]), np.array([5.0])),
                                  model.predict(np.array(["t3"]), np.array(["f"]), np.array([5.0])))
