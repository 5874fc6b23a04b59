"""Evaluation figures, drawn with Matplotlib's object API on the Agg canvas (no display, no global state)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def _figure(width: float = 4.5, height: float = 4.0):  # noqa: ANN202 - matplotlib types stay lazy
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=120)
    FigureCanvasAgg(fig)
    return fig


def reliability_diagram(
    curve: dict[str, list[float]], path: str | os.PathLike[str], *, title: str = "Pairwise reliability",
    uncalibrated: dict[str, list[float]] | None = None,
) -> Path:
    """Observed frequency against mean predicted probability per bin (:func:`~.metrics.reliability_curve`)."""
    fig = _figure()
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], color="0.6", linestyle="--", linewidth=1, label="perfect")
    if uncalibrated is not None:
        ax.plot(uncalibrated["mean_p"], uncalibrated["frequency"], marker="s", color="tab:gray", label="uncalibrated")
    ax.plot(curve["mean_p"], curve["frequency"], marker="o", color="tab:blue", label="calibrated")
    ax.set_xlabel("predicted P(a faster than b)")
    ax.set_ylabel("observed frequency")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_title(title)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    return Path(path)


def risk_coverage_plot(
    coverage: np.ndarray, risk: np.ndarray, path: str | os.PathLike[str], *, title: str = "Risk-coverage (pairs)"
) -> Path:
    """Selective risk (error rate of the accepted pairs) against coverage."""
    fig = _figure()
    ax = fig.add_subplot()
    step = max(1, coverage.size // 2000)  # thin the curve: a few thousand points draw the same line
    ax.plot(coverage[::step], risk[::step], color="tab:red")
    ax.set_xlabel("coverage (fraction of pairs answered)")
    ax.set_ylabel("risk (error rate)")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, max(0.05, float(np.nanmax(risk)) * 1.05) if risk.size else 1)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path)
    return Path(path)


def predicted_vs_measured(
    time_true: np.ndarray, time_pred: np.ndarray, path: str | os.PathLike[str], *, title: str = "Runtime (ms)",
    max_points: int = 20_000, seed: int = 0,
) -> Path:
    """Log-log scatter of predicted against measured runtimes, with the diagonal."""
    t = np.asarray(time_true, dtype=np.float64)
    p = np.asarray(time_pred, dtype=np.float64)
    if t.size > max_points:
        keep = np.random.default_rng(seed).choice(t.size, max_points, replace=False)
        t, p = t[keep], p[keep]
    fig = _figure()
    ax = fig.add_subplot()
    ax.scatter(t, p, s=3, alpha=0.3, color="tab:blue", linewidths=0)
    if t.size:
        lo = float(min(t.min(), p.min()))
        hi = float(max(t.max(), p.max()))
        ax.plot([lo, hi], [lo, hi], color="0.4", linestyle="--", linewidth=1)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("measured time (ms)")
    ax.set_ylabel("predicted time (ms)")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path)
    return Path(path)
