"""The harness: many tasks x seeds x strategies at equal budget, scored against each task's optimum.

For every (task, strategy, seed) the harness runs one :class:`~kernelcast.search.loop.Search` with the same
budget and scores what it found with the oracle's reference runtimes (a replay oracle knows the stored
median runtime of every configuration and the task's optimum):

- **best-found speed** of a run: ``optimum_ms / reference_ms(best)`` where ``best`` is the configuration the
  search itself would pick (its fastest *measured* runtime, one noisy draw in replay), scored by its stored
  median runtime; 1.0 means the optimum was found, 0.0 that nothing ran;
- **within 5%**: best-found speed >= 1 / 1.05 (the runtime is at most 5% above the optimum);
- **measurements to 5%**: the first measurement after which the search's pick is within 5% (``None`` if it
  never is within the budget);
- **budget spent**: measurements and GPU seconds; **surrogate seconds**, reported separately.

Per strategy, :func:`summarize` reports the median over runs of the best-found speed
(``median_best_over_optimum_speed``), ``runs_within_5pct``, ``median_measurements_to_5pct`` (runs that never
got within 5% count as infinitely many; ``None`` when the median is such a run), and the per-task medians
with their median over tasks. :func:`curves` gives the median best-so-far speed after each measurement;
:meth:`HarnessResult.plot` draws it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kernelcast.exceptions import InvalidParameterError
from kernelcast.search.loop import Budget, Search, SearchResult
from kernelcast.search.oracles._base import Oracle, Task, default_budget
from kernelcast.search.strategies import Strategy, parse_strategies
from kernelcast.search.tracking import log_search
from kernelcast.surrogate._base import Surrogate

WITHIN = 0.05
"""A run is *within 5%* when its pick's runtime is at most ``1 + WITHIN`` times the optimum."""


@dataclasses.dataclass(frozen=True)
class RunScore:
    """One search scored against its task's optimum.

    Attributes
    ----------
    task : Task
    strategy : str
    seed : int
    budget : int
        Measurement budget of the run.
    measurements : int
        Measurements made.
    gpu_seconds, surrogate_seconds, wall_seconds : float
        Budget spent on the oracle, time in the surrogate, wall time of the run (s).
    optimum_ms : float or None
        The task's best runtime (ms), where the oracle knows it.
    best_config : dict or None
        The configuration the search picked (fastest measured).
    best_reference_ms : float or None
        Its reference runtime (ms).
    curve : tuple of float
        Best-found speed after each measurement (0.0 before the first ``ok``), one per measurement.
    actions : dict
        Count of trials per action (measure, skip, cache, invalid, ...).
    """

    task: Task
    strategy: str
    seed: int
    budget: int
    measurements: int
    gpu_seconds: float
    surrogate_seconds: float
    wall_seconds: float
    optimum_ms: float | None
    best_config: dict[str, Any] | None
    best_reference_ms: float | None
    curve: tuple[float, ...]
    actions: dict[str, int]

    @property
    def speed(self) -> float | None:
        """Best-found speed relative to the optimum, in [0, 1]; ``None`` where the optimum is unknown."""
        if self.optimum_ms is None:
            return None
        return self.curve[-1] if self.curve else 0.0

    def measurements_to(self, within: float = WITHIN) -> int | None:
        """First measurement (1-based) after which the pick is within ``within`` of the optimum, or ``None``."""
        threshold = 1.0 / (1.0 + within)
        for i, speed in enumerate(self.curve, start=1):
            if speed >= threshold - 1e-12:
                return i
        return None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunScore:
        """Rebuild a score from :meth:`to_dict` output (to merge harness results run apart)."""
        fields = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in fields}
        kwargs["task"] = Task(**data["task"])
        kwargs["curve"] = tuple(data["curve"])
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form."""
        out = dataclasses.asdict(self)
        out["task"] = self.task.as_dict()
        out["task_label"] = self.task.label()
        out["speed"] = self.speed
        out["measurements_to_5pct"] = self.measurements_to()
        out["curve"] = list(self.curve)
        return out


def score(result: SearchResult, oracle: Oracle) -> RunScore:
    """Score a search result with the oracle's reference runtimes (see the module docstring)."""
    optimum = oracle.optimum_ms(result.task)
    curve: list[float] = []
    cache: dict[int, float | None] = {}
    for incumbent in result.incumbents():
        if incumbent is None or optimum is None:
            curve.append(0.0)
            continue
        if incumbent.index not in cache:
            cache[incumbent.index] = oracle.reference_time_ms(result.task, incumbent.config)
        reference = cache[incumbent.index]
        curve.append(optimum / reference if reference else 0.0)
    best = result.best
    return RunScore(
        task=result.task, strategy=result.strategy, seed=result.seed, budget=result.budget.measurements,
        measurements=len(result.measurements), gpu_seconds=result.gpu_seconds,
        surrogate_seconds=result.surrogate_seconds, wall_seconds=result.wall_seconds, optimum_ms=optimum,
        best_config=dict(best.config) if best else None,
        best_reference_ms=oracle.reference_time_ms(result.task, best.config) if best else None,
        curve=tuple(curve), actions=dict(result.actions),
    )


