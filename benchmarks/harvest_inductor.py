"""Harvest Inductor-generated Triton kernels and measure them with kernelcast's benchmarker, on a GPU.

Two steps, one command:

1. Harvest (skipped with ``--library``): compile every (program, shape, dtype) of
   ``kernelcast.measurement.harvest.programs`` with ``torch.compile`` in parallel processes, record every
   Triton kernel Inductor launches, and write the distinct kernels (by source hash) to
   ``STORE/harvest/inductor-TIME.jsonl.gz`` -- the library ships with the dataset, so a later session can
   re-measure without re-harvesting. Tasks go round-robin (every program's first shape in every dtype, then
   the second shape, ...), so a harvest cut short by ``--harvest-minutes`` still covers every program.
2. Measure: every measurable kernel over up to ``--configs-per-kernel`` configurations (Inductor's launched
   config first, then the others Inductor considered, then valid configs sampled from the kernel's space),
   in tiers -- Inductor's config of every kernel, then up to 4 configs of every kernel, then the rest -- with
   ``Benchmarker(mode="gpu")`` into the store. Keys already in the store are skipped (resumable); records are
   flushed every ``--flush-every``; the run stops starting candidates when ``--minutes`` (counted from the
   start of the script, harvest included) is spent, and writes ``STORE/runs/inductor-TIME.json``.

Usage (GPU machine, from the repository root)::

    source benchmarks/device_env.sh
    PYTHONUNBUFFERED=1 python3 benchmarks/harvest_inductor.py --store datasets/inductor --minutes 8.5
    PYTHONUNBUFFERED=1 python3 benchmarks/harvest_inductor.py --store datasets/inductor --minutes 9 \
        --library datasets/inductor/harvest/inductor-TIME.jsonl.gz      # measure more, no harvest
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import sys
import time
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger("harvest_inductor")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", type=Path, default=Path("datasets/inductor"))
    parser.add_argument("--library", type=Path, default=None, help="measure this library; skip the harvest")
    parser.add_argument("--resume-harvest", type=Path, default=None,
                        help="harvest only the tasks this library lacks, rewrite it with the new kernels added, "
                             "then measure it")
    parser.add_argument("--minutes", type=float, default=8.5,
                        help="wall budget of the whole script (harvest included); no candidate starts after it")
    parser.add_argument("--harvest-minutes", type=float, default=4.0, help="no harvest task starts after this")
    parser.add_argument("--harvest-workers", type=int, default=None,
                        help="parallel compile processes of the harvest (default: CPU cores - 2, at most 14)")
    parser.add_argument("--task-timeout", type=float, default=240.0, help="seconds one harvest task may take")
    parser.add_argument("--programs", default="", help="comma list: harvest only these programs")
    parser.add_argument("--dtypes", default="", help="comma list: harvest only these dtypes")
    parser.add_argument("--max-shapes", type=int, default=None, help="harvest at most this many shapes a program")
    parser.add_argument("--harvest-only", action="store_true", help="stop after writing the library")
    parser.add_argument("--harvest-device", choices=("cuda", "cpu"), default="cuda",
                        help="cpu: Inductor's Triton CPU backend under TRITON_INTERPRET=1 (a smoke test)")
    parser.add_argument("--work", type=Path, default=None,
                        help="scratch folder (Inductor cache, streamed library); default /tmp/kernelcast-harvest-TIME")
    parser.add_argument("--configs-per-kernel", type=int, default=12)
    parser.add_argument("--max-kernels", type=int, default=None, help="measure at most this many kernels")
    parser.add_argument("--compile-workers", type=int, default=None)
    parser.add_argument("--flush-every", type=int, default=300)
    parser.add_argument("--chunk", type=int, default=4000, help="candidates per benchmarker call")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    start = time.monotonic()
    deadline = start + args.minutes * 60
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    summary: dict[str, Any] = {"command": " ".join(sys.argv), "started": stamp}

    library = args.library
    if library is not None and args.resume_harvest is not None:
        parser.error("give --library or --resume-harvest, not both")
    if library is None:
        library, summary["harvest"] = _harvest(args, stamp, start)
        if args.harvest_only:
            _write_summary(args.store, stamp, summary)
            return 0
    summary["library"] = str(library)
    summary["measure"] = _measure(args, library, deadline)
    _write_summary(args.store, stamp, summary)
    log.info("done in %.0f s", time.monotonic() - start)
    return 0


def _harvest(args: argparse.Namespace, stamp: str, start: float) -> tuple[Path, dict[str, Any]]:
    from kernelcast.measurement.harvest.inductor import KernelStream, harvest, harvest_header, plan_tasks
    from kernelcast.measurement.harvest.library import read_library, write_library

    tasks = plan_tasks(programs=[p for p in args.programs.split(",") if p] or None,
                       dtypes=[d for d in args.dtypes.split(",") if d] or None, max_shapes=args.max_shapes)
    known: dict[str, Any] = {}
    if args.resume_harvest is not None:
        known = read_library(args.resume_harvest)
        done = {(p.get("program"), p.get("shape"), p.get("dtype")) for k in known.values() for p in k.programs}
        tasks = [t for t in tasks if (t.program, "x".join(map(str, t.shape)), t.dtype) not in done]
        log.info("harvest: resuming %s (%d kernels); %d tasks left", args.resume_harvest, len(known), len(tasks))
    workers = args.harvest_workers or max(1, min(14, (os.cpu_count() or 4) - 2))
    work = args.work or Path(f"/tmp/kernelcast-harvest-{stamp}")
    work.mkdir(parents=True, exist_ok=True)
    programs = sorted({t.program for t in tasks})
    log.info("harvest: %d tasks (%d programs) in %d processes, budget %.1f min, Inductor cache %s", len(tasks),
             len(programs), workers, args.harvest_minutes, work)
    # Kernels are streamed next to the final library as they arrive, so a killed run keeps what it harvested.
    partial = args.store / "harvest" / f"inductor-{stamp}.partial.jsonl"
    stream = KernelStream(partial, harvest_header(args.harvest_device, programs=programs))
    try:
        result = harvest(tasks, workers=workers, device=args.harvest_device, budget_s=args.harvest_minutes * 60,
                         task_timeout_s=args.task_timeout, cache_dir=work / "inductor-cache", on_kernel=stream)
    finally:
        stream.close()
    header = harvest_header(args.harvest_device, result, programs=programs, tasks=len(tasks))
    path = args.resume_harvest or args.store / "harvest" / f"inductor-{stamp}.jsonl.gz"
    if known:
        header["resumed_from"] = str(args.resume_harvest)
    merged = dict(known)
    for kernel_id, kernel in result.kernels.items():
        merged.setdefault(kernel_id, kernel)
    n = write_library(path, header, merged.values())
    partial.unlink()
    info = result.as_dict()
    log.info("harvest: %d new distinct kernels (%d measurable, kinds %s) from %d tasks (%d failed, %d skipped) in "
             "%.0f s; %s holds %d kernels (%.1f MB)", info["kernels"], info["measurable"], info["kinds"],
             info["tasks_done"], info["tasks_failed"], info["tasks_skipped"], result.wall_s, path, n,
             path.stat().st_size / 1e6)
    for error in result.errors[:20]:
        log.warning("harvest error: %s", error[:300])
    info["library"] = str(path)
    info["library_kernels"] = n
    info["since_start_s"] = time.monotonic() - start
    return path, info


def _plan(family: Any, seed: int, per_kernel: int, max_kernels: int | None) -> tuple[list[list[Any]], dict]:
    """Candidate tiers: Inductor's config of every kernel; up to 4 configs of each; the rest."""
    from kernelcast.measurement import Candidate
    from kernelcast.measurement.space import DeviceLimits

    limits = DeviceLimits.hopper()
    tiers: list[list[Any]] = [[], [], []]
    skipped: dict[str, str] = {}
    kernels = list(family.variants)[: max_kernels or None]
    for kernel_id in kernels:
        try:
            problem = family.problem_for(kernel_id)
            chosen = family.considered_configs(kernel_id)[:per_kernel]
            info = family.info(kernel_id)
            kernel_seed = seed ^ zlib.crc32(kernel_id.encode())
            # A sample of the space is enough to find the few valid configs wanted; enumerate only if it is not.
            for pool in (info.space.sample(8 * per_kernel, seed=kernel_seed), list(info.space)):
                valid = [c for c in pool if c not in chosen and info.reason(c) is None]
                if len(chosen) + len(valid) >= per_kernel or len(pool) >= len(info.space):
                    break
            random.Random(kernel_seed).shuffle(valid)
            chosen = (chosen + valid)[:per_kernel]
            # What the benchmarker will check, checked here: a kernel it would reject is skipped, not fatal.
            for config in chosen:
                family.check_variant(kernel_id)
                family.space(kernel_id).validate(config)
                family.check_config(kernel_id, config, problem, limits)
        except Exception as exc:  # noqa: BLE001 - one bad kernel must not stop the run
            skipped[kernel_id] = f"{type(exc).__name__}: {exc}"[:300]
            log.warning("skipping kernel %s: %s", kernel_id, skipped[kernel_id])
            continue
        for i, config in enumerate(chosen):
            tiers[0 if i == 0 else 1 if i < 4 else 2].append(Candidate("inductor", kernel_id, config, problem))
    return tiers, skipped


