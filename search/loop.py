"""One search: one task, one strategy, one budget, driven through Optuna's ask/tell interface.

One step of a screened search (``surrogate`` and ``greedy`` strategies)::

    1. ask the sampler for fresh proposals (for ``surrogate``: 256 in the first step, 64 in later ones, many
       more than the 4 measurements a step makes), after enqueueing local proposals: one-knob, one-step
       neighbours of the three best configs measured so far (32 for ``surrogate``, user attribute
       ``proposal="local"``), so that they too are asked and told through the study. A config that cannot
       run (Oracle.check) is told FAIL at once, free; a config this run already measured is answered from
       the run's records, free (told the same outcome, action "cache");
    2. screen the fresh proposals together with the ones still pending from earlier steps:
       forecast + MEASURE / SKIP / DEFER against the incumbent (the best runtime measured so far, and its
       configuration, which the surrogate's relative rule compares with each candidate). A surrogate trained
       with compiler metadata gets it first, without measuring (``Oracle.compiled_metadata``: the live GPU
       oracle compiles the candidates on the CPU, a replay reads what the GPU's compiler stored);
    3. SKIP: told PRUNED, with forecast and decision in user attributes -- never a value;
    4. MEASURE, then DEFER, best ranked first (the strategy's ranking: expected speed, or expected
       improvement over the incumbent): measured while the budget allows (4 per step at most), each record
       appended to the run's Store before its trial is told;
    5. the rest stay pending (RUNNING) and are screened again next step, against the new incumbent;
    6. the surrogate learns from the new records, so it learns the task, including on a device it was
       never trained on: a correction of its forecasts fitted on the run's records
       (:class:`~kernelcast.search.adapt.TaskAdapter`), or its own ``Surrogate.update``.

Unscreened strategies (``tpe``, ``gp``, ``cmaes``, ``random``) measure every fresh proposal, one per step.

What Optuna is told, on purpose:

============================== ============ ======================================================
outcome                         trial state  value
============================== ============ ======================================================
measured, ok                    COMPLETE     ln(time_ms), the measured runtime (one draw in replay)
measured, failed                FAIL         none: a failure has no runtime, and a made-up penalty
                                             would distort TPE's split and GP's regression
config cannot run (check)       FAIL         none (free, known without measuring)
config already measured         as measured  the run's own measurement, again (action "cache")
screened out (SKIP)             PRUNED       none; forecast and decision in user attributes. TPE
                                             counts PRUNED trials as worse than every COMPLETE one,
                                             so the skip steers it without a fake runtime
not measured, pool full         PRUNED       none (action "dropped": ranked below the pending pool)
same config as a pending one    PRUNED       none (action "duplicate")
left pending when budget ends   PRUNED       none (action "unmeasured")
============================== ============ ======================================================

For ``greedy`` the SKIPs are the batch's lower three quarters by forecast, not a confident rule.

Every trial carries user attributes (few of them: each is a write to the storage):

- ``action``: measure, cache, invalid, skip, duplicate, dropped or unmeasured;
- ``config``: the configuration;
- ``screen`` (screened trials): ``decision``, ``forecast_ms``, ``forecast_lower_ms``, ``forecast_upper_ms``,
  ``forecast_coverage``, ``p_fail``, ``incumbent_ms``, ``step`` and, where the rule was overridden,
  ``override``;
- ``measured`` (measured and cached trials): ``index`` (1-based order of the measurement), ``status``,
  ``time_ms``, ``gpu_seconds`` and, for a failure, ``error``;
- ``reason`` (invalid trials): why the config cannot run.

Resuming. The study lives in an Optuna storage (a journal file in the run directory by default) and every
measurement in the run's Store. Running the same search again loads both: configs with a stored record
are never measured again, a trial left RUNNING whose record exists (the process died between measuring and
telling) is told from the record, other RUNNING trials return to the pending pool, and the spent budget is
recomputed from the stored records.

One run directory holds one search: its Store is the search's cache, so two searches must not share one.

Budget. A search stops when it has made ``budget.measurements`` measurements or spent
``budget.gpu_seconds`` (the step's batch that crosses the limit completes). If screening leaves nothing to
measure for ``idle_steps`` steps in a row, the candidate with the best expected speed is measured anyway
(``override="idle_fill"`` in its ``screen`` attribute), so the budget is spent rather than lost to an
over-cautious rule. A sampler stuck on configs it was already answered for is handed a random unmeasured
one (see :meth:`Search._propose`); a search gives up after ``max_stale_proposals`` proposals in a row that
bring nothing new (e.g. a space smaller than the budget).
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import logging
import math
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, IntDistribution
from optuna.trial import Trial, TrialState

from kernelcast.datasets.store import Store, records_frame
from kernelcast.exceptions import InvalidParameterError, KernelcastError
from kernelcast.measurement.records import Record, Status
from kernelcast.measurement.space import ConfigSpace
from kernelcast.search._base import Screener, Screening, uses_compiled_metadata
from kernelcast.search.adapt import TaskAdapter, adaptable
from kernelcast.search.oracles._base import Config, Oracle, Task, config_key, default_budget
from kernelcast.search.strategies import Strategy, get_strategy, make_sampler
from kernelcast.surrogate._base import Surrogate

logger = logging.getLogger(__name__)

STUDY_FORMAT = 1
"""Version of the study layout (names and user attributes); a resumed study must match it."""


@dataclasses.dataclass(frozen=True)
class Budget:
    """What a search may spend on the oracle.

    Attributes
    ----------
    measurements : int
        Most measurements (records that reached the compiler or GPU).
    gpu_seconds : float or None
        Most GPU seconds (compile + timing); ``None`` for no limit.
    """

    measurements: int
    gpu_seconds: float | None = None

    def __post_init__(self) -> None:
        if isinstance(self.measurements, bool) or not isinstance(self.measurements, int) or self.measurements < 1:
            raise InvalidParameterError(
                f"The 'budget' parameter of search must be a positive int. Got {self.measurements!r} instead."
            )
        if self.gpu_seconds is not None and not self.gpu_seconds > 0:
            raise InvalidParameterError(
                f"The 'gpu_seconds' budget of search must be positive or None. Got {self.gpu_seconds!r} instead."
            )

    def left(self, measurements: int, gpu_seconds: float) -> int:
        """Measurements still allowed after spending ``measurements`` and ``gpu_seconds`` (0 when spent)."""
        if self.gpu_seconds is not None and gpu_seconds >= self.gpu_seconds:
            return 0
        return max(0, self.measurements - measurements)


@dataclasses.dataclass(frozen=True)
class Measurement:
    """One measurement made by a search.

    Attributes
    ----------
    index : int
        1-based order within the run.
    trial : int or None
        Optuna trial number that asked for it.
    config : dict
        The configuration.
    status : str
        Record status.
    time_ms : float or None
        Measured runtime (ms) of an ``ok`` record.
    gpu_seconds : float
        What it cost (s).
    """

    index: int
    trial: int | None
    config: Config
    status: str
    time_ms: float | None
    gpu_seconds: float


@dataclasses.dataclass
class SearchResult:
    """What one search did and found."""

    task: Task
    strategy: str
    seed: int
    budget: Budget
    space_size: int
    measurements: list[Measurement]
    surrogate_seconds: float
    wall_seconds: float
    actions: dict[str, int]
    study_name: str
    resumed: bool

    @property
    def gpu_seconds(self) -> float:
        """GPU seconds spent (s)."""
        return float(sum(m.gpu_seconds for m in self.measurements))

    @property
    def best(self) -> Measurement | None:
        """The fastest ``ok`` measurement, or ``None``."""
        ok = [m for m in self.measurements if m.time_ms is not None]
        return min(ok, key=lambda m: m.time_ms) if ok else None  # type: ignore[arg-type,return-value]

    def incumbents(self) -> list[Measurement | None]:
        """The best measurement after each measurement, one per measurement (``None`` before any ``ok``)."""
        out: list[Measurement | None] = []
        best: Measurement | None = None
        for m in self.measurements:
            if m.time_ms is not None and (best is None or m.time_ms < best.time_ms):  # type: ignore[operator]
                best = m
            out.append(best)
        return out

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe summary, measurements included."""
        best = self.best
        return {
            "task": self.task.as_dict(),
            "task_label": self.task.label(),
            "strategy": self.strategy,
            "seed": self.seed,
            "budget": dataclasses.asdict(self.budget),
            "space_size": self.space_size,
            "measurements": len(self.measurements),
            "gpu_seconds": self.gpu_seconds,
            "surrogate_seconds": self.surrogate_seconds,
            "wall_seconds": self.wall_seconds,
            "actions": dict(self.actions),
            "best_config": best.config if best else None,
            "best_time_ms": best.time_ms if best else None,
            "study_name": self.study_name,
            "resumed": self.resumed,
            "trajectory": [dataclasses.asdict(m) for m in self.measurements],
        }


