"""Protocol settings are validated; the RSE of the median follows its formula."""

import math

import numpy as np
import pytest

from kernelcast.exceptions import InvalidParameterError
from kernelcast.measurement.protocol import Protocol, rse_of_median


def test_defaults_are_valid_and_serialisable():
    settings = Protocol().as_dict()
    assert settings["min_reps"] <= settings["max_reps"]
    assert Protocol(**settings) == Protocol()


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"min_reps": 0}, "'min_reps' parameter of Protocol must be a positive int. Got 0"),
    ({"min_reps": 20, "max_reps": 10}, "'max_reps' parameter of Protocol must be >= min_reps"),
    ({"target_rse": 0}, "'target_rse' parameter of Protocol must be positive"),
    ({"race_factor": 0.9}, "'race_factor' parameter of Protocol must be > 1 or None"),
    ({"inputs_reuse": -1}, "'inputs_reuse' parameter of Protocol must be a positive int"),
])
def test_bad_settings_are_refused(kwargs, message):
    with pytest.raises(InvalidParameterError, match=message):
        Protocol(**kwargs)


def test_rse_of_median():
    samples = np.array([1.0, 1.1, 0.9, 1.0])
    expected = 1.2533 * samples.std(ddof=1) / 2 / 1.0
    assert rse_of_median(samples) == pytest.approx(expected)
    assert math.isinf(rse_of_median(np.array([1.0])))
