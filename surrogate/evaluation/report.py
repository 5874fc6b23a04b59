"""Evaluate a fitted, calibrated surrogate on test records: every metric of the suite in one dict.

Keys of :attr:`Evaluation.metrics` are the metric names exactly (``pairwise_accuracy``, ``kendall_tau``,
``spearman``, ``top1_score``, ``top5_score``, ``mape``, ``interval_coverage``, ``interval_width``,
``bin8_accuracy``, ``bin8_off_by_one``, ``ece``, ``brier``, ``log_loss`` (of calibrated pairwise
probabilities; ``*_uncalibrated`` for ``Phi(z)``), ``aurc``, ``selective_accuracy_50/60/70/90``,
``skip_error`` (realised ``P(SKIP | candidate beats incumbent)``, pooled over pairs), ``skip_error_ci_low`` and
``skip_error_ci_high`` (its 95% bootstrap interval over test tasks), ``skip_error_task_mean`` (the same per
task, averaged over tasks), ``skip_error_target``, ``skip_rate``,
``defer_rate``, and counts). How each is defined: :mod:`kernelcast.surrogate.evaluation.metrics`.

Bins and decisions are computed as a search uses them: against a reference or incumbent whose
configuration and runtime are both known (``bin8_*``, ``skip_*``), and against the runtime alone
(``*_absolute``), where the model's error on the task's overall level (an unseen GPU) counts in full.

Pairs and (candidate, incumbent) pairs are formed within tasks of the test records only, ties within
measured noise excluded, with the same constructions the surrogates calibrate with
(:mod:`kernelcast.surrogate.tasks`).
"""

from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from kernelcast.exceptions import InvalidParameterError
from kernelcast.surrogate._base import CANDIDATE_COLUMNS, Decision, Forecast, Surrogate
from kernelcast.surrogate.bins import speedup_bin
from kernelcast.surrogate.evaluation import metrics as M
from kernelcast.surrogate.tasks import (
    TIE_Z,
    incumbent_pairs,
    log_time,
    ok_mask,
    relative_noise,
    task_ids,
    task_labels,
    within_task_pairs,
)


@dataclasses.dataclass(frozen=True)
class Evaluation:
    """Result of :func:`evaluate_surrogate`.

    Attributes
    ----------
    metrics : dict of str to float
        The metrics (NaN where undefined).
    per_task : dict of str to dict
        Ranking metrics of each test task.
    curves : dict
        Data of the figures: reliability curves, risk-coverage curve, measured and predicted runtimes.
    """

    metrics: dict[str, float]
    per_task: dict[str, dict[str, float]]
    curves: dict[str, Any]


def _take(fc: Forecast, idx: np.ndarray) -> Forecast:
    return Forecast(
        log_time_mean=fc.log_time_mean[idx],
        log_time_lower=fc.log_time_lower[idx],
        log_time_upper=fc.log_time_upper[idx],
        coverage=fc.coverage,
        p_fail=None if fc.p_fail is None else fc.p_fail[idx],
        log_time_scale=None if fc.log_time_scale is None else fc.log_time_scale[idx],
    )


