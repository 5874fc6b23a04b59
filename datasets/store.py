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

import polars as pl
from kernelcast.measurement.records import (
    ROW_COLUMNS,
    SCHEMA_VERSION,
    Record,
    record_to_row,
    row_to_record,
)

from kernelcast.exceptions import InvalidParameterError, SchemaVersionError

logger = logging.getLogger(__name__)

KEY_COLUMNS: tuple[str, ...] = ("source_hash", "config_json", "problem_json", "dtype", "device")
"""Columns that identify a candidate on a device; a store holds at most one record per key."""

RECORD_SCHEMA: dict[str, pl.DataType] = {
    "schema_version": pl.Int32(),
    "family": pl.String(),
    "variant": pl.String(),
    "source_hash": pl.String(),
    "config_json": pl.String(),
    "problem_json": pl.String(),
    "dtype": pl.String(),
    "device": pl.String(),
    "status": pl.String(),
    "time_ms": pl.Float64(),
    "samples_ms": pl.List(pl.Float64()),
    "mean_ms": pl.Float64(),
    "min_ms": pl.Float64(),
    "max_ms": pl.Float64(),
    "iqr_ms": pl.Float64(),
    "cv": pl.Float64(),
    "rse_median": pl.Float64(),
    "n_samples": pl.Int32(),
    "n_regs": pl.Int32(),
    "n_spills": pl.Int32(),
    "shared_bytes": pl.Int64(),
    "num_warps": pl.Int32(),
    "num_stages": pl.Int32(),
    "compile_time_ms": pl.Float64(),
    "error": pl.String(),
    "protocol_json": pl.String(),
    "fingerprint_json": pl.String(),
    "origin": pl.String(),
    "created_at": pl.String(),
}
assert tuple(RECORD_SCHEMA) == ROW_COLUMNS  # noqa: S101 - import-time consistency of two constants

SOURCE_SCHEMA: dict[str, pl.DataType] = {
    "source_hash": pl.String(),
    "family": pl.String(),
    "variant": pl.String(),
    "source_text": pl.String(),
}

_PART_RE = re.compile(r"^part-v(\d+)-.*\.parquet$")


def records_frame(records: Iterable[Record]) -> pl.DataFrame:
    """Return ``records`` as a DataFrame with the stored column layout."""
    rows = [record_to_row(r) for r in records]
    return pl.DataFrame(rows, schema=RECORD_SCHEMA, orient="row") if rows else pl.DataFrame(
        schema=RECORD_SCHEMA
    )


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
    def _write_atomic(frame: pl.DataFrame, folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        name = f"part-v{SCHEMA_VERSION}-{stamp}-{uuid.uuid4().hex[:12]}.parquet"
        tmp = folder / f".tmp-{name}"
        frame.write_parquet(tmp, compression="zstd", compression_level=9, statistics=True)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, folder / name)
        return folder / name

    # -- writing ------------------------------------------------------------------------------------
    def _refresh_known(self) -> None:
        """Load the keys and source hashes of part files this writer has not seen yet."""
        new_parts = [p for p in self._parts(self.records_dir) if p.name not in self._known_files]
        if new_parts:
            keys = pl.concat([pl.read_parquet(p, columns=list(KEY_COLUMNS)) for p in new_parts])
            self._known_keys.update(keys.iter_rows())
            self._known_files.update(p.name for p in new_parts)
        new_sources = [p for p in self._parts(self.sources_dir) if p.name not in self._known_files]
        if new_sources:
            hashes = pl.concat([pl.read_parquet(p, columns=["source_hash"]) for p in new_sources])
            self._known_sources.update(hashes["source_hash"].to_list())
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
                frame = pl.DataFrame(
                    [(h, f, v, t) for h, (f, v, t) in texts.items()], schema=SOURCE_SCHEMA, orient="row"
                )
                written = self._write_atomic(frame, self.sources_dir)
                self._known_files.add(written.name)
                self._known_sources.update(texts)
            if fresh:
                written = self._write_atomic(records_frame(fresh), self.records_dir)
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
                self._write_atomic(frame, self.records_dir)
            if sources.height:
                self._write_atomic(sources, self.sources_dir)
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
        parts = self._parts(self.records_dir)
        if not parts:
            return pl.DataFrame(schema=RECORD_SCHEMA).lazy()
        frame = pl.scan_parquet(parts, schema=RECORD_SCHEMA)
        return frame.sort("created_at").unique(subset=list(KEY_COLUMNS), keep="first", maintain_order=True)

    def read(self) -> pl.DataFrame:
        """Return all records as a DataFrame in the stored layout."""
        return self.scan().collect()

    def sources(self) -> pl.DataFrame:
        """Return the stored kernel sources: ``source_hash``, ``family``, ``variant``, ``source_text``."""
        parts = self._parts(self.sources_dir)
        if not parts:
            return pl.DataFrame(schema=SOURCE_SCHEMA)
        return pl.read_parquet(parts, schema=SOURCE_SCHEMA).unique(subset=["source_hash"], keep="first")

    def records(self) -> Iterator[Record]:
        """Yield every stored record as a :class:`Record`, with its source text where stored."""
        texts = dict(self.sources().select("source_hash", "source_text").iter_rows())
        for row in self.read().iter_rows(named=True):
            yield row_to_record(row, texts.get(row["source_hash"]))

    def keys(self) -> set[tuple[str, ...]]:
        """Return the de-duplication keys of every stored record."""
        return set(self.scan().select(list(KEY_COLUMNS)).collect().iter_rows())

    def __len__(self) -> int:
        return self.scan().select(pl.len()).collect().item()

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
