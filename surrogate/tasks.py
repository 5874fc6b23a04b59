"""Tasks, measured noise, and the within-task pairs that calibration and evaluation are built from.

Runtimes are comparable only within a task (:data:`~kernelcast.surrogate._base.TASK_COLUMNS`), so every
pair formed here joins two records of one task. Two runtimes closer than their measured noise are a *tie*:
neither candidate is faster in a way a measurement could show, so ties are left out of pairwise targets.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import polars as pl

from kernelcast.exceptions import InvalidParameterError
from kernelcast.surrogate._base import CANDIDATE_COLUMNS, TASK_COLUMNS

TIE_Z = 2.0
"""Two runtimes tie when their log difference is within ``TIE_Z`` combined standard errors."""

MIN_RELATIVE_NOISE = 0.001
"""Floor on a record's relative noise (0.1%): run-to-run drift that the samples of one run do not show."""

DEFAULT_RELATIVE_NOISE = 0.01
"""Relative noise assumed for a record without timing statistics (1%)."""


def require_columns(frame: pl.DataFrame, columns: tuple[str, ...], what: str) -> None:
    """Raise :class:`InvalidParameterError` naming the columns of ``columns`` that ``frame`` lacks."""
    if not isinstance(frame, pl.DataFrame):
        raise InvalidParameterError(f"{what} must be a polars DataFrame. Got {type(frame).__name__} instead.")
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise InvalidParameterError(f"{what} lacks the column(s) {missing!r}; it has {frame.columns!r}.")


def require_candidates(frame: pl.DataFrame, what: str = "A candidate frame") -> None:
    """Check that ``frame`` has every :data:`CANDIDATE_COLUMNS` column."""
    require_columns(frame, CANDIDATE_COLUMNS, what)


def require_records(frame: pl.DataFrame, what: str = "A record frame") -> None:
    """Check that ``frame`` has the candidate columns plus ``status`` and ``time_ms``."""
    require_columns(frame, (*CANDIDATE_COLUMNS, "status", "time_ms"), what)


def ok_mask(frame: pl.DataFrame) -> np.ndarray:
    """Boolean mask, shape (n,), of records with status ``ok`` and a positive finite ``time_ms``."""
    time_ms = frame["time_ms"].cast(pl.Float64).fill_null(np.nan).to_numpy()
    with np.errstate(invalid="ignore"):
        good_time = np.isfinite(time_ms) & (time_ms > 0)
    return (frame["status"] == "ok").fill_null(False).to_numpy() & good_time


def log_time(frame: pl.DataFrame) -> np.ndarray:
    """Natural log of ``time_ms``, shape (n,); NaN where the record has no valid time."""
    time_ms = frame["time_ms"].cast(pl.Float64).fill_null(np.nan).to_numpy()
    out = np.full(time_ms.shape, np.nan)
    mask = ok_mask(frame)
    out[mask] = np.log(time_ms[mask])
    return out


def task_ids(frame: pl.DataFrame) -> np.ndarray:
    """Integer id of each row's task, shape (n,); equal ids mean the same task within this frame."""
    if frame.height == 0:
        return np.zeros(0, dtype=np.int64)
    keys = frame.select([pl.col(c).cast(pl.String).fill_null("") for c in TASK_COLUMNS])
    return keys.select(pl.struct(pl.all()).rank("dense")).to_series().to_numpy().astype(np.int64) - 1


def task_balanced_weights(tasks: np.ndarray) -> np.ndarray:
    """Sample weights that give every task the same total weight: ``1 / (records of its task)``, mean 1.

    Parameters
    ----------
    tasks : ndarray of shape (n,)
        Task id (or label) of each record.
    """
    _, inverse, counts = np.unique(np.asarray(tasks), return_inverse=True, return_counts=True)
    weights = 1.0 / counts[inverse].astype(np.float64)
    return weights * (weights.size / weights.sum()) if weights.size else weights


def task_labels(frame: pl.DataFrame) -> list[str]:
    """A readable label per row's task: ``family|problem_json|dtype|device``."""
    return frame.select(pl.concat_str([pl.col(c).cast(pl.String) for c in TASK_COLUMNS], separator="|")).to_series(
    ).to_list()


