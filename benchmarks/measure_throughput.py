"""Throughput, noise and fidelity of kernelcast's benchmarker on a real GPU; writes one JSON result.

Measures, on one problem (default: matmul 4096x4096x4096 fp16, every configuration of the ``blocked``
variant, with a cold Triton cache so compilation is really paid):

* configurations per minute end to end (compile in parallel on CPU cores, check and time on the GPU);
* the median coefficient of variation of the repeated timings;
* agreement of kernelcast's medians with ``triton.testing.do_bench`` (median mode) on a sample of the
  same kernels, timed in this process right after the run;
* a fault run: kernels that store out of bounds, never terminate, need too much shared memory, compute the
  wrong thing, raise or abort must each become a failure record while the run completes.

Usage (GPU machine)::

    python benchmarks/measure_throughput.py --json benchmarks/results/measure_throughput_h100.json \
        --store /tmp/throughput_store
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path, required=True, help="where to write the result JSON")
    parser.add_argument("--store", type=Path, required=True, help="dataset directory for the measured records")
    parser.add_argument("--family", default="matmul")
    parser.add_argument("--variant", default="blocked")
    parser.add_argument("--shape", default="4096x4096x4096")
    parser.add_argument("--dtype", default="float16")
    parser.add_argument("--space", default="full", help="full or random:N")
    parser.add_argument("--compile-workers", type=int, default=None)
    parser.add_argument("--dobench-sample", type=int, default=40, help="kernels compared with do_bench")
    parser.add_argument("--skip-faults", action="store_true")
    args = parser.parse_args()

    # A cold, private Triton cache: compilation is part of what is measured.
    os.environ["TRITON_CACHE_DIR"] = tempfile.mkdtemp(prefix="kc-triton-cache-")

    import numpy as np
    import torch
    import triton
    from triton.testing import do_bench

    from kernelcast.datasets.store import Store
    from kernelcast.measurement import Benchmarker, Candidate, Protocol, Status, candidates_for, time_kernel
    from kernelcast.measurement.families import get_family, register_family
    from kernelcast.measurement.families.faulty import FaultyFamily

    family = get_family(args.family)
    problem = family.problem(args.shape, args.dtype)
    candidates = candidates_for(args.family, problem, variants=[args.variant], space=args.space)
    protocol = Protocol()
    store = Store(args.store)
    result: dict = {"benchmark": "measure_throughput", "family": args.family, "variant": args.variant,
                    "problem": problem.as_dict(), "dtype": problem.dtype, "space": args.space,
                    "protocol": protocol.as_dict(), "command": " ".join(sys.argv)}

    # -- 1. throughput ------------------------------------------------------------------------------
    records = []
    with Benchmarker(mode="gpu", protocol=protocol, compile_workers=args.compile_workers) as bench:
        t0 = time.perf_counter()
        for record in bench.measure(candidates):
            records.append(record)
        wall_s = time.perf_counter() - t0
        result["compile_workers"] = len(bench._compile_workers)
        result["worker_startup_s"] = bench.startup_s
        result["worker_restarts"] = bench.restarts
        result["gpu_busy_s"] = bench.gpu_seconds
    result["fingerprint_start"] = bench.fingerprint
    result["fingerprint_end"] = bench.fingerprint_end
    store.append(records)
    counts: dict[str, int] = {}
    for r in records:
        counts[r.status.value] = counts.get(r.status.value, 0) + 1
    ok = [r for r in records if r.status is Status.OK]
    attempted = [r for r in records if r.status is not Status.INVALID_CONFIG]
    result["throughput"] = {
        "candidates": len(records),
        "status_counts": counts,
        "wall_s": wall_s,
        "configs_per_minute": len(records) / wall_s * 60,
        "attempted_configs_per_minute": len(attempted) / wall_s * 60,
        "timed_configs_per_minute": len(ok) / wall_s * 60,
        "note": "configs_per_minute counts every configuration of the space, invalid ones (rejected before "
                "compilation) included; attempted excludes those; timed counts ok records only.",
        "median_compile_time_ms": statistics.median([r.compile_time_ms for r in attempted if r.compile_time_ms])
        if attempted else None,
    }

    # -- 2. noise -----------------------------------------------------------------------------------
    cvs = np.array([r.stats.cv for r in ok])
    reps = np.array([r.stats.n_samples for r in ok])
    result["noise"] = {
        "median_cv": float(np.median(cvs)) if cvs.size else None,
        "p90_cv": float(np.percentile(cvs, 90)) if cvs.size else None,
        "fraction_cv_le_1pct": float(np.mean(cvs <= 0.01)) if cvs.size else None,
        "median_rse_of_median": float(np.median([r.stats.rse_median for r in ok])) if ok else None,
        "median_repetitions": float(np.median(reps)) if reps.size else None,
    }

    # -- 3. agreement with do_bench -----------------------------------------------------------------
    ok_sorted = sorted(ok, key=lambda r: r.time_ms)
    picks = [ok_sorted[int(i)] for i in np.linspace(0, len(ok_sorted) - 1, min(args.dobench_sample, len(ok_sorted)))]
    rows = []
    for r in picks:
        inputs = family.make_inputs(problem, device="cuda", seed=1234)
        out = family.new_output(problem, inputs)

        def fn(r=r, inputs=inputs, out=out) -> None:
            family.launch(r.variant, r.config, problem, inputs, out)

        reference_ms = float(do_bench(fn, warmup=25, rep=100, return_mode="median"))
        ours_now_ms = float(np.median(time_kernel(fn, protocol)))
        rows.append({"config": dict(r.config), "record_median_ms": r.time_ms, "kernelcast_now_median_ms": ours_now_ms,
                     "do_bench_median_ms": reference_ms})
    rel_record = [abs(x["record_median_ms"] / x["do_bench_median_ms"] - 1) for x in rows]
    rel_now = [abs(x["kernelcast_now_median_ms"] / x["do_bench_median_ms"] - 1) for x in rows]
    result["do_bench_agreement"] = {
        "kernels": len(rows),
        "median_abs_rel_diff_record": float(np.median(rel_record)) if rows else None,
        "max_abs_rel_diff_record": float(np.max(rel_record)) if rows else None,
        "fraction_within_3pct_record": float(np.mean(np.array(rel_record) <= 0.03)) if rows else None,
        "median_abs_rel_diff_same_time": float(np.median(rel_now)) if rows else None,
        "max_abs_rel_diff_same_time": float(np.max(rel_now)) if rows else None,
        "fraction_within_3pct_same_time": float(np.mean(np.array(rel_now) <= 0.03)) if rows else None,
        "rows": rows,
        "note": "record = median measured in the worker during the run; same_time = kernelcast's time_kernel "
                "re-run in this process next to do_bench (both flush L2, both report the median).",
    }

    # -- 4. faults ----------------------------------------------------------------------------------
    if not args.skip_faults:
        register_family(FaultyFamily)
        faulty = FaultyFamily()
        fproblem = faulty.problem("1048576", "float32")
        order = ["ok", "oob_store", "ok", "infinite_loop", "huge_shared", "wrong", "raise", "abort", "ok"]
        fcands = [Candidate("faulty", v, {"BLOCK": 128 if i % 2 else 256, "num_warps": 4}, fproblem)
                  for i, v in enumerate(order)]
        frecords = []
        t0 = time.perf_counter()
        with Benchmarker(mode="gpu", protocol=Protocol(run_timeout_s=20, compile_timeout_s=120),
                         compile_workers=2) as bench:
            for r in bench.measure(fcands):
                frecords.append(r)
            restarts = bench.restarts
        store.append(frecords)
        by_variant: dict[str, list[str]] = {}
        for r in frecords:
            by_variant.setdefault(r.variant, []).append(r.status.value)
        result["fault_run"] = {
            "candidates": len(fcands),
            "records": len(frecords),
            "completed": len(frecords) == len(fcands),
            "wall_s": time.perf_counter() - t0,
            "worker_restarts": restarts,
            "statuses_by_variant": by_variant,
            "errors": {r.variant: (r.error or "")[:300] for r in frecords if r.error},
        }

    result["versions"] = {"torch": torch.__version__, "triton": triton.__version__, "cuda": torch.version.cuda,
                          "python": sys.version.split()[0]}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1, default=str))
    t = result["throughput"]
    print(f"device: {result['fingerprint_start'].get('name')}")
    print(f"candidates {t['candidates']} in {t['wall_s']:.1f} s: {t['configs_per_minute']:.0f}/min "
          f"(attempted {t['attempted_configs_per_minute']:.0f}/min, timed {t['timed_configs_per_minute']:.0f}/min) "
          f"statuses {t['status_counts']}")
    print(f"noise: {result['noise']}")
    agreement = {k: v for k, v in result["do_bench_agreement"].items() if k != "rows"}
    print(f"do_bench: {agreement}")
    if "fault_run" in result:
        print(f"faults: {result['fault_run']['statuses_by_variant']} completed={result['fault_run']['completed']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
