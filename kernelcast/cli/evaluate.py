"""``kernelcast evaluate``: the evaluation suite of a saved surrogate on the test side of its split."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from kernelcast.cli._errors import user_errors

HEADLINE: tuple[str, ...] = (
    "pairwise_accuracy", "kendall_tau", "spearman", "top1_score", "top5_score", "mape", "interval_coverage",
    "interval_width", "ece", "brier", "log_loss", "aurc", "selective_accuracy_60", "bin8_accuracy",
    "bin8_off_by_one", "skip_error", "skip_error_task_mean", "skip_error_target", "skip_rate",
)
"""Metrics printed in the summary table (the JSON has them all)."""


def evaluate(
    model: Annotated[Path, typer.Option("--model", help="Model directory written by kernelcast train.")],
    data: Annotated[Path, typer.Option("--data", help="Dataset folder (a kernelcast store).")],
    json_out: Annotated[Path, typer.Option("--json", help="Where to write the metrics (JSON).")],
    split: Annotated[
        str | None,
        typer.Option("--split", help="random, shapes, families, variants or device (default: the model's)."),
    ] = None,
    holdout: Annotated[
        list[str] | None, typer.Option("--holdout", help="key=VALUE test group, e.g. device=3090 (repeatable).")
    ] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Seed of the split (default: the model's).")] = None,
    plots: Annotated[Path | None, typer.Option("--plots", help="Folder for the figures (PNG).")] = None,
    max_pairs_per_task: Annotated[int, typer.Option("--max-pairs-per-task", help="Pairs sampled per task.")] = 20_000,
    mlflow: Annotated[bool, typer.Option("--mlflow/--no-mlflow", help="Log the run to MLflow.")] = True,
    experiment: Annotated[str, typer.Option("--experiment", help="MLflow experiment name.")] = "kernelcast-evaluate",
) -> None:
    """Evaluate a surrogate; refuses a split whose training side differs from the model's training data."""
    from kernelcast import tracking
    from kernelcast.surrogate.evaluation.protocol import evaluate_on_store

    console = Console()
    with user_errors():
        result, evaluation, figures = evaluate_on_store(
            model, data, split=split, holdouts=holdout or [], seed=seed, max_pairs_per_task=max_pairs_per_task,
            plots=plots,
        )
    json_out.parent.mkdir(parents=True, exist_ok=True)
    json_out.write_text(json.dumps(result, indent=1, allow_nan=False) + "\n")
    table = Table(title=f"{result['model']} on {result['split']['kind']} split {result['split']['holdouts'] or ''}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key in HEADLINE:
        value = result.get(key)
        table.add_row(key, "n/a" if value is None else f"{value:.4f}")
    console.print(table)
    console.print(f"wrote {json_out}" + (f" and {len(figures)} figures under {plots}" if figures else ""),
                  highlight=False)
    if mlflow:
        run_id = tracking.log_run(
            experiment=experiment,
            run_name=f"evaluate {result['model']} {result['split']['kind']} {','.join(result['split']['holdouts'])}",
            params={"model": result["model"], "model_dir": str(model), "data": str(data), "split": result["split"]},
            metrics=evaluation.metrics,
            artifacts=[*figures, json_out],
        )
        if run_id:
            console.print(f"MLflow run {run_id} ({tracking.tracking_uri()})", highlight=False)


def register(app: typer.Typer) -> None:
    """Add the command to ``app``."""
    app.command("evaluate")(evaluate)
