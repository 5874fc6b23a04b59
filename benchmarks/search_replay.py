"""Search strategies at equal budget on replayed complete spaces, each task searched with a surrogate that never
saw it: the issue's goals, measured.

Two datasets, two held-out schemes (``--holdout``):

- ``device`` (``--dataset kernel_tuner``): for each GPU, a GBM surrogate trained on the other GPUs only
  (``make_split(kind="device")`` then ``fit_on_split``: cross-calibrated across the training GPUs), used on
  every task of the held-out GPU;
- ``shape`` (``--dataset datasets/kernelcast``, the H200 sweeps): the problem shapes of the evaluated tasks
  are dealt into ``--folds`` groups (seeded); for each group a GBM is trained on every record whose problem
  is *not* one of the group's shapes, on any family and dtype (``make_split(kind="shapes")``,
  cross-calibrated across the remaining (family, shape) groups), and used on the group's tasks.

The script checks, for every task, that its model's training records hold no record of the task's GPU
(``device``) or of the task's problem shape (``shape``), and stops otherwise. Models are cached under
``--model-root``.

Tasks are the complete tasks of the dataset (every configuration of the variant stored; see
:class:`~kernelcast.search.oracles.replay.ReplayOracle`). Budget: 2% of the task's runnable space, rounded
up, at most 50 measurements (:func:`~kernelcast.search.oracles._base.default_budget`). Tasks whose 2% is
under ``--small-floor`` (5) measurements are searched at that floor instead and reported apart, under
``small_spaces``; the goals are computed on the other tasks only. TPE alone is also run with
``--reach-budget`` measurements (at most the space), so that the measurements it needs to get within 5%
are counted where 2% of the space is not enough.

Every search is logged to MLflow (one run per search, the strategy a parameter; ``--no-mlflow`` to skip).
Development tasks (``DEVELOPMENT``: the tasks looked at while choosing the strategy's settings) are listed
in the result, and the goals are also reported without them.

    .venv/bin/python benchmarks/search_replay.py --dataset kernel_tuner --holdout device --seeds 5 \\
        --out benchmarks/results/search_kernel_tuner.json
    .venv/bin/python benchmarks/search_replay.py --dataset datasets/kernelcast --holdout shape --seeds 5 \\
        --out benchmarks/results/search_kernelcast_h200.json

Strategies run apart (``--strategies gp --out gp.json``) are combined with ``--merge a.json b.json --out
all.json`` (a strategy in several files is taken from the last). ``--strategies`` also takes the ablations of
:data:`ABLATIONS`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import platform
import shlex
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import polars as pl

from kernelcast.datasets import load
from kernelcast.search import (
    ReplayOracle,
    RunScore,
    Strategy,
    Task,
    default_budget,
    get_strategy,
    run_harness,
    surrogate_for_search,
)
from kernelcast.search.harness import curves, plot_curves, summarize
from kernelcast.surrogate import load_surrogate
from kernelcast.surrogate.evaluation.protocol import parse_params
from kernelcast.surrogate.evaluation.splits import fit_on_split, make_split
from kernelcast.surrogate.gbm import GBMSurrogate

ABLATIONS: dict[str, Strategy] = {
    "greedy-64": dataclasses.replace(get_strategy("greedy"), name="greedy-64", proposals_per_step=64),
    "surrogate-nolearn": dataclasses.replace(get_strategy("surrogate"), name="surrogate-nolearn", learn=False),
    "surrogate-update": dataclasses.replace(get_strategy("surrogate"), name="surrogate-update", learner="update"),
    "surrogate-nolocal": dataclasses.replace(get_strategy("surrogate"), name="surrogate-nolocal", local_proposals=0),
    "surrogate-tpe": dataclasses.replace(get_strategy("surrogate"), name="surrogate-tpe", sampler="tpe"),
    "surrogate-speed": dataclasses.replace(get_strategy("surrogate"), name="surrogate-speed", ranking="speed"),
}
"""Variants that isolate one choice of the ``surrogate`` strategy, and greedy's filter on 64 proposals."""

DEVELOPMENT: dict[str, Callable[[Task], bool]] = {
    "device": lambda task: "TITAN" in task.device,
    "shape": lambda task: task.problem_json == '{"M":1000,"N":3000}',
}
"""Tasks looked at while the ``surrogate`` strategy's settings were chosen, per held-out scheme: the TITAN RTX
(Kernel Tuner) and the 1000x3000 row-wise shape (H200). The goals are reported with and without them."""

