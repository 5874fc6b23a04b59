"""Live search on a GPU: one matmul shape the dataset does not hold, searched by kernelcast at a budget of 50
measurements, against Triton's autotuner over the matmul tutorial's configuration list; one JSON.

What it does, in order:

1. trains the GBM surrogate on every record of ``--data`` (the H200 sweeps; the searched shape is not among
   them, and the GPU may not be either), cross-calibrated across (family, shape) groups; or loads ``--model``;
2. searches the ``blocked`` matmul variant on ``--shape`` with the :class:`~kernelcast.search.GpuOracle`
   (kernelcast's benchmarker: compile, check against PyTorch, time) for each of ``--strategies``
   (default ``surrogate,tpe``) at ``--budget`` measurements;
3. runs Triton's autotuner (``triton.autotune``) over the 16 configurations of Triton's matmul tutorial
   (``get_cuda_autotune_config`` of ``python/tutorials/03-matrix-multiplication.py``: 8 for fp16, 8 for fp8
   with ``BLOCK_K=128``) on the same kernel source, and times its first call (compile and benchmark every
   configuration);
4. with ``--exhaustive``, measures every configuration of the space with the benchmarker, so that each pick
   can be scored against the optimum (about 2 minutes on an H200 for the 2,400 configurations);
5. times each pick (every strategy's best measured configuration and the autotuner's choice) with
   ``triton.testing.do_bench`` in ``--rounds`` interleaved rounds, in this one process.

A strategy name with the suffix ``_compiled`` (e.g. ``surrogate_compiled``) runs that strategy with a second GBM
trained with compiler metadata (``use_compiled_metadata=True``): the oracle compiles its candidates on the CPU
(:mod:`kernelcast.measurement.offline`) before they are screened. With ``--exhaustive`` the metadata compiled on
the CPU for every configuration of the space is then compared with what the GPU worker reported
(``offline_compile_agreement``), and every search's measurements to within 5% of the optimum are reported.

Run on the GPU machine (torch and Triton there; the carried wheels give polars, optuna, lightgbm,
scikit-learn and scipy)::

    source benchmarks/device_env.sh
    python3 benchmarks/search_live_gpu.py --json benchmarks/results/search_live_gpu.json --exhaustive
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

TUTORIAL_CONFIGS: list[tuple[int, int, int, int, int, int]] = [
    # BLOCK_M, BLOCK_N, BLOCK_K, GROUP_M, num_stages, num_warps
    (128, 256, 64, 8, 3, 8),
    (64, 256, 32, 8, 4, 4),
    (128, 128, 32, 8, 4, 4),
    (128, 64, 32, 8, 4, 4),
    (64, 128, 32, 8, 4, 4),
    (128, 32, 32, 8, 4, 4),
    (64, 32, 32, 8, 5, 2),
    (32, 64, 32, 8, 5, 2),
    # the tutorial's "good config for fp8 inputs"
    (128, 256, 128, 8, 3, 8),
    (256, 128, 128, 8, 3, 8),
    (256, 64, 128, 8, 4, 4),
    (64, 256, 128, 8, 4, 4),
    (128, 128, 128, 8, 4, 4),
    (128, 64, 64, 8, 4, 4),
    (64, 128, 64, 8, 4, 4),
    (128, 32, 64, 8, 4, 4),
]
"""Triton's matmul tutorial configurations (``get_cuda_autotune_config``), in kernelcast's knob names."""


def as_config(row: tuple[int, int, int, int, int, int]) -> dict[str, int]:
    """A tutorial configuration in the ``blocked`` variant's knobs."""
    bm, bn, bk, group, stages, warps = row
    return {"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "GROUP_M": group, "num_stages": stages, "num_warps": warps}


def train_surrogate(data: str, n_jobs: int, **params: Any) -> tuple[Any, dict[str, Any]]:
    """GBM (with ``params``) on every record of ``data``, cross-calibrated across (family, shape) groups."""
    from kernelcast.datasets import load
    from kernelcast.surrogate.evaluation.splits import group_labels
    from kernelcast.surrogate.gbm import GBMSurrogate

    frame = load(data)
    start = time.perf_counter()
    model = GBMSurrogate(random_state=0, n_jobs=n_jobs, **params).fit(frame)
    model.cross_calibrate(frame, group_labels(frame, "shapes"))
    return model, {"data": data, "records": frame.height, "fit_seconds": time.perf_counter() - start,
                   "calibration": "cross, across (family, shape) groups", "params": params}


def offline_agreement(oracle: Any, task: Any, records: list[Any]) -> dict[str, Any]:
    """Compile every measured configuration on the CPU and compare its metadata with the GPU worker's report."""
    from kernelcast.measurement.records import COMPILED_COLUMNS as fields

    measured = [r for r in records if r.compiled is not None and r.compiled.n_regs is not None]
    before = oracle.offline_compile_seconds
    start = time.perf_counter()
    frame = oracle.compiled_metadata(task, oracle.candidate_frame(task, [dict(r.config) for r in measured]))
    same = {f: 0 for f in fields}
    mismatches = []
    for record, row in zip(measured, frame.iter_rows(named=True), strict=True):
        gpu = {f: getattr(record.compiled, f) for f in fields}
        for f in fields:
            same[f] += int(row[f] == gpu[f])
        if any(row[f] != gpu[f] for f in fields):
            mismatches.append({"config": dict(record.config), "gpu": gpu, "offline": {f: row[f] for f in fields}})
    return {"configs": len(measured), "agree": same, "all_agree": len(measured) - len(mismatches),
            "mismatches": mismatches[:20], "wall_seconds": time.perf_counter() - start,
            "compile_cpu_seconds": oracle.offline_compile_seconds - before, "compile_jobs": oracle.compile_jobs}


def measurements_to(result: dict[str, Any], optimum_ms: float, within: float = 0.05) -> int | None:
    """First measurement after which the search's best measured runtime is within ``within`` of the optimum."""
    best = math.inf
    for i, m in enumerate(result["trajectory"], start=1):
        if m.get("time_ms") is not None:
            best = min(best, m["time_ms"])
        if best <= optimum_ms * (1.0 + within):
            return i
    return None


def autotune(problem: Any, inputs: dict[str, Any], out: Any) -> dict[str, Any]:
    """Triton's autotuner over :data:`TUTORIAL_CONFIGS` on the ``blocked`` kernel; its choice and timings."""
    import torch
    import triton

    from kernelcast.measurement.families.matmul import matmul_blocked_kernel

    configs = [triton.Config({k: v for k, v in as_config(r).items() if k not in ("num_stages", "num_warps")},
                             num_stages=r[4], num_warps=r[5]) for r in TUTORIAL_CONFIGS]
    tuned = triton.autotune(configs=configs, key=["M", "N", "K"])(matmul_blocked_kernel)
    a, b = inputs["a"], inputs["b"]
    M, K = a.shape
    N = b.shape[1]

    def grid(meta: dict[str, Any]) -> tuple[int]:
        return (triton.cdiv(M, meta["BLOCK_M"]) * triton.cdiv(N, meta["BLOCK_N"]),)

    torch.cuda.synchronize()
    start = time.perf_counter()
    tuned[grid](a, b, out, M, N, K, a.stride(0), a.stride(1), b.stride(0), b.stride(1), out.stride(0), out.stride(1))
    torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    best = tuned.best_config
    chosen = {**best.kwargs, "num_stages": best.num_stages, "num_warps": best.num_warps}
    timings = []
    for config, value in getattr(tuned, "configs_timings", {}).items():
        ms = value[0] if isinstance(value, (list, tuple)) else value
        timings.append({"config": {**config.kwargs, "num_stages": config.num_stages, "num_warps": config.num_warps},
                        "ms": float(ms) if ms is not None and math.isfinite(float(ms)) else None})
    return {"configs": [as_config(r) for r in TUTORIAL_CONFIGS], "chosen": chosen, "first_call_seconds": seconds,
            "bench_seconds": getattr(tuned, "bench_time", None), "timings": timings}


def time_picks(family: Any, problem: Any, inputs: dict[str, Any], picks: dict[str, dict[str, Any]],
               rounds: int) -> dict[str, Any]:
    """``do_bench`` medians (ms) of each pick, in ``rounds`` interleaved rounds."""
    import triton

    out = family.new_output(problem, inputs)
    times: dict[str, list[float]] = {name: [] for name in picks}
    for _ in range(rounds):
        for name, config in picks.items():
            times[name].append(float(triton.testing.do_bench(
                lambda config=config: family.launch("blocked", config, problem, inputs, out), warmup=25, rep=100)))
    flops = family.flops(problem)
    return {name: {"config": picks[name], "median_ms": statistics.median(t), "rounds_ms": t,
                   "tflops": flops / (statistics.median(t) * 1e-3) / 1e12} for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", default="2048x5120x3072", help="M x N x K, not in the dataset")
    parser.add_argument("--dtype", default="float16")
    parser.add_argument("--budget", type=int, default=50)
    parser.add_argument("--strategies", default="surrogate,tpe")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", default="datasets/kernelcast")
    parser.add_argument("--model", type=Path, default=None, help="a trained surrogate (default: train one here)")
    parser.add_argument("--compiled-model", type=Path, default=None,
                        help="a surrogate trained with compiler metadata, for the *_compiled strategies (default: "
                             "train one here)")
    parser.add_argument("--exhaustive", action="store_true", help="also measure the whole space (the optimum)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--store", type=Path, default=None,
                        help="a record store that keeps every measurement of the run (searches and --exhaustive)")
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/search_live_gpu.json"))
    parser.add_argument("--interpret", action="store_true",
                        help="CPU smoke run through Triton's interpreter (use a tiny --shape and --budget); no autotuner")
    args = parser.parse_args()

    import torch
    import triton

    from kernelcast.datasets import load
    from kernelcast.measurement import Benchmarker
    from kernelcast.measurement.families import get_family
    from kernelcast.measurement.records import canonical_json
    from kernelcast.search import GpuOracle, get_strategy, run_search, surrogate_for_search

    started = time.perf_counter()
    family = get_family("matmul")
    problem = family.problem(args.shape, args.dtype)
    frame = load(args.data)
    seen = frame.filter((frame["family"] == "matmul") & (frame["problem_json"] == canonical_json(problem.as_dict())))
    if seen.height:
        sys.exit(f"the shape {args.shape} is in {args.data} ({seen.height} records): pick another one")
    n_jobs = os.cpu_count() or 1
    names = args.strategies.split(",")
    folders: dict[bool, Path] = {}
    model_info: dict[str, Any] = {}
    for compiled, given in ((False, args.model), (True, args.compiled_model)):
        if given is not None:
            folders[compiled] = given
            model_info["compiled" if compiled else "plain"] = {"model_dir": str(given)}
    for compiled in sorted({n.endswith("_compiled") for n in names if get_strategy(
            n.removesuffix("_compiled")).needs_surrogate} - set(folders)):
        trained, model_info["compiled" if compiled else "plain"] = train_surrogate(
            args.data, n_jobs, **({"use_compiled_metadata": True} if compiled else {}))
        folders[compiled] = Path(tempfile.mkdtemp(prefix="kc-live-model-"))
        trained.save(folders[compiled])

    def fresh(compiled: bool) -> Any:
        from kernelcast.surrogate import load_surrogate

        return surrogate_for_search(load_surrogate(folders[compiled]))

    report: dict[str, Any] = {
        "shape": args.shape, "problem": problem.as_dict(), "dtype": args.dtype, "variant": "blocked",
        "budget": args.budget, "seed": args.seed, "surrogate": model_info, "command": " ".join(["python3", *sys.argv]),
        "versions": {"python": platform.python_version(), "torch": torch.__version__, "triton": triton.__version__},
        "searches": {}, "store": str(args.store) if args.store else None,
    }
    bench = Benchmarker(mode="interpret", origin="kernelcast.search") if args.interpret else None
    with GpuOracle(["matmul"], shapes=[args.shape], dtypes=[args.dtype], variants=["blocked"],
                   benchmarker=bench, store=args.store, compile_jobs=max(1, n_jobs - 2)) as oracle:
        (task,) = oracle.tasks()
        report["device"] = task.device
        report["space_size"] = oracle.space_size(task)
        picks: dict[str, dict[str, Any]] = {}
        for name in names:
            strategy = get_strategy(name.removesuffix("_compiled"))
            run_dir = Path(tempfile.mkdtemp(prefix=f"kc-live-{name}-"))
            compile_before = oracle.offline_compile_seconds
            result = run_search(task, oracle, strategy=strategy, budget=args.budget, seed=args.seed, run_dir=run_dir,
                                surrogate=fresh(name.endswith("_compiled")) if strategy.needs_surrogate else None)
            summary = result.to_dict()
            summary["offline_compile_cpu_seconds"] = oracle.offline_compile_seconds - compile_before
            report["searches"][name] = summary
            if result.best is not None:
                picks[name] = dict(result.best.config)
            print(f"{name}: best {summary['best_time_ms']} ms after {summary['measurements']} measurements, "
                  f"{summary['gpu_seconds']:.1f} GPU s, {summary['wall_seconds']:.1f} s", flush=True)
        if args.interpret:
            report["wall_seconds"] = time.perf_counter() - started
            args.json.write_text(json.dumps(report, indent=1, default=str) + "\n")
            return
        inputs = family.make_inputs(problem, device="cuda", seed=0)
        report["triton_autotune"] = tuned = autotune(problem, inputs, family.new_output(problem, inputs))
        picks["triton_autotune"] = tuned["chosen"]
        if args.exhaustive:
            start = time.perf_counter()
            every = [dict(c) for c in family.space("blocked") if oracle.check(task, c) is None]
            records = oracle.measure(task, every)
            ok = [r for r in records if r.time_ms is not None]
            best = min(ok, key=lambda r: r.time_ms)
            report["exhaustive"] = {"configs": len(every), "ok": len(ok), "seconds": time.perf_counter() - start,
                                    "optimum_ms": best.time_ms, "optimum_config": dict(best.config)}
            picks["exhaustive_optimum"] = dict(best.config)
            for summary in report["searches"].values():
                summary["measurements_to_5pct"] = measurements_to(summary, best.time_ms)
            if any(n.endswith("_compiled") for n in names):
                report["offline_compile_agreement"] = agreement = offline_agreement(oracle, task, records)
                print(f"offline compile agrees on {agreement['all_agree']}/{agreement['configs']} configurations",
                      flush=True)
        report["head_to_head"] = timed = time_picks(family, problem, inputs, picks, args.rounds)
        reference = timed["triton_autotune"]["median_ms"]
        for entry in timed.values():
            entry["speed_over_triton_autotune"] = reference / entry["median_ms"]
            if "exhaustive_optimum" in timed:
                entry["speed_over_optimum"] = timed["exhaustive_optimum"]["median_ms"] / entry["median_ms"]
    report["wall_seconds"] = time.perf_counter() - started
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=1, default=str) + "\n")
    print(json.dumps({k: {m: v[m] for m in ("median_ms", "tflops", "speed_over_triton_autotune")}
                      for k, v in report["head_to_head"].items()}, indent=1))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
