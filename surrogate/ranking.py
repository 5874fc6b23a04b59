"""A LightGBM objective that adds a within-group pairwise ranking loss to squared error.

A surrogate is judged by how it orders the candidates of one task (pairwise accuracy, Kendall tau), and it
must also forecast their runtimes. Squared error on log time serves the second aim and only indirectly the
first: its gradient is largest for the candidates it misses by most (often the slow, easily ordered ones), not
for the close pairs whose order is in doubt. :class:`PairwiseRankObjective` adds RankNet's logistic loss on
pairs drawn within each group (task), so the trees also learn the order of close candidates, while the squared
error keeps the forecasts on the log-time scale::

    loss = sum_i w_i (f_i - y_i)^2 / 2
         + rank_weight * sum_(i, j) (w_i / partners) * log(1 + exp(-s_ij (f_j - f_i) / temperature))

with ``s_ij = sign(y_j - y_i)``. Every boosting round draws ``partners`` partners for each row, uniformly from
its group (seeded, so a fit is reproducible); pairs whose targets differ by at most ``min_gap`` carry no rank
loss (a measurement can hardly tell them apart).

Passed to LightGBM as a callable ``objective``, so the booster starts from 0 rather than from the mean target:
the squared-error term fits the constant within the first rounds (the surrogates' targets are centred on the
task's level anyway). Saved boosters read ``objective=custom`` and predict raw scores, as they should.
"""

from __future__ import annotations

import lightgbm as lgb
import numpy as np

from kernelcast.exceptions import InvalidParameterError


class PairwiseRankObjective:
    """Squared error plus a within-group RankNet loss, as a LightGBM objective ``(preds, data) -> (grad, hess)``.

    Parameters
    ----------
    y : ndarray of shape (n,)
        Targets (log runtimes; smaller is faster).
    groups : ndarray of shape (n,)
        Group label of each row: only rows of one group are paired.
    sample_weight : ndarray of shape (n,), optional
        Row weights of both terms (a row's pairs share its weight).
    rank_weight : float, default=1.0
        Weight of the rank term against the squared error (0: squared error alone).
    temperature : float, default=0.1
        Scale of the logistic loss, in target units (log runtime).
    partners : int, default=8
        Partners drawn per row and round.
    min_gap : float, default=0.05
        Pairs whose targets differ by this much or less carry no rank loss (log units: 0.05 is about 5%).
    seed : int, default=0
        Seed of the partner draws.
    """

    def __init__(
        self,
        y: np.ndarray,
        groups: np.ndarray,
        sample_weight: np.ndarray | None = None,
        *,
        rank_weight: float = 1.0,
        temperature: float = 0.1,
        partners: int = 8,
        min_gap: float = 0.05,
        seed: int = 0,
    ) -> None:
        self.y = np.asarray(y, dtype=np.float64)
        n = self.y.shape[0]
        groups = np.asarray(groups)
        if groups.shape != (n,):
            raise InvalidParameterError(f"groups must have one label per row, shape ({n},). Got shape {groups.shape}.")
        self.weight = np.ones(n) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
        if self.weight.shape != (n,):
            raise InvalidParameterError(
                f"sample_weight must have one weight per row, shape ({n},). Got shape {self.weight.shape}."
            )
        check_rank_params(rank_weight, temperature, partners, min_gap, type(self).__name__)
        self.rank_weight = float(rank_weight)
        self.temperature = float(temperature)
        self.partners = int(partners)
        self.min_gap = float(min_gap)
        self._rng = np.random.default_rng(seed)
        _, codes = np.unique(groups, return_inverse=True)
        self._order = np.argsort(codes, kind="stable")  # rows grouped; a group's rows are order[start:end]
        sorted_codes = codes[self._order]
        self._start = np.searchsorted(sorted_codes, sorted_codes, "left")
        self._end = np.searchsorted(sorted_codes, sorted_codes, "right")

    def draw_pairs(self) -> tuple[np.ndarray, np.ndarray]:
        """Draw the pairs ``(i, j)`` of a round: ``partners`` per row within its group, ties within ``min_gap`` out."""
        k = self.partners
        i = np.repeat(self._order, k)
        start, end = np.repeat(self._start, k), np.repeat(self._end, k)
        j = self._order[start + (self._rng.random(i.size) * (end - start)).astype(np.int64)]
        keep = np.abs(self.y[j] - self.y[i]) > self.min_gap
        return i[keep], j[keep]

    def loss(self, preds: np.ndarray, pairs: tuple[np.ndarray, np.ndarray]) -> float:
        """The loss of the module docstring at ``preds`` over the given pairs."""
        i, j = pairs
        sign = np.sign(self.y[j] - self.y[i])
        z = sign * (preds[j] - preds[i]) / self.temperature
        squared = 0.5 * np.sum(self.weight * (preds - self.y) ** 2)
        return float(squared + np.sum(self.rank_weight * self.weight[i] / self.partners * np.logaddexp(0.0, -z)))

    def gradients(
        self, preds: np.ndarray, pairs: tuple[np.ndarray, np.ndarray] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Gradient and Hessian (diagonal) of :meth:`loss` at ``preds`` (shape (n,)).

        ``pairs`` defaults to a fresh :meth:`draw_pairs`, as in each boosting round.
        """
        n, y, w = self.y.shape[0], self.y, self.weight
        grad = w * (preds - y)
        hess = w.copy()
        if self.rank_weight == 0.0 or n == 0:
            return grad, hess
        i, j = self.draw_pairs() if pairs is None else pairs
        sign = np.sign(y[j] - y[i])  # +1: row i is faster, so f_i should be lower
        z = np.clip(sign * (preds[j] - preds[i]) / self.temperature, -50.0, 50.0)
        p = 1.0 / (1.0 + np.exp(z))  # minus the derivative of log(1 + exp(-z))
        pair_weight = self.rank_weight * w[i] / self.partners
        g = pair_weight * p * sign / self.temperature
        h = pair_weight * p * (1.0 - p) / self.temperature**2
        grad += np.bincount(i, g, n) - np.bincount(j, g, n)
        hess += np.bincount(i, h, n) + np.bincount(j, h, n)
        return grad, hess

    def __call__(self, preds: np.ndarray, data: lgb.Dataset) -> tuple[np.ndarray, np.ndarray]:
        """LightGBM's custom-objective hook (``data`` is unused: the targets were given at construction)."""
        return self.gradients(preds)


def check_rank_params(rank_weight: float, temperature: float, partners: int, min_gap: float, owner: str) -> None:
    """Raise :class:`InvalidParameterError` naming the first rank-loss parameter out of its range."""
    checks = (
        ("rank_weight", rank_weight, "a float >= 0", lambda v: v >= 0),
        ("rank_temperature", temperature, "a float > 0", lambda v: v > 0),
        ("rank_min_gap", min_gap, "a float >= 0", lambda v: v >= 0),
    )
    for name, value, allowed, ok in checks:
        if isinstance(value, bool) or not isinstance(value, int | float) or not np.isfinite(value) or not ok(value):
            raise InvalidParameterError(f"The {name!r} parameter of {owner} must be {allowed}. Got {value!r} instead.")
    if isinstance(partners, bool) or not isinstance(partners, int | np.integer) or partners < 1:
        raise InvalidParameterError(
            f"The 'rank_partners' parameter of {owner} must be a positive int. Got {partners!r} instead."
        )