def _median(values: Iterable[float]) -> float | None:
    items = list(values)
    if not items:
        return None
    value = float(statistics.median(items))
    return value if math.isfinite(value) else None


def summarize(runs: Sequence[RunScore], within: float = WITHIN) -> dict[str, dict[str, Any]]:
    """Metrics per strategy over ``runs`` (see the module docstring), in the order strategies first appear."""
    out: dict[str, dict[str, Any]] = {}
    for strategy in dict.fromkeys(r.strategy for r in runs):
        mine = [r for r in runs if r.strategy == strategy]
        speeds = [r.speed for r in mine if r.speed is not None]
        to_within = [r.measurements_to(within) for r in mine]
        steps = [float(n) if n is not None else math.inf for n in to_within]
        per_task: dict[str, dict[str, Any]] = {}
        for task in dict.fromkeys(r.task for r in mine):
            runs_t = [r for r in mine if r.task == task]
            steps_t = [float(n) if (n := r.measurements_to(within)) is not None else math.inf for r in runs_t]
            per_task[task.label()] = {
                "runs": len(runs_t),
                "median_best_over_optimum_speed": _median(r.speed for r in runs_t if r.speed is not None),
                "runs_within_5pct": sum(n is not None for n in (r.measurements_to(within) for r in runs_t)),
                "median_measurements_to_5pct": _median(steps_t),
                "median_measurements_to_5pct_censored": float(statistics.median(steps_t)),
            }
        task_steps = [v["median_measurements_to_5pct_censored"] for v in per_task.values()]
        out[strategy] = {
            "runs": len(mine),
            "tasks": len(per_task),
            "median_best_over_optimum_speed": _median(speeds),
            "mean_best_over_optimum_speed": float(np.mean(speeds)) if speeds else None,
            "min_best_over_optimum_speed": min(speeds) if speeds else None,
            "runs_within_5pct": sum(n is not None for n in to_within),
            "median_measurements_to_5pct": _median(steps),
            "median_over_tasks_of_median_measurements_to_5pct": _median(task_steps),
            "measurements": int(sum(r.measurements for r in mine)),
            "median_measurements": _median(r.measurements for r in mine),
            "gpu_seconds": float(sum(r.gpu_seconds for r in mine)),
            "median_gpu_seconds": _median(r.gpu_seconds for r in mine),
            "surrogate_seconds": float(sum(r.surrogate_seconds for r in mine)),
            "median_surrogate_seconds": _median(r.surrogate_seconds for r in mine),
            "wall_seconds": float(sum(r.wall_seconds for r in mine)),
            "per_task": per_task,
        }
    return out


def curves(runs: Sequence[RunScore]) -> dict[str, dict[str, list[float]]]:
    """Per strategy: median, 25th and 75th percentile of best-so-far speed after 1..B measurements.

    A run that stopped before the longest budget keeps its last value.
    """
    out: dict[str, dict[str, list[float]]] = {}
    length = max((r.budget for r in runs), default=0)
    for strategy in dict.fromkeys(r.strategy for r in runs):
        rows = []
        for r in runs:
            if r.strategy != strategy or r.speed is None:
                continue
            curve = list(r.curve) or [0.0]
            rows.append(curve + [curve[-1]] * (length - len(curve)))
        if not rows:
            continue
        arr = np.asarray(rows, dtype=np.float64)[:, :length]
        out[strategy] = {
            "measurements": list(range(1, arr.shape[1] + 1)),
            "median": np.median(arr, axis=0).tolist(),
            "p25": np.percentile(arr, 25, axis=0).tolist(),
            "p75": np.percentile(arr, 75, axis=0).tolist(),
        }
    return out


@dataclasses.dataclass
class HarnessResult:
    """Every run of a harness, with its summaries."""

    runs: list[RunScore]
    config: dict[str, Any]

    def summary(self) -> dict[str, dict[str, Any]]:
        """:func:`summarize` of the runs."""
        return summarize(self.runs)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form: configuration, summary, curves and every run."""
        return {
            "config": self.config,
            "summary": self.summary(),
            "curves": curves(self.runs),
            "runs": [r.to_dict() for r in self.runs],
        }

    def write_json(self, path: str | os.PathLike[str]) -> Path:
        """Write :meth:`to_dict` to ``path`` (indented JSON)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=1) + "\n")
        return path

    def plot(self, path: str | os.PathLike[str], title: str | None = None) -> Path:
        """Draw the best-so-far curves (median and interquartile band per strategy) into a PNG."""
        return plot_curves(curves(self.runs), path, title=title)


