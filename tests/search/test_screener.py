from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from kernelcast.exceptions import InvalidParameterError
from kernelcast.search import Screener
from kernelcast.surrogate._base import Decision, Forecast, Surrogate


class FixedSurrogate(Surrogate):
    """Forecasts given in advance; decides SKIP above the incumbent, DEFER in a band, MEASURE below."""

    def __init__(self, *, times_ms, p_fail=None):
        self.times_ms = np.asarray(times_ms, dtype=float)
        self.p_fail = None if p_fail is None else np.asarray(p_fail, dtype=float)
        self.updates = []

    def fit(self, records, y=None):
        return self

    def calibrate(self, records):
        return self

    def forecast(self, candidates):
        mean = np.log(self.times_ms[: candidates.height])
        return Forecast(mean, mean - 0.1, mean + 0.1, 0.9, p_fail=None if self.p_fail is None else self.p_fail)

    def predict_proba_faster(self, candidates_a, candidates_b):
        raise NotImplementedError

    def decide(self, candidates, incumbent_ms):
        t = self.times_ms[: candidates.height]
        return [Decision.SKIP if x > 1.5 * incumbent_ms else Decision.DEFER if x > incumbent_ms else Decision.MEASURE
                for x in t]

    def update(self, records):
        self.updates.append(len(records))
        return self


FRAME = pl.DataFrame({"config_json": [f'{{"i":{i}}}' for i in range(6)]})


def test_selective_rule_orders_measure_then_defer_by_expected_speed():
    surrogate = FixedSurrogate(times_ms=[3.0, 1.2, 0.8, 0.5, 1.1, 9.0])
    screening = Screener(surrogate).screen(FRAME, incumbent_ms=1.0)
    assert screening.decisions == (Decision.SKIP, Decision.DEFER, Decision.MEASURE, Decision.MEASURE,
                                   Decision.DEFER, Decision.SKIP)
    assert screening.priority() == [3, 2, 4, 1]
    assert screening.skipped() == [0, 5]
    attrs = screening.attrs(0)
    assert attrs["decision"] == "skip"
    assert attrs["forecast_ms"] == pytest.approx(3.0)
    assert attrs["forecast_lower_ms"] == pytest.approx(3.0 * np.exp(-0.1))


def test_no_incumbent_means_nothing_can_be_skipped():
    screening = Screener(FixedSurrogate(times_ms=[3.0, 9.0])).screen(FRAME.head(2), incumbent_ms=None)
    assert screening.decisions == (Decision.MEASURE, Decision.MEASURE)


def test_failure_probability_lowers_the_rank():
    surrogate = FixedSurrogate(times_ms=[0.5, 0.6, 0.7], p_fail=[0.9, 0.0, 0.0])
    screening = Screener(surrogate).screen(FRAME.head(3), incumbent_ms=10.0)
    assert screening.priority() == [1, 2, 0]


def test_top_fraction_keeps_the_best_quarter_without_confidence():
    surrogate = FixedSurrogate(times_ms=[3.0, 1.2, 0.8, 0.5, 1.1, 9.0, 2.0, 4.0])
    frame = pl.DataFrame({"config_json": [f'{{"i":{i}}}' for i in range(8)]})
    screening = Screener(surrogate, rule="top_fraction").screen(frame, incumbent_ms=0.1)
    assert [i for i, d in enumerate(screening.decisions) if d is Decision.MEASURE] == [2, 3]
    assert screening.priority() == [3, 2]


def test_learning_is_optional_and_survives_a_surrogate_that_cannot_update(caplog):
    surrogate = FixedSurrogate(times_ms=[1.0])
    Screener(surrogate, learn=False).learn(FRAME)
    assert surrogate.updates == []
    screener = Screener(surrogate)
    screener.learn(FRAME)
    assert surrogate.updates == [6]

    class Frozen(FixedSurrogate):
        def update(self, records):
            raise NotImplementedError("no updates")

    frozen = Screener(Frozen(times_ms=[1.0]))
    frozen.learn(FRAME)
    assert frozen.update_errors == ["NotImplementedError: no updates"]
    assert not frozen.learns
    assert "cannot learn" in caplog.text


def test_parameters_are_checked():
    with pytest.raises(InvalidParameterError, match="'rule' parameter of Screener must be one of 'selective'"):
        Screener(FixedSurrogate(times_ms=[1.0]), rule="bayes")
    with pytest.raises(InvalidParameterError, match=r"'keep_fraction' parameter of Screener must be in \(0, 1\]"):
        Screener(FixedSurrogate(times_ms=[1.0]), rule="top_fraction", keep_fraction=0.0)


def test_a_failed_update_is_retried_with_the_next_batch(caplog):
    class Flaky(FixedSurrogate):
        def update(self, records):
            if len(records) < 3:
                raise ValueError("needs more records")
            return super().update(records)

    surrogate = Flaky(times_ms=[1.0])
    screener = Screener(surrogate)
    screener.learn(FRAME.head(2))
    assert surrogate.updates == []
    assert screener.learns
    assert "retrying with the next batch" in caplog.text
    screener.learn(FRAME.head(1))
    assert surrogate.updates == [3]  # the two unlearned records came along
    screener.learn(FRAME.head(1))
    screener.learn(FRAME.head(1))
    screener.learn(FRAME.head(1))
    assert surrogate.updates == [3, 3]
    assert len(screener.update_errors) == 3

    class Broken(FixedSurrogate):
        def update(self, records):
            raise RuntimeError("bug")

    broken = Screener(Broken(times_ms=[1.0]))
    for _ in range(3):
        broken.learn(FRAME.head(1))
    assert not broken.learns
    assert "going on without updates" in caplog.text


def test_the_incumbent_configuration_reaches_surrogates_that_use_it():
    class Relative(FixedSurrogate):
        def decide(self, candidates, incumbent_ms, *, incumbent=None):
            self.seen = incumbent
            return super().decide(candidates, incumbent_ms)

    surrogate = Relative(times_ms=[3.0, 0.5])
    row = FRAME.head(1)
    Screener(surrogate).screen(FRAME.head(2), incumbent_ms=1.0, incumbent=row)
    assert surrogate.seen is row
    plain = FixedSurrogate(times_ms=[3.0, 0.5])  # its decide takes no incumbent: called without it
    assert Screener(plain).screen(FRAME.head(2), 1.0, incumbent=row).decisions == (Decision.SKIP, Decision.MEASURE)


def test_optimism_ranks_uncertain_candidates_up_without_changing_decisions():
    class Unsure(FixedSurrogate):
        def uncertainty(self, candidates):
            return np.array([0.0, 0.5, 0.0])[: candidates.height]

    surrogate = Unsure(times_ms=[0.5, 0.6, 0.7])
    plain = Screener(surrogate).screen(FRAME.head(3), incumbent_ms=10.0)
    bold = Screener(surrogate, optimism=1.0).screen(FRAME.head(3), incumbent_ms=10.0)
    assert plain.priority() == [0, 1, 2]
    assert bold.priority() == [1, 0, 2]  # 0.6 ms at 0.5 sd faster is 0.36 ms
    assert bold.decisions == plain.decisions
    with pytest.raises(InvalidParameterError, match=r"'optimism' parameter of Screener must be a float >= 0"):
        Screener(surrogate, optimism=-1.0)
