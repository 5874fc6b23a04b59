"""Measured records on disk: the Parquet :class:`Store`, the datasets shipped with kernelcast, and tasks.

A shipped dataset is a store folder next to this file (e.g. ``kernel_tuner``); :func:`load` opens one by
name, or any store by path::

    from kernelcast.datasets import complete_tasks, load, task_optimum

    frame = load("kernel_tuner")                # polars DataFrame in the store's row layout
    for task_id in complete_tasks(frame):
        best_ms = task_optimum(frame, task_id)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kernelcast.datasets.store import Store, open_store
from kernelcast.exceptions import InvalidParameterError

if TYPE_CHECKING:
    import polars as pl

# The task helpers need polars; importing them lazily keeps `kernelcast.datasets.store` usable on a
# measurement-only GPU machine that has pyarrow but not polars.
_TASK_NAMES = ("TASK_COLUMNS", "complete_tasks", "task_frame", "task_optimum", "task_spaces")


def __getattr__(name: str) -> Any:
    if name in _TASK_NAMES:
        from kernelcast.datasets import tasks

        return getattr(tasks, name)
    raise AttributeError(f"module 'kernelcast.datasets' has no attribute {name!r}")


DATASETS_DIR = Path(__file__).resolve().parent
"""Folder of the datasets shipped with kernelcast."""

__all__ = [
    "DATASETS_DIR",
    "TASK_COLUMNS",
    "Store",
    "complete_tasks",
    "list_datasets",
    "load",
    "open_store",
    "task_frame",
    "task_optimum",
    "task_spaces",
]


def list_datasets() -> list[str]:
    """Return the names of the datasets shipped with kernelcast (folders here that hold records), sorted."""
    return sorted(p.name for p in DATASETS_DIR.iterdir() if p.is_dir() and any((p / "records").glob("part-v*.parquet")))


def load(name_or_path: str | os.PathLike[str], *, lazy: bool = False) -> pl.DataFrame | pl.LazyFrame:
    """Return the records of a shipped dataset (by name) or of a store folder (by path).

    Parameters
    ----------
    name_or_path : str or path-like
        A name from :func:`list_datasets`, or the path of a store folder.
    lazy : bool
        Return a LazyFrame instead of a DataFrame.

    Returns
    -------
    DataFrame or LazyFrame
        One row per record, in the store's row layout (``time_ms`` in ms).
    """
    path = Path(name_or_path)
    # A bare name is a shipped dataset unless it names a store folder here (a plain folder of the same name,
    # e.g. the repository's own kernelcast/ package, is not one).
    is_name = isinstance(name_or_path, str) and path.name == name_or_path and not (path / "records").is_dir()
    if is_name:
        path = DATASETS_DIR / name_or_path
        if not (path / "records").is_dir():
            raise InvalidParameterError(
                f"The 'name_or_path' parameter of load must be a store folder or one of {list_datasets()}. "
                f"Got {name_or_path!r} instead."
            )
    store = open_store(path, must_exist=True)
    return store.scan() if lazy else store.read()