def _measure(args: argparse.Namespace, library: Path, deadline: float) -> dict[str, Any]:
    from kernelcast.datasets.store import Store
    from kernelcast.measurement import Benchmarker
    from kernelcast.measurement.families import get_family, register_family
    from kernelcast.measurement.families.inductor import InductorFamily, use_library

    use_library(library)  # before the Benchmarker starts: its workers inherit the environment
    register_family(InductorFamily)
    family = get_family("inductor")
    tiers, skipped = _plan(family, args.seed, args.configs_per_kernel, args.max_kernels)
    log.info("measure: %d kernels, tiers of %s candidates, %d kernels skipped", len(family.variants),
             [len(t) for t in tiers], len(skipped))
    store = Store(args.store)
    counts: dict[str, int] = {}
    measured = 0
    t0 = time.monotonic()
    with Benchmarker(mode="gpu", compile_workers=args.compile_workers, origin="kernelcast.harvest_inductor") as bench:
        done = store.keys()
        todo = [c for tier in tiers for c in tier if bench.key(c) not in done]
        log.info("measure: %d candidates to measure (%d already in %s), %.1f min left", len(todo),
                 sum(len(t) for t in tiers) - len(todo), args.store, (deadline - time.monotonic()) / 60)
        batch: list[Any] = []
        last_log = time.monotonic()
        # Chunks: should the benchmarker raise on some candidate, the chunk's records are kept and the run goes on.
        for first in range(0, len(todo), args.chunk):
            if time.monotonic() > deadline:
                break
            chunk = todo[first:first + args.chunk]
            try:
                for record in bench.measure(_until(chunk, deadline)):
                    batch.append(record)
                    measured += 1
                    counts[record.status.value] = counts.get(record.status.value, 0) + 1
                    if len(batch) >= args.flush_every:
                        _append(store, batch)
                        batch = []
                    if time.monotonic() - last_log > 30:
                        last_log = time.monotonic()
                        elapsed = last_log - t0
                        log.info("measure: %d/%d in %.0f s (%.0f/min) %s", measured, len(todo), elapsed,
                                 measured / max(elapsed, 1e-9) * 60, json.dumps(counts))
            except Exception:  # noqa: BLE001 - keep what was measured and go on with the next chunk
                log.exception("measure: a chunk of %d candidates failed; going on", len(chunk))
                counts["chunk_failures"] = counts.get("chunk_failures", 0) + 1
            finally:
                _append(store, batch)
                batch = []
        restarts = bench.restarts
    fingerprint, fingerprint_end = bench.fingerprint, bench.fingerprint_end  # the end one is read by close()
    elapsed = time.monotonic() - t0
    log.info("measure: %d records in %.0f s (%.0f/min) %s; %d left for a later run; worker restarts %d",
             measured, elapsed, measured / max(elapsed, 1e-9) * 60, json.dumps(counts), len(todo) - measured,
             restarts)
    return {"kernels": len(family.variants), "candidates": sum(len(t) for t in tiers), "todo": len(todo),
            "measured": measured, "left": len(todo) - measured, "counts": counts, "seconds": elapsed,
            "worker_restarts": restarts, "skipped_kernels": skipped, "fingerprint_start": fingerprint,
            "fingerprint_end": fingerprint_end}


