"""PairwiseRankObjective: squared error plus a within-group RankNet loss, as a LightGBM objective."""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import pytest

from kernelcast.exceptions import InvalidParameterError
from kernelcast.surrogate.ranking import PairwiseRankObjective


def test_without_rank_weight_it_is_weighted_squared_error():
    y = np.array([0.0, 1.0, 2.0])
    w = np.array([1.0, 2.0, 0.5])
    preds = np.array([0.5, 0.5, 0.5])
    grad, hess = PairwiseRankObjective(y, np.zeros(3), w, rank_weight=0.0).gradients(preds)
    np.testing.assert_allclose(grad, w * (preds - y))
    np.testing.assert_allclose(hess, w)


def test_gradient_and_hessian_match_finite_differences_of_the_loss():
    rng = np.random.default_rng(3)
    y = rng.normal(size=40)
    groups = rng.integers(0, 4, 40)
    objective = PairwiseRankObjective(y, groups, rng.uniform(0.5, 2.0, 40), rank_weight=2.0, temperature=0.3,
                                      partners=5, min_gap=0.01, seed=1)
    pairs = objective.draw_pairs()
    assert pairs[0].size > 0 and np.all(groups[pairs[0]] == groups[pairs[1]])  # pairs stay within a group
    assert np.all(np.abs(y[pairs[0]] - y[pairs[1]]) > 0.01)
    preds = rng.normal(size=40)
    grad, hess = objective.gradients(preds, pairs)
    eps = 1e-5
    for row in (0, 7, 23):
        step = np.zeros(40)
        step[row] = eps
        numeric = (objective.loss(preds + step, pairs) - objective.loss(preds - step, pairs)) / (2 * eps)
        assert grad[row] == pytest.approx(numeric, rel=1e-5, abs=1e-7)
        curvature = (objective.loss(preds + step, pairs) - 2 * objective.loss(preds, pairs)
                     + objective.loss(preds - step, pairs)) / eps**2
        assert hess[row] == pytest.approx(curvature, rel=1e-3)


def test_rank_term_pushes_a_pair_apart_only_within_a_group_and_beyond_the_gap():
    y = np.array([0.0, 1.0, 0.0, 0.01, 5.0])
    groups = np.array([0, 0, 1, 1, 2])  # group 1: a near tie; group 2: alone
    preds = np.full(5, 0.5)
    plain, _ = PairwiseRankObjective(y, groups, rank_weight=0.0).gradients(preds)
    ranked, _ = PairwiseRankObjective(y, groups, rank_weight=1.0, partners=50, min_gap=0.05).gradients(preds)
    extra = ranked - plain
    assert extra[0] > 0 > extra[1]  # the faster row is pushed down, the slower one up
    np.testing.assert_array_equal(extra[2:], 0.0)


def test_boosting_with_it_orders_close_candidates_that_squared_error_leaves_tied():
    """Each group holds a few far-off slow rows and many close ones: squared error (few, shallow trees)
    spends its splits on the far-off rows; the rank term also learns the order of the close ones."""
    rng = np.random.default_rng(0)
    n_groups, per = 40, 30
    x_fine = rng.uniform(size=(n_groups * per,))
    slow = rng.uniform(size=n_groups * per) < 0.1
    y = 0.05 * x_fine + 4.0 * slow
    X = np.column_stack([x_fine, slow.astype(float), rng.normal(size=n_groups * per)])
    groups = np.repeat(np.arange(n_groups), per)

    def fine_order_accuracy(objective: object) -> float:
        params = {"objective": objective, "num_leaves": 2, "learning_rate": 0.3, "verbosity": -1, "seed": 0}
        booster = lgb.train(params, lgb.Dataset(X, y), num_boost_round=3)
        pred = booster.predict(X)
        fast = ~slow
        a, b = np.triu_indices(fast.sum(), 1)
        same = groups[fast][a] == groups[fast][b]
        true = np.sign(y[fast][a] - y[fast][b])[same]
        return float(np.mean(np.sign(pred[fast][a] - pred[fast][b])[same] == true))

    ranked = PairwiseRankObjective(y, groups, rank_weight=5.0, temperature=0.01, min_gap=0.0, partners=8)
    assert fine_order_accuracy(ranked) > fine_order_accuracy("regression") + 0.2


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"rank_weight": -1.0}, "'rank_weight' parameter of PairwiseRankObjective must be a float >= 0. Got -1.0"),
    ({"temperature": 0.0}, "'rank_temperature' parameter of PairwiseRankObjective must be a float > 0. Got 0.0"),
    ({"partners": 0}, "'rank_partners' parameter of PairwiseRankObjective must be a positive int. Got 0"),
    ({"min_gap": float("nan")}, "'rank_min_gap' parameter of PairwiseRankObjective must be a float >= 0. Got nan"),
])
def test_bad_parameters_name_the_value_and_what_is_allowed(kwargs, message):
    with pytest.raises(InvalidParameterError, match=message):
        PairwiseRankObjective(np.zeros(3), np.zeros(3), **kwargs)


def test_groups_and_weights_must_have_one_entry_per_row():
    with pytest.raises(InvalidParameterError, match=r"groups must have one label per row, shape \(3,\)"):
        PairwiseRankObjective(np.zeros(3), np.zeros(2))
    with pytest.raises(InvalidParameterError, match=r"sample_weight must have one weight per row"):
        PairwiseRankObjective(np.zeros(3), np.zeros(3), np.ones(4))
