"""``kernelcast measure``: measure a family's configurations into a dataset directory, resumably."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from kernelcast.cli._errors import user_errors

console = Console(stderr=True)


def measure(
    family: str = typer.Option(..., "--family", "-f", help="Registered family name (see `kernelcast families`)."),
    shape: list[str] = typer.Option(None, "--shape", "-s", help="Problem shape, e.g. 4096x4096x4096 or "
                                    "M=4096,N=4096,K=4096; repeatable. Default: the family's first default shape."),
    dtype: list[str] = typer.Option(["float16"], "--dtype", "-d", help="Element type(s): float16, bfloat16, float32."),
    space: str = typer.Option("full", "--space", help="'full' (every configuration) or 'random:N' per variant."),
    variant: list[str] = typer.Option(None, "--variant", help="Source variant(s); default: all of the family's."),
    out: Path = typer.Option(..., "--out", "-o", help="Dataset directory (created; resumed if it exists)."),
    interpret: bool = typer.Option(False, "--interpret", help="Check correctness on the CPU under "
                                   "TRITON_INTERPRET=1 (no timings)."),
    compile_workers: int = typer.Option(None, "--compile-workers", help="Parallel compile processes."),
    seed: int = typer.Option(0, "--seed", help="Seed of random:N sampling."),
    target_rse: float = typer.Option(0.005, "--target-rse", help="Stop repeating once the relative standard "
                                     "error of the median is below this."),
    max_reps: int = typer.Option(300, "--max-reps", help="Most timed repetitions per configuration."),
    run_timeout_s: float = typer.Option(60.0, "--timeout", help="Per-configuration time limit on the GPU (s)."),
    flush_every: int = typer.Option(200, "--flush-every", help="Append to the dataset every N records."),
) -> None:
    """Measure configurations of a kernel family and append the records to a dataset directory."""
    from kernelcast.datasets.store import Store
    from kernelcast.measurement import Benchmarker, Protocol, candidates_for
    from kernelcast.measurement.families import get_family

    with user_errors():
        fam = get_family(family)
        shapes = shape or [fam.default_shapes[0]]
        problems = [fam.problem(s, d) for s in shapes for d in dtype]
        protocol = Protocol(target_rse=target_rse, max_reps=max_reps, run_timeout_s=run_timeout_s,
                            min_reps=min(10, max_reps))
        candidates = [c for p in problems for c in candidates_for(family, p, variants=variant, space=space, seed=seed)]
        store = Store(out)
        bench = Benchmarker(mode="interpret" if interpret else "gpu", protocol=protocol,
                            compile_workers=compile_workers)
        run_id = uuid.uuid4().hex[:12]
        started = time.time()
        counts: dict[str, int] = {}
        written = 0
        try:
            bench.start()
            done = store.keys()
            todo = [c for c in candidates if bench.key(c) not in done]
            console.print(f"{fam.name}: {len(candidates)} candidates on {bench.device_name}; "
                          f"{len(candidates) - len(todo)} already in {out}, {len(todo)} to measure")
            batch = []
            columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                       TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[status]}"))
            try:
                with Progress(*columns, console=console) as progress:
                    task = progress.add_task(f"measure {fam.name}", total=len(todo), status="")
                    for record in bench.measure(todo):
                        batch.append(record)
                        counts[record.status.value] = counts.get(record.status.value, 0) + 1
                        progress.update(task, advance=1, status=" ".join(f"{k}={v}" for k, v in sorted(counts.items())))
                        if len(batch) >= flush_every:
                            written += store.append(batch)
                            batch = []
            finally:
                # Whatever happens (Ctrl-C included), what was measured is kept.
                written += store.append(batch)
        finally:
            bench.close()
            if counts:
                _write_run(out, run_id, bench, started, counts, written, family, shapes, dtype, space)
    elapsed = time.time() - started
    summary = ", ".join(f"{k}: {v}" for k, v in sorted(counts.items())) or "nothing to do"
    console.print(f"wrote {written} records to {out} in {elapsed:.1f} s ({summary})")


def _write_run(out: Path, run_id: str, bench: object, started: float, counts: dict[str, int], written: int,
               family: str, shapes: list[str], dtypes: list[str], space: str) -> None:
    runs = Path(out) / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    info = {
        "run_id": run_id,
        "family": family,
        "shapes": shapes,
        "dtypes": dtypes,
        "space": space,
        "started_unix": started,
        "ended_unix": time.time(),
        "counts": counts,
        "records_written": written,
        "fingerprint_start": getattr(bench, "fingerprint", {}),
        "fingerprint_end": getattr(bench, "fingerprint_end", {}),
        "worker_restarts": getattr(bench, "restarts", 0),
    }
    (runs / f"{run_id}.json").write_text(json.dumps(info, indent=1, default=str))


def register(app: typer.Typer) -> None:
    """Add the command to ``app``."""
    app.command("measure")(measure)
