"""Train / calibration / test splits of a record frame that never leak.

Kinds (``kernelcast evaluate --split KIND``):

``random``
    Rows are split at random within each task (stratified by task); test pairs are formed within one task
    of the test rows. Measures interpolation inside known tasks.
``shapes``
    Held-out problem shapes: a group is one ``(family, problem_json)``; every record of a held-out shape,
    on every dtype and device, is in the test set only.
``families``
    Held-out kernels: a group is one ``family`` (all its variants, shapes and devices).
``variants``
    Held-out source variants: a group is one ``(family, variant)``, so the other variants of the same
    family, on the same shapes, stay in training (``--holdout variant=online``).
``device``
    Held-out GPU: a group is one ``device``.

Held-out groups come from ``--holdout key=VALUE`` specs (:func:`parse_holdout`): VALUE is matched as a
case-insensitive substring of the key's column, so ``device=3090`` selects ``"NVIDIA GeForce RTX 3090"``.
Specs with the same key are alternatives (OR); specs with different keys must all match (AND). The test set
is the matching rows; every row of a group that a test row belongs to is removed from training and
calibration. Without a spec, test groups are drawn at random (seeded).

Calibration data is never test data. ``calibration="cross"`` calibrates on out-of-group forecasts of the
training records (:meth:`~kernelcast.surrogate._calibrated.CalibratedSurrogate.cross_calibrate`: a clone
fitted without each fold of groups forecasts that fold), so conformal guarantees are calibrated under the
same kind of shift the test measures and no training data is given up; ``"group"`` holds out whole
groups (other than the test groups) for calibration; ``"random"`` takes a random fraction of each
training task. ``"auto"`` (the default) is ``"cross"`` for group kinds and ``"random"`` for a random split.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import polars as pl

from kernelcast.exceptions import InvalidParameterError, invalid_choice
from kernelcast.surrogate._artifact import training_identity
from kernelcast.surrogate.tasks import task_ids

SPLIT_KINDS: tuple[str, ...] = ("random", "shapes", "families", "variants", "device")
"""Allowed split kinds."""

CALIBRATION_MODES: tuple[str, ...] = ("auto", "cross", "group", "random")
"""Allowed ways of choosing calibration records."""

HOLDOUT_KEYS: dict[str, str] = {
    "device": "device",
    "family": "family",
    "kernel": "family",
    "variant": "variant",
    "shape": "problem_json",
    "problem": "problem_json",
    "dtype": "dtype",
}
"""``--holdout`` key -> the record column its VALUE is matched against."""

GROUP_COLUMNS: dict[str, tuple[str, ...]] = {
    "shapes": ("family", "problem_json"),
    "families": ("family",),
    "variants": ("family", "variant"),
    "device": ("device",),
}
"""Columns whose values form one group, per group split kind."""


@dataclasses.dataclass(frozen=True)
class Holdout:
    """One ``key=VALUE`` spec: rows whose ``key`` column contains VALUE (case-insensitive)."""

    key: str
    value: str

    @property
    def column(self) -> str:
        """The record column matched."""
        return HOLDOUT_KEYS[self.key]

    def mask(self, frame: pl.DataFrame) -> np.ndarray:
        """Rows of ``frame`` that match, shape (n,)."""
        return frame[self.column].cast(pl.String).fill_null("").str.to_lowercase().str.contains(
            self.value.lower(), literal=True
        ).to_numpy()

    def __str__(self) -> str:
        return f"{self.key}={self.value}"


def parse_holdout(spec: str) -> Holdout:
    """Parse ``"key=VALUE"`` (e.g. ``"device=3090"``); the key must be one of :data:`HOLDOUT_KEYS`."""
    key, sep, value = spec.partition("=")
    key, value = key.strip().lower(), value.strip()
    if not sep or not value:
        raise InvalidParameterError(
            f"The 'holdout' parameter must look like key=VALUE, e.g. device=3090, with key one of "
            f"{', '.join(map(repr, HOLDOUT_KEYS))}. Got {spec!r} instead."
        )
    if key not in HOLDOUT_KEYS:
        raise invalid_choice("holdout key", "evaluate", key, HOLDOUT_KEYS)
    return Holdout(key=key, value=value)


def default_kind(holdouts: Sequence[Holdout]) -> str:
    """The split kind the holdouts imply (``random`` without holdouts).

    ``device`` for ``device=``, ``families`` for ``family=``/``kernel=``, ``variants`` for ``variant=``,
    ``shapes`` for ``shape=``/``problem=``.
    """
    for h in holdouts:
        if h.key == "device":
            return "device"
        if h.key in ("family", "kernel"):
            return "families"
        if h.key == "variant":
            return "variants"
        if h.key in ("shape", "problem"):
            return "shapes"
    return "random"


@dataclasses.dataclass(frozen=True)
class Split:
    """A leak-free split of a record frame.

    Attributes
    ----------
    kind : str
        One of :data:`SPLIT_KINDS`.
    train, calibration, test : polars.DataFrame
        Disjoint record frames.
    test_groups, calibration_groups : tuple of str
        Held-out group labels (empty for a random split or random calibration).
    calibration_mode : str
        ``"cross"``, ``"group"`` or ``"random"``, as applied (``"cross"``: ``calibration`` is empty and
        ``train_groups`` labels the training rows for cross-calibration).
    train_groups : ndarray of str, shape (len(train),)
        Group label of each training row (empty for a random split).
    spec : dict
        Everything needed to rebuild the split: kind, holdouts, seed, fractions, calibration.
    """

    kind: str
    train: pl.DataFrame
    calibration: pl.DataFrame
    test: pl.DataFrame
    test_groups: tuple[str, ...]
    calibration_groups: tuple[str, ...]
    calibration_mode: str
    spec: dict[str, Any]
    train_groups: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, dtype=str))

    def describe(self) -> dict[str, Any]:
        """Sizes, groups and the spec, for logs and result files."""
        return {
            **self.spec,
            "calibration_mode": self.calibration_mode,
            "n_train": self.train.height,
            "n_calibration": self.calibration.height,
            "n_test": self.test.height,
            "test_groups": list(self.test_groups),
            "calibration_groups": list(self.calibration_groups),
            "train_identity_sha256": training_identity(self.train, None)["key_sha256"],
        }


def group_labels(frame: pl.DataFrame, kind: str) -> np.ndarray:
    """Group label of each row for a group split kind (e.g. the device name for ``"device"``)."""
    return _group_labels(frame, kind)


def _group_labels(frame: pl.DataFrame, kind: str) -> np.ndarray:
    cols = GROUP_COLUMNS[kind]
    return frame.select(pl.concat_str([pl.col(c).cast(pl.String).fill_null("") for c in cols], separator=" | ")
                        ).to_series().to_numpy()


def _random_rows(frame: pl.DataFrame, fractions: Sequence[float], rng: np.random.Generator) -> np.ndarray:
    """Assign each row a part 0..len(fractions) within its task: part i gets fraction i, the last part the rest."""
    part = np.full(frame.height, len(fractions), dtype=np.int64)
    tasks = task_ids(frame)
    for t in np.unique(tasks):
        rows = rng.permutation(np.flatnonzero(tasks == t))
        start = 0
        for i, f in enumerate(fractions):
            count = int(round(f * rows.size))
            part[rows[start:start + count]] = i
            start += count
    return part


def make_split(
    frame: pl.DataFrame,
    kind: str = "random",
    holdouts: Sequence[Holdout | str] = (),
    *,
    seed: int = 0,
    test_fraction: float = 0.2,
    calibration_fraction: float = 0.2,
    calibration: str = "auto",
) -> Split:
    """Split ``frame`` (see the module docstring).

    Parameters
    ----------
    frame : polars.DataFrame
        A record frame (store row layout).
    kind : str
        One of :data:`SPLIT_KINDS`.
    holdouts : sequence of Holdout or str
        ``key=VALUE`` specs choosing the test set (group kinds only).
    seed : int
        Seed of every random choice.
    test_fraction : float
        Share of rows (random) or groups (group kinds, without holdouts) in the test set.
    calibration_fraction : float
        Share of the remaining rows or groups used for calibration.
    calibration : {"auto", "group", "random"}
        How calibration records are chosen.

    Returns
    -------
    Split
    """
    if kind not in SPLIT_KINDS:
        raise invalid_choice("split", "evaluate", kind, SPLIT_KINDS)
    if calibration not in CALIBRATION_MODES:
        raise invalid_choice("calibration", "evaluate", calibration, CALIBRATION_MODES)
    for name, value in (("test_fraction", test_fraction), ("calibration_fraction", calibration_fraction)):
        if not 0.0 < value < 1.0:
            raise InvalidParameterError(f"The {name!r} parameter of evaluate must be in (0, 1). Got {value!r} instead.")
    parsed = [h if isinstance(h, Holdout) else parse_holdout(h) for h in holdouts]
    spec = {"kind": kind, "holdouts": [str(h) for h in parsed], "seed": seed, "test_fraction": test_fraction,
            "calibration_fraction": calibration_fraction, "calibration": calibration}
    rng = np.random.default_rng(seed)
    if frame.height == 0:
        raise InvalidParameterError("Cannot split an empty record frame.")

    if kind == "random":
        if calibration in ("cross", "group"):
            raise InvalidParameterError(
                f"A random split calibrates on random rows; calibration={calibration!r} needs a group split."
            )
        if parsed:
            raise InvalidParameterError(
                "A random split takes no --holdout; use --split shapes, families or device to hold out groups."
            )
        part = _random_rows(frame, (test_fraction, calibration_fraction), rng)
        return Split(kind, frame.filter(pl.Series(part == 2)), frame.filter(pl.Series(part == 1)),
                     frame.filter(pl.Series(part == 0)), (), (), "random", spec)

    groups = _group_labels(frame, kind)
    unique_groups = np.unique(groups)
    if parsed:
        test_rows = np.ones(frame.height, dtype=bool)
        for key in dict.fromkeys(h.key for h in parsed):
            same_key = [h for h in parsed if h.key == key]
            test_rows &= np.logical_or.reduce([h.mask(frame) for h in same_key])
        if not test_rows.any():
            column = same_key[0].column
            values = sorted(frame[column].unique().drop_nulls().to_list())[:20]
            raise InvalidParameterError(
                f"No record matches the holdout {', '.join(map(str, parsed))}; the {column!r} values are {values!r}."
            )
        test_groups = np.unique(groups[test_rows])
    else:
        if unique_groups.size < 2:
            raise InvalidParameterError(
                f"A {kind!r} split needs at least two groups ({' x '.join(GROUP_COLUMNS[kind])}); the data has "
                f"{unique_groups.size}."
            )
        n_test = min(max(1, math.ceil(test_fraction * unique_groups.size)), unique_groups.size - 1)
        test_groups = np.sort(rng.choice(unique_groups, n_test, replace=False))
        test_rows = np.isin(groups, test_groups)
    remaining = ~np.isin(groups, test_groups)
    if not remaining.any():
        raise InvalidParameterError(
            f"The holdout {', '.join(map(str, parsed))} leaves no {kind!r} group for training."
        )
    rest_groups = np.unique(groups[remaining])
    mode = calibration
    if mode == "auto":
        mode = "cross" if rest_groups.size >= 2 else "random"
    if mode == "cross" and rest_groups.size < 2:
        raise InvalidParameterError(
            f"Cross-calibration needs at least two groups outside the test set; there are {rest_groups.size}."
        )
    if mode == "cross":
        calib_groups = np.zeros(0, dtype=object)
        calib_rows = np.zeros(frame.height, dtype=bool)
        train_rows = remaining
    elif mode == "group":
        if rest_groups.size < 2:
            raise InvalidParameterError(
                f"Group calibration needs at least two groups outside the test set; there are {rest_groups.size}."
            )
        n_calib = min(max(1, round(calibration_fraction * rest_groups.size)), rest_groups.size - 1)
        calib_groups = np.sort(rng.choice(rest_groups, n_calib, replace=False))
        calib_rows = remaining & np.isin(groups, calib_groups)
        train_rows = remaining & ~calib_rows
    else:
        calib_groups = np.zeros(0, dtype=object)
        rest = frame.filter(pl.Series(remaining))
        part = _random_rows(rest, (calibration_fraction,), rng)
        calib_rows = np.zeros(frame.height, dtype=bool)
        calib_rows[np.flatnonzero(remaining)[part == 0]] = True
        train_rows = remaining & ~calib_rows
    return Split(
        kind=kind,
        train=frame.filter(pl.Series(train_rows)),
        calibration=frame.filter(pl.Series(calib_rows)),
        test=frame.filter(pl.Series(test_rows)),
        test_groups=tuple(str(g) for g in test_groups),
        calibration_groups=tuple(str(g) for g in calib_groups),
        calibration_mode=mode,
        spec=spec,
        train_groups=groups[train_rows].astype(str),
    )


def fit_on_split(
    surrogate: Any,
    split: Split,
    *,
    sources: Any = None,
    data_path: Any = None,
) -> Any:
    """Fit ``surrogate`` on ``split.train`` and calibrate it as the split says (held-out or cross); return it."""
    surrogate.fit(split.train, sources=sources, data_path=data_path)
    if split.calibration_mode == "cross":
        surrogate.cross_calibrate(split.train, split.train_groups, sources=sources)
    else:
        surrogate.calibrate(split.calibration)
    return surrogate
