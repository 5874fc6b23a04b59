"""The live GPU oracle: measures kernelcast's own families with the :class:`~kernelcast.measurement.Benchmarker`.

Tasks are the chosen families' variants on the chosen shapes and dtypes, on the benchmarker's device. The
space of a task is the variant's :class:`~kernelcast.measurement.space.ConfigSpace`;
:meth:`GpuOracle.check` is the family's ``check_config`` against the device's limits (free, no GPU).

GPU seconds charged per record: its compile time plus the benchmarker's GPU-worker seconds accrued while it
was measured (warm-up, correctness check and timed repetitions). The benchmarker measures in parallel and
reports totals, so the per-record split is the increase of ``Benchmarker.gpu_seconds`` between two yielded
records; the sum over a batch is exact. A record from an earlier process is charged its compile time plus
the sum of its timed repetitions (a lower bound).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import polars as pl

from kernelcast.exceptions import InvalidParameterError
from kernelcast.measurement.records import Record, Scalar, canonical_json, record_key
from kernelcast.measurement.space import ConfigSpace, Problem
from kernelcast.search.oracles._base import Config, Oracle, Task
from kernelcast.surrogate._base import CANDIDATE_COLUMNS


class GpuOracle(Oracle):
    """Measure kernelcast families on the local GPU. Use as a context manager (it owns a Benchmarker).

    Parameters
    ----------
    families : sequence of str
        Registered family names; default ``("matmul",)``.
    shapes : sequence of str, optional
        Problem shapes (positional or named); default: each family's first default shape.
    dtypes : sequence of str
        Element types.
    variants : sequence of str, optional
        Source variants; default: every variant of each family.
    benchmarker : Benchmarker, optional
        A configured benchmarker; default ``Benchmarker(mode="gpu")``.
    store : Store or path-like, optional
        A record store (:class:`~kernelcast.datasets.Store`) that keeps every record this oracle measures,
        failures included: each batch is appended as soon as it is measured, so nothing measured is lost
        when a search stops early.
    compile_jobs : int
        CPU processes that compile candidates for :meth:`compiled_metadata`.
    """

    name = "gpu"

    def __init__(
        self,
        families: Sequence[str] = ("matmul",),
        *,
        shapes: Sequence[str] | None = None,
        dtypes: Sequence[str] = ("float16",),
        variants: Sequence[str] | None = None,
        benchmarker: Any = None,
        store: Any = None,
        compile_jobs: int = 4,
    ) -> None:
        super().__init__()
        from kernelcast.datasets import Store
        from kernelcast.measurement import Benchmarker

        self.store = store if store is None or isinstance(store, Store) else Store(store)

        self._bench = benchmarker if benchmarker is not None else Benchmarker(mode="gpu", origin="kernelcast.search")
        self._families = tuple(families)
        self._shapes = tuple(shapes) if shapes else None
        self._dtypes = tuple(dtypes)
        self._variants = tuple(variants) if variants else None
        self._problems: dict[Task, Problem] = {}
        self._charged: dict[tuple[str, ...], float] = {}
        self._compiler: Any = None
        self.compile_jobs = compile_jobs
        self.offline_compile_seconds = 0.0
        """CPU seconds spent compiling candidates for :meth:`compiled_metadata` (not charged to the budget)."""

    def describe(self) -> str:
        """``gpu (<device>)``."""
        return f"gpu ({self._bench.device_name})"

    def close(self) -> None:
        """Stop the benchmarker's workers (and the offline compiler's)."""
        self._bench.close()
        if self._compiler is not None:
            self._compiler.close()
            self._compiler = None

    # -- tasks ------------------------------------------------------------------------------------------
    def tasks(self) -> list[Task]:
        """Each family variant x shape x dtype, on the benchmarker's device."""
        from kernelcast.measurement.families import get_family

        device = self._bench.device_name
        out = []
        for name in self._families:
            family = get_family(name)
            for shape in self._shapes or family.default_shapes[:1]:
                for dtype in self._dtypes:
                    problem = family.problem(shape, dtype)
                    for variant in self._variants or family.variants:
                        if variant not in family.variants:
                            continue
                        task = Task(name, variant, canonical_json(problem.as_dict()), problem.dtype, device)
                        self._problems[task] = problem
                        out.append(task)
        return sorted(out)

    def _family_problem(self, task: Task) -> tuple[Any, Problem]:
        from kernelcast.measurement.families import get_family

        if task not in self._problems:
            family = get_family(task.family)
            problem = task.problem
            dims = {d: int(problem[d]) for d in family.dims}
            options = {k: v for k, v in problem.items() if k not in family.dims}
            self._problems[task] = family.problem(dims, task.dtype, **options)
        return get_family(task.family), self._problems[task]

    # -- the space --------------------------------------------------------------------------------------
    def space(self, task: Task) -> ConfigSpace:
        """The variant's configuration space."""
        family, _ = self._family_problem(task)
        return family.space(task.variant)

    def space_size(self, task: Task) -> int:
        """Configurations of the variant that pass ``check_config`` on the device."""
        family, problem = self._family_problem(task)
        return len(family.configs(task.variant, problem, self._limits()))

    def _limits(self) -> Any:
        self._bench.start()
        return self._bench.limits

    def check(self, task: Task, config: Mapping[str, Scalar]) -> str | None:
        """The family's ``check_config`` against the device limits."""
        family, problem = self._family_problem(task)
        try:
            return family.check_config(task.variant, config, problem, self._limits())
        except InvalidParameterError as exc:
            return str(exc)

    def candidate_frame(self, task: Task, configs: Sequence[Mapping[str, Scalar]]) -> pl.DataFrame:
        """The configs with the variant's source hash."""
        family, _ = self._family_problem(task)
        source = family.source_hash(task.variant)
        rows = [{"family": task.family, "variant": task.variant, "source_hash": source,
                 "config_json": canonical_json(dict(c)), "problem_json": task.problem_json, "dtype": task.dtype,
                 "device": task.device} for c in configs]
        return pl.DataFrame(rows, schema={c: pl.String() for c in CANDIDATE_COLUMNS}, orient="row")

    def compiled_metadata(self, task: Task, frame: pl.DataFrame) -> pl.DataFrame:
        """``frame`` plus compiler metadata from compiling its configs on the CPU for this device.

        :class:`~kernelcast.measurement.offline.OfflineCompiler` (``compile_jobs`` processes, started on first
        use) compiles for the device's compute capability without touching the GPU; a config that does not
        compile keeps missing metadata. Seconds spent: :attr:`offline_compile_seconds`.
        """
        if self._compiler is None:
            from kernelcast.measurement.offline import OfflineCompiler

            self._compiler = OfflineCompiler(self._limits().compute_capability, n_jobs=self.compile_jobs)
        before = self._compiler.compile_seconds
        out = self._compiler.annotate(frame)
        self.offline_compile_seconds += self._compiler.compile_seconds - before
        return out

    # -- measuring --------------------------------------------------------------------------------------
    def _measure(self, task: Task, configs: Sequence[Config]) -> Iterator[Record]:
        from kernelcast.measurement import Candidate

        _, problem = self._family_problem(task)
        candidates: Iterable[Candidate] = [Candidate(task.family, task.variant, c, problem) for c in configs]
        before = self._bench.gpu_seconds
        kept: list[Record] = []
        try:
            for record in self._bench.measure(candidates):
                after = self._bench.gpu_seconds
                self._charged[record.key] = (record.compile_time_ms or 0.0) / 1000.0 + (after - before)
                before = after
                kept.append(record)
                if self.store is not None and len(kept) >= 256:
                    self.store.append(kept)
                    kept = []
                yield record
        finally:
            if self.store is not None and kept:
                self.store.append(kept)

    def cost_seconds(self, record: Record) -> float:
        """Compile plus GPU-worker seconds of ``record`` (see the module docstring)."""
        key = record_key(record.source_hash, record.config, record.problem, record.dtype, record.device)
        if key in self._charged:
            return self._charged[key]
        return ((record.compile_time_ms or 0.0) + sum(record.samples_ms)) / 1000.0
