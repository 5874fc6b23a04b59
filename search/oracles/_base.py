"""The Oracle base class: what turns a task's configurations into measured records.

An oracle is either the live GPU (:class:`~kernelcast.search.oracles.gpu.GpuOracle`) or a replay of a
complete measured space (:class:`~kernelcast.search.oracles.replay.ReplayOracle`); the search cannot tell
them apart. A search calls an oracle in this order::

    oracle.tasks() / oracle.list_tasks("kernel=conv,device=3090")   # what can be searched
    space = oracle.space(task)             # knob -> allowed values (a ConfigSpace)
    oracle.space_size(task)                # how many configurations of the space can run at all
    oracle.check(task, config)             # why a config cannot run, known before any measurement, or None
    oracle.candidate_frame(task, configs)  # the surrogate's view of configs (CANDIDATE_COLUMNS)
    oracle.compiled_metadata(task, frame)  # plus compiler metadata, for surrogates that use it (no budget)
    for record in oracle.iter_measure(task, configs):   # spends budget; one record per config
        oracle.cost_seconds(record)        # GPU seconds that record cost: compile + timing

Budget accounting lives here because only the oracle knows what a measurement cost:
:attr:`Oracle.spent` counts measurements (records that reached the compiler or the GPU) and GPU seconds.
"""

from __future__ import annotations

import abc
import dataclasses
import hashlib
import json
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, ClassVar

import polars as pl

from kernelcast.exceptions import InvalidParameterError
from kernelcast.measurement.records import Record, Scalar, Status, canonical_json
from kernelcast.measurement.space import ConfigSpace

Config = dict[str, Scalar]


@dataclasses.dataclass(frozen=True, order=True)
class Task:
    """One search target: a kernel (family and source variant), a problem, a dtype, a device.

    Runtimes are comparable only within a task (:data:`~kernelcast.surrogate._base.TASK_COLUMNS`). A search
    explores one variant's space, so the variant is part of the search task.

    Attributes
    ----------
    family : str
        Family or kernel name, e.g. ``"matmul"`` or ``"kernel_tuner/convolution"``.
    variant : str
        Source variant within the family.
    problem_json : str
        The problem as canonical JSON (the store's ``problem_json``).
    dtype : str
        Element type.
    device : str
        Device name as the driver reports it.
    """

    family: str
    variant: str
    problem_json: str
    dtype: str
    device: str

    @property
    def problem(self) -> dict[str, Any]:
        """The problem as a dict."""
        return json.loads(self.problem_json)

    def label(self) -> str:
        """A short human label: ``family[variant] problem dtype @ device``."""
        variant = "" if self.variant == "default" else f"[{self.variant}]"
        problem = ",".join(f"{k}={_short(v)}" for k, v in self.problem.items())
        return f"{self.family}{variant} {problem} {self.dtype} @ {self.device}"

    def slug(self) -> str:
        """A file-name-safe identifier, unique per task: readable words plus a short hash."""
        digest = hashlib.sha256(canonical_json(dataclasses.asdict(self)).encode()).hexdigest()[:8]
        words = re.sub(r"[^A-Za-z0-9]+", "-", f"{self.family}-{self.device}").strip("-").lower()
        return f"{words[:60]}-{digest}"

    def as_dict(self) -> dict[str, str]:
        """The task's fields as a plain dict (for JSON reports)."""
        return dataclasses.asdict(self)


def _short(value: Any) -> str:
    return "x".join(map(str, value)) if isinstance(value, list) else str(value)


# -- task selectors ----------------------------------------------------------------------------------------
SELECTOR_KEYS: dict[str, str] = {
    "family": "family",
    "kernel": "family",
    "variant": "variant",
    "problem": "problem_json",
    "dtype": "dtype",
    "device": "device",
    "gpu": "device",
}
"""Keys a task selector may use, and the task field each matches (``kernel``/``family``, ``gpu``/``device``
are synonyms)."""


def parse_task_selector(selector: str | None) -> dict[str, str]:
    """Parse ``"kernel=convolution,device=3090"`` into ``{"family": "convolution", "device": "3090"}``.

    An empty selector, ``"all"`` or ``"*"`` selects every task.

    Raises
    ------
    InvalidParameterError
        For a term that is not ``key=value`` or a key outside :data:`SELECTOR_KEYS`, listing the allowed keys.
    """
    if selector is None or selector.strip() in ("", "all", "*"):
        return {}
    allowed = ", ".join(repr(k) for k in SELECTOR_KEYS)
    out: dict[str, str] = {}
    for term in selector.split(","):
        term = term.strip()
        if not term:
            continue
        key, sep, value = term.partition("=")
        key, value = key.strip().lower(), value.strip()
        if not sep or not value:
            raise InvalidParameterError(
                f"A term of the 'task' selector must look like key=value with a key among {allowed}. "
                f"Got {term!r} in {selector!r}."
            )
        if key not in SELECTOR_KEYS:
            raise InvalidParameterError(
                f"The 'task' selector key must be one of {allowed}. Got {key!r} in {selector!r} instead."
            )
        out[SELECTOR_KEYS[key]] = value
    return out


def select_tasks(tasks: Sequence[Task], selector: str | Mapping[str, str] | None) -> list[Task]:
    """Return the tasks whose fields contain every selector value (case-insensitive substrings), sorted."""
    terms = parse_task_selector(selector) if not isinstance(selector, Mapping) else dict(selector)
    chosen = [
        t for t in tasks
        if all(value.lower() in str(getattr(t, field)).lower() for field, value in terms.items())
    ]
    return sorted(chosen)


