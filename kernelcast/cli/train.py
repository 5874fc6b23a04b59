"""``kernelcast train``: fit and calibrate a surrogate on a dataset folder, save it, log it to MLflow."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from kernelcast.cli._errors import user_errors


def train(
    data: Annotated[Path, typer.Option("--data", help="Dataset folder (a kernelcast store).")],
    out: Annotated[Path, typer.Option("--out", help="Model directory to write.")],
    model: Annotated[
        str, typer.Option("--model", help="Surrogate: gbm, forest, roofline, llm or llm-prompted (registry names).")
    ] = "gbm",
    holdout: Annotated[
        list[str] | None,
        typer.Option("--holdout", help="key=VALUE test group kept out of training, e.g. device=3090 (repeatable)."),
    ] = None,
    split: Annotated[
        str | None,
        typer.Option("--split", help="random, shapes, families, variants or device (default: from --holdout)."),
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the split and the model.")] = 0,
    calibration: Annotated[
        str, typer.Option("--calibration", help="auto, cross, group or random (see kernelcast.surrogate.evaluation).")
    ] = "auto",
    param: Annotated[
        list[str] | None, typer.Option("--param", help="Model hyperparameter key=value, e.g. n_estimators=300.")
    ] = None,
    mlflow: Annotated[bool, typer.Option("--mlflow/--no-mlflow", help="Log the run to MLflow.")] = True,
    experiment: Annotated[str, typer.Option("--experiment", help="MLflow experiment name.")] = "kernelcast-train",
) -> None:
    """Fit and calibrate a surrogate; the test groups of the split stay out of training and calibration."""
    from kernelcast import tracking
    from kernelcast.surrogate.evaluation.protocol import parse_params, train_on_store

    console = Console()
    started = time.perf_counter()
    with user_errors():
        result = train_on_store(data, model, out, split=split, holdouts=holdout or [], seed=seed,
                                calibration=calibration, params=parse_params(param or []))
    elapsed = time.perf_counter() - started
    described = result.split.describe()
    state = result.model.calibration_
    console.print(
        f"trained {model} on {described['n_train']} records ({described['kind']} split, holdouts "
        f"{described['holdouts'] or 'none'}, calibration {described['calibration_mode']}) in {elapsed:.1f} s "
        f"-> {result.model_dir}",
        highlight=False,
    )
    if state is not None:
        console.print(
            f"calibration: {state.n_records} records, interval offset {state.interval_offset:.4g}, "
            f"{state.n_pairs} pairs, skip thresholds {state.skip_threshold} / {state.skip_threshold_relative} "
            f"from {state.n_improver_pairs} improving pairs in {state.n_improver_tasks} tasks "
            f"(risk control over {state.skip_unit}s)",
            highlight=False,
        )
    if mlflow:
        metrics = {"train_seconds": elapsed, "n_train": described["n_train"]}
        if state is not None:
            metrics.update({"calibration_records": state.n_records, "interval_offset": state.interval_offset,
                            "calibration_pairs": state.n_pairs, "improver_pairs": state.n_improver_pairs})
        run_id = tracking.log_run(
            experiment=experiment,
            run_name=f"train {model} {described['kind']} {','.join(described['holdouts'])}".strip(),
            params={"model": model, "data": str(data), "split": described,
                    "hyperparameters": result.model.get_params(deep=False)},
            metrics=metrics,
            artifact_dirs={"model": result.model_dir},
        )
        if run_id:
            console.print(f"MLflow run {run_id} ({tracking.tracking_uri()})", highlight=False)


def register(app: typer.Typer) -> None:
    """Add the command to ``app``."""
    app.command("train")(train)
