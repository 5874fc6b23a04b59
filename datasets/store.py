"""An append-only Parquet dataset directory of measurement records.

Layout of a store directory::

    DIR/records/part-v{SCHEMA}-{time}-{uuid}.parquet   one file per appended batch (zstd)
    DIR/sources/part-v{SCHEMA}-{time}-{uuid}.parquet   kernel source texts, once per source hash
    DIR/.lock                                          advisory lock serialising writers

An append writes a temporary file and renames it into place, so a reader never sees half a batch and a
writer killed mid-append leaves no partial rows. Writers take the lock while they de-duplicate against
what is stored, so concurrent writers never store one candidate twice; readers de-duplicate too, keeping
the earliest record of a key, so the dataset stays consistent while a compaction is under way.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import time
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from kernelcast.datasets._parquet import polars_schema, read_column_tuples, write_rows
from kernelcast.exceptions import InvalidParameterError, SchemaVersionError
from kernelcast.measurement.records import (
    ROW_COLUMNS,
    SCHEMA_VERSION,
    Record,
    record_to_row,
    row_to_record,
)

if TYPE_CHECKING:
    import polars as pl

logger = logging.getLogger(__name__)

KEY_COLUMNS: tuple[str, ...] = ("source_hash", "config_json", "problem_json", "dtype", "device")
"""Columns that identify a candidate on a device; a store holds at most one record per key."""

RECORD_TYPES: dict[str, str] = {
    "schema_version": "i32",
    "family": "str",
    "variant": "str",
    "source_hash": "str",
    "config_json": "str",
    "problem_json": "str",
    "dtype": "str",
    "device": "str",
    "status": "str",
    "time_ms": "f64",
    "samples_ms": "list_f64",
    "mean_ms": "f64",
    "min_ms": "f64",
    "max_ms": "f64",
    "iqr_ms": "f64",
    "cv": "f64",
    "rse_median": "f64",
    "n_samples": "i32",
    "n_regs": "i32",
    "n_spills": "i32",
    "shared_bytes": "i64",
    "num_warps": "i32",
    "num_stages": "i32",
    "compile_time_ms": "f64",
    "error": "str",
    "protocol_json": "str",
    "fingerprint_json": "str",
    "origin": "str",
    "created_at": "str",
}
"""Stored column types, in :data:`~kernelcast.measurement.records.ROW_COLUMNS` order."""
if tuple(RECORD_TYPES) != ROW_COLUMNS:  # pragma: no cover - guards two constants kept in step
    raise ImportError("datasets.store.RECORD_TYPES is out of step with measurement.records.ROW_COLUMNS")

SOURCE_TYPES: dict[str, str] = {"source_hash": "str", "family": "str", "variant": "str", "source_text": "str"}

_PART_RE = re.compile(r"^part-v(\d+)-.*\.parquet$")


def records_frame(records: Iterable[Record]) -> pl.DataFrame:
    """Return ``records`` as a polars DataFrame with the stored column layout."""
    import polars as pl

    rows = [record_to_row(r) for r in records]
    schema = polars_schema(RECORD_TYPES)
    if not rows:
        return pl.DataFrame(schema=schema)
    return pl.DataFrame([[r[c] for c in RECORD_TYPES] for r in rows], schema=schema, orient="row")


class Store:
    """An append-only, de-duplicated Parquet dataset of :class:`~kernelcast.measurement.records.Record`.

    Parameters
    ----------
    path : str or Path
        The dataset directory; created on the first append.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._known_files: set[str] = set()
        self._known_keys: set[tuple[str, ...]] = set()
        self._known_sources: set[str] = set()

    # -- layout -------------------------------------------------------------------------------------
    @property
    def records_dir(self) -> Path:
        """Folder of the record part files."""
        return self.path / "records"

    @property
    def sources_dir(self) -> Path:
        """Folder of the source-text part files."""
        return self.path / "sources"

    def _parts(self, folder: Path) -> list[Path]:
        if not folder.is_dir():
            return []
        parts = []
        for p in sorted(folder.iterdir()):
            match = _PART_RE.match(p.name)
            if not match:
                continue  # temporary files of an append in flight, or left by a killed writer
            version = int(match.group(1))
            if version > SCHEMA_VERSION:
                raise SchemaVersionError(f"The dataset file {p}", version, SCHEMA_VERSION)
            parts.append(p)
        return parts

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.mkdir(parents=True, exist_ok=True)
        with open(self.path / ".lock", "a+") as lock_file:
            fcntl.flock(lock_file.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock_file.fileno(), fcntl.LOCK_UN)

    @staticmethod
    def _write_atomic(rows: list[dict[str, object]], types: dict[str, str], folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        name = f"part-v{SCHEMA_VERSION}-{stamp}-{uuid.uuid4().hex[:12]}.parquet"
        tmp = folder / f".tmp-{name}"
        write_rows(rows, types, tmp)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, folder / name)
        return folder / name

    # -- writing ------------------------------------------------------------------------------------
    def _refresh_known(self) -> None:
        """Load the keys and source hashes of part files this writer has not seen yet."""
        new_parts = [p for p in self._parts(self.records_dir) if p.name not in self._known_files]
        if new_parts:
            self._known_keys.update(read_column_tuples(new_parts, KEY_COLUMNS))
            self._known_files.update(p.name for p in new_parts)
        new_sources = [p for p in self._parts(self.sources_dir) if p.name not in self._known_files]
        if new_sources:
            self._known_sources.update(h for (h,) in read_column_tuples(new_sources, ["source_hash"]))
            self._known_files.update(p.name for p in new_sources)

    def append(self, records: Iterable[Record]) -> int:
        """Append ``records`` atomically, skipping any whose key the store already holds.

        Source texts carried by the records are stored once per source hash.

        Returns
        -------
        int
            Number of records written.
        """
        batch = list(records)
        if not batch:
            return 0
        with self._locked():
            self._refresh_known()
            fresh: list[Record] = []
            seen: set[tuple[str, ...]] = set()
            for record in batch:
                key = record.key
                if key in self._known_keys or key in seen:
                    continue
                seen.add(key)
                fresh.append(record)
            texts: dict[str, tuple[str, str, str]] = {}
            for record in fresh:
                if record.source_text is not None and record.source_hash not in self._known_sources:
                    texts.setdefault(record.source_hash, (record.family, record.variant, record.source_text))
            if texts:
                rows = [{"source_hash": h, "family": f, "variant": v, "source_text": t}
                        for h, (f, v, t) in texts.items()]
                written = self._write_atomic(rows, SOURCE_TYPES, self.sources_dir)
                self._known_files.add(written.name)
                self._known_sources.update(texts)
            if fresh:
                written = self._write_atomic([record_to_row(r) for r in fresh], RECORD_TYPES, self.records_dir)
                self._known_files.add(written.name)
                self._known_keys.update(seen)
        skipped = len(batch) - len(fresh)
        if skipped:
            logger.debug("skipped %d records already in %s", skipped, self.path)
        return len(fresh)

    def compact(self) -> int:
        """Rewrite all part files into one records file and one sources file.

        Returns
        -------
        int
            Number of records in the compacted store.
        """
        with self._locked():
            old_records = self._parts(self.records_dir)
            old_sources = self._parts(self.sources_dir)
            frame = self.scan().collect()
            sources = self.sources()
            if frame.height:
                self._write_atomic(frame.to_dicts(), RECORD_TYPES, self.records_dir)
            if sources.height:
                self._write_atomic(sources.to_dicts(), SOURCE_TYPES, self.sources_dir)
            # The new files are in place before the old ones go: a reader sees every record throughout.
            for p in old_records + old_sources:
                p.unlink()
            self._known_files.clear()
            self._known_keys.clear()
            self._known_sources.clear()
        return frame.height

    # -- reading ------------------------------------------------------------------------------------
    def scan(self) -> pl.LazyFrame:
        """Return all records as a LazyFrame in the stored layout, one row per key (the earliest)."""
        import polars as pl

        schema = polars_schema(RECORD_TYPES)
        parts = self._parts(self.records_dir)
        if not parts:
            return pl.DataFrame(schema=schema).lazy()
        frame = pl.scan_parquet(parts, schema=schema)
        return frame.sort("created_at").unique(subset=list(KEY_COLUMNS), keep="first", maintain_order=True)

    def read(self) -> pl.DataFrame:
        """Return all records as a DataFrame in the stored layout."""
        return self.scan().collect()

    def sources(self) -> pl.DataFrame:
        """Return the stored kernel sources: ``source_hash``, ``family``, ``variant``, ``source_text``."""
        import polars as pl

        schema = polars_schema(SOURCE_TYPES)
        parts = self._parts(self.sources_dir)
        if not parts:
            return pl.DataFrame(schema=schema)
        return pl.read_parquet(parts, schema=schema).unique(subset=["source_hash"], keep="first")

    def records(self) -> Iterator[Record]:
        """Yield every stored record as a :class:`Record`, with its source text where stored."""
        texts = dict(self.sources().select("source_hash", "source_text").iter_rows())
        for row in self.read().iter_rows(named=True):
            yield row_to_record(row, texts.get(row["source_hash"]))

    def keys(self) -> set[tuple[str, ...]]:
        """Return the de-duplication keys of every stored record (needs only pyarrow)."""
        return set(read_column_tuples(self._parts(self.records_dir), KEY_COLUMNS))

    def __len__(self) -> int:
        return int(self.scan().select("source_hash").collect().height)

    def __repr__(self) -> str:
        return f"Store({str(self.path)!r})"


def open_store(path: str | os.PathLike[str], *, must_exist: bool = False) -> Store:
    """Open the store at ``path``; with ``must_exist``, fail clearly if it holds no records."""
    store = Store(path)
    if must_exist and not store._parts(store.records_dir):
        raise InvalidParameterError(
            f"The dataset directory {str(path)!r} holds no kernelcast records (expected Parquet part files "
            f"under {str(store.records_dir)!r})."
        )
    return store