def relative_noise(frame: pl.DataFrame) -> np.ndarray:
    """Relative standard error of each record's runtime, shape (n,), at least :data:`MIN_RELATIVE_NOISE`.

    Uses ``rse_median`` where stored, else ``1.2533 * cv / sqrt(n_samples)`` (the standard error of a
    median), else :data:`DEFAULT_RELATIVE_NOISE`.
    """
    n = frame.height
    noise = np.full(n, np.nan)
    if "rse_median" in frame.columns:
        noise = frame["rse_median"].cast(pl.Float64).fill_null(np.nan).to_numpy().copy()
    if "cv" in frame.columns and "n_samples" in frame.columns:
        cv = frame["cv"].cast(pl.Float64).fill_null(np.nan).to_numpy()
        count = frame["n_samples"].cast(pl.Float64).fill_null(np.nan).to_numpy()
        with np.errstate(invalid="ignore", divide="ignore"):
            from_cv = 1.2533 * cv / np.sqrt(count)
        fill = ~np.isfinite(noise) & np.isfinite(from_cv)
        noise[fill] = from_cv[fill]
    noise[~np.isfinite(noise)] = DEFAULT_RELATIVE_NOISE
    return np.maximum(noise, MIN_RELATIVE_NOISE)


def is_tie(log_a: np.ndarray, log_b: np.ndarray, noise_a: np.ndarray, noise_b: np.ndarray) -> np.ndarray:
    """True where two log runtimes differ by less than ``TIE_Z`` combined relative standard errors."""
    return np.abs(log_a - log_b) < TIE_Z * np.sqrt(noise_a**2 + noise_b**2)


@dataclasses.dataclass(frozen=True)
class PairSet:
    """Within-task pairs of rows of one frame.

    Attributes
    ----------
    a, b : ndarray of shape (m,)
        Row indices of the two members of each pair.
    a_faster : ndarray of shape (m,)
        True where ``a`` measured faster than ``b``.
    task : ndarray of shape (m,)
        Task id of each pair.
    """

    a: np.ndarray
    b: np.ndarray
    a_faster: np.ndarray
    task: np.ndarray

    def __len__(self) -> int:
        return int(self.a.shape[0])


def within_task_pairs(
    frame: pl.DataFrame, *, max_pairs_per_task: int = 20_000, seed: int = 0, exclude_ties: bool = True
) -> PairSet:
    """Sample random pairs of ``ok`` records within each task of ``frame``.

    Parameters
    ----------
    frame : polars.DataFrame
        A record frame.
    max_pairs_per_task : int
        At most this many pairs per task (all distinct pairs where a task has fewer).
    seed : int
        Seed of the sampling.
    exclude_ties : bool
        Leave out pairs whose runtimes tie within measured noise (:func:`is_tie`).

    Returns
    -------
    PairSet
        Row indices into ``frame``.
    """
    rng = np.random.default_rng(seed)
    ok = np.flatnonzero(ok_mask(frame))
    if ok.size < 2:
        empty = np.zeros(0, dtype=np.int64)
        return PairSet(empty, empty, np.zeros(0, dtype=bool), empty)
    tasks = task_ids(frame)[ok]
    y = log_time(frame)[ok]
    noise = relative_noise(frame)[ok]
    order = np.argsort(tasks, kind="stable")
    starts = np.flatnonzero(np.r_[True, tasks[order][1:] != tasks[order][:-1]])
    ends = np.r_[starts[1:], order.size]
    parts_a, parts_b = [], []
    for s, e in zip(starts, ends):
        members = order[s:e]
        m = members.size
        if m < 2:
            continue
        n_all = m * (m - 1) // 2
        if n_all <= max_pairs_per_task:
            i, j = np.triu_indices(m, k=1)
        else:
            i = rng.integers(0, m, size=max_pairs_per_task)
            j = (i + rng.integers(1, m, size=max_pairs_per_task)) % m  # j != i
        # Random orientation so that "a is faster" is not tied to row order.
        flip = rng.random(i.size) < 0.5
        i, j = np.where(flip, j, i), np.where(flip, i, j)
        parts_a.append(members[i])
        parts_b.append(members[j])
    if not parts_a:
        empty = np.zeros(0, dtype=np.int64)
        return PairSet(empty, empty, np.zeros(0, dtype=bool), empty)
    a = np.concatenate(parts_a)
    b = np.concatenate(parts_b)
    if exclude_ties:
        keep = ~is_tie(y[a], y[b], noise[a], noise[b])
        a, b = a[keep], b[keep]
    return PairSet(a=ok[a], b=ok[b], a_faster=y[a] < y[b], task=tasks[a])


