"""The replay oracle: answers a search from a dataset in which every configuration of a task was measured.

Kernel Tuner's simulation mode replays its cache files the same way, so a search can be run and compared
many times without a GPU. Three choices make a replayed search behave like a live one:

- **Noise.** A replayed measurement is as noisy as a real one, and two queries of one configuration may
  disagree. A real measurement reports the median (kernelcast's benchmarker, at least 10 repetitions) or
  the mean (Kernel Tuner) of many timed repetitions, so by default (``noise="median"``) a query resamples
  the stored repetitions (``samples_ms``) with replacement, as many as were stored, and replays those
  draws: its runtime is their median, which varies from query to query as the median of a new set of
  repetitions would. ``noise="repetition"`` replays *one* stored repetition drawn at random (as noisy as a
  single repetition: much noisier than any real measurement, so a search tends to pick a configuration for
  one lucky draw); ``noise="none"`` replays the stored repetitions as they are. A record stored without
  repetitions replays its ``time_ms``.
- **Failures.** A configuration stored with a failure status (compile error, runtime error, ...) replays as
  that failure, with its error text. A configuration the dataset does not hold at all was excluded by the
  space's restrictions before anyone measured it: :meth:`ReplayOracle.check` reports it, and it costs
  nothing, like :meth:`Family.check_config` on the GPU. A configuration stored as ``invalid_config`` was
  rejected before compiling by that same check when the space was measured, so :meth:`ReplayOracle.check`
  reports it too (with the stored reason), it is free, and it is not counted in :meth:`ReplayOracle.space_size`
  (as :meth:`GpuOracle.space_size <kernelcast.search.oracles.gpu.GpuOracle.space_size>` counts only the
  configurations that pass the check).
- **Cost.** A replayed query is charged what the stored measurement cost: its recorded compile time plus its
  stored timing cost, the sum of all its stored repetitions (the kernel time the original measurement
  spent timing; launch gaps and warm-up are not recorded, so this is a lower bound). A failure is charged
  its compile time (a compile failure in Kernel Tuner's convolution caches cost seconds).
- **Which tasks.** Only tasks whose space is complete can be replayed faithfully.
  :func:`kernelcast.datasets.tasks.task_spaces` decides completeness; tasks it finds *incomplete* (e.g. the
  RTX 3060 Laptop GEMM cache, a sample) are left out unless ``include_incomplete=True``. Where it cannot
  tell and the family is one kernelcast has registered (its own sweeps), a task (one variant) is complete
  when every configuration of the variant's space is stored, ``invalid_config`` records included. Other
  tasks whose completeness cannot be told are kept, with a warning.

:meth:`ReplayOracle.reference_time_ms` and :meth:`ReplayOracle.optimum_ms` give the stored median runtimes,
so a harness can score what a search found against the true optimum of the task.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import polars as pl

from kernelcast.datasets.store import Store, open_store
from kernelcast.datasets.tasks import TASK_COLUMNS, task_spaces
from kernelcast.exceptions import InvalidParameterError, invalid_choice
from kernelcast.measurement.records import COMPILED_COLUMNS, Record, Scalar, Status
from kernelcast.measurement.space import ConfigSpace, Param
from kernelcast.search.oracles._base import Config, Oracle, Spend, Task, config_key
from kernelcast.surrogate._base import CANDIDATE_COLUMNS

logger = logging.getLogger(__name__)

_REQUIRED = (*CANDIDATE_COLUMNS, "status", "time_ms", "samples_ms")

NOISE_MODES: tuple[str, ...] = ("median", "repetition", "none")
"""Allowed values of ``ReplayOracle(noise=...)``."""


@dataclasses.dataclass(frozen=True)
class _Stored:
    """One stored configuration of a task."""

    row: dict[str, Any]
    samples_ms: tuple[float, ...]
    cost_seconds: float


@dataclasses.dataclass(frozen=True)
class _TaskTable:
    """Everything stored for one task, indexed by configuration."""

    by_config: dict[str, _Stored]
    """The configurations that can run (every stored status but ``invalid_config``)."""
    invalid: dict[str, str]
    """Configurations stored as ``invalid_config``, with the reason they were rejected before compiling."""
    space: ConfigSpace
    optimum_ms: float | None


class ReplayOracle(Oracle):
    """Replay a dataset whose tasks have complete spaces. See the module docstring.

    Parameters
    ----------
    source : str, path, Store or polars DataFrame
        A store directory, a :class:`~kernelcast.datasets.store.Store`, or a record frame in the store's layout.
    seed : int
        Seed of the draws of stored repetitions.
    noise : {"median", "repetition", "none"}
        How a replayed measurement draws its repetitions (see the module docstring).
    include_incomplete : bool
        Also offer tasks whose stored space is known to be incomplete.
    name : str, optional
        How messages and reports name the data (default: the store path, or "a record frame").
    """

    name = "replay"

    def __init__(
        self,
        source: str | os.PathLike[str] | Store | pl.DataFrame,
        *,
        seed: int = 0,
        noise: str = "median",
        include_incomplete: bool = False,
        name: str | None = None,
    ) -> None:
        super().__init__()
        if noise not in NOISE_MODES:
            raise invalid_choice("noise", "ReplayOracle", noise, NOISE_MODES)
        self.noise = noise
        if isinstance(source, pl.DataFrame):
            frame, self._origin = source, name or "a record frame"
        else:
            store = source if isinstance(source, Store) else open_store(source, must_exist=True)
            frame, self._origin = store.read(), name or str(store.path)
        missing = [c for c in _REQUIRED if c not in frame.columns]
        if missing:
            raise InvalidParameterError(
                f"The records replayed from {self._origin} lack the column(s) {missing!r}; they have {frame.columns!r}."
            )
        self._frame = frame
        self.seed = seed
        self._rng = np.random.default_rng(seed)
        self._tables: dict[Task, _TaskTable] = {}
        columns = ("family", "variant", "problem_json", "dtype", "device")
        tasks = [Task(*row) for row in frame.select(columns).unique().iter_rows()]
        self._tasks = sorted(tasks if include_incomplete else _drop_incomplete(frame, tasks, self._origin))

    def fork(self, seed: int) -> ReplayOracle:
        """The same replay with its own draws (seeded ``seed``) and its own budget accounting; shares the data."""
        other = copy.copy(self)
        other.seed = seed
        other._rng = np.random.default_rng(seed)
        other.spent = Spend()
        return other

    def describe(self) -> str:
        """``replay of <source>``."""
        return f"replay of {self._origin}"

    def tasks(self) -> list[Task]:
        """Every task of the dataset (one per family, variant, problem, dtype and device)."""
        return list(self._tasks)

    # -- the stored space ---------------------------------------------------------------------------------
    def _table(self, task: Task) -> _TaskTable:
        if task in self._tables:
            return self._tables[task]
        if task not in self._tasks:
            raise InvalidParameterError(f"The task {task.label()!r} is not in {self.describe()}.")
        rows = self._frame.filter(
            (pl.col("family") == task.family) & (pl.col("variant") == task.variant)
            & (pl.col("problem_json") == task.problem_json) & (pl.col("dtype") == task.dtype)
            & (pl.col("device") == task.device)
        )
        by_config: dict[str, _Stored] = {}
        invalid: dict[str, str] = {}
        values: dict[str, set[Any]] = {}
        best = np.inf
        for row in rows.iter_rows(named=True):
            config = json.loads(row["config_json"])
            for knob, value in config.items():
                values.setdefault(knob, set()).add(value)
            if row["status"] == Status.INVALID_CONFIG.value:
                invalid[config_key(config)] = f"invalid_config: {row.get('error') or 'rejected before compiling'}"
                continue
            samples = tuple(float(s) for s in (row["samples_ms"] or ()))
            if not samples and row["time_ms"] is not None:
                samples = (float(row["time_ms"]),)
            cost = _stored_cost_s(row, samples)
            by_config[config_key(config)] = _Stored(row=row, samples_ms=samples, cost_seconds=cost)
            if row["status"] == Status.OK.value and row["time_ms"] is not None:
                best = min(best, float(row["time_ms"]))
        space = ConfigSpace([Param(k, tuple(sorted(v, key=_sort_key))) for k, v in sorted(values.items())])
        table = _TaskTable(by_config=by_config, invalid=invalid, space=space,
                           optimum_ms=None if np.isinf(best) else float(best))
        self._tables[task] = table
        return table

    def space(self, task: Task) -> ConfigSpace:
        """Knob -> sorted distinct values, over the configurations stored for the task."""
        return self._table(task).space

    def space_size(self, task: Task) -> int:
        """Number of stored configurations of the task that can run (failures included, ``invalid_config`` not)."""
        return len(self._table(task).by_config)

    def check(self, task: Task, config: Mapping[str, Scalar]) -> str | None:
        """Why ``config`` cannot run: stored as ``invalid_config``, or not stored (excluded by the restrictions)."""
        table = self._table(task)
        key = config_key(config)
        if key in table.by_config:
            return None
        if key in table.invalid:
            return table.invalid[key]
        return "not in the task's stored space (excluded by the space's restrictions)"

    def candidate_frame(self, task: Task, configs: Sequence[Mapping[str, Scalar]]) -> pl.DataFrame:
        """The configs with the task's columns and the stored source hash."""
        table = self._table(task)
        source_hash = next(iter(table.by_config.values())).row["source_hash"] if table.by_config else ""
        rows = []
        for config in configs:
            stored = table.by_config.get(config_key(config))
            rows.append({
                "family": task.family, "variant": task.variant,
                "source_hash": stored.row["source_hash"] if stored else source_hash,
                "config_json": config_key(config), "problem_json": task.problem_json,
                "dtype": task.dtype, "device": task.device,
            })
        return pl.DataFrame(rows, schema={c: pl.String() for c in CANDIDATE_COLUMNS}, orient="row")

    def compiled_metadata(self, task: Task, frame: pl.DataFrame) -> pl.DataFrame:
        """``frame`` plus the compiler metadata stored with its configs (missing where none was stored).

        The stored figures are what the GPU worker's compiler reported, which compiling on the CPU reproduces
        (:mod:`kernelcast.measurement.offline`; agreement in ``benchmarks/results/offline_compile_agreement.json``),
        so a replayed search sees what a live one would compute before measuring.
        """
        table = self._table(task)
        values: dict[str, list[Any]] = {c: [] for c in COMPILED_COLUMNS}
        for key in frame["config_json"].to_list():
            stored = table.by_config.get(config_key(json.loads(key)))
            for column in COMPILED_COLUMNS:
                value = stored.row.get(column) if stored is not None else None
                values[column].append(None if value is None else int(value))
        return frame.with_columns(pl.Series(c, v, dtype=pl.Int64()) for c, v in values.items())

    # -- replaying ------------------------------------------------------------------------------------------
    def _measure(self, task: Task, configs: Sequence[Config]) -> Iterator[Record]:
        table = self._table(task)
        for config in configs:
            stored = table.by_config.get(config_key(config))
            if stored is None:
                yield Record(
                    family=task.family, variant=task.variant, source_hash="", config=config, problem=task.problem,
                    dtype=task.dtype, device=task.device, status=Status.INVALID_CONFIG,
                    error=self.check(task, config), origin="replay",
                )
                continue
            yield self._replay(stored, config)

    def _replay(self, stored: _Stored, config: Config) -> Record:
        row = stored.row
        protocol = json.loads(row.get("protocol_json") or "{}")
        status = Status(row["status"])
        samples: tuple[float, ...] = ()
        drawn = None
        if status is Status.OK and stored.samples_ms:
            if self.noise == "repetition":
                drawn = int(self._rng.integers(len(stored.samples_ms)))
                samples = (stored.samples_ms[drawn],)
            elif self.noise == "median":
                picks = self._rng.integers(len(stored.samples_ms), size=len(stored.samples_ms))
                samples = tuple(stored.samples_ms[int(i)] for i in picks)
            else:
                samples = stored.samples_ms
        protocol["replay"] = {"seed": self.seed, "noise": self.noise, "drawn_index": drawn,
                              "stored_samples": len(stored.samples_ms), "cost_seconds": stored.cost_seconds}
        return Record(
            family=row["family"], variant=row["variant"], source_hash=row["source_hash"], config=config,
            problem=json.loads(row["problem_json"]), dtype=row["dtype"], device=row["device"], status=status,
            samples_ms=samples, compile_time_ms=row.get("compile_time_ms"), error=row.get("error"),
            protocol=protocol, fingerprint=json.loads(row.get("fingerprint_json") or "{}"),
            origin=f"replay:{row.get('origin') or 'dataset'}",
        )

    def cost_seconds(self, record: Record) -> float:
        """The stored measurement's cost (see the module docstring); 0 for a config outside the space."""
        replay = record.protocol.get("replay") if isinstance(record.protocol, Mapping) else None
        if replay is None:
            return 0.0
        return float(replay["cost_seconds"])

    # -- what the dataset knows -----------------------------------------------------------------------------
    def reference_time_ms(self, task: Task, config: Mapping[str, Scalar]) -> float | None:
        """The stored median runtime of ``config`` (ms); ``None`` for a failure or a config not stored."""
        stored = self._table(task).by_config.get(config_key(config))
        if stored is None or stored.row["status"] != Status.OK.value or stored.row["time_ms"] is None:
            return None
        return float(stored.row["time_ms"])

    def optimum_ms(self, task: Task) -> float | None:
        """The best stored median runtime of the task (ms)."""
        return self._table(task).optimum_ms

    def stored_samples_ms(self, task: Task, config: Mapping[str, Scalar]) -> tuple[float, ...]:
        """Every stored repetition of ``config`` (ms), the set replayed draws come from."""
        stored = self._table(task).by_config.get(config_key(config))
        return stored.samples_ms if stored is not None else ()