def evaluate_surrogate(
    surrogate: Surrogate, test: pl.DataFrame, *, seed: int = 0, max_pairs_per_task: int = 20_000
) -> Evaluation:
    """Compute the evaluation suite of ``surrogate`` on the record frame ``test``.

    Parameters
    ----------
    surrogate : Surrogate
        Fitted and calibrated (an uncalibrated one gets infinite intervals and DEFER decisions).
    test : polars.DataFrame
        Held-out records, never seen in training or calibration.
    seed : int
        Seed of pair sampling.
    max_pairs_per_task : int
        Pairs sampled per task for pairwise metrics.
    """
    ok = ok_mask(test)
    frame = test.filter(pl.Series(ok))
    if frame.height < 2:
        raise InvalidParameterError(f"Evaluation needs at least 2 test records with a runtime. Got {frame.height}.")
    fast = hasattr(surrogate, "pairwise_proba")
    fc = surrogate.forecast(frame.select(CANDIDATE_COLUMNS + tuple(c for c in ("n_regs", "n_spills", "shared_bytes",
                                                                                "num_warps", "num_stages")
                                                                       if c in frame.columns)))
    y = log_time(frame)
    time_true = np.exp(y)
    time_pred = np.exp(fc.log_time_mean)
    tasks = task_ids(frame)
    noise = relative_noise(frame)
    out: dict[str, float] = {}

    # -- ranking and regression ---------------------------------------------------------------------
    out["pairwise_accuracy"] = M.pairwise_accuracy(time_true, fc.log_time_mean, tasks, tie_tolerance=TIE_Z * noise,
                                                   seed=seed)
    out["kendall_tau"] = M.kendall_tau(y, fc.log_time_mean, tasks)
    out["spearman"] = M.spearman(y, fc.log_time_mean, tasks)
    out["top1_score"] = M.top_k_score(time_true, time_pred, tasks, k=1)
    out["top5_score"] = M.top_k_score(time_true, time_pred, tasks, k=5)
    out["mape"] = M.mape(time_true, time_pred)
    out["interval_coverage"] = M.interval_coverage(y, fc.log_time_lower, fc.log_time_upper)
    out["interval_width"] = M.interval_width(fc.log_time_lower, fc.log_time_upper)
    out["interval_coverage_target"] = fc.coverage

    # -- pairwise probabilities ---------------------------------------------------------------------
    pairs = within_task_pairs(frame, max_pairs_per_task=max_pairs_per_task, seed=seed)
    outcome = pairs.a_faster.astype(np.float64)
    if fast:
        p = surrogate.pairwise_proba(fc, pairs.a, pairs.b)
        p_raw = surrogate.pairwise_proba(fc, pairs.a, pairs.b, calibrated=False)
    else:
        cands = frame.select(CANDIDATE_COLUMNS)
        p = surrogate.predict_proba_faster(cands[pairs.a], cands[pairs.b])
        p_raw = p
    mean_gap = fc.log_time_mean[pairs.b] - fc.log_time_mean[pairs.a]  # > 0: a forecast faster
    predicted_a = np.where(mean_gap != 0, mean_gap > 0, p > 0.5)
    correct = predicted_a == pairs.a_faster
    confidence = np.abs(p - 0.5)
    out["ece"] = M.ece(p, outcome)
    out["brier"] = M.brier(p, outcome)
    out["log_loss"] = M.log_loss(p, outcome)
    out["ece_uncalibrated"] = M.ece(p_raw, outcome)
    out["brier_uncalibrated"] = M.brier(p_raw, outcome)
    out["log_loss_uncalibrated"] = M.log_loss(p_raw, outcome)
    out["aurc"] = M.aurc(confidence, correct)
    for cov in M.SELECTIVE_COVERAGES:
        out[f"selective_accuracy_{round(cov * 100)}"] = M.selective_accuracy(confidence, correct, cov)
    coverage_curve, risk_curve = M.risk_coverage_curve(confidence, correct)

    # -- speedup bins: candidate a against b as the reference (its configuration and runtime known) ----
    reference_ms = time_true[pairs.b]
    true_bins = speedup_bin(reference_ms / time_true[pairs.a])
    bin_proba = bin_proba_abs = None
    if fast:
        bin_proba = surrogate.bin_proba_from_forecast(_take(fc, pairs.a), reference_ms, reference=_take(fc, pairs.b))
        bin_proba_abs = surrogate.bin_proba_from_forecast(_take(fc, pairs.a), reference_ms)
    else:
        try:
            bin_proba_abs = surrogate.predict_bin_proba(frame.select(CANDIDATE_COLUMNS)[pairs.a], reference_ms)
        except NotImplementedError:
            pass
        bin_proba = bin_proba_abs
    for suffix, proba in (("", bin_proba), ("_absolute", bin_proba_abs)):
        out[f"bin8_accuracy{suffix}"] = M.bin8_accuracy(true_bins, proba) if proba is not None else math.nan
        out[f"bin8_off_by_one{suffix}"] = M.bin8_off_by_one(true_bins, proba) if proba is not None else math.nan

    # -- the SKIP rule: against the incumbent's configuration and runtime, and its runtime alone -----
    top = getattr(surrogate, "incumbent_top_fraction", 0.25)
    inc = incumbent_pairs(frame, incumbent_top_fraction=top, seed=seed + 1)
    runs: dict[str, list[Decision]] = {}
    if fast:
        cand_fc = _take(fc, inc.candidate)
        runs[""] = surrogate.decide_from_forecast(cand_fc, inc.incumbent_ms, incumbent=_take(fc, inc.incumbent))
        runs["_absolute"] = surrogate.decide_from_forecast(cand_fc, inc.incumbent_ms)
    else:
        runs[""] = runs["_absolute"] = surrogate.decide(frame.select(CANDIDATE_COLUMNS)[inc.candidate],
                                                        inc.incumbent_ms)
    out["skip_error_target"] = float(getattr(surrogate, "skip_error_rate", math.nan))
    for suffix, decisions in runs.items():
        kinds = np.array([d.value for d in decisions])
        skipped = kinds == Decision.SKIP.value
        out[f"skip_error{suffix}"] = M.skip_error(skipped, inc.improver)
        out[f"skip_error_task_mean{suffix}"] = M.skip_error_task_mean(skipped, inc.improver, inc.task)
        out[f"skip_error_joint{suffix}"] = float(np.mean(skipped & inc.improver)) if len(inc) else math.nan
        out[f"skip_rate{suffix}"] = float(np.mean(skipped)) if len(inc) else math.nan
        out[f"defer_rate{suffix}"] = float(np.mean(kinds == Decision.DEFER.value)) if len(inc) else math.nan

    skipped = np.array([d.value for d in runs[""]]) == Decision.SKIP.value
    out["skip_error_ci_low"], out["skip_error_ci_high"] = M.skip_error_interval(
        skipped, inc.improver, inc.task, seed=seed)
    task_ids_, missed, improvers = M.skip_misses_by_task(skipped, inc.improver, inc.task)
    missed_by_task = dict(zip(task_ids_.tolist(), zip(missed.tolist(), improvers.tolist(), strict=True), strict=True))

    # -- failures -----------------------------------------------------------------------------------
    if fc.p_fail is not None and test.height > frame.height:
        fc_all = surrogate.forecast(test.select(CANDIDATE_COLUMNS))
        failed = (~ok).astype(np.float64)
        out["fail_brier"] = M.brier(fc_all.p_fail, failed)
        out["fail_rate"] = float(failed.mean())

    out["n_test_records"] = float(test.height)
    out["n_test_ok"] = float(frame.height)
    out["n_tasks"] = float(np.unique(tasks).size)
    out["n_pairs"] = float(len(pairs))
    out["n_incumbent_pairs"] = float(len(inc))
    out["n_improver_pairs"] = float(inc.improver.sum())

    labels = np.array(task_labels(frame))
    per_task: dict[str, dict[str, float]] = {}
    for t in np.unique(tasks):
        rows = tasks == t
        sel = pairs.task == t
        skip_m, skip_n = missed_by_task.get(t.item(), (0.0, 0))
        per_task[str(labels[rows][0])] = {
            "n_records": float(rows.sum()),
            "kendall_tau": M.kendall_tau(y[rows], fc.log_time_mean[rows]),
            "spearman": M.spearman(y[rows], fc.log_time_mean[rows]),
            "top1_score": M.top_k_score(time_true[rows], time_pred[rows], k=1),
            "top5_score": M.top_k_score(time_true[rows], time_pred[rows], k=5),
            "pairwise_accuracy": float(np.mean(correct[sel])) if sel.any() else math.nan,
            "mape": M.mape(time_true[rows], time_pred[rows]),
            "interval_coverage": M.interval_coverage(y[rows], fc.log_time_lower[rows], fc.log_time_upper[rows]),
            "skip_error": skip_m / skip_n if skip_n else math.nan,
            "n_improver_pairs": float(skip_n),
        }
    curves = {
        "reliability": M.reliability_curve(p, outcome),
        "reliability_uncalibrated": M.reliability_curve(p_raw, outcome),
        "risk_coverage": (coverage_curve, risk_curve),
        "time_true": time_true,
        "time_pred": time_pred,
    }
    return Evaluation(metrics=out, per_task=per_task, curves=curves)


def write_plots(evaluation: Evaluation, directory: str | os.PathLike[str], *, title: str = "") -> list[Path]:
    """Write the reliability diagram, risk-coverage curve and predicted-vs-measured plot as PNG files."""
    from kernelcast.surrogate.evaluation import plots

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    suffix = f" ({title})" if title else ""
    c = evaluation.curves
    return [
        plots.reliability_diagram(c["reliability"], directory / "reliability.png",
                                  title=f"Pairwise reliability{suffix}", uncalibrated=c["reliability_uncalibrated"]),
        plots.risk_coverage_plot(*c["risk_coverage"], directory / "risk_coverage.png",
                                 title=f"Risk-coverage{suffix}"),
        plots.predicted_vs_measured(c["time_true"], c["time_pred"], directory / "predicted_vs_measured.png",
                                    title=f"Runtime{suffix}"),
    ]
