"""Search strategies on the Kernel Tuner spaces at equal budget, with a leave-one-GPU-out surrogate.

For each of the four GPUs of ``datasets/kernel_tuner`` a GBM surrogate is trained on the other three GPUs
only (``make_split(kind="device")`` then ``fit_on_split``: its calibration, SKIP threshold included, comes
from out-of-GPU forecasts of those three, so it is calibrated under a change of GPU). Every complete task of
the held-out GPU is then searched by every strategy, for several seeds, at the default budget (2% of the
space, at most 50 measurements), against a replay of the measured space. The surrogate learns the new GPU
during each search by warm-start updates.

    .venv/bin/python benchmarks/search_kernel_tuner.py --seeds 10 --reach-budget 200 \
        --out benchmarks/results/search_kernel_tuner.json --plot benchmarks/results/search_kernel_tuner.png

``--reach-budget 200`` also runs TPE with 200 measurements, to count how many it needs to get within 5% of
the optimum when 50 are not enough. Strategies run apart (``--strategies gp --out gp.json``) are combined
with ``--merge a.json b.json --out all.json`` (a strategy in several files is taken from the last). The
ablations ``greedy-64`` and ``surrogate-nolearn`` (see :data:`ABLATIONS`) can be named in ``--strategies``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import platform
import sys
import time
import warnings
from pathlib import Path

import optuna

from kernelcast.datasets import load
from kernelcast.search import (
    HarnessResult,
    ReplayOracle,
    RunScore,
    Strategy,
    get_strategy,
    run_harness,
    surrogate_for_search,
)
from kernelcast.search.harness import curves, plot_curves, summarize
from kernelcast.surrogate import load_surrogate
from kernelcast.surrogate.evaluation.splits import fit_on_split, make_split
from kernelcast.surrogate.gbm import GBMSurrogate

ABLATIONS: dict[str, Strategy] = {
    "greedy-64": dataclasses.replace(get_strategy("greedy"), name="greedy-64", proposals_per_step=64),
    "surrogate-nolearn": dataclasses.replace(get_strategy("surrogate"), name="surrogate-nolearn", learn=False),
}
"""Variants that isolate a choice: greedy's filter on as many proposals as ``surrogate`` screens (top 4 of 64);
``surrogate`` without learning during the search."""


def strategy(name: str) -> Strategy:
    """A registered strategy or one of :data:`ABLATIONS`."""
    return ABLATIONS[name] if name in ABLATIONS else get_strategy(name)


def train_models(frame, devices, model_root: Path, seed: int, update_mode: str) -> dict[str, dict]:
    """One GBM per held-out device, trained on the others; cached under ``model_root``."""
    info = {}
    for device in devices:
        path = model_root / device.replace(" ", "_")
        split = make_split(frame, "device", holdouts=[f"device={device}"], seed=seed)
        described = split.describe()
        if not (path / "model.json").exists():
            start = time.perf_counter()
            model = fit_on_split(GBMSurrogate(random_state=seed, update_mode=update_mode, n_jobs=1), split)
            model.save(path, extra={"split": described})
            described["fit_seconds"] = time.perf_counter() - start
        info[device] = {"model_dir": str(path), **{k: described[k] for k in (
            "n_train", "n_calibration", "test_groups", "calibration_groups", "calibration_mode")}}
        if "fit_seconds" in described:
            info[device]["fit_seconds"] = described["fit_seconds"]
    return info


def goals(summary: dict, reach: dict | None) -> dict:
    """The issue's three goals, computed from the summary (numbers, not verdicts alone)."""
    s = summary.get("surrogate")
    if s is None:
        return {}
    out = {
        "surrogate_median_best_over_optimum_speed": s["median_best_over_optimum_speed"],
        "goal_median_best_at_least_0.97": (s["median_best_over_optimum_speed"] or 0) >= 0.97,
    }
    ours = s["median_over_tasks_of_median_measurements_to_5pct"]
    for name in ("tpe", "tpe_reach"):
        source = summary if name == "tpe" else (reach or {})
        other = source.get("tpe")
        if other is None:
            continue
        theirs = other["median_over_tasks_of_median_measurements_to_5pct"]
        key = f"measurements_to_5pct_ratio_{name}_over_surrogate"
        out[f"{name}_median_over_tasks_measurements_to_5pct"] = theirs
        out[key] = (theirs / ours) if (theirs is not None and ours) else None
        # None where the median run never got within 5%: the ratio is then only bounded below
        out[f"goal_3x_fewer_than_{name}"] = None if theirs is None or not ours else theirs >= 3 * ours
    out["surrogate_median_over_tasks_measurements_to_5pct"] = ours
    for name in ("greedy", "random"):
        if name in summary:
            other = summary[name]["median_best_over_optimum_speed"]
            out[f"{name}_median_best_over_optimum_speed"] = other
            out[f"goal_beats_{name}"] = (s["median_best_over_optimum_speed"] or 0) > (other or 0)
    return out


