"""Collect kernelcast's measured dataset on a GPU, resumably, within a time budget.

The plan is a list of (family, shape, dtype, space) steps in priority order: first the complete spaces
(every variant, every configuration) of three shapes per family in fp16, then bf16 and fp32 and more
shapes sampled. Each call measures what the store does not hold yet and stops cleanly at ``--minutes``,
so several device sessions add up to the whole plan. One Benchmarker (one set of workers) serves every step.

Usage (GPU machine, from the repository root)::

    python benchmarks/collect_dataset.py --store datasets/kernelcast --minutes 8 [--plan-only]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

SAMPLED_SHAPES: dict[str, tuple[str, ...]] = {
    "softmax": ("2048x2048", "512x8192", "8192x512", "3000x777", "16384x256", "1024x16384"),
    "layernorm": ("2048x1024", "8192x2048", "4096x5120", "333x4000", "16384x1536", "512x16384"),
    "rmsnorm": ("2048x2048", "8192x4096", "4096x8192", "777x3333", "16384x2560", "1024x14336"),
    "bias_gelu": ("2048x2048", "8192x4096", "1024x28672", "555x6789", "16384x1024", "4096x11008"),
    "rowsum": ("2048x2048", "8192x4096", "512x65536", "999x9999", "131072x32", "16384x512"),
    "transpose": ("2048x2048", "4096x1024", "1024x4096", "555x6789", "16384x256", "256x16384"),
    "attention": ("2x16x512x128", "1x8x2048x256", "8x8x256x64", "1x16x3000x64", "4x4x4096x32"),
    "matmul": ("2048x2048x2048", "256x4096x4096", "4096x256x4096", "1536x1536x6144", "3000x1000x500",
               "64x8192x8192", "777x999x1111"),
}
"""More shapes per family, fp16, sampled in session 2 (40 configurations per variant) and, for the
memory-bound families, made denser in session 5 (150)."""

# (family, shape, dtype, space[, problem options]). "full" = every configuration of every variant;
# "random:N" = N per variant.
PLAN: list[tuple] = [
    # Complete spaces, fp16, three shapes per family (cheap shapes first, so every family gets data early).
    ("softmax", "4096x4096", "float16", "full"),
    ("layernorm", "4096x4096", "float16", "full"),
    ("rmsnorm", "4096x4096", "float16", "full"),
    ("bias_gelu", "4096x4096", "float16", "full"),
    ("rowsum", "4096x4096", "float16", "full"),
    ("transpose", "4096x4096", "float16", "full"),
    ("attention", "4x16x1024x64", "float16", "full"),
    ("matmul", "1024x1024x1024", "float16", "full"),
    ("softmax", "1000x3000", "float16", "full"),
    ("layernorm", "1000x3000", "float16", "full"),
    ("rmsnorm", "1000x3000", "float16", "full"),
    ("bias_gelu", "1000x3000", "float16", "full"),
    ("rowsum", "1000x3000", "float16", "full"),
    ("transpose", "1000x3000", "float16", "full"),
    ("attention", "2x8x1000x64", "float16", "full"),
    ("matmul", "127x255x1023", "float16", "full"),
    ("softmax", "127x4097", "float16", "full"),
    ("layernorm", "127x4097", "float16", "full"),
    ("rmsnorm", "127x4097", "float16", "full"),
    ("bias_gelu", "127x4097", "float16", "full"),
    ("rowsum", "127x4097", "float16", "full"),
    ("transpose", "127x4097", "float16", "full"),
    ("attention", "16x16x128x32", "float16", "full"),
    ("matmul", "4096x4096x4096", "float16", "full"),
    # bf16 and more shapes, sampled.
    *[(f, s, "bfloat16", "random:120") for f, s in [
        ("softmax", "32768x1024"), ("softmax", "8192x50257"), ("layernorm", "16384x768"), ("layernorm", "8192x8192"),
        ("rmsnorm", "16384x5120"), ("rmsnorm", "32768x1024"), ("bias_gelu", "8192x16384"), ("bias_gelu", "32768x3072"),
        ("rowsum", "32768x1024"), ("rowsum", "65536x64"), ("transpose", "8192x8192"), ("transpose", "8192x1024"),
        ("attention", "1x32x4096x128"), ("attention", "8x12x512x64"), ("matmul", "8192x8192x1024"),
        ("matmul", "4000x3000x2000"), ("matmul", "512x12288x4096"),
    ]],
    # More shapes per family, fp16, sampled: what a surrogate needs to generalise to shapes it has not seen.
    *[(f, s, "float16", "random:40") for f, shapes in SAMPLED_SHAPES.items() for s in shapes],
    # Causal attention, fp16: complete for one shape, sampled for others (D = 64, 128, 256).
    ("attention", "4x16x1024x64", "float16", "full", {"causal": True}),
    *[("attention", s, "float16", "random:40", {"causal": True}) for s in
      ("1x32x2048x128", "2x8x1000x64", "1x8x2048x256", "8x12x512x64")],
    # Complete spaces in bf16 for the same three shapes (memory-bound families first: they measure fastest).
    *[(f, s, "bfloat16", "full") for s3 in [("4096x4096", "1000x3000", "127x4097")] for s in s3
      for f in ("softmax", "layernorm", "rmsnorm", "bias_gelu", "rowsum", "transpose")],
    *[("attention", s, "bfloat16", "full") for s in ("4x16x1024x64", "2x8x1000x64", "16x16x128x32")],
    *[("matmul", s, "bfloat16", "full") for s in ("1024x1024x1024", "127x255x1023", "4096x4096x4096")],
    *[(f, s, "float32", "random:80") for f, s in [
        ("softmax", "4096x4096"), ("layernorm", "4096x4096"), ("rmsnorm", "4096x4096"), ("rowsum", "4096x4096"),
        ("transpose", "4096x4096"), ("matmul", "1024x1024x1024"),
    ]],
    # Session 4: matmul and attention are where held-out shapes ranked worst (only three dense matmul shapes),
    # so more shapes, 300 configurations per variant (matmul) and 200 (attention), fp16: small, skinny, small-K,
    # large-K and unaligned shapes first, then the sparse shapes above made denser.
    *[(f, s, "float16", space) for f, s, space in [
        ("matmul", "100x300x700", "random:300"), ("attention", "2x16x777x64", "random:200"),
        ("matmul", "2048x8192x512", "random:300"), ("matmul", "333x555x2047", "random:300"),
        ("attention", "1x32x1024x128", "random:200"), ("matmul", "16x4096x4096", "random:300"),
        ("matmul", "2800x3100x64", "random:300"), ("attention", "8x16x333x64", "random:200"),
        ("matmul", "4096x1024x16384", "random:300"), ("matmul", "1000x1000x1000", "random:300"),
        ("attention", "16x8x256x32", "random:200"), ("matmul", "1536x768x3072", "random:300"),
        ("matmul", "200x12000x800", "random:300"), ("attention", "2x32x1500x128", "random:200"),
        ("matmul", "513x1025x2047", "random:300"), ("matmul", "6144x2048x1024", "random:300"),
        ("matmul", "64x64x8192", "random:300"), ("matmul", "768x3072x768", "random:300"),
        ("matmul", "2500x2500x2500", "random:300"), ("matmul", "8192x8192x8192", "random:300"),
        *[("matmul", s, "random:300") for s in ("777x999x1111", "2048x2048x2048", "256x4096x4096",
                                                "4096x256x4096", "1536x1536x6144", "3000x1000x500",
                                                "64x8192x8192")],
    ]],
    *[("attention", s, "float16", "random:200", {"causal": True}) for s in ("4x8x2048x64", "1x16x4096x128")],
    # Session 5: the memory-bound families ranked worst on held-out shapes after matmul (bias_gelu, rowsum,
    # transpose), with 6 sampled shapes each at 40 configurations per variant. New shapes at 150 per variant
    # first (aligned, unaligned, skinny and wide), then the 40-sampled shapes made denser.
    *[(f, s, "float16", "random:150") for f, shapes in [
        ("bias_gelu", ("3000x3000", "8192x2000", "700x9000", "65536x256", "12345x1234", "2048x14336")),
        ("rowsum", ("3000x3000", "8192x1000", "300x30000", "65536x200", "1234x5678", "32768x96")),
        ("transpose", ("3000x3000", "8192x2000", "700x9000", "4096x300", "1234x5678", "512x12288")),
        ("softmax", ("4096x1000", "2500x2500", "100x30000", "65536x128", "6000x1500", "20000x640")),
        ("layernorm", ("4096x3000", "1500x1500", "250x20000", "32768x512", "6000x1024", "777x7777")),
        ("rmsnorm", ("2048x5000", "3000x3000", "300x12288", "65536x256", "5000x1280", "999x8192")),
    ] for s in shapes],
    *[(f, s, "float16", "random:150") for f in ("bias_gelu", "rowsum", "transpose", "softmax", "layernorm", "rmsnorm")
      for s in SAMPLED_SHAPES[f]],
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", type=Path, required=True)
    parser.add_argument("--minutes", type=float, default=8.0, help="stop starting new work after this long")
    parser.add_argument("--compile-workers", type=int, default=None)
    parser.add_argument("--flush-every", type=int, default=500)
    parser.add_argument("--plan-only", action="store_true",
                        help="print what is left to do and exit (no GPU needed: keys are those of --device)")
    parser.add_argument("--device", default=None,
                        help="with --plan-only: the device whose records count as done (default: the store's "
                             "only device)")
    parser.add_argument("--families", default="", help="comma list: restrict the plan to these families")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    log = logging.getLogger("collect")

    from kernelcast.datasets.store import Store
    from kernelcast.measurement import Benchmarker

    store = Store(args.store)
    contexts = _ContextWatch()
    wanted = {f for f in args.families.split(",") if f}
    plan = [step for step in PLAN if not wanted or step[0] in wanted]
    if args.plan_only:
        return _print_plan(store, plan, args.device, log)
    deadline = time.monotonic() + args.minutes * 60
    totals: dict[str, int] = {}
    with Benchmarker(mode="gpu") as bench:
        done = store.keys()
        for (family, shape, dtype, space, *_), candidates in _step_candidates(plan):
            todo = [c for c in candidates if bench.key(c) not in done]
            log.info("%s %s %s %s: %d candidates, %d to measure", family, shape, dtype, space, len(candidates), len(todo))
            if not todo:
                continue
            if time.monotonic() > deadline:
                log.info("time budget spent; stopping before %s %s %s", family, shape, dtype)
                break
            batch = []
            t0 = time.perf_counter()
            counts: dict[str, int] = {}
            stopped = False
            try:
                for record in bench.measure(_until(todo, deadline)):
                    batch.append(record)
                    counts[record.status.value] = counts.get(record.status.value, 0) + 1
                    if len(batch) >= args.flush_every:
                        store.append(batch)
                        batch = []
            finally:
                store.append(batch)
            n = sum(counts.values())
            stopped = n < len(todo)
            for k, v in counts.items():
                totals[k] = totals.get(k, 0) + v
            log.info("  measured %d in %.1f s (%.0f/min) %s%s", n, time.perf_counter() - t0,
                     n / max(time.perf_counter() - t0, 1e-9) * 60, json.dumps(counts),
                     " [stopped at the time budget]" if stopped else "")
            if stopped:
                break
        restarts = bench.restarts
    contexts.stop()
    log.info("processes holding a context on GPU 0 during the run: at most %s", contexts.max_seen)
    # The run's device fingerprint at start and end (temperature, power, clocks), beside the records.
    runs = args.store / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    (runs / f"collect-{stamp}.json").write_text(json.dumps(
        {"command": " ".join(sys.argv), "totals": totals, "worker_restarts": restarts,
         "gpu_processes_max": contexts.max_seen,
         "fingerprint_start": bench.fingerprint, "fingerprint_end": bench.fingerprint_end}, indent=1, default=str))
    log.info("totals %s, worker restarts %d", json.dumps(totals), restarts)
    return 0


def _step_candidates(plan: list[tuple]) -> Iterator[tuple[tuple, list]]:
    """Each plan step with its candidates (seeded, so every call draws the same sample)."""
    from kernelcast.measurement import candidates_for
    from kernelcast.measurement.families import get_family

    for step in plan:
        family, shape, dtype, space, *more = step
        problem = get_family(family).problem(shape, dtype, **(more[0] if more else {}))
        yield step, candidates_for(family, problem, space=space, seed=0)


def _print_plan(store: Any, plan: list[tuple], device: str | None, log: logging.Logger) -> int:
    """Log, per plan step, how many candidates the store lacks on ``device``; no GPU is started."""
    from kernelcast.measurement.families import get_family
    from kernelcast.measurement.records import record_key

    done = store.keys()
    if device is None:
        devices = sorted({key[-1] for key in done})
        if len(devices) != 1:
            log.error("--plan-only needs --device NAME: the store holds records of %s.", devices or "no device")
            return 2
        device = devices[0]
    hashes: dict[tuple[str, str], str] = {}
    left = 0
    for (family, shape, dtype, space, *_), candidates in _step_candidates(plan):
        todo = 0
        for c in candidates:
            source_hash = hashes.setdefault((c.family, c.variant), get_family(c.family).source_hash(c.variant))
            todo += record_key(source_hash, c.config, c.problem.as_dict(), c.problem.dtype, device) not in done
        left += todo
        log.info("%s %s %s %s: %d candidates, %d to measure", family, shape, dtype, space, len(candidates), todo)
    log.info("%d candidates left to measure on %s", left, device)
    return 0


class _ContextWatch:
    """Poll NVML for the number of processes holding a CUDA context on GPU 0 (only the timing worker should)."""

    def __init__(self, every_s: float = 0.5) -> None:
        import threading

        self.max_seen: int | None = None
        self._stop = threading.Event()
        try:
            import pynvml

            pynvml.nvmlInit()
            self._handle = pynvml.nvmlDeviceGetHandleByIndex(0)
            self._nvml = pynvml
        except Exception:  # noqa: BLE001 - a diagnostic only
            return
        self._thread = threading.Thread(target=self._poll, args=(every_s,), daemon=True)
        self._thread.start()

    def _poll(self, every_s: float) -> None:
        while not self._stop.wait(every_s):
            try:
                n = len(self._nvml.nvmlDeviceGetComputeRunningProcesses(self._handle))
            except Exception:  # noqa: BLE001
                return
            self.max_seen = n if self.max_seen is None else max(self.max_seen, n)

    def stop(self) -> None:
        self._stop.set()


def _until(items: list, deadline: float):  # noqa: ANN202 - a small generator
    """Yield items until the deadline passes (the benchmarker finishes what it already started)."""
    for item in items:
        if time.monotonic() > deadline:
            return
        yield item


if __name__ == "__main__":
    sys.exit(main())