# -- the encoding of a space for Optuna ---------------------------------------------------------------------
def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def distributions(space: ConfigSpace) -> dict[str, BaseDistribution]:
    """Optuna distributions of a space's knobs with more than one value.

    A knob of numbers is encoded as the index of its value (``IntDistribution(0, n - 1)``) so that every
    sampler sees the values' order, even an irregular one (block sizes 1, 2, 4, ..., 48, 64, 96); other knobs
    are categorical. Single-valued knobs are fixed and not shown to the sampler.
    """
    out: dict[str, BaseDistribution] = {}
    for param in space.params:
        if len(param.values) < 2:
            continue
        if all(_is_number(v) for v in param.values):
            out[param.name] = IntDistribution(0, len(param.values) - 1)
        else:
            out[param.name] = CategoricalDistribution(list(param.values))
    return out


def encode(space: ConfigSpace, config: Mapping[str, Any]) -> dict[str, Any]:
    """The Optuna params that name ``config`` (the inverse of :func:`decode`)."""
    params: dict[str, Any] = {}
    for param in space.params:
        if len(param.values) < 2:
            continue
        value = config[param.name]
        params[param.name] = param.values.index(value) if all(_is_number(v) for v in param.values) else value
    return params


def decode(space: ConfigSpace, params: Mapping[str, Any]) -> Config:
    """The configuration named by Optuna ``params`` (see :func:`distributions`)."""
    config: Config = {}
    for param in space.params:
        if len(param.values) < 2:
            config[param.name] = param.values[0]
        elif all(_is_number(v) for v in param.values):
            config[param.name] = param.values[int(params[param.name])]
        else:
            config[param.name] = params[param.name]
    return config


