"""Metric functions against values computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from kernelcast.surrogate.evaluation import metrics as M


def test_pairwise_accuracy_hand_computed():
    # One group of three: true order a < b < c; prediction swaps b and c.
    time_true = np.array([1.0, 2.0, 4.0])
    pred = np.log([1.0, 5.0, 3.0])
    # Pairs (a,b) right, (a,c) right, (b,c) wrong -> 2/3.
    assert M.pairwise_accuracy(time_true, pred) == pytest.approx(2 / 3)


def test_pairwise_accuracy_excludes_ties_and_halves_predicted_ties():
    time_true = np.array([1.0, 1.001, 2.0, 3.0])
    pred = np.log([1.0, 1.0, 2.0, 2.0])
    groups = np.array([0, 0, 1, 1])
    # Group 0: measured tie within tolerance 0.01 -> excluded. Group 1: predicted tie -> 0.5.
    assert M.pairwise_accuracy(time_true, pred, groups, tie_tolerance=0.01) == pytest.approx(0.5)
    # Without a tolerance, group 0 counts as a predicted tie too: (0.5 + 0.5) / 2.
    assert M.pairwise_accuracy(time_true, pred, groups) == pytest.approx(0.5)


def test_pairwise_accuracy_never_pairs_across_groups():
    time_true = np.array([1.0, 2.0, 1.5, 3.0])
    pred = np.array([0.0, 1.0, -5.0, -4.0])  # ordered within each group, inverted across groups
    assert M.pairwise_accuracy(time_true, pred, np.array([0, 0, 1, 1])) == 1.0


def test_kendall_and_spearman_average_over_groups():
    y = np.array([1.0, 2.0, 3.0, 1.0, 2.0, 3.0])
    pred = np.array([1.0, 2.0, 3.0, 3.0, 2.0, 1.0])
    groups = np.array([0, 0, 0, 1, 1, 1])
    assert M.kendall_tau(y, pred, groups) == pytest.approx(0.0)  # (1 + -1) / 2
    assert M.spearman(y, pred, groups) == pytest.approx(0.0)
    # Hand count for one group of four: concordant 5, discordant 1 -> tau = 4/6.
    assert M.kendall_tau(np.array([1.0, 2, 3, 4]), np.array([1.0, 3, 2, 4])) == pytest.approx(4 / 6)


def test_top_k_score():
    time_true = np.array([4.0, 1.0, 2.0, 8.0])
    pred = np.array([0.0, 3.0, 1.0, 2.0])  # predicted fastest: item 0 (4 ms), then item 2 (2 ms)
    assert M.top_k_score(time_true, pred, k=1) == pytest.approx(1.0 / 4.0)
    assert M.top_k_score(time_true, pred, k=2) == pytest.approx(1.0 / 2.0)
    assert M.top_k_score(time_true, pred, k=3) == pytest.approx(1.0 / 2.0)  # items 0, 2, 3
    assert M.top_k_score(time_true, pred, k=4) == pytest.approx(1.0)


def test_mape_and_intervals():
    assert M.mape(np.array([1.0, 2.0]), np.array([1.5, 1.0])) == pytest.approx((0.5 + 0.5) / 2)
    y = np.array([0.0, 1.0, 2.0, 3.0])
    lower = np.array([-1.0, 1.5, 1.0, 3.0])
    upper = np.array([1.0, 2.0, 3.0, 4.0])
    assert M.interval_coverage(y, lower, upper) == pytest.approx(0.75)
    assert M.interval_width(lower, upper) == pytest.approx((2 + 0.5 + 2 + 1) / 4)


def test_bin8_accuracy_and_off_by_one():
    proba = np.zeros((3, 8))
    proba[0, 3] = 1.0  # bin 4
    proba[1, 5] = 1.0  # bin 6
    proba[2, 0] = 1.0  # bin 1
    true_bins = np.array([4, 5, 3])
    assert M.bin8_accuracy(true_bins, proba) == pytest.approx(1 / 3)
    assert M.bin8_off_by_one(true_bins, proba) == pytest.approx(2 / 3)


def test_ece_brier_log_loss_hand_computed():
    p = np.array([0.1, 0.1, 0.9, 0.9])
    y = np.array([0.0, 1.0, 1.0, 1.0])
    # Bin [0.1, 0.2): mean p 0.1, frequency 0.5; bin [0.9, 1]: mean p 0.9, frequency 1.
    assert M.ece(p, y) == pytest.approx(0.5 * 0.4 + 0.5 * 0.1)
    assert M.brier(p, y) == pytest.approx((0.01 + 0.81 + 0.01 + 0.01) / 4)
    expected = -(math.log(0.9) + math.log(0.1) + 2 * math.log(0.9)) / 4
    assert M.log_loss(p, y) == pytest.approx(expected)
    assert M.ece(np.array([1.0]), np.array([1.0])) == 0.0  # p = 1 falls in the last bin


def test_risk_coverage_aurc_selective_accuracy():
    confidence = np.array([0.9, 0.8, 0.7, 0.6])
    correct = np.array([1, 0, 1, 1])
    coverage, risk = M.risk_coverage_curve(confidence, correct)
    np.testing.assert_allclose(coverage, [0.25, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(risk, [0.0, 0.5, 1 / 3, 0.25])
    assert M.aurc(confidence, correct) == pytest.approx((0 + 0.5 + 1 / 3 + 0.25) / 4)
    assert M.selective_accuracy(confidence, correct, 0.5) == pytest.approx(0.5)
    assert M.selective_accuracy(confidence, correct, 0.25) == pytest.approx(1.0)
    assert M.selective_accuracy(confidence, correct, 0.6) == pytest.approx(2 / 3)  # ceil(2.4) = 3


def test_skip_error():
    skipped = np.array([True, False, True, False])
    improver = np.array([True, True, False, False])
    assert M.skip_error(skipped, improver) == pytest.approx(0.5)
    assert math.isnan(M.skip_error(skipped, np.zeros(4, dtype=bool)))


def test_skip_error_task_mean_weighs_tasks_equally():
    # Task 0: 1 of 4 improvers skipped; task 1: its one improver skipped; task 2 has no improver.
    skipped = np.array([1, 0, 0, 0, 1, 1, 0], dtype=bool)
    improver = np.array([1, 1, 1, 1, 1, 0, 0], dtype=bool)
    task = np.array([0, 0, 0, 0, 1, 1, 2])
    assert M.skip_error_task_mean(skipped, improver, task) == pytest.approx((0.25 + 1.0) / 2)
    assert M.skip_error(skipped, improver) == pytest.approx(2 / 5)
    assert math.isnan(M.skip_error_task_mean(skipped, np.zeros(7, dtype=bool), task))


def test_skip_error_interval_resamples_tasks_not_pairs():
    rng = np.random.default_rng(0)
    # 30 tasks of 40 improvers each: half the tasks miss 0%, half 10%; pooled rate 0.05
    task = np.repeat(np.arange(30), 40)
    improver = np.ones(task.size, dtype=bool)
    skipped = np.zeros(task.size, dtype=bool)
    for t in range(15):
        skipped[rng.choice(np.flatnonzero(task == t), size=4, replace=False)] = True
    low, high = M.skip_error_interval(skipped, improver, task, seed=1)
    pooled = M.skip_error(skipped, improver)
    assert pooled == pytest.approx(0.05)
    assert low < pooled < high
    # the between-task spread sets the width: the standard error over tasks is 0.05 / sqrt(30) ~ 0.009,
    # so a 95% interval spans about 0.035; treating the 1,200 pairs as independent would give about 0.025
    assert 0.025 < high - low < 0.05
    # every task the same: no between-task spread, the interval collapses
    even = np.zeros(task.size, dtype=bool)
    for t in range(30):
        even[np.flatnonzero(task == t)[:2]] = True
    assert M.skip_error_interval(even, improver, task) == pytest.approx((0.05, 0.05))
    assert all(math.isnan(v) for v in M.skip_error_interval(skipped, np.zeros(task.size, dtype=bool), task))
