"""Candidates forecast per second on the CPU (goal: 200,000/s for the GBM surrogate).

Fits each surrogate on the Kernel Tuner store (datasets/kernel_tuner, RTX 3090 held out), then times, on a
frame of N candidates on the RTX 3090:

- ``forecast``: the whole path, from a candidate frame (JSON knobs) to a calibrated Forecast;
- ``decide``: forecast plus the MEASURE/SKIP/DEFER rule against an incumbent;
- ``featurize``: the Featurizer alone;
- ``models``: the LightGBM/forest/ridge models alone, on a prepared feature matrix.

``gbm+lleaves`` is the GBM with ``compiled_inference=True`` (boosters compiled by lleaves; needs
``kernelcast[fast]``); ``first_forecast_seconds`` includes the compilation (or loading the cached code).
Every model runs on one thread (the GBM default ``n_jobs=1``).

The candidates are distinct: the 27,648 configurations of the GEMM tune_params product on 8 square problem
sizes (221,184 candidates), of which ``--candidates`` are drawn without replacement.

Each timing is the median of ``--repeats`` runs after one warm-up. Writes
benchmarks/results/surrogate_throughput.json with the CPU, core count and software versions.

Run from the repository root::

    .venv/bin/python benchmarks/bench_surrogate_throughput.py [--candidates 200000] [--models gbm,forest,roofline]
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
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
from kernelcast.surrogate.evaluation.splits import fit_on_split, make_split
from kernelcast.surrogate.registry import make_surrogate

ROOT = Path(__file__).resolve().parents[1]
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


def timed(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT / "datasets" / "kernel_tuner"))
    parser.add_argument("--candidates", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--models", default="gbm,gbm+lleaves,forest,roofline")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "surrogate_throughput.json"))
    args = parser.parse_args()

    frame = Store(args.data).read()
    split = make_split(frame, "device", ["device=3090"], seed=0, calibration="random")
    candidates = candidate_frame(frame, args.candidates, seed=1)
    incumbent_ms = float(split.test.filter(pl.col("family") == "kernel_tuner/Xgemm")["time_ms"].min())
    results = {}
    for name in args.models.split(","):
        kind, _, accel = name.partition("+")
        params = {"compiled_inference": True} if accel == "lleaves" else {}
        start = time.perf_counter()
        model = fit_on_split(make_surrogate(kind, **params), split)
        fit_s = time.perf_counter() - start
        start = time.perf_counter()
        model.forecast(candidates.head(10))  # with lleaves: compiles (or loads the cached object code)
        first_s = time.perf_counter() - start
        X, _ = model._feature_matrices(candidates)
        X_model = model._model_matrix(X)
        seconds = {
            "forecast": timed(lambda m=model: m.forecast(candidates), args.repeats),
            "decide": timed(lambda m=model: m.decide(candidates, incumbent_ms), args.repeats),
            "featurize": timed(lambda m=model: m.featurizer_.transform(candidates), args.repeats),
            "models": timed(lambda m=model, x=X_model: m._raw_forecast(x, x), args.repeats),
        }
        results[name] = {
            "fit_seconds": round(fit_s, 2),
            "first_forecast_seconds": round(first_s, 2),
            "seconds": {k: round(v, 4) for k, v in seconds.items()},
            "candidates_per_second": {k: round(args.candidates / v) for k, v in seconds.items()},
        }
        print(name, results[name], flush=True)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    out = {
        "benchmark": "surrogate forecast throughput on the CPU",
        "goal_candidates_per_second": GOAL_PER_SECOND,
        "gbm_meets_goal": {k: v["candidates_per_second"]["forecast"] >= GOAL_PER_SECOND
                           for k, v in results.items() if k.startswith("gbm")},
        "n_candidates": args.candidates,
        "repeats": args.repeats,
        "candidates": ("distinct kernel_tuner/Xgemm candidates on NVIDIA GeForce RTX 3090: the 27,648 configurations "
                       "of its tune_params product x 8 square problem sizes (1024..8192), sampled without replacement"),
        "trained_on": "datasets/kernel_tuner, RTX 3090 held out (device split, random calibration)",
        "results": results,
        "device": {"cpu": cpu_model(), "cores_available": cores, "cpu_count": os.cpu_count(),
                   "machine": platform.machine(), "system": platform.system()},
        "versions": versions(),
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": "python benchmarks/bench_surrogate_throughput.py " + " ".join(
            f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k not in ("data", "out")),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