# -- budget accounting -------------------------------------------------------------------------------------
@dataclasses.dataclass
class Spend:
    """Budget spent on an oracle.

    Attributes
    ----------
    measurements : int
        Records that reached the compiler or the GPU (``invalid_config`` records, known beforehand, are free).
    gpu_seconds : float
        Compile plus timing seconds of those records (s).
    """

    measurements: int = 0
    gpu_seconds: float = 0.0

    def add(self, record: Record, seconds: float) -> None:
        """Charge one record that cost ``seconds`` (s)."""
        if record.status is not Status.INVALID_CONFIG:
            self.measurements += 1
            self.gpu_seconds += float(seconds)


def config_key(config: Mapping[str, Any]) -> str:
    """The canonical JSON of a configuration: how records and proposals are matched."""
    return canonical_json(dict(config))


class Oracle(abc.ABC):
    """Base of every oracle. See the module docstring for the order of calls.

    Subclasses implement :meth:`tasks`, :meth:`space`, :meth:`space_size`, :meth:`check`,
    :meth:`candidate_frame`, :meth:`_measure` and :meth:`cost_seconds`; :meth:`measure` and
    :meth:`iter_measure` do the accounting.
    """

    name: ClassVar[str] = "oracle"

    def __init__(self) -> None:
        self.spent = Spend()

    # -- tasks --------------------------------------------------------------------------------------------
    @abc.abstractmethod
    def tasks(self) -> list[Task]:
        """Every task this oracle can measure."""

    def list_tasks(self, selector: str | Mapping[str, str] | None = None) -> list[Task]:
        """The tasks matching ``selector`` (see :func:`parse_task_selector`), sorted.

        Raises
        ------
        InvalidParameterError
            If no task matches, listing what the oracle has.
        """
        tasks = self.tasks()
        chosen = select_tasks(tasks, selector)
        if not chosen:
            known = "; ".join(t.label() for t in sorted(tasks)[:12])
            raise InvalidParameterError(
                f"The 'task' selector {selector!r} matches none of the {len(tasks)} tasks of {self.describe()}. "
                f"Tasks: {known or '(none)'}{' ...' if len(tasks) > 12 else ''}."
            )
        return chosen

    def describe(self) -> str:
        """A short human description of the oracle (for messages and reports)."""
        return self.name

    # -- the space of a task --------------------------------------------------------------------------------
    @abc.abstractmethod
    def space(self, task: Task) -> ConfigSpace:
        """Knob names and allowed values of the task's search space (values sorted)."""

    @abc.abstractmethod
    def space_size(self, task: Task) -> int:
        """Number of configurations of the space that can run at all (pass :meth:`check`)."""

    @abc.abstractmethod
    def check(self, task: Task, config: Mapping[str, Scalar]) -> str | None:
        """Why ``config`` cannot run on the task, known without measuring (no budget spent); ``None`` if it can."""

    @abc.abstractmethod
    def candidate_frame(self, task: Task, configs: Sequence[Mapping[str, Scalar]]) -> pl.DataFrame:
        """The configs as a candidate frame (:data:`~kernelcast.surrogate._base.CANDIDATE_COLUMNS`), in order."""

    def compiled_metadata(self, task: Task, frame: pl.DataFrame) -> pl.DataFrame:
        """``frame`` (from :meth:`candidate_frame`) plus the compiler metadata of its configs, without measuring.

        For surrogates trained with compiler metadata (``use_compiled_metadata=True``); spends no budget. This
        oracle cannot: the base class raises.
        """
        raise InvalidParameterError(
            f"The oracle {self.describe()!r} cannot give compiler metadata before measuring; screen with a surrogate "
            "trained without compiler metadata (use_compiled_metadata=False)."
        )

    # -- measuring ------------------------------------------------------------------------------------------
    @abc.abstractmethod
    def _measure(self, task: Task, configs: Sequence[Config]) -> Iterator[Record]:
        """Yield one record per config, in any order (the subclass's measuring, without accounting)."""

    @abc.abstractmethod
    def cost_seconds(self, record: Record) -> float:
        """GPU seconds ``record`` cost: compile time plus timing time (s)."""

    def iter_measure(self, task: Task, configs: Sequence[Mapping[str, Scalar]]) -> Iterator[Record]:
        """Measure ``configs`` of ``task``, yielding each record as soon as it exists, and charge :attr:`spent`."""
        for record in self._measure(task, [dict(c) for c in configs]):
            self.spent.add(record, self.cost_seconds(record))
            yield record

    def measure(self, task: Task, configs: Sequence[Mapping[str, Scalar]]) -> list[Record]:
        """Measure ``configs`` of ``task``; return one record per config, in the order of ``configs``."""
        by_key = {config_key(r.config): r for r in self.iter_measure(task, configs)}
        return [by_key[config_key(c)] for c in configs]

    # -- evaluation (oracles that know the answer) ---------------------------------------------------------
    def reference_time_ms(self, task: Task, config: Mapping[str, Scalar]) -> float | None:
        """The task's reference runtime of ``config`` (ms) where the oracle knows it without measuring."""
        return None

    def optimum_ms(self, task: Task) -> float | None:
        """The task's best runtime (ms) where the oracle knows it (a complete measured space)."""
        return None

    def fork(self, seed: int) -> Oracle:
        """An oracle for one more run seeded ``seed``: a replay re-draws its noise; a live GPU is itself."""
        return self

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources (workers, GPUs)."""

    def __enter__(self) -> Oracle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def default_budget(space_size: int, *, fraction: float = 0.02, cap: int = 50) -> int:
    """The default budget of a search: ``fraction`` of the complete space, at most ``cap``, at least 1."""
    return max(1, min(cap, math.ceil(fraction * space_size)))