@dataclasses.dataclass(frozen=True)
class IncumbentPairs:
    """(candidate, incumbent) pairs within tasks, the population the skip rule is calibrated on.

    Attributes
    ----------
    candidate : ndarray of shape (m,)
        Row index of the candidate.
    incumbent : ndarray of shape (m,)
        Row index of the incumbent record.
    incumbent_ms : ndarray of shape (m,)
        Measured runtime of the incumbent of the candidate's task (ms).
    improver : ndarray of shape (m,)
        True where the candidate measured strictly faster than the incumbent.
    task : ndarray of shape (m,)
        Task id.
    """

    candidate: np.ndarray
    incumbent: np.ndarray
    incumbent_ms: np.ndarray
    improver: np.ndarray
    task: np.ndarray

    def __len__(self) -> int:
        return int(self.candidate.shape[0])


def incumbent_pairs(
    frame: pl.DataFrame,
    *,
    incumbents_per_task: int = 32,
    incumbent_top_fraction: float = 0.25,
    max_candidates_per_task: int = 4_000,
    seed: int = 0,
) -> IncumbentPairs:
    """Pair candidates with incumbents drawn from the best ``incumbent_top_fraction`` of their task.

    An incumbent is the measured runtime of the record at a rank quantile drawn uniformly from
    ``[0, incumbent_top_fraction)`` of its task's ``ok`` records (quantile 0 is the task's best). This
    models the incumbent of a search that has already measured a few candidates. Every ``ok`` record of
    the task other than the incumbent itself (at most ``max_candidates_per_task``, sampled) is paired with
    each incumbent.

    Returns
    -------
    IncumbentPairs
        Row indices into ``frame``.
    """
    if not 0.0 < incumbent_top_fraction <= 1.0:
        raise InvalidParameterError(
            f"The 'incumbent_top_fraction' parameter must be in (0, 1]. Got {incumbent_top_fraction!r} instead."
        )
    rng = np.random.default_rng(seed)
    ok = np.flatnonzero(ok_mask(frame))
    time_ms = frame["time_ms"].cast(pl.Float64).fill_null(np.nan).to_numpy()
    tasks_all = task_ids(frame)
    tasks = tasks_all[ok]
    order = np.argsort(tasks, kind="stable")
    starts = np.flatnonzero(np.r_[True, tasks[order][1:] != tasks[order][:-1]]) if ok.size else np.zeros(0, int)
    ends = np.r_[starts[1:], order.size]
    cands, inc_rows, incs, tids = [], [], [], []
    for s, e in zip(starts, ends):
        members = ok[order[s:e]]
        m = members.size
        if m < 2:
            continue
        by_time = members[np.argsort(time_ms[members], kind="stable")]
        ranks = np.floor(rng.random(incumbents_per_task) * incumbent_top_fraction * m).astype(np.int64)
        pool = members if m <= max_candidates_per_task else rng.choice(members, max_candidates_per_task, replace=False)
        for r in ranks:
            inc_row = by_time[r]
            c = pool[pool != inc_row]
            cands.append(c)
            inc_rows.append(np.full(c.size, inc_row))
            incs.append(np.full(c.size, time_ms[inc_row]))
            tids.append(np.full(c.size, tasks_all[inc_row]))
    if not cands:
        empty = np.zeros(0, dtype=np.int64)
        return IncumbentPairs(empty, empty, np.zeros(0), np.zeros(0, dtype=bool), empty)
    candidate = np.concatenate(cands)
    incumbent_ms = np.concatenate(incs)
    return IncumbentPairs(
        candidate=candidate,
        incumbent=np.concatenate(inc_rows),
        incumbent_ms=incumbent_ms,
        improver=time_ms[candidate] < incumbent_ms,
        task=np.concatenate(tids),
    )
