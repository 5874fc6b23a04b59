"""Tasks of a record frame: which tasks exist, which hold their complete configuration space, their optimum.

A task is one (family, problem, dtype, device) (:data:`TASK_COLUMNS`); runtimes
are compared only within one. Its ``task_id`` is those four values joined with ``" | "``, e.g.
``kernel_tuner/Xgemm | {"n0":4096,"n1":4096} | float32 | NVIDIA GeForce RTX 3090``.

How completeness is decided, per task, by the first rule that applies (the ``basis`` column of
:func:`task_spaces`):

1. ``"given"``: an expected number of configurations passed in ``spaces``, by ``task_id`` or by family;
2. ``"space_size"``: the largest ``space_size`` in the task's protocols. kernelcast's own sweeps record there
   the number of configurations of the family's space (over all variants) for the problem;
3. ``"family_space"`` (kernelcast's own records): the family is registered with kernelcast, and the task holds
   every configuration of every variant of its space (``invalid_config`` records included: the space is the
   product of the knobs' values);
4. ``"tune_params"`` (Kernel Tuner imports): the task holds every configuration of the product of its
   ``tune_params`` (the protocol keeps them);
5. ``"cross_device"`` (Kernel Tuner and KTT imports): Kernel Tuner caches do not record the restrictions that
   cut the product down (2D convolution: 16,896 in the product, 6,768 valid), so the space is taken to be
   the union of the configurations seen for the same kernel, problem and dtype on every device, and needs
   at least two devices: a task is complete if it holds all of them (the RTX 3060 Laptop GEMM cache, a
   sample of 10,000 of the 17,956, is not);
6. ``"unknown"``: none of the above; the task is not called complete.

Every record counts, failures included: a configuration that failed to compile is a measured outcome.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping

import polars as pl

from kernelcast.exceptions import InvalidParameterError

TASK_COLUMNS: tuple[str, ...] = ("family", "problem_json", "dtype", "device")
"""Columns that identify a task. ``kernelcast.surrogate._base.TASK_COLUMNS`` holds the same value; it is
defined here too because ``datasets/`` sits left of ``surrogate/`` in the data flow and must not import it."""

TASK_SEPARATOR = " | "

TUNER_SOURCES: tuple[str, ...] = ("kernel_tuner", "ktt")
"""Protocol sources of exhaustive tuner outputs, whose space may be inferred across devices."""


def _collect(frame: pl.DataFrame | pl.LazyFrame) -> pl.DataFrame:
    return frame.collect() if isinstance(frame, pl.LazyFrame) else frame


def task_id_expr() -> pl.Expr:
    """Expression for the ``task_id`` of each row of a record frame."""
    return pl.concat_str([pl.col(c) for c in TASK_COLUMNS], separator=TASK_SEPARATOR).alias("task_id")


def task_frame(frame: pl.DataFrame | pl.LazyFrame) -> pl.DataFrame | pl.LazyFrame:
    """Return ``frame`` with a ``task_id`` column (string) added; a LazyFrame stays lazy."""
    missing = [c for c in TASK_COLUMNS if c not in frame.collect_schema().names()]
    if missing:
        raise InvalidParameterError(f"A record frame needs the task columns {list(TASK_COLUMNS)}; it lacks {missing}.")
    return frame.with_columns(task_id_expr())


def _product_size(tune_params_json: str | None) -> int | None:
    """Number of configurations in the product of a ``tune_params`` JSON object (name -> list of values)."""
    if tune_params_json is None:
        return None
    return math.prod(len(values) for values in json.loads(tune_params_json).values())


def task_spaces(frame: pl.DataFrame | pl.LazyFrame, spaces: Mapping[str, int] | None = None) -> pl.DataFrame:
    """Describe the configuration space of every task in ``frame`` (see the module docstring).

    Parameters
    ----------
    frame : DataFrame or LazyFrame
        Records in the store's row layout.
    spaces : mapping of str to int, optional
        Expected number of configurations, by ``task_id`` or by family (a ``task_id`` entry wins).

    Returns
    -------
    DataFrame
        One row per task: ``task_id``, the task columns, ``n_configs`` (distinct configurations stored),
        ``expected_configs`` (null where unknown), ``basis`` and ``complete`` (bool), sorted by ``task_id``.
    """
    spaces = dict(spaces or {})
    for key, size in spaces.items():
        if not isinstance(size, int) or isinstance(size, bool) or size < 1:
            raise InvalidParameterError(
                f"The 'spaces' parameter of task_spaces must map task ids or families to positive ints. "
                f"Got {size!r} for {key!r} instead."
            )
    rows = _collect(task_frame(frame)).select(
        "task_id",
        *TASK_COLUMNS,
        "config_json",
        pl.concat_str(pl.col("variant").fill_null(""), pl.col("config_json"), separator="\n").alias("variant_config"),
        pl.col("protocol_json").str.json_path_match("$.source").alias("source"),
        pl.col("protocol_json").str.json_path_match("$.space_size").cast(pl.Int64, strict=False).alias("space_size"),
        pl.col("protocol_json").str.json_path_match("$.tune_params").alias("tune_params"),
    )
    tasks = (
        rows.group_by("task_id", *TASK_COLUMNS)
        .agg(
            pl.col("config_json").n_unique().alias("n_configs"),
            pl.col("variant_config").n_unique().alias("n_variant_configs"),
            pl.col("space_size").max().alias("space_size"),
            pl.col("tune_params").drop_nulls().first().alias("tune_params"),
            pl.col("source").is_in(list(TUNER_SOURCES)).fill_null(False).all().alias("from_tuner"),
        )
        .sort("task_id")
    )
    kernel_columns = [c for c in TASK_COLUMNS if c != "device"]
    union = rows.group_by(kernel_columns).agg(
        pl.col("config_json").n_unique().alias("union_configs"), pl.col("device").n_unique().alias("n_devices")
    )
    tasks = tasks.join(union, on=kernel_columns, how="left")
    expected: list[int | None] = []
    basis: list[str] = []
    stored: list[int] = []
    family_sizes = _family_space_sizes(tasks["family"].unique().to_list())
    for row in tasks.iter_rows(named=True):
        stored.append(row["n_configs"])
        given = spaces.get(row["task_id"], spaces.get(row["family"]))
        product = _product_size(row["tune_params"])
        size: int | None
        if given is not None:
            size, how = given, "given"
        elif row["space_size"] is not None:
            size, how = int(row["space_size"]), "space_size"
        elif not row["from_tuner"] and row["family"] in family_sizes:
            size, how = family_sizes[row["family"]], "family_space"
            stored[-1] = row["n_variant_configs"]  # variants of one family may share knob names
        elif row["from_tuner"] and product is not None and row["union_configs"] == product:
            size, how = product, "tune_params"
        elif row["from_tuner"] and row["n_devices"] >= 2:
            size, how = row["union_configs"], "cross_device"
        else:
            size, how = None, "unknown"
        expected.append(size)
        basis.append(how)
    return (
        tasks.select("task_id", *TASK_COLUMNS)
        .with_columns(
            pl.Series("n_configs", stored, dtype=pl.UInt32),
            pl.Series("expected_configs", expected, dtype=pl.Int64),
            pl.Series("basis", basis, dtype=pl.String),
        )
        .with_columns(
            (pl.col("expected_configs").is_not_null() & (pl.col("n_configs") >= pl.col("expected_configs"))).alias(
                "complete"
            )
        )
    )


def _family_space_sizes(families: list[str]) -> dict[str, int]:
    """Configurations over all variants of each of ``families`` that kernelcast registers (others left out)."""
    from kernelcast.measurement.families import registered_space_size

    sizes = {name: registered_space_size(name) for name in families}
    return {name: size for name, size in sizes.items() if size is not None}


def complete_tasks(frame: pl.DataFrame | pl.LazyFrame, spaces: Mapping[str, int] | None = None) -> list[str]:
    """Return the ids of the tasks whose configuration space ``frame`` holds completely, sorted.

    Parameters
    ----------
    frame : DataFrame or LazyFrame
        Records in the store's row layout.
    spaces : mapping of str to int, optional
        Expected number of configurations, by ``task_id`` or by family; see :func:`task_spaces`.
    """
    described = task_spaces(frame, spaces)
    return described.filter(pl.col("complete"))["task_id"].to_list()


def task_optimum(frame: pl.DataFrame | pl.LazyFrame, task_id: str) -> float:
    """Return the best runtime (ms) among the ``ok`` records of task ``task_id``.

    Raises
    ------
    InvalidParameterError
        If ``frame`` has no such task, or the task has no ``ok`` record.
    """
    task = _collect(task_frame(frame).filter(pl.col("task_id") == task_id))
    if task.height == 0:
        raise InvalidParameterError(
            f"The 'task_id' parameter of task_optimum must name a task of the frame. Got {task_id!r} instead."
        )
    ok_times = task.filter((pl.col("status") == "ok") & pl.col("time_ms").is_not_null())["time_ms"]
    if ok_times.len() == 0:
        raise InvalidParameterError(f"The task {task_id!r} has no 'ok' record, so it has no optimum.")
    return float(ok_times.min())
