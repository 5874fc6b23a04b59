"""MLflow logging of searches, through :mod:`kernelcast.tracking` (the one module that imports MLflow).

One MLflow run per search, in the experiment :data:`EXPERIMENT`: the strategy, task, seed, budget and oracle
as parameters; budget spent, surrogate seconds, the best runtime and, where the oracle knows the optimum,
the best-found speed and the measurements it took to get within 5% as metrics; the trajectory (every
measurement, in order) as a JSON artifact. Without MLflow (or with ``KERNELCAST_MLFLOW=0``) nothing is logged.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kernelcast.search.harness import RunScore
    from kernelcast.search.loop import SearchResult

EXPERIMENT = "kernelcast-search"
"""MLflow experiment of the searches."""


def log_search(result: SearchResult, score: RunScore | None = None, *, oracle: str = "",
               experiment: str = EXPERIMENT) -> str | None:
    """Log one search as an MLflow run; return its id, or ``None`` when tracking is off."""
    try:
        from kernelcast import tracking
    except ImportError:  # an installation without the tracking module: searches run untracked
        return None
    if not tracking.enabled():
        return None
    best = result.best
    params = {
        "strategy": result.strategy,
        "task": result.task.as_dict(),
        "seed": result.seed,
        "budget": dataclasses.asdict(result.budget),
        "oracle": oracle,
        "space_size": result.space_size,
        "study_name": result.study_name,
    }
    metrics: dict[str, float] = {
        "measurements": float(len(result.measurements)),
        "gpu_seconds": result.gpu_seconds,
        "surrogate_seconds": result.surrogate_seconds,
        "wall_seconds": result.wall_seconds,
        **{f"trials_{action}": float(n) for action, n in result.actions.items()},
    }
    if best is not None and best.time_ms is not None:
        metrics["best_time_ms"] = best.time_ms
    if score is not None and score.speed is not None:
        metrics["best_over_optimum_speed"] = score.speed
        reached = score.measurements_to()
        if reached is not None:
            metrics["measurements_to_5pct"] = float(reached)
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "search.json").write_text(json.dumps(result.to_dict(), indent=1))
        return tracking.log_run(
            experiment=experiment,
            run_name=f"{result.strategy} seed{result.seed} {result.task.label()}"[:250],
            params=params,
            metrics=metrics,
            artifact_dirs={"search": folder},
            tags={"kind": "search", "strategy": result.strategy, "task": result.task.label()[:250]},
        )