SMALL_FLOOR = 5
"""Tasks whose 2% budget is under this many measurements are searched at this floor and reported apart."""

logger = logging.getLogger("search_replay")


def strategy(name: str) -> Strategy:
    """A registered strategy or one of :data:`ABLATIONS`."""
    return ABLATIONS[name] if name in ABLATIONS else get_strategy(name)


# -- held-out models ----------------------------------------------------------------------------------------
def _train(frame: pl.DataFrame, kind: str, holdouts: list[str], path: Path, seed: int,
           params: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train (or reuse) one GBM (with ``params``) on ``frame`` without the held-out groups; describe its split."""
    split = make_split(frame, kind, holdouts=holdouts, seed=seed)
    described = split.describe()
    info: dict[str, Any] = {"model_dir": str(path), "holdouts": holdouts, **{k: described[k] for k in (
        "n_train", "n_calibration", "calibration_mode")}, "n_test_groups": len(described["test_groups"])}
    estimator = GBMSurrogate(random_state=seed, n_jobs=1, **(params or {}))
    if not _cached_model_fits(path, estimator, split.train):
        start = time.perf_counter()
        model = fit_on_split(estimator, split)
        model.save(path, extra={"split": described})
        info["fit_seconds"] = time.perf_counter() - start
    info["_train_devices"] = set(split.train["device"].unique().to_list())
    info["_train_problems"] = set(split.train["problem_json"].unique().to_list())
    return info


def _cached_model_fits(path: Path, estimator: GBMSurrogate, train: pl.DataFrame) -> bool:
    """Whether the model saved at ``path`` has ``estimator``'s hyperparameters and ``train``'s record keys.

    A cached model trained before a default changed, or on other records, is trained again, not reused.
    """
    from kernelcast.surrogate._artifact import read_metadata, training_identity

    if not (path / "model.json").exists():
        return False
    meta = read_metadata(path)
    if meta.get("params") != json.loads(json.dumps(estimator.get_params())):
        logger.info("retraining %s: its hyperparameters differ from the current defaults", path)
        return False
    if meta.get("training_data", {}).get("key_sha256") != training_identity(train, None)["key_sha256"]:
        logger.info("retraining %s: it was trained on other records", path)
        return False
    return True


def shape_folds(tasks: Sequence[Task], folds: int, seed: int) -> list[list[str]]:
    """The evaluated tasks' problem shapes dealt into ``folds`` groups (seeded, round robin)."""
    shapes = sorted({t.problem_json for t in tasks})
    order = np.random.default_rng(seed).permutation(len(shapes))
    groups: list[list[str]] = [[] for _ in range(min(folds, len(shapes)))]
    for i, j in enumerate(order):
        groups[i % len(groups)].append(shapes[int(j)])
    return [sorted(g) for g in groups]


def held_out_models(frame: pl.DataFrame, tasks: Sequence[Task], scheme: str, model_root: Path, *, folds: int,
                    seed: int, params: dict[str, Any] | None = None) -> tuple[dict[Task, str], dict[str, Any]]:
    """One model per held-out group; return the model directory of each task and a description of the models.

    Raises
    ------
    RuntimeError
        If a task's model was trained on a record of the task's GPU (``device``) or shape (``shape``).
    """
    model_of: dict[Task, str] = {}
    described: dict[str, Any] = {}
    if scheme == "device":
        for device in sorted({t.device for t in tasks}):
            info = _train(frame, "device", [f"device={device}"], model_root / device.replace(" ", "_"), seed, params)
            for task in tasks:
                if task.device == device:
                    if task.device in info["_train_devices"]:
                        raise RuntimeError(f"the model for {task.label()} saw its GPU in training")
                    model_of[task] = info["model_dir"]
            described[device] = info
    elif scheme == "shape":
        for k, shapes in enumerate(shape_folds(tasks, folds, seed)):
            info = _train(frame, "shapes", [f"problem={s}" for s in shapes], model_root / f"shapes_fold{k}", seed,
                          params)
            info["held_out_shapes"] = shapes
            for task in tasks:
                if task.problem_json in shapes:
                    if task.problem_json in info["_train_problems"]:
                        raise RuntimeError(f"the model for {task.label()} saw its shape in training")
                    model_of[task] = info["model_dir"]
            described[f"fold{k}"] = info
    else:
        raise ValueError(f"unknown held-out scheme {scheme!r}")
    for info in described.values():
        info.pop("_train_devices")
        info.pop("_train_problems")
    return model_of, described


# -- goals --------------------------------------------------------------------------------------------------
def _ratio(theirs: float | None, ours: float | None) -> float | None:
    if theirs is None or ours is None or ours == 0:
        return None
    return theirs / ours


def goals(summary: dict[str, Any], reach: dict[str, Any] | None) -> dict[str, Any]:
    """The issue's three goals, from a summary of the main tasks (numbers first, then the verdicts).

    Measurements to 5% are compared as the median over tasks of each task's median over seeds (a run that
    never got within 5% counts as infinitely many; a task median that is such a run makes the comparison a
    bound, reported as ``censored``).
    """
    s = summary.get("surrogate")
    if s is None:
        return {}
    out: dict[str, Any] = {
        "surrogate_median_best_over_optimum_speed": s["median_best_over_optimum_speed"],
        "surrogate_median_over_tasks_best_over_optimum_speed": _median_over_tasks(s),
        "goal_median_best_at_least_0.97": (s["median_best_over_optimum_speed"] or 0.0) >= 0.97,
    }
    ours = s["median_over_tasks_of_median_measurements_to_5pct"]
    out["surrogate_median_over_tasks_measurements_to_5pct"] = ours
    tpe = (reach or {}).get("tpe") or summary.get("tpe")
    if tpe is not None:
        theirs = tpe["median_over_tasks_of_median_measurements_to_5pct"]
        censored = theirs is None
        if censored:  # the median task's TPE median never got there within the reach budget: a lower bound
            theirs = tpe.get("reach_budget")
        out["tpe_median_over_tasks_measurements_to_5pct"] = theirs
        out["tpe_measurements_source"] = "reach" if reach else "budget"
        out["tpe_censored"] = censored
        ratio = _ratio(theirs, ours)
        out["measurements_to_5pct_ratio_tpe_over_surrogate"] = ratio
        out["goal_3x_fewer_measurements_than_tpe"] = None if ratio is None else ratio >= 3.0
    for name in ("greedy", "random", "tpe"):
        if name in summary:
            other = summary[name]
            out[f"{name}_median_best_over_optimum_speed"] = other["median_best_over_optimum_speed"]
            out[f"{name}_runs_within_5pct"] = f"{other['runs_within_5pct']}/{other['runs']}"
            if name != "tpe":  # beats: a median at least as high and more runs within 5% of the optimum
                out[f"goal_beats_{name}"] = (s["median_best_over_optimum_speed"] or 0.0) >= (
                    other["median_best_over_optimum_speed"] or 0.0) and s["runs_within_5pct"] > other["runs_within_5pct"]
    out["surrogate_runs_within_5pct"] = f"{s['runs_within_5pct']}/{s['runs']}"
    return out


def _median_over_tasks(s: dict[str, Any]) -> float | None:
    values = [v["median_best_over_optimum_speed"] for v in s["per_task"].values()
              if v["median_best_over_optimum_speed"] is not None]
    return float(np.median(values)) if values else None


def _section(runs: list[RunScore], reach_runs: list[RunScore], reach_budgets: dict[str, int]) -> dict[str, Any]:
    summary = summarize(runs)
    reach = summarize(reach_runs) if reach_runs else None
    if reach is not None and "tpe" in reach:
        reach["tpe"]["reach_budget"] = max(reach_budgets.values()) if reach_budgets else None
    return {"tasks": sorted({r.task.label() for r in runs}), "summary": summary, "curves": curves(runs),
            "reach_summary": reach, "goals": goals(summary, reach)}


def assemble(runs: list[RunScore], reach_runs: list[RunScore], config: dict[str, Any], floor: int,
             development: Callable[[Task], bool] | None) -> dict[str, Any]:
    """The result file: configuration, the main tasks' summary and goals, the small spaces apart, every run."""
    small = {r.task for r in runs if default_budget(r_space(config, r.task)) < floor}
    main_runs = [r for r in runs if r.task not in small]
    main_reach = [r for r in reach_runs if r.task not in small]
    reach_budgets = config.get("reach_budgets", {})
    data: dict[str, Any] = {"config": config}
    data.update(_section(main_runs, main_reach, reach_budgets))
    if development is not None:
        dev = {r.task for r in main_runs if development(r.task)}
        if dev:
            data["without_development_tasks"] = _section(
                [r for r in main_runs if r.task not in dev], [r for r in main_reach if r.task not in dev],
                reach_budgets)
            data["development_tasks"] = sorted(t.label() for t in dev)
    if small:
        data["small_spaces"] = {
            "rule": f"2% of the space is under {floor} measurements: searched with a floor of {floor} "
                    "measurements (more than 2% of the space) and kept out of the goals",
            **_section([r for r in runs if r.task in small], [r for r in reach_runs if r.task in small],
                       reach_budgets),
        }
    data["runs"] = [r.to_dict() for r in runs]
    if reach_runs:
        data["reach_runs"] = [r.to_dict() for r in reach_runs]
    return data


def r_space(config: dict[str, Any], task: Task) -> int:
    """Runnable space size of ``task`` as the run's configuration recorded it."""
    return int(config["space_sizes"][task.label()])


# -- report -------------------------------------------------------------------------------------------------
def dumps(data: dict[str, Any]) -> str:
    """The result file's JSON: indented, but each run on one line (curves rounded to 5 digits)."""
    body = {k: v for k, v in data.items() if k not in ("runs", "reach_runs")}
    text = json.dumps(body, indent=1)[:-2]
    for key in ("runs", "reach_runs"):
        if key in data:
            rows = []
            for run in data[key]:
                run = {**run, "curve": [round(x, 5) for x in run["curve"]]}
                rows.append("  " + json.dumps(run, separators=(",", ":")))
            text += f',\n "{key}": [\n' + ",\n".join(rows) + "\n ]"
    return text + "\n}\n"



def _fmt(value: object, spec: str = ".3f") -> str:
    if value is None or (isinstance(value, float) and math.isinf(value)):
        return "never"
    return format(value, spec) if isinstance(value, (int, float)) and not isinstance(value, bool) else str(value)


def _table(section: dict[str, Any]) -> list[str]:
    lines = ["| strategy | runs | median best/optimum speed | runs within 5% | median measurements to 5% (runs) "
             "| median over tasks of measurements to 5% | measurements | GPU s (replayed) | surrogate s |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    rows = dict(section["summary"])
    if section.get("reach_summary") and "tpe" in section["reach_summary"]:
        rows[f"tpe, up to {section['reach_summary']['tpe'].get('reach_budget')} measurements"] = (
            section["reach_summary"]["tpe"])
    for name, s in rows.items():
        lines.append(f"| {name} | {s['runs']} | {_fmt(s['median_best_over_optimum_speed'])} | "
                     f"{s['runs_within_5pct']} | {_fmt(s['median_measurements_to_5pct'], '.1f')} | "
                     f"{_fmt(s['median_over_tasks_of_median_measurements_to_5pct'], '.1f')} | {s['measurements']} | "
                     f"{s['gpu_seconds']:.0f} | {s['surrogate_seconds']:.0f} |")
    return lines


def markdown(data: dict[str, Any], title: str) -> str:
    """A readable summary of a result file: goals, strategies, small spaces, per-task medians."""
    config = data["config"]
    commands = [part["command"] for part in config.get("merged_from", [])] or [config.get("command", "")]
    produced = "; ".join(f"`{c}`" for c in commands)
    if config.get("merged_from"):
        produced += f", then written here by `{config.get('command', '')}`"
    lines = [f"# {title}", "",
             f"Produced by {produced} (commit {str(config.get('git_commit'))[:10]}); every number below is in "
             f"`{data.get('file', '')}`.", "",
             f"Replay of `{config['dataset']}`; surrogate: {config['surrogate']}. Budget: 2% of each task's "
             "runnable space, rounded up, at most 50 measurements. "
             f"{len(data['tasks'])} tasks x {len(config['seeds'])} seeds.", "",
             "## Goals (main tasks)", ""]
    lines += [f"- `{k}`: {_fmt(v, '.3f') if isinstance(v, float) else v}" for k, v in data["goals"].items()]
    if "without_development_tasks" in data:
        lines += ["", f"Without the {len(data['development_tasks'])} development tasks:", ""]
        lines += [f"- `{k}`: {_fmt(v, '.3f') if isinstance(v, float) else v}"
                  for k, v in data["without_development_tasks"]["goals"].items()]
    lines += ["", "## Strategies (main tasks)", ""] + _table(data)
    if "small_spaces" in data:
        small = data["small_spaces"]
        lines += ["", f"## Small spaces ({len(small['tasks'])} tasks)", "", small["rule"] + ".", ""] + _table(small)
    summary = data["summary"]
    names = list(summary)
    lines += ["", "## Per task (main tasks): median best/optimum speed, median measurements to 5%", "",
              "| task | budget | " + " | ".join(names) + " |", "|---|---:|" + "---:|" * len(names)]
    for task in data["tasks"]:
        cells = []
        for name in names:
            t = summary[name]["per_task"].get(task, {})
            cells.append(f"{_fmt(t.get('median_best_over_optimum_speed'))} / "
                         f"{_fmt(t.get('median_measurements_to_5pct_censored'), '.0f')}")
        budget = config["budgets"].get(task, "")
        lines.append(f"| {task} | {budget} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# -- running ------------------------------------------------------------------------------------------------
def _git_commit() -> str | None:
    """The checkout's commit, or ``KERNELCAST_COMMIT`` for a run from an exported tree (``git archive``)."""
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return os.environ.get("KERNELCAST_COMMIT")


def _versions() -> dict[str, str]:
    import lightgbm
    import sklearn

    return {"python": platform.python_version(), "optuna": optuna.__version__, "lightgbm": lightgbm.__version__,
            "polars": pl.__version__, "numpy": np.__version__, "scikit-learn": sklearn.__version__}


def run(args: argparse.Namespace) -> tuple[list[RunScore], list[RunScore], dict[str, Any]]:
    """Train the held-out models (cached), run the harness and the TPE reach runs; return runs and config."""
    started = time.perf_counter()
    frame = load(args.dataset)
    oracle = ReplayOracle(frame, name=args.dataset)
    tasks = oracle.list_tasks(args.task)
    strategies = [strategy(s) for s in args.strategies.split(",")]
    model_of, models = held_out_models(frame, tasks, args.holdout, args.model_root, folds=args.folds, seed=0,
                                       params=args.params)

    def surrogate_factory(task: Task) -> Any:
        model = surrogate_for_search(load_surrogate(model_of[task]))
        model.set_params(n_jobs=1)
        return model

    def progress(run: RunScore, done: int, total: int) -> None:
        print(f"[{done}/{total}] {run.strategy:>9} s{run.seed} {run.task.label()[:70]:70s} budget {run.budget} "
              f"speed {run.speed:.3f} to5% {run.measurements_to()} wall {run.wall_seconds:.1f}s", flush=True)

    budgets = {t: max(default_budget(oracle.space_size(t)), args.small_floor) for t in tasks}
    runs: list[RunScore] = []
    reach_runs: list[RunScore] = []
    for task in tasks:
        result = run_harness(oracle, [task], strategies, args.seeds, budget=budgets[task],
                             surrogate_factory=surrogate_factory, track=args.mlflow, on_run=progress)
        runs += result.runs
        if args.reach_budget:
            reach = min(args.reach_budget, oracle.space_size(task))
            reach_runs += run_harness(oracle, [task], "tpe", args.seeds, budget=reach, track=args.mlflow,
                                      on_run=progress).runs
    config = {
        "dataset": args.dataset,
        "oracle": oracle.describe(),
        "replay_noise": oracle.noise,
        "holdout": args.holdout,
        "surrogate": ("GBMSurrogate trained without the task's GPU, cross-calibrated across the other GPUs"
                      if args.holdout == "device" else
                      "GBMSurrogate trained without any record of the task's problem shape (any family or dtype), "
                      f"shapes dealt into {args.folds} folds, cross-calibrated across the other (family, shape) "
                      "groups") + (f"; hyperparameters {args.params}" if args.params else ""),
        "models": models,
        "model_of_task": {t.label(): model_of[t] for t in tasks},
        "strategies": [dataclasses.asdict(s) for s in strategies],
        "seeds": list(range(args.seeds)),
        "budget_rule": f"ceil(2% of the runnable space), at most 50; at least {args.small_floor} (small spaces, "
                       "reported apart)",
        "budgets": {t.label(): budgets[t] for t in tasks},
        "space_sizes": {t.label(): oracle.space_size(t) for t in tasks},
        "reach_budgets": {t.label(): min(args.reach_budget, oracle.space_size(t)) for t in tasks}
        if args.reach_budget else {},
        "small_floor": args.small_floor,
        "dataset_records": frame.height,
        "command": shlex.join(["python", *sys.argv]),
        "git_commit": _git_commit(),
        "versions": _versions(),
        "machine": f"{platform.machine()} {platform.processor() or ''} (replay: no GPU used)".strip(),
        "wall_seconds": time.perf_counter() - started,
    }
    return runs, reach_runs, config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="kernel_tuner")
    parser.add_argument("--holdout", choices=("device", "shape"), default="device")
    parser.add_argument("--folds", type=int, default=3, help="shape folds (--holdout shape)")
    parser.add_argument("--strategies", default="surrogate,tpe,greedy,random")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--task", default=None, help="task selector (default: every complete task)")
    parser.add_argument("--reach-budget", type=int, default=1000, help="TPE alone with this budget (0: not run)")
    parser.add_argument("--small-floor", type=int, default=SMALL_FLOOR)
    parser.add_argument("--model-root", type=Path, default=Path(".cache/search_models"))
    parser.add_argument("--param", action="append", default=[],
                        help="GBM hyperparameter key=value (repeatable), e.g. use_compiled_metadata=true; the models "
                             "go to a folder of --model-root named after the parameters")
    parser.add_argument("--mlflow", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--train-only", action="store_true", help="train the held-out models and stop")
    parser.add_argument("--merge", type=Path, nargs="+", default=None,
                        help="combine result files of runs made apart (e.g. one per strategy) instead of running")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/search_kernel_tuner.json"))
    parser.add_argument("--plot", type=Path, default=None, help="default: plots/<out name>.png next to --out")
    parser.add_argument("--markdown", type=Path, default=None, help="default: <out>.md")
    parser.add_argument("--title", default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    args.params = parse_params(args.param)
    if args.model_root is not None:
        args.model_root = args.model_root / Path(args.dataset).name
        if args.params:
            args.model_root = args.model_root / "_".join(f"{k}-{v}" for k, v in sorted(args.params.items()))
    if args.train_only:
        frame = load(args.dataset)
        tasks = ReplayOracle(frame, name=args.dataset).list_tasks(args.task)
        _, models = held_out_models(frame, tasks, args.holdout, args.model_root, folds=args.folds, seed=0,
                                    params=args.params)
        print(json.dumps(models, indent=1))
        return
    if args.merge:
        parts = [json.loads(p.read_text()) for p in args.merge]
        source = {r["strategy"]: i for i, part in enumerate(parts) for r in part["runs"]}
        runs = [RunScore.from_dict(r) for i, part in enumerate(parts) for r in part["runs"]
                if source[r["strategy"]] == i]
        reach_runs = [RunScore.from_dict(r) for part in parts for r in part.get("reach_runs", [])]
        config = dict(parts[0]["config"])
        config["merged_from"] = [{"file": str(p), "command": part["config"].get("command"),
                                  "strategies": sorted({r["strategy"] for r in part["runs"]}),
                                  "wall_seconds": part["config"].get("wall_seconds")}
                                 for p, part in zip(args.merge, parts)]
        config["command"] = shlex.join(["python", *sys.argv])
    else:
        runs, reach_runs, config = run(args)
    data = assemble(runs, reach_runs, config, config["small_floor"], DEVELOPMENT.get(config["holdout"]))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(dumps(data))
    title = args.title or f"Search strategies on {config['dataset']} (replay, held out by {config['holdout']})"
    (args.markdown or args.out.with_suffix(".md")).write_text(markdown({**data, "file": args.out.name}, title))
    plot = args.plot or args.out.parent / "plots" / f"{args.out.stem}.png"
    n_seeds = len(config["seeds"])
    plot_curves(data["curves"], plot, title=f"{title}: {len(data['tasks'])} tasks x {n_seeds} seeds")
    if "small_spaces" in data:
        small = data["small_spaces"]
        plot_curves(small["curves"], plot.with_name(f"{plot.stem}_small_spaces.png"),
                    title=f"{title}, small spaces: {len(small['tasks'])} tasks x {n_seeds} seeds")
    print(json.dumps({"goals": data["goals"],
                      "goals_without_development": data.get("without_development_tasks", {}).get("goals")}, indent=1))


if __name__ == "__main__":
    main()
