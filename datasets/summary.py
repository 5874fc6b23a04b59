"""What a dataset holds: record counts per task and status, sources, and the spread of repeat noise."""

from __future__ import annotations

from typing import Any

import polars as pl

from kernelcast.datasets.store import Store
from kernelcast.measurement.records import Status

CV_QUANTILES: tuple[float, ...] = (0.10, 0.50, 0.90, 0.99)
"""Quantiles of the coefficient of variation reported by :func:`summarize`."""


def summarize(store: Store) -> dict[str, Any]:
    """Describe the records of ``store`` as plain JSON-ready values.

    Returns
    -------
    dict
        ``path``; ``n_records``; ``n_ok``; ``status_counts`` (status -> count); ``n_source_hashes`` (distinct
        kernel source identities) and ``n_source_texts`` (stored texts); ``groups``, one per (family, problem,
        dtype, device) with ``n_records`` and ``status_counts``; ``cv_quantiles`` (``"p10"`` ... ``"p99"``) of
        the coefficient of variation (unitless) of the ``ok`` records timed at least twice, and their number
        ``n_cv`` (records with a single sample or none say nothing about repeat noise).
    """
    frame = store.read()
    statuses = [s.value for s in Status]
    group_columns = ["family", "problem_json", "dtype", "device"]
    counts = frame.group_by([*group_columns, "status"]).len().sort([*group_columns, "status"])
    groups: dict[tuple[str, ...], dict[str, Any]] = {}
    for row in counts.iter_rows(named=True):
        key = tuple(row[c] for c in group_columns)
        group = groups.setdefault(
            key,
            {"family": key[0], "problem": key[1], "dtype": key[2], "device": key[3]}
            | {"n_records": 0, "status_counts": {}},
        )
        group["n_records"] += row["len"]
        group["status_counts"][row["status"]] = row["len"]
    status_counts = dict(frame.group_by("status").len().sort("status").iter_rows())
    noise = frame.filter(
        (pl.col("status") == Status.OK.value) & (pl.col("n_samples") >= 2) & pl.col("cv").is_not_nan()
    )["cv"].drop_nulls()
    cv_quantiles = {
        f"p{round(q * 100)}": (float(noise.quantile(q, interpolation="linear")) if noise.len() else None)
        for q in CV_QUANTILES
    }
    return {
        "path": str(store.path),
        "n_records": frame.height,
        "n_ok": int(status_counts.get(Status.OK.value, 0)),
        "status_counts": {s: int(status_counts[s]) for s in statuses if s in status_counts},
        "n_source_hashes": frame["source_hash"].n_unique(),
        "n_source_texts": store.sources().height,
        "groups": list(groups.values()),
        "cv_quantiles": cv_quantiles,
        "n_cv": noise.len(),
    }
