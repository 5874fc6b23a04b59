"""Conformal building blocks: finite-sample quantiles, risk control, predictive distributions, bins."""

from __future__ import annotations

import math

import numpy as np
import pytest

from kernelcast.exceptions import InvalidParameterError
from kernelcast.surrogate.bins import BIN_EDGES_SPEEDUP, bin_probabilities, speedup_bin
from kernelcast.surrogate.conformal import (
    ResidualDistribution,
    conformal_quantile,
    cqr_offset,
    risk_control_threshold,
)


def test_conformal_quantile_uses_the_n_plus_one_rank():
    scores = np.arange(1.0, 10.0)  # 9 scores
    # ceil((9 + 1) * 0.9) = 9 -> the largest.
    assert conformal_quantile(scores, 0.9) == 9.0
    assert conformal_quantile(scores, 0.5) == 5.0  # ceil(10 * 0.5) = 5
    assert math.isinf(conformal_quantile(scores[:5], 0.9))  # ceil(6 * 0.9) = 6 > 5: abstain


def test_cqr_offset_hand_computed():
    lower = np.zeros(4)
    upper = np.ones(4)
    y = np.array([0.5, 1.5, -0.25, 0.9])  # scores: -0.5, 0.5, 0.25, -0.1
    # level 0.5: ceil(5 * 0.5) = 3rd smallest of (-0.5, -0.1, 0.25, 0.5) = 0.25
    assert cqr_offset(lower, upper, y, 0.5) == pytest.approx(0.25)


def test_risk_control_threshold_hand_computed():
    scores = np.arange(100.0)  # 100 positives
    # alpha = 0.05: floor(0.05 * 101 - 1) = 4 may score above -> threshold = 5th largest = 95.
    threshold = risk_control_threshold(scores, 0.05)
    assert threshold == 95.0
    assert (np.sum(scores > threshold) + 1) / 101 <= 0.05
    assert risk_control_threshold(np.arange(10.0), 0.05) is None  # n < 1/alpha - 1
    with pytest.raises(InvalidParameterError, match="must be in"):
        risk_control_threshold(scores, 1.5)


def test_risk_control_threshold_groups_of_one_match_pairs():
    scores = np.random.default_rng(3).normal(size=250)
    assert risk_control_threshold(scores, 0.05, groups=np.arange(250)) == risk_control_threshold(scores, 0.05)


def test_risk_control_threshold_by_group_hand_computed():
    # 39 groups: (sum of group losses + 1) / 40 <= 0.05 allows a total loss of 1 above the threshold.
    # Group 0 holds 100 high scores, each of the other 38 groups one score 0.5.
    scores = np.r_[np.linspace(10.0, 11.0, 100), np.full(38, 0.5)]
    groups = np.r_[np.zeros(100, dtype=int), np.arange(1, 39)]
    threshold = risk_control_threshold(scores, 0.05, groups=groups)
    # Every score of group 0 may lie above (its loss is 1), but not one more group's: lam = 0.5.
    assert threshold == 0.5
    # With pairs as units, only floor(0.05 * 139 - 1) = 5 of the 138 scores may lie above.
    assert risk_control_threshold(scores, 0.05) == np.sort(scores)[::-1][5]
    assert risk_control_threshold(scores[:19], 0.05, groups=np.arange(19) % 18) is None  # 18 groups < 19
    with pytest.raises(InvalidParameterError, match="one label per score"):
        risk_control_threshold(scores, 0.05, groups=groups[:-1])


def test_risk_control_by_group_controls_the_mean_group_miss_rate():
    # Groups differ in how their scores sit (a random shift each): the per-group miss rate of a new group,
    # averaged over many draws, stays under alpha.
    rng = np.random.default_rng(0)
    alpha, misses = 0.1, []
    for _ in range(300):
        shift = rng.normal(0.0, 1.0, 41)
        sizes = rng.integers(5, 200, 41)
        groups = np.repeat(np.arange(41), sizes)
        scores = rng.normal(shift[groups], 0.3)
        calib = groups < 40
        lam = risk_control_threshold(scores[calib], alpha, groups=groups[calib])
        misses.append(np.mean(scores[groups == 40] > lam))
    assert np.mean(misses) <= alpha + 0.02  # standard error of the mean of 300 draws: about 0.017
    assert np.mean(misses) > 0.02  # and the rule is not vacuous


def test_residual_distribution_is_uniform_on_exchangeable_data():
    rng = np.random.default_rng(0)
    dist = ResidualDistribution.from_residuals(rng.standard_t(3, 3000), max_points=501)
    pit = dist.cdf(rng.standard_t(3, 20_000))
    # The PIT of new draws is uniform: every decile holds about a tenth.
    counts = np.histogram(pit, bins=10, range=(0, 1))[0] / pit.size
    assert np.all(np.abs(counts - 0.1) < 0.015)
    restored = ResidualDistribution.from_dict(dist.to_dict())
    np.testing.assert_array_equal(restored.cdf(np.linspace(-3, 3, 7)), dist.cdf(np.linspace(-3, 3, 7)))


def test_speedup_bins_follow_the_half_octave_formula():
    np.testing.assert_allclose(BIN_EDGES_SPEEDUP, [0.5, 2**-0.5, 1.0, 2**0.5, 2.0, 2**1.5, 4.0])
    s = np.array([0.1, 0.5, 0.7, 0.75, 1.0, 1.2, 1.5, 2.0, 3.0, 4.0, 100.0])
    expected = [min(8, max(1, math.floor(2 * math.log2(v)) + 4)) for v in s]
    np.testing.assert_array_equal(speedup_bin(s), expected)


def test_bin_probabilities_sum_to_one_and_concentrate():
    from scipy.special import ndtr

    mean = np.log(np.array([1.0, 0.25, 10.0]))  # speedups 1.2, 4.8, 0.12 over a 1.2 ms reference
    cdf = lambda v: ndtr((v - mean) / 1e-3)  # noqa: E731 - a near point mass
    proba = bin_probabilities(cdf, np.log(np.full(3, 1.2)))
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    np.testing.assert_array_equal(np.argmax(proba, axis=1) + 1, speedup_bin(1.2 / np.exp(mean)))
