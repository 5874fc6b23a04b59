"""Parquet writing and key reading, with polars where installed and pyarrow where it is not.

The store is read with polars. Appending only needs to write a file and read a few key columns, and a
GPU machine that measures may have pyarrow but not polars (the lent H100 image is one), so those two
operations fall back to pyarrow. Both paths write the same column types.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

ColumnTypes = Mapping[str, str]
"""Column name -> one of ``"str"``, ``"i32"``, ``"i64"``, ``"f64"``, ``"list_f64"``."""

try:
    import polars as _pl
except ImportError:  # pragma: no cover - exercised on measurement-only machines
    _pl = None


def polars_schema(types: ColumnTypes) -> dict[str, Any]:
    """The polars schema of ``types`` (needs polars)."""
    import polars as pl

    mapping = {"str": pl.String(), "i32": pl.Int32(), "i64": pl.Int64(), "f64": pl.Float64(),
               "list_f64": pl.List(pl.Float64())}
    return {name: mapping[t] for name, t in types.items()}


def _arrow_schema(types: ColumnTypes) -> Any:
    import pyarrow as pa

    mapping = {"str": pa.string(), "i32": pa.int32(), "i64": pa.int64(), "f64": pa.float64(),
               "list_f64": pa.list_(pa.float64())}
    return pa.schema([(name, mapping[t]) for name, t in types.items()])


def write_rows(rows: Sequence[Mapping[str, Any]], types: ColumnTypes, path: Path) -> None:
    """Write ``rows`` (dicts with every column of ``types``) to ``path`` as zstd Parquet."""
    if _pl is not None:
        frame = _pl.DataFrame([[r[c] for c in types] for r in rows], schema=polars_schema(types), orient="row")
        frame.write_parquet(path, compression="zstd", compression_level=9, statistics=True)
        return
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pylist([dict(r) for r in rows], schema=_arrow_schema(types))
    pq.write_table(table, path, compression="zstd", compression_level=9)


def read_column_tuples(paths: Sequence[Path], columns: Sequence[str]) -> list[tuple[Any, ...]]:
    """Rows of ``columns`` from every file in ``paths``, as tuples."""
    if not paths:
        return []
    if _pl is not None:
        return list(_pl.concat([_pl.read_parquet(p, columns=list(columns)) for p in paths]).iter_rows())
    import pyarrow.parquet as pq

    out: list[tuple[Any, ...]] = []
    for p in paths:
        table = pq.read_table(p, columns=list(columns))
        out.extend(zip(*(table.column(c).to_pylist() for c in columns)))
    return out