def plot_curves(
    curve_data: Mapping[str, Mapping[str, Sequence[float]]], path: str | os.PathLike[str], title: str | None = None
) -> Path:
    """Plot :func:`curves` output to ``path`` (PNG) with matplotlib's Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.8), dpi=120)
    for strategy, data in curve_data.items():
        x = data["measurements"]
        (line,) = ax.plot(x, data["median"], label=strategy, linewidth=2.2 if strategy == "surrogate" else 1.4)
        ax.fill_between(x, data["p25"], data["p75"], color=line.get_color(), alpha=0.12, linewidth=0)
    ax.axhline(1.0 / (1.0 + WITHIN), color="grey", linestyle=":", linewidth=1, label="within 5% of optimum")
    ax.set_xlabel("measurements")
    ax.set_ylabel("best found speed / optimum (median, IQR)")
    ax.set_ylim(0.0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def run_harness(
    oracle: Oracle,
    tasks: Sequence[Task],
    strategies: Sequence[str | Strategy] | str,
    seeds: Sequence[int] | int = 5,
    *,
    budget: int | Budget | None = None,
    surrogate_factory: Callable[[Task], Surrogate] | None = None,
    run_root: str | os.PathLike[str] | None = None,
    storage: str | os.PathLike[str] | None = None,
    track: bool = False,
    on_run: Callable[[RunScore, int, int], None] | None = None,
) -> HarnessResult:
    """Run every strategy on every task for every seed at equal budget, and score the runs.

    Parameters
    ----------
    oracle : Oracle
        Measures (a :class:`~kernelcast.search.oracles.replay.ReplayOracle` gets its own draws per run).
    tasks : sequence of Task
        The tasks to search.
    strategies : str or sequence of str or Strategy
        Strategy names (a comma list is accepted) or objects.
    seeds : int or sequence of int
        Seeds, or how many (0..n-1).
    budget : int or Budget, optional
        Per run; default :func:`~kernelcast.search.oracles._base.default_budget` of each task's space.
    surrogate_factory : callable, optional
        ``task -> Surrogate``: a fresh surrogate for each screened run (runs update it in place).
    run_root : path, optional
        Keep each run's records and study under ``run_root/<task>/<strategy>/seed<k>`` (resumable).
    storage : path or URL, optional
        One Optuna storage for every study (needs ``run_root``); default: a journal file per run.
    track : bool
        Log one MLflow run per search through :func:`kernelcast.search.tracking.log_search` (a no-op where
        MLflow is unavailable).
    on_run : callable, optional
        ``(score, done, total)`` after each run, for progress reports.
    """
    chosen = parse_strategies(strategies) if isinstance(strategies, str) else [
        s if isinstance(s, Strategy) else parse_strategies(s)[0] for s in strategies
    ]
    seed_list = list(range(seeds)) if isinstance(seeds, int) else list(seeds)
    if not tasks or not seed_list:
        raise InvalidParameterError("The harness needs at least one task and one seed.")
    if any(s.needs_surrogate for s in chosen) and surrogate_factory is None:
        names = [s.name for s in chosen if s.needs_surrogate]
        raise InvalidParameterError(f"The strategies {names!r} screen with a surrogate; pass a surrogate_factory.")
    total = len(tasks) * len(chosen) * len(seed_list)
    runs: list[RunScore] = []
    for task in tasks:
        task_budget = budget if budget is not None else default_budget(oracle.space_size(task))
        task_budget = task_budget if isinstance(task_budget, Budget) else Budget(task_budget)
        for strategy in chosen:
            for seed in seed_list:
                run_oracle = oracle.fork(seed)
                run_dir = Path(run_root) / task.slug() / strategy.name / f"seed{seed}" if run_root else None
                surrogate = surrogate_factory(task) if strategy.needs_surrogate and surrogate_factory else None
                search = Search(task, run_oracle, strategy=strategy, budget=task_budget, surrogate=surrogate,
                                seed=seed, run_dir=run_dir, storage=storage)
                result = search.run()
                runs.append(score(result, run_oracle))
                if track:
                    log_search(result, runs[-1], oracle=oracle.describe())
                if on_run is not None:
                    on_run(runs[-1], len(runs), total)
    config = {
        "oracle": oracle.describe(),
        "tasks": [t.label() for t in tasks],
        "strategies": [s.name for s in chosen],
        "seeds": seed_list,
        "budget": dataclasses.asdict(budget) if isinstance(budget, Budget) else budget,
        "budget_rule": "2% of the complete space, capped at 50 measurements" if budget is None else "given",
        "within": WITHIN,
    }
    return HarnessResult(runs=runs, config=config)