def assemble(runs: list[RunScore], reach_runs: list[RunScore], reach_budget: int | None, config: dict) -> dict:
    """The result file: configuration, summary, curves, goals, every run (and the long TPE runs)."""
    data = HarnessResult(runs=runs, config=config).to_dict()
    reach = summarize(reach_runs) if reach_runs else None
    if reach is not None:
        data["reach"] = {"budget": reach_budget, "summary": reach, "runs": [r.to_dict() for r in reach_runs]}
    data["goals"] = goals(data["summary"], reach)
    return data


def _fmt(value: object, spec: str = ".3f") -> str:
    if value is None:
        return "never"
    if isinstance(value, float) and value == float("inf"):
        return "never"
    return format(value, spec) if isinstance(value, (int, float)) and not isinstance(value, bool) else str(value)


def markdown(data: dict) -> str:
    """A readable summary of a result file: goals, strategies, and per-task medians."""
    summary = data["summary"]
    reach = data.get("reach", {}).get("summary", {}).get("tpe")
    lines = ["# Search strategies on the Kernel Tuner spaces (replay, leave-one-GPU-out surrogate)", "",
             f"Produced by `benchmarks/search_kernel_tuner.py`; every number below is in `{data.get('file', '')}`.", "",
             "| strategy | runs | median best/optimum speed | runs within 5% | median measurements to 5% "
             "(all runs) | median over tasks of measurements to 5% | GPU s (replayed) | surrogate s |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    rows = dict(summary)
    if reach is not None:
        rows[f"tpe, {data['reach']['budget']} measurements"] = reach
    for name, s in rows.items():
        lines.append(f"| {name} | {s['runs']} | {_fmt(s['median_best_over_optimum_speed'])} | "
                     f"{s['runs_within_5pct']} | {_fmt(s['median_measurements_to_5pct'], '.1f')} | "
                     f"{_fmt(s['median_over_tasks_of_median_measurements_to_5pct'], '.1f')} | "
                     f"{s['gpu_seconds']:.0f} | {s['surrogate_seconds']:.0f} |")
    lines += ["", "Goals of the issue, as measured:", ""]
    lines += [f"- `{k}`: {_fmt(v, '.3f') if isinstance(v, float) else v}" for k, v in data.get("goals", {}).items()]
    tasks = list(next(iter(summary.values()))["per_task"])
    for metric, title, spec in (("median_best_over_optimum_speed", "Median best/optimum speed per task", ".3f"),
                                ("median_measurements_to_5pct_censored",
                                 "Median measurements to within 5% per task (never: the median run did not get "
                                 "there)", ".1f")):
        lines += ["", f"{title}:", "", "| task | " + " | ".join(rows) + " |",
                  "|---|" + "---:|" * len(rows)]
        for task in tasks:
            cells = [_fmt(s["per_task"].get(task, {}).get(metric), spec) for s in rows.values()]
            lines.append(f"| {task} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="kernel_tuner")
    parser.add_argument("--strategies", default="surrogate,tpe,gp,cmaes,random,greedy")
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--task", default=None, help="task selector (default: every complete task)")
    parser.add_argument("--budget", type=int, default=None, help="default: 2%% of the space, at most 50")
    parser.add_argument("--reach-budget", type=int, default=None, help="also run TPE with this budget")
    parser.add_argument("--update-mode", default="warm_start", choices=("warm_start", "refit"))
    parser.add_argument("--model-root", type=Path, default=Path("benchmarks/results/.search_models"))
    parser.add_argument("--merge", type=Path, nargs="+", default=None,
                        help="combine result files of runs made apart (e.g. one per strategy) instead of running")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/search_kernel_tuner.json"))
    parser.add_argument("--plot", type=Path, default=Path("benchmarks/results/search_kernel_tuner.png"))
    parser.add_argument("--markdown", type=Path, default=None, help="also write a readable summary here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)

    if args.merge:
        parts = [json.loads(p.read_text()) for p in args.merge]
        # a strategy present in several files is taken from the last one (a rerun replaces the earlier runs)
        source = {r["strategy"]: i for i, part in enumerate(parts) for r in part["runs"]}
        runs = [RunScore.from_dict(r) for i, part in enumerate(parts) for r in part["runs"] if source[r["strategy"]] == i]
        reach_runs = [RunScore.from_dict(r) for part in parts for r in part.get("reach", {}).get("runs", [])]
        reach_budget = next((part["reach"]["budget"] for part in parts if "reach" in part), None)
        config = dict(parts[0]["config"])
        config["strategies"] = list(dict.fromkeys(r.strategy for r in runs))
        config["merged_from"] = [{"file": str(p), "command": part["config"].get("command"),
                                  "wall_seconds": part["config"].get("wall_seconds")}
                                 for p, part in zip(args.merge, parts)]
        config.pop("command", None)
        config.pop("wall_seconds", None)
        data = assemble(runs, reach_runs, reach_budget, config)
    else:
        data = run(args)
        runs = [RunScore.from_dict(r) for r in data["runs"]]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(data, indent=1) + "\n")
    if args.markdown is not None:
        args.markdown.write_text(markdown({**data, "file": args.out.name}))
    n_tasks, n_seeds = len({r.task for r in runs}), len({r.seed for r in runs})
    plot_curves(curves(runs), args.plot,
                title=f"{n_tasks} Kernel Tuner tasks x {n_seeds} seeds, leave-one-GPU-out GBM surrogate")
    brief = {k: {m: v[m] for m in ("median_best_over_optimum_speed", "runs_within_5pct", "runs",
                                   "median_measurements_to_5pct", "median_over_tasks_of_median_measurements_to_5pct",
                                   "gpu_seconds", "surrogate_seconds")} for k, v in data["summary"].items()}
    print(json.dumps({"goals": data["goals"], "summary": brief}, indent=1))


def run(args: argparse.Namespace) -> dict:
    """Train the leave-one-GPU-out models (cached), run the harness, return the result file's content."""
    started = time.perf_counter()
    frame = load(args.dataset)
    oracle = ReplayOracle(frame, name=args.dataset)
    tasks = oracle.list_tasks(args.task)
    strategies: list[Strategy] = [strategy(s) for s in args.strategies.split(",")]
    devices = sorted({t.device for t in tasks})
    models = train_models(frame, devices, args.model_root, seed=0, update_mode=args.update_mode)

    def surrogate_factory(task):
        model = surrogate_for_search(load_surrogate(models[task.device]["model_dir"]))
        model.set_params(update_mode=args.update_mode, n_jobs=1)
        return model

    def progress(run, done, total):
        print(f"[{done}/{total}] {run.strategy:>9} s{run.seed} {run.task.label()[:70]:70s} "
              f"speed {run.speed:.3f} to5% {run.measurements_to()} wall {run.wall_seconds:.1f}s", flush=True)

    result = run_harness(oracle, tasks, strategies, args.seeds, budget=args.budget,
                         surrogate_factory=surrogate_factory, on_run=progress)
    reach_runs: list[RunScore] = []
    if args.reach_budget:
        reach_runs = run_harness(oracle, tasks, "tpe", args.seeds, budget=args.reach_budget, on_run=progress).runs
    config = dict(result.config)
    config.update({
        "dataset": args.dataset,
        "surrogate": "GBMSurrogate, leave-one-GPU-out: trained on the three other GPUs, cross-calibrated across them",
        "update_mode": args.update_mode,
        "models": models,
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "python": platform.python_version(),
        "optuna": optuna.__version__,
        "wall_seconds": time.perf_counter() - started,
    })
    return assemble(result.runs, reach_runs, args.reach_budget, config)


if __name__ == "__main__":
    main()
