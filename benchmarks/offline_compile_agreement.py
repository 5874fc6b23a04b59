"""Does compiling on the CPU give the compiler metadata the GPU recorded? And how long does it take?

Samples measured ``ok`` records of ``datasets/kernelcast`` (up to ``--per-kernel`` per family, variant and dtype,
seeded), compiles each on this machine for the records' compute capability with
:class:`kernelcast.measurement.offline.OfflineCompiler` (no GPU), and compares ``n_regs``, ``n_spills``,
``shared_bytes``, ``num_warps`` and ``num_stages`` with what the GPU worker stored. Writes the agreement per
column and per family, every disagreement, the compile seconds per candidate (median, p90, max; from an empty
Triton cache) and the versions.

Run from the repository root (minutes on 2 cores):
``.venv/bin/python benchmarks/offline_compile_agreement.py --per-kernel 12 --n-jobs 2``; writes
``benchmarks/results/offline_compile_agreement.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parents[1]


def sample(frame: pl.DataFrame, per_kernel: int, seed: int) -> pl.DataFrame:
    """Up to ``per_kernel`` ok records with metadata per (family, variant, dtype), with distinct configs."""
    ok = frame.filter((pl.col("status") == "ok") & pl.col("n_regs").is_not_null())
    ok = ok.with_columns(pl.int_range(pl.len()).shuffle(seed=seed).over("family", "variant", "dtype").alias("_r"))
    return ok.filter(pl.col("_r") < per_kernel).drop("_r").sort("family", "variant", "dtype")


def main() -> int:
    import triton

    from kernelcast.datasets.store import Store
    from kernelcast.measurement.offline import OfflineCompiler
    from kernelcast.measurement.records import COMPILED_COLUMNS as COLUMNS

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT / "datasets" / "kernelcast")
    parser.add_argument("--per-kernel", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-jobs", type=int, default=2)
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "offline_compile_agreement.json")
    args = parser.parse_args()

    frame = Store(args.data).read()
    picked = sample(frame, args.per_kernel, args.seed)
    fingerprints = {json.loads(f).get("compute_capability"): json.loads(f).get("triton")
                    for f in picked["fingerprint_json"].unique().to_list()}
    if len(fingerprints) != 1:
        raise SystemExit(f"the sample spans several compute capabilities: {fingerprints}")
    (capability, recorded_triton), = fingerprints.items()
    with tempfile.TemporaryDirectory(prefix="kernelcast-triton-cache-") as cache:
        os.environ["TRITON_CACHE_DIR"] = cache  # timed from a cold cache; the spawned workers inherit it
        t0 = time.perf_counter()
        with OfflineCompiler(capability, n_jobs=args.n_jobs) as compiler:
            results = list(compiler.compile(picked.to_dicts()))
        wall = time.perf_counter() - t0

    rows, mismatches, errors = [], [], []
    for record, result in zip(picked.to_dicts(), results, strict=True):
        if result["error"]:
            errors.append({"family": record["family"], "variant": record["variant"], "dtype": record["dtype"],
                           "config_json": record["config_json"], "problem_json": record["problem_json"],
                           "error": result["error"][:500]})
            continue
        same = {c: result["metadata"][c] == record[c] for c in COLUMNS}
        rows.append({"family": record["family"], "variant": record["variant"], **same})
        if not all(same.values()):
            mismatches.append({k: record[k] for k in ("family", "variant", "dtype", "config_json", "problem_json")}
                              | {"recorded": {c: record[c] for c in COLUMNS}, "offline": result["metadata"]})
    agree = pl.DataFrame(rows)
    seconds = np.array([r["compile_s"] for r in results])
    by_family = agree.group_by("family").agg(pl.len().alias("n"), *(pl.col(c).mean() for c in COLUMNS)).sort("family")
    out = {
        "what": "compiler metadata from compiling on the CPU (no GPU) against what the GPU worker recorded",
        "data": str(args.data.relative_to(ROOT)) if args.data.is_relative_to(ROOT) else str(args.data),
        "capability": capability,
        "n_sampled": picked.height,
        "n_compiled": agree.height,
        "n_compile_errors": len(errors),
        "agreement": {c: float(agree[c].mean()) for c in COLUMNS},
        "all_columns_agree": float(agree.select(pl.all_horizontal(*COLUMNS)).to_series().mean()),
        "by_family": by_family.to_dicts(),
        "compile_seconds": {"median": float(np.median(seconds)), "p90": float(np.quantile(seconds, 0.9)),
                            "max": float(seconds.max()), "total": float(seconds.sum()), "wall": wall,
                            "n_jobs": args.n_jobs},
        "mismatches": mismatches,
        "errors": errors,
        "versions": {"triton_here": triton.__version__, "triton_recorded": recorded_triton,
                     "python": platform.python_version(), "cpu_count": os.cpu_count(), "machine": platform.node()},
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([".venv/bin/python", "benchmarks/offline_compile_agreement.py", *sys.argv[1:]]),
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps({k: out[k] for k in ("n_sampled", "n_compiled", "n_compile_errors", "agreement",
                                          "all_columns_agree", "compile_seconds")}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
