"""Candidates forecast per second on the CPU (goal: 200,000/s for the GBM surrogate).

What one *forecast* is: for one candidate (a configuration of a task), the surrogate's log-time mean, its
calibrated 90% interval and its failure probability, from a candidate frame with JSON knobs
(``Surrogate.forecast``). What one *decision* is: a forecast plus the comparison with the incumbent whose
configuration is known (the standardised gap to the incumbent's forecast, ``P(faster than the incumbent)``
and MEASURE/SKIP by the calibrated relative rule, as ``Screener`` asks ``decide(..., incumbent=row)``).

Fits each surrogate on the Kernel Tuner store (datasets/kernel_tuner, RTX 3090 held out), then times, on a
frame of N distinct candidates on the RTX 3090 (one call each):

- ``forecast``: the whole path, candidate frame to calibrated Forecast;
- ``compare``: forecast plus ``P(faster than the incumbent)`` for every candidate (``predict_proba_better``);
- ``decide``: forecast plus MEASURE/SKIP/DEFER against the incumbent (``decide``);
- ``featurize``: the Featurizer alone;
- ``models``: the LightGBM/forest/ridge models alone, on a prepared feature matrix;
- ``batch64_ms``: wall time of one ``forecast`` of 64 candidates (a search step's batch), median of 50.

``gbm`` predicts with LightGBM's ``Booster.predict``; ``gbm+lleaves`` with the boosters compiled by lleaves
(``compiled_inference=True``, needs ``kernelcast[fast]``); ``first_forecast_seconds`` includes the
compilation (or loading the cached object code). Every model forecasts on 1 thread (the GBM default
``n_jobs=1``) unless named ``NAME@k`` (k threads, reusing NAME's fit); fits run on ``--fit-threads`` threads
(default 1; threads change only LightGBM's floating-point summation order).

The candidates are distinct: the configurations of the GEMM tune_params product on 8 square problem sizes,
of which ``--candidates`` are drawn without replacement.

Each timing is the median of ``--repeats`` runs after one warm-up (``candidates_per_second``), and the best
of them (``candidates_per_second_best``: the run least slowed by other processes on shared cores). Writes
benchmarks/results/surrogate_throughput.json with the CPU, core count, load average and software versions.

Run from the repository root::

    .venv/bin/python benchmarks/bench_surrogate_throughput.py [--candidates 200000] [--models gbm,gbm+lleaves]
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import logging
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import polars as pl

from kernelcast.datasets.store import Store
from kernelcast.measurement.records import canonical_json
from kernelcast.surrogate._artifact import versions
from kernelcast.surrogate._base import CANDIDATE_COLUMNS
from kernelcast.surrogate.evaluation.splits import fit_on_split, make_split
from kernelcast.surrogate.registry import make_surrogate

ROOT = Path(__file__).resolve().parents[1]
logger = logging.getLogger("bench_surrogate_throughput")
GOAL_PER_SECOND = 200_000


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


PROBLEM_SIZES = (1024, 2048, 3072, 4096, 5120, 6144, 7168, 8192)
"""Square GEMM sizes of the candidates: 8 x 27,648 configurations = 221,184 distinct candidates."""


def candidate_frame(frame: pl.DataFrame, n: int, seed: int) -> pl.DataFrame:
    """``n`` distinct GEMM candidates on the RTX 3090: configurations of the tune_params product x problem sizes."""
    task = frame.filter((pl.col("family") == "kernel_tuner/Xgemm") & pl.col("device").str.contains("3090"))
    protocol = json.loads(task["protocol_json"][0])
    space = protocol["tune_params"]
    keys = list(space)
    configs = [canonical_json(dict(zip(keys, values))) for values in itertools.product(*space.values())]
    problems = [canonical_json({"n0": size, "n1": size}) for size in PROBLEM_SIZES]
    total = len(configs) * len(problems)
    if n > total:
        raise SystemExit(f"at most {total} distinct candidates; asked for {n}")
    picks = np.random.default_rng(seed).choice(total, size=n, replace=False)
    first = task.row(0, named=True)
    return pl.DataFrame({
        "family": [first["family"]] * n,
        "variant": [first["variant"]] * n,
        "source_hash": [first["source_hash"]] * n,
        "config_json": [configs[i % len(configs)] for i in picks],
        "problem_json": [problems[i // len(configs)] for i in picks],
        "dtype": [first["dtype"]] * n,
        "device": [first["device"]] * n,
    })


def timed(fn, repeats: int) -> tuple[float, float]:
    """Median and best wall time (s) of ``repeats`` calls of ``fn`` after one warm-up call."""
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), min(times)


def tree_counts(model) -> dict[str, int]:
    """Trees of each LightGBM booster of a GBM surrogate (empty for other models)."""
    counts = {}
    for name, booster in getattr(getattr(model, "regressor_", None), "boosters_", {}).items():
        counts[name] = booster.num_trees()
    if getattr(model, "fail_booster_", None) is not None:
        counts["fail"] = model.fail_booster_.num_trees()
    return counts


def _busy_note(load: float, cores: int) -> dict[str, str]:
    """A note when other processes kept the cores busy before the run (1-minute load over half the cores)."""
    if load <= 0.5 * cores:
        return {}
    return {"note": f"other processes were running (load average {load:.2f} on {cores} cores): times are upper "
                    "bounds, rates lower bounds"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT / "datasets" / "kernel_tuner"))
    parser.add_argument("--candidates", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--models", default="gbm,gbm+lleaves,gbm+lleaves@2,forest,roofline")
    parser.add_argument("--fit-threads", type=int, default=1,
                        help="threads of the fits (forecasts use NAME@k's k, default 1); 0: every core")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "surrogate_throughput.json"))
    args = parser.parse_args()

    load_before = os.getloadavg()
    frame = Store(args.data).read()
    split = make_split(frame, "device", ["device=3090"], seed=0, calibration="random")
    candidates = candidate_frame(frame, args.candidates, seed=1)
    gemm = split.test.filter(pl.col("family") == "kernel_tuner/Xgemm").sort("time_ms")
    incumbent = gemm.head(1).select(CANDIDATE_COLUMNS)  # the incumbent: the task's best measured configuration
    incumbent_ms = float(gemm["time_ms"][0])
    results = {}
    fitted = {}
    for name in args.models.split(","):
        base, _, threads = name.partition("@")
        kind, _, accel = base.partition("+")
        params = {"compiled_inference": True} if accel == "lleaves" else {}
        start = time.perf_counter()
        if (kind, accel) not in fitted:  # NAME@2 reuses NAME's fit
            surrogate = make_surrogate(kind, **params)
            if "n_jobs" in surrogate.get_params():
                surrogate.set_params(n_jobs=args.fit_threads or os.cpu_count() or 1)
            fitted[kind, accel] = fit_on_split(surrogate, split)
        model = fitted[kind, accel]
        fit_s = time.perf_counter() - start
        if "n_jobs" in model.get_params():
            model.set_params(n_jobs=int(threads or 1))
            if hasattr(model, "compiled_"):
                model.compiled_ = None  # compiled again (from the on-disk cache) for these threads
        start = time.perf_counter()
        model.forecast(candidates.head(10))  # with lleaves: compiles (or loads the cached object code)
        first_s = time.perf_counter() - start
        X, _ = model._feature_matrices(candidates)
        X_model = model._model_matrix(X)
        seconds = {
            "forecast": timed(lambda m=model: m.forecast(candidates), args.repeats),
            "compare": timed(lambda m=model: m.predict_proba_better(candidates, incumbent_ms, incumbent=incumbent),
                             args.repeats),
            "decide": timed(lambda m=model: m.decide(candidates, incumbent_ms, incumbent=incumbent), args.repeats),
            "featurize": timed(lambda m=model: m.featurizer_.transform(candidates), args.repeats),
            "models": timed(lambda m=model, x=X_model: m._raw_forecast(x, x), args.repeats),
        }
        small = candidates.head(64)
        batch64_s = timed(lambda m=model, c=small: m.forecast(c), 50)[0]
        results[name] = {
            "threads": int(threads or 1),
            "fit_seconds": round(fit_s, 2),
            "first_forecast_seconds": round(first_s, 2),
            "trees": tree_counts(model),
            "seconds": {k: round(v[0], 4) for k, v in seconds.items()},
            "candidates_per_second": {k: round(args.candidates / v[0]) for k, v in seconds.items()},
            "candidates_per_second_best": {k: round(args.candidates / v[1]) for k, v in seconds.items()},
            "batch64_ms": round(batch64_s * 1e3, 2),
        }
        logger.info("%s %s", name, results[name])
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    out = {
        "benchmark": "surrogate forecast throughput on the CPU",
        "definition": ("one forecast = one candidate's log-time mean, calibrated 90% interval and failure "
                       "probability from a candidate frame with JSON knobs (Surrogate.forecast); compare adds "
                       "P(faster than the incumbent) against the incumbent's known configuration; decide adds "
                       "the MEASURE/SKIP/DEFER rule against it"),
        "goal_candidates_per_second": GOAL_PER_SECOND,
        "gbm_meets_goal": {k: v["candidates_per_second"]["forecast"] >= GOAL_PER_SECOND
                           for k, v in results.items() if k.startswith("gbm")},
        "gbm_meets_goal_best": {k: v["candidates_per_second_best"]["forecast"] >= GOAL_PER_SECOND
                                for k, v in results.items() if k.startswith("gbm")},
        "n_candidates": args.candidates,
        "repeats": args.repeats,
        "candidates": ("distinct kernel_tuner/Xgemm candidates on NVIDIA GeForce RTX 3090: configurations of its "
                       "tune_params product x 8 square problem sizes (1024..8192), sampled without replacement"),
        "trained_on": "datasets/kernel_tuner, RTX 3090 held out (device split, random calibration)",
        "results": results,
        "device": {"cpu": cpu_model(), "cores_available": cores, "cpu_count": os.cpu_count(),
                   "machine": platform.machine(), "system": platform.system(),
                   "load_average_before": [round(x, 2) for x in load_before],
                   "load_average_after": [round(x, 2) for x in os.getloadavg()],
                   **_busy_note(load_before[0], cores)},
        "versions": {**versions(), **optional_versions()},
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": "python benchmarks/bench_surrogate_throughput.py " + " ".join(
            f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k not in ("data", "out")),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    logger.info("wrote %s", args.out)


def optional_versions() -> dict[str, str]:
    """Versions of the optional compiled-inference packages, where installed."""
    import importlib.metadata

    out = {}
    for name in ("lleaves", "llvmlite"):
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    main()