def _drop_incomplete(frame: pl.DataFrame, tasks: list[Task], origin: str) -> list[Task]:
    """The tasks not known to be incomplete (see the module docstring)."""
    if "protocol_json" not in frame.columns or frame.height == 0:
        return tasks
    spaces = task_spaces(frame)
    # A task of a kernelcast family is decided per variant below (a replayed task searches one variant).
    per_variant = pl.col("basis").is_in(["unknown", "family_space"])
    incomplete = set(spaces.filter(~pl.col("complete") & ~per_variant)
                     .select(*TASK_COLUMNS).iter_rows())
    unknown = set(spaces.filter(per_variant).select(*TASK_COLUMNS).iter_rows())
    kept = [t for t in tasks if (t.family, t.problem_json, t.dtype, t.device) not in incomplete]
    kept, sampled, guessed = _check_family_spaces(frame, kept, unknown)
    if guessed:
        logger.warning("%s: %d task(s) of unknown completeness are replayed as if complete", origin, guessed)
    if incomplete or sampled:
        logger.info("%s: leaving out %d task(s) whose stored space is incomplete", origin,
                    len(incomplete) + sampled)
    return kept


def _check_family_spaces(
    frame: pl.DataFrame, tasks: list[Task], unknown: set[tuple[str, ...]]
) -> tuple[list[Task], int, int]:
    """Decide the tasks of unknown completeness whose family kernelcast has registered.

    Such a task (one variant on one problem) is complete when the dataset holds every configuration of the
    variant's space (``invalid_config`` records included: the space is the product of the knobs' values).
    Returns the tasks kept, how many were left out as incomplete, and how many are kept undecided.
    """
    undecided = [t for t in tasks if (t.family, t.problem_json, t.dtype, t.device) in unknown]
    if not undecided:
        return tasks, 0, 0
    from kernelcast.measurement.families import registered_space_size

    columns = ["family", "variant", "problem_json", "dtype", "device"]
    stored = {tuple(row[:-1]): row[-1] for row in frame.group_by(columns).agg(
        pl.col("config_json").n_unique()).iter_rows()}
    left_out: set[Task] = set()
    guessed = 0
    for task in undecided:
        full = registered_space_size(task.family, task.variant)
        if full is None:  # not a registered family, or a variant it no longer has
            guessed += 1
            continue
        if stored[(task.family, task.variant, task.problem_json, task.dtype, task.device)] < full:
            left_out.add(task)
    return [t for t in tasks if t not in left_out], len(left_out), guessed


def _stored_cost_s(row: Mapping[str, Any], samples_ms: tuple[float, ...]) -> float:
    """Compile time plus the stored repetitions of one stored record (s); see the module docstring."""
    timing_ms = float(sum(samples_ms)) if row["status"] == Status.OK.value else 0.0
    return (float(row.get("compile_time_ms") or 0.0) + timing_ms) / 1000.0


def _sort_key(value: Any) -> tuple[int, Any]:
    """Order knob values: numbers by value first, then anything else by its text."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (0, value)
    return (1, str(value))
