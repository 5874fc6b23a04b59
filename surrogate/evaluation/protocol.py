"""Train and evaluate surrogates on a dataset folder by a recorded, leak-checked split protocol.

:func:`train_on_store` splits a store, fits and calibrates a surrogate on the training side and saves it
with the split's spec. :func:`evaluate_on_store` rebuilds that split, checks that the training side has
exactly the identity (key hash) the model was trained on — so no test record can have been seen — and
evaluates on the test side. The CLI commands ``kernelcast train`` and ``kernelcast evaluate`` are thin
wrappers around them.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from kernelcast.exceptions import InvalidParameterError
from kernelcast.surrogate._artifact import json_safe, training_identity, versions
from kernelcast.surrogate.evaluation.report import Evaluation, evaluate_surrogate, write_plots
from kernelcast.surrogate.evaluation.splits import Split, default_kind, fit_on_split, make_split, parse_holdout


def parse_params(items: Sequence[str]) -> dict[str, Any]:
    """Parse ``key=value`` hyperparameters; values are read as JSON where they parse (numbers, booleans)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InvalidParameterError(
                f"A model parameter must look like key=value, e.g. n_estimators=300. Got {item!r}."
            )
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out


def _read_store(data: str | os.PathLike[str]) -> tuple[Any, Any]:
    from kernelcast.datasets.store import open_store

    store = open_store(data, must_exist=True)
    return store.read(), store.sources()


@dataclasses.dataclass(frozen=True)
class TrainResult:
    """What :func:`train_on_store` did: the model, where it went, and the split it was trained on."""

    model: Any
    model_dir: Path
    split: Split


def train_on_store(
    data: str | os.PathLike[str],
    model: str,
    out: str | os.PathLike[str],
    *,
    split: str | None = None,
    holdouts: Sequence[str] = (),
    seed: int = 0,
    calibration: str = "auto",
    params: Mapping[str, Any] | None = None,
) -> TrainResult:
    """Split the store at ``data``, fit and calibrate a ``model`` surrogate, save it to ``out``.

    Parameters
    ----------
    data : path-like
        Dataset folder (a kernelcast store).
    model : str
        Registered surrogate name (``gbm``, ``forest``, ``roofline``; see
        :data:`~kernelcast.surrogate.registry.MODEL_REGISTRY`).
    out : path-like
        Model directory to write.
    split : str, optional
        Split kind; default: implied by the holdouts (:func:`~.splits.default_kind`).
    holdouts : sequence of str
        ``key=VALUE`` specs of the test groups, kept out of training and calibration.
    seed : int
        Seed of the split and of the model (``random_state``).
    calibration : str
        Calibration mode of the split (``auto``, ``cross``, ``group``, ``random``).
    params : mapping, optional
        Hyperparameters of the surrogate.
    """
    from kernelcast.surrogate.registry import make_surrogate

    parsed = [parse_holdout(h) for h in holdouts]
    kind = split or default_kind(parsed)
    frame, sources = _read_store(data)
    the_split = make_split(frame, kind, parsed, seed=seed, calibration=calibration)
    params = dict(params or {})
    params.setdefault("random_state", seed)
    surrogate = make_surrogate(model, **params)
    fit_on_split(surrogate, the_split, sources=sources, data_path=data)
    model_dir = surrogate.save(out, extra={"split": the_split.describe(), "data": str(Path(data))})
    return TrainResult(model=surrogate, model_dir=Path(model_dir), split=the_split)


def evaluate_on_store(
    model_dir: str | os.PathLike[str],
    data: str | os.PathLike[str],
    *,
    split: str | None = None,
    holdouts: Sequence[str] = (),
    seed: int | None = None,
    max_pairs_per_task: int = 20_000,
    plots: str | os.PathLike[str] | None = None,
) -> tuple[dict[str, Any], Evaluation, list[Path]]:
    """Evaluate the saved model at ``model_dir`` on the test side of its split of ``data``.

    The split is the one recorded in the model unless ``split``/``holdouts``/``seed`` say otherwise; either
    way its training side must have the model's training identity, else the evaluation would leak.

    Returns
    -------
    result : dict
        JSON-ready: every metric at the top level, plus ``model``, ``split``, ``per_task``, ``calibration``,
        ``training_data``, ``versions`` and ``created_at``.
    evaluation : Evaluation
        The full evaluation (curves included).
    figures : list of Path
        Figures written under ``plots``.
    """
    from kernelcast.surrogate.registry import load_surrogate

    surrogate = load_surrogate(model_dir)
    meta = getattr(surrogate, "metadata_", {})
    recorded = (meta.get("extra") or {}).get("split") or {}
    kind = split or recorded.get("kind")
    holdout_specs = list(holdouts) if holdouts else (list(recorded.get("holdouts", [])) if kind == recorded.get(
        "kind") else [])
    if kind is None:
        kind = default_kind([parse_holdout(h) for h in holdout_specs])
    frame, _ = _read_store(data)
    the_split = make_split(
        frame,
        kind,
        holdout_specs,
        seed=seed if seed is not None else int(recorded.get("seed", 0)),
        test_fraction=float(recorded.get("test_fraction", 0.2)),
        calibration_fraction=float(recorded.get("calibration_fraction", 0.2)),
        calibration=str(recorded.get("calibration", "auto")) if kind == recorded.get("kind") else "auto",
    )
    trained_on = surrogate.training_data_["key_sha256"]
    train_side = training_identity(the_split.train, None)["key_sha256"]
    if train_side != trained_on:
        raise InvalidParameterError(
            f"The model in {str(model_dir)!r} was trained on records with key hash {trained_on[:12]} (split "
            f"{recorded.get('kind')!r}, holdouts {recorded.get('holdouts')!r}, seed {recorded.get('seed')!r}), but "
            f"split {kind!r} with holdouts {holdout_specs!r} on {str(data)!r} has a training side with key hash "
            f"{train_side[:12]}: its test side could hold training records. Evaluate with the split the model "
            "was trained with, or train a model for this split."
        )
    evaluation = evaluate_surrogate(surrogate, the_split.test, seed=the_split.spec["seed"],
                                    max_pairs_per_task=max_pairs_per_task)
    figures: list[Path] = []
    if plots is not None:
        figures = write_plots(evaluation, plots, title=f"{getattr(surrogate, 'model_name', 'model')}, {kind}")
    calibration = surrogate.calibration_.to_dict() if getattr(surrogate, "calibration_", None) else None
    if calibration is not None:
        for key in ("residuals", "pair_residuals", "pair_calibrator"):
            calibration.pop(key, None)
    result = {
        **evaluation.metrics,
        "model": getattr(surrogate, "model_name", type(surrogate).__name__),
        "model_dir": str(model_dir),
        "data": str(data),
        "split": the_split.describe(),
        "calibration": calibration,
        "params": surrogate.get_params(deep=False) if hasattr(surrogate, "get_params") else {},
        "training_data": surrogate.training_data_,
        "per_task": evaluation.per_task,
        "versions": versions(),
        "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    return json_safe(result), evaluation, figures
