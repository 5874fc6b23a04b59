"""The one compatibility module for MLflow: experiment tracking is optional and imported lazily.

Nothing else in kernelcast imports ``mlflow``. Without it (or with ``KERNELCAST_MLFLOW=0``) every function
here logs a warning once and does nothing, so training and evaluation run anyway.

The tracking URI is ``MLFLOW_TRACKING_URI`` when set, else :data:`DEFAULT_TRACKING_URI`: a SQLite file
``mlflow.db`` in the current directory (artifacts go to ``./mlruns``), which MLflow 3.17.2 creates on first
use. ``mlflow ui --backend-store-uri sqlite:///mlflow.db`` shows the runs.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
"""Tracking URI when ``MLFLOW_TRACKING_URI`` is not set (relative to the current directory)."""

MAX_PARAM_CHARS = 6000
"""MLflow's limit on the length of a parameter value."""

_warned = False


def tracking_uri() -> str:
    """The tracking URI in effect: ``MLFLOW_TRACKING_URI`` or :data:`DEFAULT_TRACKING_URI`."""
    return os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def enabled() -> bool:
    """Whether runs are logged: mlflow is importable and ``KERNELCAST_MLFLOW`` is not ``0``/``false``/``off``."""
    global _warned
    if os.environ.get("KERNELCAST_MLFLOW", "1").strip().lower() in ("0", "false", "off", "no"):
        return False
    try:
        import mlflow  # noqa: F401
    except ImportError:
        if not _warned:
            logger.warning("mlflow is not installed; runs are not tracked (pip install mlflow)")
            _warned = True
        return False
    return True


def _flatten(params: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_flatten(value, f"{name}."))
        else:
            out[name] = str(value)[:MAX_PARAM_CHARS]
    return out


def log_run(
    *,
    experiment: str,
    run_name: str,
    params: Mapping[str, Any] | None = None,
    metrics: Mapping[str, float] | None = None,
    artifacts: Sequence[str | os.PathLike[str]] = (),
    artifact_dirs: Mapping[str, str | os.PathLike[str]] | None = None,
    tags: Mapping[str, str] | None = None,
) -> str | None:
    """Log one run: parameters (nested mappings flattened with dots), finite metrics, files and folders.

    Parameters
    ----------
    experiment : str
        Experiment name (created if missing).
    run_name : str
        Name of the run.
    params : mapping, optional
        Parameters; values are stringified and cut at :data:`MAX_PARAM_CHARS`.
    metrics : mapping of str to float, optional
        Metrics; NaN and infinite values are left out.
    artifacts : sequence of path-like
        Files to log (e.g. figures), under ``plots/``.
    artifact_dirs : mapping of str to path-like, optional
        Folders to log, by artifact path (e.g. ``{"model": MODEL_DIR}``).
    tags : mapping, optional
        Run tags.

    Returns
    -------
    str or None
        The run id, or None when tracking is off.
    """
    if not enabled():
        return None
    import mlflow

    mlflow.set_tracking_uri(tracking_uri())
    mlflow.set_experiment(experiment)
    with mlflow.start_run(run_name=run_name) as run:
        if params:
            mlflow.log_params(_flatten(params))
        if metrics:
            finite = {k: float(v) for k, v in metrics.items()
                      if isinstance(v, int | float) and math.isfinite(float(v))}
            if finite:
                mlflow.log_metrics(finite)
        for path in artifacts:
            mlflow.log_artifact(str(path), artifact_path="plots")
        for name, folder in (artifact_dirs or {}).items():
            if Path(folder).is_dir():
                mlflow.log_artifacts(str(folder), artifact_path=name)
        if tags:
            mlflow.set_tags(dict(tags))
        return str(run.info.run_id)
