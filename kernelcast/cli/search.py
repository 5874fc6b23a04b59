"""``kernelcast search``: budgeted searches of kernel configurations, compared at equal budget.

With no arguments and no GPU it runs the main job: the complete tasks of the shipped Kernel Tuner dataset on the
GPU the shipped surrogate was not trained on (the RTX 3090), replayed, searched by the surrogate and by TPE alone
at equal budget, and prints a table. With a GPU it measures kernelcast's matmul there. Without ``--surrogate`` each
task gets the shipped model of its kind: :data:`DEFAULT_KERNELCAST_MODEL` for kernelcast's own families,
:data:`DEFAULT_MODEL` for the imported ones.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from kernelcast.cli._errors import user_errors

DEFAULT_DATASET = "kernel_tuner"
"""Shipped dataset replayed when no oracle is given and no GPU is present (a name under ``datasets/``)."""

DEFAULT_MODEL = "gbm_kernel_tuner"
"""Shipped surrogate used when ``--surrogate`` is not given, for tasks of families kernelcast does not define
(the imported Kernel Tuner kernels): a model directory under ``models/``."""

DEFAULT_KERNELCAST_MODEL = "gbm_kernelcast"
"""Shipped surrogate used when ``--surrogate`` is not given, for tasks of kernelcast's own Triton families (the
GPU oracle, a replay of ``datasets/kernelcast``): trained on every record of ``datasets/kernelcast`` with compiler
metadata, which the search gets before screening (compiled on the CPU, or stored)."""

DEFAULT_TASK = "device=3090"
"""Tasks of the main job: the shipped surrogate was trained with ``--holdout device=3090``, so the RTX 3090's
spaces are the ones it has never seen."""

DEFAULT_STRATEGIES = "surrogate,tpe"

console = Console()
err_console = Console(stderr=True)


def _has_gpu() -> bool:
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return False
    return bool(torch.cuda.is_available())


def search(
    task: Annotated[str | None, typer.Option(
        "--task", "-t", help="Task selector: key=value pairs over family/kernel, device/gpu, dtype, problem, variant "
        "(substrings), e.g. 'kernel=convolution,device=3090'. Default: every task of the oracle.")] = None,
    budget: Annotated[int | None, typer.Option(
        "--budget", "-b", help="Measurements per search. Default: 2% of the complete space, at most 50.")] = None,
    gpu_seconds: Annotated[float | None, typer.Option(
        "--gpu-seconds", help="GPU seconds (compile + timing) per search, on top of --budget.")] = None,
    strategy: Annotated[list[str] | None, typer.Option(
        "--strategy", "-s", help="surrogate, tpe, gp, cmaes, random or greedy; repeatable or a comma list. "
        f"Default: {DEFAULT_STRATEGIES}.")] = None,
    oracle: Annotated[str | None, typer.Option(
        "--oracle", help="'gpu' (measure kernelcast families here) or 'replay:DIR' (a dataset folder or shipped "
        f"dataset name). Default: gpu when a GPU is present, else replay:{DEFAULT_DATASET}.")] = None,
    surrogate: Annotated[Path | None, typer.Option(
        "--surrogate", help=f"Surrogate model directory. Default: models/{DEFAULT_KERNELCAST_MODEL} for "
        f"kernelcast's own kernel families, models/{DEFAULT_MODEL} for the others.")] = None,
    seeds: Annotated[int, typer.Option("--seeds", help="Seeds per task and strategy (0..S-1).")] = 1,
    storage: Annotated[str | None, typer.Option(
        "--storage", help="One Optuna storage for every study: a journal file, a .db file (SQLite) or a URL. "
        "Default: a journal file per search in the run directory.")] = None,
    run_dir: Annotated[Path | None, typer.Option(
        "--run-dir", help="Keep each search's records and study here, so an interrupted search resumes. Default: "
        "next to --storage if given, else nothing is kept.")] = None,
    shape: Annotated[list[str] | None, typer.Option(
        "--shape", help="GPU oracle: problem shape(s), e.g. 4096x4096x4096. Default: the family's first.")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write every run and the summary here.")] = None,
    plot: Annotated[Path | None, typer.Option("--plot", help="Draw best-so-far curves into this PNG.")] = None,
    list_tasks: Annotated[bool, typer.Option("--list-tasks", help="List the oracle's tasks and exit.")] = False,
    mlflow: Annotated[bool, typer.Option(
        "--mlflow/--no-mlflow", help="Log one MLflow run per search (kernelcast.tracking: MLFLOW_TRACKING_URI, "
        "else ./mlflow.db) when MLflow is available.")] = True,
) -> None:
    """Search kernel configurations on a budget: Optuna proposes, the surrogate screens, the oracle measures."""
    from kernelcast.search import parse_strategies, run_harness

    with user_errors():
        if oracle is None and task is None and surrogate is None and not list_tasks and not _has_gpu():
            # The main job searches the device the shipped surrogate never saw in training.
            task = DEFAULT_TASK
        the_oracle = _make_oracle(oracle, task, shape)
        with the_oracle:
            if list_tasks:
                _print_tasks(the_oracle, task)
                return
            strategies = parse_strategies(strategy or [DEFAULT_STRATEGIES])
            tasks = the_oracle.list_tasks(task)
            factory = _surrogate_factory(surrogate, tasks) if any(s.needs_surrogate for s in strategies) else None
            if storage is not None and run_dir is None:
                run_dir = Path(storage).parent / "runs" if "://" not in storage else Path("kernelcast-search-runs")
            total = len(tasks) * len(strategies) * seeds
            err_console.print(f"{len(tasks)} task(s) x {len(strategies)} strategies x {seeds} seed(s) = {total} "
                              f"searches on {the_oracle.describe()}", highlight=False)

            def progress(run, done: int, n: int) -> None:
                speed = f"{run.speed:.3f}" if run.speed is not None else "-"
                err_console.print(f"[{done}/{n}] {run.strategy:>9} seed {run.seed}  {run.task.label()}: "
                                  f"{run.measurements} measurements, best/optimum speed {speed}", highlight=False,
                                  soft_wrap=True)

            result = run_harness(
                the_oracle, tasks, strategies, seeds,
                budget=_budget(budget, gpu_seconds), surrogate_factory=factory, run_root=run_dir, storage=storage,
                track=mlflow, on_run=progress,
            )
    summary = result.summary()
    _print_summary(summary, result.runs)
    if json_out is not None:
        result.write_json(json_out)
        err_console.print(f"wrote {json_out}")
    if plot is not None:
        result.plot(plot, title=the_oracle.describe())
        err_console.print(f"wrote {plot}")


def _budget(measurements: int | None, gpu_seconds: float | None):  # noqa: ANN202 - Budget | int | None
    from kernelcast.search import Budget

    if measurements is None and gpu_seconds is None:
        return None
    if measurements is None:
        return Budget(10**9, gpu_seconds=gpu_seconds)
    return Budget(measurements, gpu_seconds=gpu_seconds)


def _make_oracle(spec: str | None, selector: str | None, shapes: list[str] | None):  # noqa: ANN202 - an Oracle
    from kernelcast.exceptions import InvalidParameterError
    from kernelcast.search.oracles import GpuOracle, ReplayOracle, parse_task_selector

    if spec is None:
        spec = "gpu" if _has_gpu() else f"replay:{DEFAULT_DATASET}"
    if spec == "gpu":
        terms = parse_task_selector(selector)
        families = [terms["family"]] if "family" in terms else ["matmul"]
        dtypes = [terms["dtype"]] if "dtype" in terms else ["float16"]
        return GpuOracle(families, shapes=shapes, dtypes=dtypes)
    if spec.startswith("replay:") and spec[len("replay:"):]:
        from kernelcast.datasets import load

        source = spec[len("replay:"):]
        return ReplayOracle(load(source), name=source)
    raise InvalidParameterError(
        f"The 'oracle' parameter of search must be 'gpu' or 'replay:DIR'. Got {spec!r} instead."
    )


def shipped_model(family: str) -> Path:
    """The shipped surrogate for a task of ``family``.

    :data:`DEFAULT_KERNELCAST_MODEL` for kernelcast's own families, :data:`DEFAULT_MODEL` otherwise.
    """
    from kernelcast.measurement.families import family_names
    from kernelcast.models import __file__ as models_init

    name = DEFAULT_KERNELCAST_MODEL if family in family_names() else DEFAULT_MODEL
    return Path(models_init).parent / name


def _surrogate_factory(path: Path | None, tasks) -> Callable[[Any], Any]:  # noqa: ANN001 - a list of Tasks
    from kernelcast.exceptions import InvalidParameterError
    from kernelcast.search import surrogate_for_search
    from kernelcast.surrogate import load_surrogate

    paths = {task: path if path is not None else shipped_model(task.family) for task in tasks}
    for chosen in sorted(set(paths.values())):
        if path is None and not chosen.exists():
            raise InvalidParameterError(
                f"The shipped surrogate {str(chosen)!r} is not there yet; pass --surrogate MODEL_DIR, or search "
                "without one (--strategy tpe,random)."
            )
        load_surrogate(chosen)  # fail now, naming the model, rather than in the middle of the runs
        if path is None:
            err_console.print(f"surrogate: {chosen}", highlight=False)
    return lambda task: surrogate_for_search(load_surrogate(paths[task]))


def _print_tasks(oracle, selector: str | None) -> None:  # noqa: ANN001 - an Oracle
    from kernelcast.search import default_budget

    table = Table(title=f"tasks of {oracle.describe()}")
    for column in ("family", "variant", "problem", "dtype", "device", "configs", "default budget", "optimum ms"):
        table.add_column(column)
    for t in oracle.list_tasks(selector):
        size = oracle.space_size(t)
        optimum = oracle.optimum_ms(t)
        table.add_row(t.family, t.variant, t.problem_json, t.dtype, t.device, str(size), str(default_budget(size)),
                      f"{optimum:.4g}" if optimum else "-")
    console.print(table)


def _fmt(value: float | int | None, spec: str = ".3f") -> str:
    return "-" if value is None else format(value, spec)


def _print_summary(summary: dict, runs: list) -> None:
    table = Table(title="Search results: speed = optimum time / time of the picked config (1.000 = optimum)",
                  title_justify="left")
    for column, header in (("strategy", "strategy"), ("runs", "runs"), ("median", "median\nspeed"),
                           ("min", "min\nspeed"), ("within", "within\n5%"), ("to5", "meas.\nto 5%"),
                           ("measurements", "meas."), ("gpu", "GPU s"), ("surrogate", "model s")):
        table.add_column(header, justify="left" if column == "strategy" else "right", no_wrap=True)
    for name, s in summary.items():
        table.add_row(
            name, str(s["runs"]), _fmt(s["median_best_over_optimum_speed"]), _fmt(s["min_best_over_optimum_speed"]),
            f"{s['runs_within_5pct']}/{s['runs']}", _fmt(s["median_measurements_to_5pct"], ".0f"),
            str(s["measurements"]), _fmt(s["gpu_seconds"], ".1f"), _fmt(s["surrogate_seconds"], ".1f"),
        )
    console.print(table)
    if len({r.task for r in runs}) > 1:
        per_task = Table(title="Per task: median speed / median measurements to 5% (- = not within the budget)",
                         title_justify="left")
        per_task.add_column("task")
        for name in summary:
            per_task.add_column(name, justify="right", no_wrap=True)
        labels = list(dict.fromkeys(r.task.label() for r in runs))
        for label in labels:
            cells = []
            for name in summary:
                row = summary[name]["per_task"].get(label, {})
                cells.append(f"{_fmt(row.get('median_best_over_optimum_speed'))} / "
                             f"{_fmt(row.get('median_measurements_to_5pct'), '.0f')}")
            per_task.add_row(_short_label(label), *cells)
        console.print(per_task)
    console.print("meas. to 5%: measurements until the picked config was within 5% of the optimum (median over runs);"
                  " GPU s: compile + timing seconds the measurements cost; model s: time in the surrogate.",
                  highlight=False)


def _short_label(label: str) -> str:
    """A task label without the vendor prefix of the device name (``NVIDIA GeForce RTX 3090`` -> ``RTX 3090``)."""
    return label.replace("NVIDIA GeForce ", "").replace("NVIDIA ", "").replace("kernel_tuner/", "")


def register(app: typer.Typer) -> None:
    """Add the command to ``app``."""
    app.command("search")(search)