def _append(store: Any, records: list[Any]) -> None:
    """Append records; a record whose JSON fields hold NaN or inf is stored with those values as strings."""
    if not records:
        return
    try:
        store.append(records)
        return
    except ValueError as exc:
        log.warning("append failed (%s); storing the records one by one, non-finite numbers as strings", exc)
    for record in records:
        try:
            store.append([_finite(record)])
        except Exception:  # noqa: BLE001 - never lose the rest of the batch for one record
            log.exception("could not store a record of %s %s", record.variant, dict(record.config))


def _finite(record: Any) -> Any:
    """``record`` with every non-finite float in its protocol and fingerprint replaced by its ``repr``."""
    import dataclasses
    import math

    def clean(value: Any) -> Any:
        if isinstance(value, float) and not math.isfinite(value):
            return repr(value)
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [clean(v) for v in value]
        return value

    return dataclasses.replace(record, protocol=clean(dict(record.protocol)),
                               fingerprint=clean(dict(record.fingerprint)))


def _until(items: Iterable[Any], deadline: float) -> Iterator[Any]:
    """Yield items until the deadline passes (the benchmarker finishes what it already started)."""
    for item in items:
        if time.monotonic() > deadline:
            return
        yield item


def _write_summary(store: Path, stamp: str, summary: dict[str, Any]) -> None:
    runs = store / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    path = runs / f"inductor-{stamp}.json"
    path.write_text(json.dumps(summary, indent=1, default=str))
    log.info("summary -> %s", path)


if __name__ == "__main__":
    sys.exit(main())
