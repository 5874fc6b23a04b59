"""Metric functions of the evaluation suite: plain NumPy in, floats out.

Ranking metrics are computed within groups (tasks) and averaged over groups, because runtimes are
comparable only within a task. Pairwise metrics exclude pairs whose measured runtimes tie within noise
(the caller passes the tie mask or the noise). Probabilities are ``P(a faster than b)`` against the
outcome ``a_faster``.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

from kernelcast.exceptions import InvalidParameterError

SELECTIVE_COVERAGES: tuple[float, ...] = (0.5, 0.6, 0.7, 0.9)
"""Coverages at which ``selective_accuracy_<percent>`` is reported."""


def _groups(groups: np.ndarray | None, n: int) -> list[np.ndarray]:
    if groups is None:
        return [np.arange(n)]
    groups = np.asarray(groups)
    order = np.argsort(groups, kind="stable")
    sorted_groups = groups[order]
    cuts = np.flatnonzero(sorted_groups[1:] != sorted_groups[:-1]) + 1
    return np.split(order, cuts)


def pairwise_accuracy(
    time_true: np.ndarray,
    time_pred: np.ndarray,
    groups: np.ndarray | None = None,
    *,
    tie_tolerance: float | np.ndarray = 0.0,
    max_pairs_per_group: int = 200_000,
    seed: int = 0,
) -> float:
    """Fraction of within-group pairs whose predicted order matches the measured order.

    A pair whose measured log runtimes differ by at most ``tie_tolerance`` (a scalar, or per item: the
    pair's tolerance is ``sqrt(tol_a**2 + tol_b**2)``) is a tie and is excluded; a predicted tie counts as half
    right. Groups with more than ``max_pairs_per_group`` pairs are sampled (seeded).

    Returns
    -------
    float
        NaN when no pair is left.
    """
    t = np.log(np.asarray(time_true, dtype=np.float64))
    p = np.asarray(time_pred, dtype=np.float64)
    tol = np.broadcast_to(np.asarray(tie_tolerance, dtype=np.float64), t.shape)
    rng = np.random.default_rng(seed)
    right = 0.0
    total = 0
    for members in _groups(groups, t.size):
        m = members.size
        if m < 2:
            continue
        if m * (m - 1) // 2 <= max_pairs_per_group:
            i, j = np.triu_indices(m, k=1)
        else:
            i = rng.integers(0, m, max_pairs_per_group)
            j = (i + rng.integers(1, m, max_pairs_per_group)) % m
        a, b = members[i], members[j]
        gap = t[a] - t[b]
        keep = np.abs(gap) > np.sqrt(tol[a] ** 2 + tol[b] ** 2)
        pred_gap = p[a][keep] - p[b][keep]
        true_sign = np.sign(gap[keep])
        right += float(np.sum(np.sign(pred_gap) == true_sign) + 0.5 * np.sum(pred_gap == 0))
        total += int(keep.sum())
    return right / total if total else math.nan


def _per_group(fn, x: np.ndarray, y: np.ndarray, groups: np.ndarray | None) -> float:
    values = []
    for members in _groups(groups, len(x)):
        if members.size < 2 or np.ptp(x[members]) == 0:
            continue
        if np.ptp(y[members]) == 0:
            values.append(0.0)  # a constant prediction orders nothing
            continue
        values.append(float(fn(x[members], y[members]).statistic))
    return float(np.mean(values)) if values else math.nan


def kendall_tau(y_true: np.ndarray, y_pred: np.ndarray, groups: np.ndarray | None = None) -> float:
    """Kendall's tau-b between measured and predicted values within each group, averaged over groups."""
    return _per_group(stats.kendalltau, np.asarray(y_true, float), np.asarray(y_pred, float), groups)


def spearman(y_true: np.ndarray, y_pred: np.ndarray, groups: np.ndarray | None = None) -> float:
    """Spearman's rank correlation within each group, averaged over groups."""
    return _per_group(stats.spearmanr, np.asarray(y_true, float), np.asarray(y_pred, float), groups)


def top_k_score(time_true: np.ndarray, time_pred: np.ndarray, groups: np.ndarray | None = None, k: int = 1) -> float:
    """TenSet's top-k score, averaged over groups with equal weight.

    Per group: ``best measured time / best measured time among the k candidates predicted fastest``, in
    (0, 1], 1 when the model's top k hold the true optimum (Zheng et al., TenSet, NeurIPS 2021 datasets
    track, section 5; TenSet weights tasks by their weight in a network, here every task weighs the same).
    """
    t = np.asarray(time_true, dtype=np.float64)
    p = np.asarray(time_pred, dtype=np.float64)
    scores = []
    for members in _groups(groups, t.size):
        if members.size == 0:
            continue
        top = members[np.argsort(p[members], kind="stable")[:k]]
        scores.append(t[members].min() / t[top].min())
    return float(np.mean(scores)) if scores else math.nan


def mape(time_true: np.ndarray, time_pred: np.ndarray) -> float:
    """Mean absolute percentage error of runtimes, ``mean(|pred - true| / true)`` (a fraction, not %)."""
    t = np.asarray(time_true, dtype=np.float64)
    return float(np.mean(np.abs(np.asarray(time_pred, dtype=np.float64) - t) / t)) if t.size else math.nan


def interval_coverage(y: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> float:
    """Fraction of ``y`` inside ``[lower, upper]``."""
    y = np.asarray(y, dtype=np.float64)
    return float(np.mean((y >= lower) & (y <= upper))) if y.size else math.nan


def interval_width(lower: np.ndarray, upper: np.ndarray) -> float:
    """Mean width ``upper - lower`` (in the units of the interval; log time here)."""
    width = np.asarray(upper, dtype=np.float64) - np.asarray(lower, dtype=np.float64)
    return float(np.mean(width)) if width.size else math.nan


def bin8_accuracy(true_bins: np.ndarray, proba: np.ndarray) -> float:
    """Fraction whose most probable speedup bin (1..8, columns of ``proba``) is the measured bin."""
    pred = np.argmax(np.asarray(proba), axis=1) + 1
    return float(np.mean(pred == np.asarray(true_bins))) if pred.size else math.nan


def bin8_off_by_one(true_bins: np.ndarray, proba: np.ndarray) -> float:
    """Fraction whose most probable bin is the measured bin or a neighbour."""
    pred = np.argmax(np.asarray(proba), axis=1) + 1
    return float(np.mean(np.abs(pred - np.asarray(true_bins)) <= 1)) if pred.size else math.nan


def _check_binary(p: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(p, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if p.shape != y.shape:
        raise InvalidParameterError(f"Probabilities and outcomes must have one shape. Got {p.shape} and {y.shape}.")
    return p, y


def ece(p: np.ndarray, y: np.ndarray, n_bins: int = 10) -> float:
    """Expected calibration error of binary probabilities with ``n_bins`` equal-width bins on [0, 1].

    ``sum_b (n_b / n) * |mean(y_b) - mean(p_b)|``; bin ``b`` holds ``p`` in ``[b/n_bins, (b+1)/n_bins)``
    (the last bin includes 1).
    """
    p, y = _check_binary(p, y)
    if p.size == 0:
        return math.nan
    idx = np.minimum((p * n_bins).astype(np.int64), n_bins - 1)
    total = 0.0
    for b in range(n_bins):
        mask = idx == b
        if mask.any():
            total += mask.sum() / p.size * abs(y[mask].mean() - p[mask].mean())
    return float(total)


def reliability_curve(p: np.ndarray, y: np.ndarray, n_bins: int = 10) -> dict[str, list[float]]:
    """Per bin of :func:`ece`: mean probability, observed frequency and count (empty bins left out)."""
    p, y = _check_binary(p, y)
    idx = np.minimum((p * n_bins).astype(np.int64), n_bins - 1)
    out: dict[str, list[float]] = {"mean_p": [], "frequency": [], "count": []}
    for b in range(n_bins):
        mask = idx == b
        if mask.any():
            out["mean_p"].append(float(p[mask].mean()))
            out["frequency"].append(float(y[mask].mean()))
            out["count"].append(float(mask.sum()))
    return out


def brier(p: np.ndarray, y: np.ndarray) -> float:
    """Brier score, ``mean((p - y)**2)``."""
    p, y = _check_binary(p, y)
    return float(np.mean((p - y) ** 2)) if p.size else math.nan


def log_loss(p: np.ndarray, y: np.ndarray, eps: float = 1e-12) -> float:
    """Mean negative log-likelihood of binary outcomes (natural log), probabilities clipped to [eps, 1-eps]."""
    p, y = _check_binary(p, y)
    if p.size == 0:
        return math.nan
    p = np.clip(p, eps, 1.0 - eps)
    return float(-np.mean(y * np.log(p) + (1.0 - y) * np.log(1.0 - p)))


def risk_coverage_curve(confidence: np.ndarray, correct: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Selective risk at every coverage: accept the ``k`` most confident, risk = their error rate.

    Returns
    -------
    coverage, risk : ndarray of shape (n,)
        ``coverage[k-1] = k / n`` and ``risk[k-1]`` = error rate among the ``k`` most confident.
    """
    conf = np.asarray(confidence, dtype=np.float64)
    wrong = 1.0 - np.asarray(correct, dtype=np.float64)
    order = np.argsort(-conf, kind="stable")
    k = np.arange(1, conf.size + 1)
    return k / conf.size, np.cumsum(wrong[order]) / k


def aurc(confidence: np.ndarray, correct: np.ndarray) -> float:
    """Area under the risk-coverage curve: the mean selective risk over coverages ``1/n .. 1`` (lower is better)."""
    _, risk = risk_coverage_curve(confidence, correct)
    return float(risk.mean()) if risk.size else math.nan


def selective_accuracy(confidence: np.ndarray, correct: np.ndarray, coverage: float) -> float:
    """Accuracy among the ``ceil(coverage * n)`` most confident predictions."""
    conf = np.asarray(confidence, dtype=np.float64)
    if conf.size == 0:
        return math.nan
    k = max(1, math.ceil(coverage * conf.size - 1e-9))
    order = np.argsort(-conf, kind="stable")[:k]
    return float(np.mean(np.asarray(correct, dtype=np.float64)[order]))


def skip_error(skipped: np.ndarray, improver: np.ndarray) -> float:
    """Realised rate of wrongly skipping: ``P(SKIP | candidate beats the incumbent)``."""
    skipped = np.asarray(skipped, dtype=bool)
    improver = np.asarray(improver, dtype=bool)
    return float(np.mean(skipped[improver])) if improver.any() else math.nan


def skip_misses_by_task(
    skipped: np.ndarray, improver: np.ndarray, task: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per task with at least one improver: its label, its skipped improvers and its improvers.

    Returns ``(tasks, missed, counts)``, each of shape ``(n_tasks,)``; empty without improvers.
    """
    skipped = np.asarray(skipped, dtype=bool)
    improver = np.asarray(improver, dtype=bool)
    tasks, unit, counts = np.unique(np.asarray(task)[improver], return_inverse=True, return_counts=True)
    missed = np.bincount(unit.reshape(-1), weights=skipped[improver].astype(np.float64), minlength=tasks.size)
    return tasks, missed, counts


def skip_error_interval(
    skipped: np.ndarray, improver: np.ndarray, task: np.ndarray, *, level: float = 0.95, n_boot: int = 2000,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of :func:`skip_error` over tasks (tasks resampled with replacement).

    Pairs of one task share that task's forecast errors, so the tasks, not the pairs, are the independent
    draws: with a few dozen test tasks the realised skip error of one split varies by several points around
    what the rule guarantees in expectation. ``(nan, nan)`` without improvers.
    """
    _, missed, counts = skip_misses_by_task(skipped, improver, task)
    if counts.size == 0:
        return math.nan, math.nan
    draws = np.random.default_rng(seed).integers(0, counts.size, size=(n_boot, counts.size))
    rates = missed[draws].sum(axis=1) / counts[draws].sum(axis=1)
    low, high = np.quantile(rates, [(1.0 - level) / 2.0, (1.0 + level) / 2.0])
    return float(low), float(high)


def skip_error_task_mean(skipped: np.ndarray, improver: np.ndarray, task: np.ndarray) -> float:
    """Mean over tasks of each task's realised skip error (tasks with no improver left out).

    The quantity the skip rule's guarantee bounds when its unit is the task; :func:`skip_error` pools the
    pairs instead, so tasks with many candidates weigh more there.
    """
    _, missed, counts = skip_misses_by_task(skipped, improver, task)
    return float(np.mean(missed / counts)) if counts.size else math.nan
