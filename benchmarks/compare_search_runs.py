"""Paired comparison of two ``search_replay.py`` result files: the same tasks and seeds, one strategy each.

For every (task, seed) present in both files (strategy ``--strategy`` in A, ``--strategy-b`` in B, the same by
default), compares the best-found speed
(``optimum / runtime of the pick``), whether the run got within 5% of the optimum, and the measurements it took
to get there. Differences come with 95% percentile bootstrap intervals over tasks (the seeds of one task share
its space, so tasks are the independent draws).

Run from the repository root (seconds)::

    .venv/bin/python benchmarks/compare_search_runs.py A.json B.json --labels plain,compiled --json OUT.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np

WITHIN = 0.05


def _runs(path: Path, strategy: str) -> dict[tuple[str, int], dict[str, Any]]:
    data = json.loads(path.read_text())
    return {(json.dumps(r["task"], sort_keys=True), int(r["seed"])): r for r in data["runs"]
            if r["strategy"] == strategy}


def _interval(per_task: np.ndarray, weights: np.ndarray, rng: np.random.Generator, n_boot: int) -> list[float]:
    draws = rng.integers(0, per_task.size, size=(n_boot, per_task.size))
    stats = per_task[draws].sum(axis=1) / weights[draws].sum(axis=1)
    return [float(q) for q in np.quantile(stats, [0.025, 0.975])]


def compare(a: Path, b: Path, strategy: str, strategy_b: str | None = None, n_boot: int = 5000,
            seed: int = 0) -> dict[str, Any]:
    """The paired summary of ``b``'s runs of ``strategy_b`` (default ``strategy``) against ``a``'s of ``strategy``."""
    strategy_b = strategy_b or strategy
    runs_a, runs_b = _runs(a, strategy), _runs(b, strategy_b)
    keys = sorted(set(runs_a) & set(runs_b))
    if not keys:
        raise SystemExit(f"no (task, seed) is in both files (strategies {strategy!r} and {strategy_b!r})")
    tasks = sorted({k[0] for k in keys})
    task_of = np.array([tasks.index(k[0]) for k in keys])
    speed = {s: np.array([r[k]["speed"] for k in keys]) for s, r in (("a", runs_a), ("b", runs_b))}
    within = {s: v >= 1.0 / (1.0 + WITHIN) for s, v in speed.items()}
    to5 = {s: np.array([math.inf if r[k]["measurements_to_5pct"] is None else r[k]["measurements_to_5pct"]
                        for k in keys]) for s, r in (("a", runs_a), ("b", runs_b))}
    counts = np.bincount(task_of).astype(np.float64)
    rng = np.random.default_rng(seed)
    d_within = np.bincount(task_of, weights=within["b"].astype(float) - within["a"].astype(float))
    d_speed = np.bincount(task_of, weights=speed["b"] - speed["a"])
    return {
        "n_runs": len(keys), "n_tasks": len(tasks), "strategy": strategy, "strategy_b": strategy_b,
        "within_5pct": {"a": int(within["a"].sum()), "b": int(within["b"].sum()),
                        "only_a": int((within["a"] & ~within["b"]).sum()),
                        "only_b": int((within["b"] & ~within["a"]).sum())},
        "within_5pct_fraction_difference": float(d_within.sum() / counts.sum()),
        "within_5pct_fraction_difference_ci95": _interval(d_within, counts, rng, n_boot),
        "mean_speed": {"a": float(speed["a"].mean()), "b": float(speed["b"].mean())},
        "mean_speed_difference": float(d_speed.sum() / counts.sum()),
        "mean_speed_difference_ci95": _interval(d_speed, counts, rng, n_boot),
        "measurements_to_5pct": {"b_fewer": int((to5["b"] < to5["a"]).sum()),
                                 "b_more": int((to5["b"] > to5["a"]).sum()),
                                 "same": int((to5["b"] == to5["a"]).sum())},
        "gpu_seconds": {s: float(sum(r[k]["gpu_seconds"] for k in keys)) for s, r in (("a", runs_a), ("b", runs_b))},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("a", type=Path)
    parser.add_argument("b", type=Path)
    parser.add_argument("--strategy", default="surrogate")
    parser.add_argument("--strategy-b", default=None, help="the strategy of B's runs (default: --strategy)")
    parser.add_argument("--labels", default="a,b", help="names of the two files' runs, for the JSON")
    parser.add_argument("--json", type=Path, required=True)
    args = parser.parse_args()
    labels = args.labels.split(",")
    if len(labels) != 2:
        raise SystemExit(f"--labels={args.labels!r} must name two runs, e.g. plain,compiled")
    out = {"a": {"label": labels[0], "file": str(args.a)}, "b": {"label": labels[1], "file": str(args.b)},
           **compare(args.a, args.b, args.strategy, args.strategy_b),
           "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
           "command": " ".join([".venv/bin/python", "benchmarks/compare_search_runs.py", *sys.argv[1:]])}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps({k: v for k, v in out.items() if k not in ("a", "b", "command", "created_at")}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