# -- storage ------------------------------------------------------------------------------------------------
def open_storage(storage: str | os.PathLike[str] | optuna.storages.BaseStorage | None) -> Any:
    """Optuna storage for ``storage``.

    A URL (``sqlite:///...``) or a storage object is used as it is; a path ending in ``.db``, ``.sqlite`` or
    ``.sqlite3`` becomes SQLite; any other path a journal file (``JournalFileBackend``); ``None`` keeps the
    study in memory.
    """
    if storage is None or isinstance(storage, optuna.storages.BaseStorage):
        return storage
    text = str(storage)
    if "://" in text:
        return text
    path = Path(text)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix in (".db", ".sqlite", ".sqlite3"):
        return f"sqlite:///{path.resolve()}"
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    return JournalStorage(JournalFileBackend(str(path)))


@contextlib.contextmanager
def _quiet_optuna() -> Iterator[None]:
    """Silence Optuna's per-trial INFO lines for the duration (a search tells hundreds of trials)."""
    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(level)


@dataclasses.dataclass
class _Pending:
    trial: Trial
    config: Config


class Search:
    """One budgeted search of one task. See the module docstring; :func:`run_search` is the short form.

    Parameters
    ----------
    task : Task
        What to tune.
    oracle : Oracle
        What measures.
    strategy : str or Strategy
        See :mod:`kernelcast.search.strategies`.
    budget : Budget or int, optional
        Default: :func:`~kernelcast.search.oracles._base.default_budget` of the task's space.
    surrogate : Surrogate, optional
        Required by screened strategies; it is updated in place during the run (pass a copy to keep it).
    seed : int
        Seed of the sampler.
    run_dir : path, optional
        Where the run's records (``records/``) and, by default, its study (``study.journal``) are kept;
        ``None`` keeps everything in memory (no resuming).
    storage : str, path or optuna storage, optional
        Optuna storage of the study, overriding the run directory's journal (see :func:`open_storage`).
    idle_steps : int
        Screened steps in a row with nothing to measure before the best candidate is measured anyway.
    max_stale_proposals : int
        Proposals in a row that bring nothing new (invalid or known configs) before the search gives up.
    """

    def __init__(
        self,
        task: Task,
        oracle: Oracle,
        *,
        strategy: str | Strategy = "surrogate",
        budget: Budget | int | None = None,
        surrogate: Surrogate | None = None,
        seed: int = 0,
        run_dir: str | os.PathLike[str] | None = None,
        storage: str | os.PathLike[str] | optuna.storages.BaseStorage | None = None,
        idle_steps: int = 4,
        max_stale_proposals: int = 300,
    ) -> None:
        self.task = task
        self.oracle = oracle
        self.strategy = strategy if isinstance(strategy, Strategy) else get_strategy(strategy)
        self.space = oracle.space(task)
        self.space_size = oracle.space_size(task)
        if budget is None:
            budget = default_budget(self.space_size)
        self.budget = budget if isinstance(budget, Budget) else Budget(budget)
        if self.strategy.needs_surrogate and surrogate is None:
            raise InvalidParameterError(
                f"The {self.strategy.name!r} strategy screens proposals with a surrogate; pass one (--surrogate DIR)."
            )
        if (self.strategy.needs_surrogate and surrogate is not None and self.strategy.learn
                and self.strategy.learner == "adapter" and adaptable(surrogate)):
            surrogate = TaskAdapter(surrogate, self.space)
        self.screener = (
            Screener(surrogate, rule=self.strategy.screening, learn=self.strategy.learn,  # type: ignore[arg-type]
                     keep_fraction=self.strategy.measures_per_step / self.strategy.proposals_per_step,
                     optimism=self.strategy.optimism, ranking=self.strategy.ranking)
            if self.strategy.needs_surrogate and surrogate is not None else None
        )
        self._compiled = self.screener is not None and uses_compiled_metadata(self.screener.surrogate)
        self.seed = seed
        self.run_dir = Path(run_dir) if run_dir is not None else None
        if storage is None and self.run_dir is not None:
            storage = self.run_dir / "study.journal"
        if storage is not None and self.run_dir is None:
            raise InvalidParameterError(
                "A search kept in an Optuna storage needs a 'run_dir' for its records, to resume without measuring "
                "anything twice."
            )
        self.storage = open_storage(storage)
        self.idle_steps = idle_steps
        self.max_stale_proposals = max_stale_proposals
        self.study_name = f"{task.slug()}/{self.strategy.name}/seed{seed}"
        self._distributions = distributions(self.space)
        self._store = Store(self.run_dir / "records") if self.run_dir is not None else None
        self._cache: dict[str, Record] = {}
        self._index_of: dict[str, int] = {}
        self._measurements: list[Measurement] = []
        self._pending: list[_Pending] = []
        self._actions: collections.Counter[str] = collections.Counter()
        self._rng = np.random.default_rng(seed)

    # -- set-up and resume ------------------------------------------------------------------------------
    def _open_study(self) -> tuple[optuna.Study, bool]:
        study = optuna.create_study(
            storage=self.storage, sampler=make_sampler(self.strategy.sampler, self.seed), study_name=self.study_name,
            direction="minimize", load_if_exists=True,
        )
        identity = {"task": self.task.as_dict(), "strategy": self.strategy.name, "seed": self.seed,
                    "format": STUDY_FORMAT}
        stored = study.user_attrs.get("kernelcast")
        if stored is None:
            study.set_user_attr("kernelcast", identity)
            return study, False
        if stored != identity:
            raise KernelcastError(
                f"The study {self.study_name!r} in the storage belongs to another search: stored {stored!r}, "
                f"this search {identity!r}."
            )
        return study, True

    def _load_records(self) -> None:
        if self._store is None:
            return
        task = self.task
        mine = [r for r in self._store.records()
                if (r.family, r.variant, r.dtype, r.device) == (task.family, task.variant, task.dtype, task.device)
                and config_key(r.problem) == config_key(task.problem)]
        mine.sort(key=lambda r: r.created_at)
        for record in mine:
            self._remember(record, trial=None)

    def _remember(self, record: Record, trial: int | None) -> Measurement:
        key = config_key(record.config)
        self._cache[key] = record
        self._index_of[key] = len(self._measurements) + 1
        measurement = Measurement(
            index=len(self._measurements) + 1, trial=trial, config=dict(record.config), status=record.status.value,
            time_ms=record.time_ms, gpu_seconds=self.oracle.cost_seconds(record),
        )
        self._measurements.append(measurement)
        return measurement

    def _recover_running(self, study: optuna.Study) -> None:
        """Tell RUNNING trials whose record exists; return the others to the pending pool."""
        for frozen in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            trial = Trial(study, frozen._trial_id)
            config = decode(self.space, frozen.params)
            key = config_key(config)
            if key in self._cache:
                self._tell_outcome(study, trial, self._cache[key], action="measure")
            else:
                self._pending.append(_Pending(trial, config))

    # -- telling --------------------------------------------------------------------------------------------
    def _tell(
        self, study: optuna.Study, trial: Trial, state: TrialState, *, value: float | None = None, action: str,
        **attrs: Any,
    ) -> None:
        trial.set_user_attr("action", action)
        for key, item in attrs.items():
            if item is not None:
                trial.set_user_attr(key, item)
        self._actions[action] += 1
        if state is TrialState.COMPLETE:
            study.tell(trial, value)
        else:
            study.tell(trial, state=state)

    def _tell_outcome(self, study: optuna.Study, trial: Trial, record: Record, *, action: str,
                      screen: Mapping[str, Any] | None = None) -> None:
        """Tell a trial what ``record`` says: COMPLETE with ln(time_ms), or FAIL."""
        key = config_key(record.config)
        measured: dict[str, Any] = {"index": self._index_of[key], "status": record.status.value,
                                    "time_ms": record.time_ms, "gpu_seconds": self.oracle.cost_seconds(record)}
        if record.status is Status.OK and record.time_ms is not None:
            self._tell(study, trial, TrialState.COMPLETE, value=math.log(record.time_ms), action=action,
                       screen=screen, measured=measured)
        else:
            measured["error"] = (record.error or "")[:500]
            self._tell(study, trial, TrialState.FAIL, action=action, screen=screen, measured=measured)

    # -- proposing ------------------------------------------------------------------------------------------
    def _propose(self, study: optuna.Study, n: int, enqueued: Sequence[Config] = ()) -> list[_Pending]:
        """Ask until ``n`` fresh runnable configs are found; answer the others on the spot.

        ``enqueued`` configs are queued into the study first (user attribute ``proposal="local"``), so the
        first asks return them, each a trial answered like any other.

        A sampler that proposes, within one run of stale proposals, a config it was already answered for
        (Optuna's GP sampler converges onto measured points of a discrete space and stays there) is handed a
        uniformly random unmeasured runnable config next (user attribute ``proposal="repair"``).
        """
        for config in enqueued:
            study.enqueue_trial(encode(self.space, config), user_attrs={"proposal": "local"})
        n += len(enqueued)
        fresh: list[_Pending] = []
        pending_keys = {config_key(p.config) for p in self._pending}
        stale_keys: set[str] = set()
        stale = 0
        while len(fresh) < n and stale < self.max_stale_proposals:
            trial = study.ask(self._distributions)
            config = decode(self.space, trial.params)
            key = config_key(config)
            trial.set_user_attr("config", config)
            reason = self.oracle.check(self.task, config)
            stale += 1
            if key in stale_keys:
                self._enqueue_random(study)
            stale_keys.add(key)
            if reason is not None:
                self._tell(study, trial, TrialState.FAIL, action="invalid", reason=reason[:500])
            elif key in self._cache:
                self._tell_outcome(study, trial, self._cache[key], action="cache")
            elif key in pending_keys:
                self._tell(study, trial, TrialState.PRUNED, action="duplicate")
            else:
                stale = 0
                stale_keys.clear()
                pending_keys.add(key)
                fresh.append(_Pending(trial, config))
        return fresh

    def _neighbours(self, n: int) -> list[Config]:
        """Up to ``n`` runnable neighbours of the best measured configs that are neither measured nor pending.

        A neighbour changes one knob of one of the three fastest ``ok`` measurements: a knob of numbers to
        the next value up or down, any other knob to another value. ``n`` of them are drawn at random.
        """
        if n <= 0:
            return []
        ok = sorted((m for m in self._measurements if m.time_ms is not None), key=lambda m: m.time_ms)[:3]
        known = set(self._cache) | {config_key(p.config) for p in self._pending}
        candidates: dict[str, Config] = {}
        for parent in ok:
            for param in self.space.params:
                values = list(param.values)
                if len(values) < 2 or parent.config.get(param.name) not in values:
                    continue
                at = values.index(parent.config[param.name])
                numeric = all(_is_number(v) for v in values)
                moves = [values[j] for j in (at - 1, at + 1) if 0 <= j < len(values)] if numeric else (
                    [v for v in values if v != values[at]])
                for value in moves:
                    config = {**parent.config, param.name: value}
                    key = config_key(config)
                    if key not in known and key not in candidates and self.oracle.check(self.task, config) is None:
                        candidates[key] = config
        chosen = list(candidates.values())
        if len(chosen) > n:
            chosen = [chosen[int(i)] for i in self._rng.choice(len(chosen), n, replace=False)]
        return chosen

    def _enqueue_random(self, study: optuna.Study) -> None:
        """Queue a uniformly random runnable config this run has not measured (if one is found quickly)."""
        known = set(self._cache) | {config_key(p.config) for p in self._pending}
        candidates = self.space.sample(64, seed=int(self._rng.integers(2**31)))
        for i in self._rng.permutation(len(candidates)):
            config = candidates[int(i)]
            if config_key(config) not in known and self.oracle.check(self.task, config) is None:
                study.enqueue_trial(encode(self.space, config), user_attrs={"proposal": "repair"})
                return

    # -- measuring ------------------------------------------------------------------------------------------
    def _incumbent_ms(self) -> float | None:
        times = [m.time_ms for m in self._measurements if m.time_ms is not None]
        return min(times) if times else None

    def _left(self) -> int:
        return self.budget.left(len(self._measurements), sum(m.gpu_seconds for m in self._measurements))

    def _measure(
        self, study: optuna.Study, chosen: Sequence[_Pending], screens: Sequence[Mapping[str, Any] | None]
    ) -> list[Record]:
        """Measure ``chosen`` as one batch; store each record as it arrives, then tell its trial.

        The caller sizes the batch to the measurements left; a GPU-seconds limit is checked between batches.
        """
        by_key = {config_key(p.config): (p, a) for p, a in zip(chosen, screens)}
        new: list[Record] = []
        for record in self.oracle.iter_measure(self.task, [p.config for p in chosen]):
            if self._store is not None:
                self._store.append([record])
            item, screen = by_key[config_key(record.config)]
            self._remember(record, trial=item.trial.number)
            self._tell_outcome(study, item.trial, record, action="measure", screen=screen)
            new.append(record)
        return new

    # -- the loop -------------------------------------------------------------------------------------------
    def run(self) -> SearchResult:
        """Run (or resume) the search until the budget is spent; return what it found."""
        start = time.perf_counter()
        with _quiet_optuna():
            study, resumed = self._open_study()
            self._load_records()
            self._recover_running(study)
            if self.screener is not None and self._measurements:
                self.screener.learn(records_frame(self._cache.values()))
            state = {"idle": 0, "step": 0}
            while self._left() > 0:
                if self.screener is None:
                    fresh, self._pending = self._pending[:1] or self._propose(study, 1), self._pending[1:]
                    if not fresh:
                        break
                    self._measure(study, fresh, [None] * len(fresh))
                elif not self._screened_step(study, state):
                    break
            if self._left() > 0:
                logger.warning(
                    "%s: stopped after %d proposals in a row brought no new runnable configuration (%d of %d "
                    "measurements made)", self.study_name, self.max_stale_proposals, len(self._measurements),
                    self.budget.measurements,
                )
            for pending in self._pending:
                self._tell(study, pending.trial, TrialState.PRUNED, action="unmeasured")
            self._pending = []
            for _ in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):  # unused repair proposals
                self._tell(study, study.ask(self._distributions), TrialState.PRUNED, action="unmeasured")
        return SearchResult(
            task=self.task, strategy=self.strategy.name, seed=self.seed, budget=self.budget,
            space_size=self.space_size, measurements=list(self._measurements),
            surrogate_seconds=self.screener.seconds if self.screener is not None else 0.0,
            wall_seconds=time.perf_counter() - start, actions=dict(self._actions), study_name=self.study_name,
            resumed=resumed,
        )

    def _screened_step(self, study: optuna.Study, state: dict[str, int]) -> bool:
        """One screened step (see the module docstring); ``False`` when there was nothing left to screen."""
        assert self.screener is not None  # noqa: S101 - only called for screened strategies
        strategy = self.strategy
        fresh = strategy.first_proposals if strategy.first_proposals and not self._measurements else (
            strategy.proposals_per_step)
        pool = self._pending + self._propose(study, fresh, self._neighbours(strategy.local_proposals))
        self._pending = []
        if not pool:
            return False
        incumbent = self._incumbent_ms()
        configs = [p.config for p in pool]
        best = min((m for m in self._measurements if m.time_ms is not None), key=lambda m: m.time_ms, default=None)
        if best is not None:
            configs.append(best.config)
        frame = self.oracle.candidate_frame(self.task, configs)
        if self._compiled:  # one call compiles the batch and the incumbent together
            frame = self.oracle.compiled_metadata(self.task, frame)
        incumbent_frame = frame.tail(1) if best is not None else None
        frame = frame.head(len(pool))
        screening = self.screener.screen(frame, incumbent, incumbent_frame)
        order = screening.priority()
        n_measure = min(strategy.measures_per_step, self._left())
        chosen = order[:n_measure]
        override = None
        if not chosen:
            state["idle"] += 1
            if state["idle"] >= self.idle_steps:
                chosen = [int(screening.expected_speed.argmax())]
                override = "idle_fill"
        if chosen:
            state["idle"] = 0
        step = state["step"] = state["step"] + 1
        screens = [self._screen_attrs(screening, i, incumbent, step, override) for i in chosen]
        chosen_set = set(chosen)
        for i in screening.skipped():
            if i not in chosen_set:
                self._tell(study, pool[i].trial, TrialState.PRUNED, action="skip",
                           screen=self._screen_attrs(screening, i, incumbent, step))
        rest = [i for i in order if i not in chosen_set]
        keep = rest[: strategy.proposals_per_step] if strategy.screening == "selective" else []
        for i in rest:
            if i not in keep:
                self._tell(study, pool[i].trial, TrialState.PRUNED, action="dropped",
                           screen=self._screen_attrs(screening, i, incumbent, step))
        self._pending = [pool[i] for i in keep]
        self.screener.learn(records_frame(self._measure(study, [pool[i] for i in chosen], screens)))
        return True

    @staticmethod
    def _screen_attrs(
        screening: Screening, i: int, incumbent: float | None, step: int, override: str | None = None
    ) -> dict[str, Any]:
        attrs = screening.attrs(i)
        attrs.update(incumbent_ms=incumbent, step=step)
        if override is not None:
            attrs["override"] = override
        return attrs


def run_search(task: Task, oracle: Oracle, **kwargs: Any) -> SearchResult:
    """Run one search (see :class:`Search` for the keyword arguments) and return its result."""
    return Search(task, oracle, **kwargs).run()

