from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import polars as pl
import pytest

from kernelcast.datasets import Store, open_store
from kernelcast.datasets.store import KEY_COLUMNS
from kernelcast.exceptions import InvalidParameterError, SchemaVersionError
from kernelcast.measurement.records import CompiledInfo, Record, Status, source_hash

SOURCE_A = "@triton.jit\ndef kernel_a(x_ptr):\n    pass\n"
SOURCE_B = "@triton.jit\ndef kernel_b(x_ptr):\n    pass\n"

# A writer process builds records the same way, so tests and writers agree on keys.
RECORD_FACTORY = textwrap.dedent(
    """
    from kernelcast.measurement.records import Record, Status

    def make(batch, index):
        return Record(
            family="test/copy", variant="default", source_hash="0123456789abcdef",
            config={"batch": batch, "index": index}, problem={"n0": 1024}, dtype="float32",
            device="test-device", status=Status.OK, samples_ms=(1.0 + index * 1e-3, 1.1, 0.9),
        )
    """
)


def make_record(index: int, *, text: str | None = SOURCE_A, status: Status = Status.OK, device: str = "gpu0") -> Record:
    ok = status is Status.OK
    return Record(
        family="test/copy",
        variant="default",
        source_hash=source_hash(text or SOURCE_A),
        config={"BLOCK": 64 * (index + 1), "num_warps": 4},
        problem={"n0": 4096},
        dtype="float16",
        device=device,
        status=status,
        samples_ms=(0.5 + index * 0.01, 0.51 + index * 0.01, 0.49 + index * 0.01) if ok else (),
        compiled=CompiledInfo(n_regs=32 + index, shared_bytes=1024) if ok else None,
        compile_time_ms=12.5,
        error=None if ok else "ptxas: out of registers",
        protocol={"warmup_ms": 25, "rep_ms": 100},
        fingerprint={"gpu": "test"},
        source_text=text,
    )


def test_records_round_trip_and_sources_are_stored_once_per_hash(tmp_path):
    records = [make_record(i) for i in range(3)] + [make_record(i, text=SOURCE_B) for i in range(3, 5)]
    records.append(make_record(5, status=Status.OUT_OF_RESOURCES))
    store = open_store(tmp_path / "ds")
    assert store.append(records) == len(records)
    back = sorted(store.records(), key=lambda r: r.key)
    assert back == sorted(records, key=lambda r: r.key)
    assert all(b.source_text in (SOURCE_A, SOURCE_B) for b in back)
    sources = store.sources()
    assert sorted(sources["source_text"].to_list()) == sorted([SOURCE_A, SOURCE_B])
    # A later batch with a known source adds records but no second copy of the text.
    assert store.append([make_record(10), make_record(11, text=SOURCE_B)]) == 2
    assert Store(store.path).sources().height == 2
    assert len(list(store.sources_dir.glob("part-*.parquet"))) == 1


def test_duplicates_within_and_across_batches_are_stored_once(tmp_path):
    store = open_store(tmp_path / "ds")
    first = make_record(0)
    assert store.append([first, make_record(0), make_record(1)]) == 2
    assert store.append([make_record(0), make_record(1)]) == 0
    assert Store(store.path).append([make_record(1), make_record(2)]) == 1  # a fresh writer dedupes too
    assert len(store) == 3
    assert {r.created_at for r in store.records() if r.key == first.key} == {first.created_at}
    # The same candidate on another device is another record.
    assert store.append([make_record(0, device="gpu1")]) == 1
    assert len(Store(store.path)) == 4


def _run_writer(store_path: Path, body: str, *args: str) -> subprocess.Popen:
    """Start a Python process running ``body`` with ``make`` and ``Store`` defined and the store path in argv[1]."""
    script = RECORD_FACTORY + "\nfrom kernelcast.datasets.store import Store\n" + textwrap.dedent(body)
    return subprocess.Popen([sys.executable, "-c", script, str(store_path), *args], stderr=subprocess.PIPE, text=True)


def test_concurrent_writers_store_the_union_without_duplicates(tmp_path):
    store_path = tmp_path / "ds"
    writer = """
        import sys
        store = Store(sys.argv[1])
        first = int(sys.argv[2])
        for start in range(first, first + 100, 10):
            store.append([make(0, i) for i in range(start, start + 10)])
    """
    # Writer w appends indices [50w, 50w + 100) in batches of 10: each overlaps the next writer by half.
    processes = [_run_writer(store_path, writer, str(50 * w)) for w in range(4)]
    for process in processes:
        _, stderr = process.communicate(timeout=120)
        assert process.returncode == 0, stderr
    store = Store(store_path)
    assert len(store) == 250
    assert {r.config["index"] for r in store.records()} == set(range(250))
    raw = pl.read_parquet(sorted(store.records_dir.glob("part-*.parquet")))
    assert raw.height == 250  # no duplicate was written, not merely hidden by the reader
    assert raw.select(KEY_COLUMNS).unique().height == 250


def test_a_writer_killed_mid_append_leaves_only_whole_batches(tmp_path):
    store_path = tmp_path / "ds"
    batch_size = 4000
    process = _run_writer(
        store_path,
        f"""
        import sys
        store = Store(sys.argv[1])
        for batch in range(10_000):
            store.append([make(batch, i) for i in range({batch_size})])
        """,
    )
    deadline = time.monotonic() + 60
    records_dir = store_path / "records"
    while not list(records_dir.glob("part-*.parquet")) and time.monotonic() < deadline:
        assert process.poll() is None, process.stderr.read()
        time.sleep(0.02)
    time.sleep(0.3)  # into a later batch: building, writing, or renaming it
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL
    (records_dir / ".tmp-part-v1-20990101T000000-deadbeef0000.parquet").write_bytes(b"PAR1 half a file")

    store = Store(store_path)
    frame = store.read()
    assert frame.height > 0
    assert frame.height % batch_size == 0
    per_batch = (
        frame.select(pl.col("config_json").str.json_path_match("$.batch").alias("batch")).group_by("batch").len()
    )
    assert set(per_batch["len"].to_list()) == {batch_size}
    # The lock died with the writer: the next writer appends at once.
    assert store.append([make_record(0)]) == 1


def test_a_part_file_of_a_newer_schema_is_refused_naming_both_versions(tmp_path):
    store = open_store(tmp_path / "ds")
    store.append([make_record(0)])
    part = next(store.records_dir.glob("part-v1-*.parquet"))
    shutil.copy(part, store.records_dir / "part-v99-20990101T000000-0123456789ab.parquet")
    with pytest.raises(SchemaVersionError, match=r"part-v99-.*schema version 99.*at most version 1"):
        Store(store.path).read()


def test_compaction_keeps_every_record(tmp_path):
    store = open_store(tmp_path / "ds")
    for start in range(0, 12, 3):
        store.append([make_record(i, text=SOURCE_A if i % 2 else SOURCE_B) for i in range(start, start + 3)])
    before = sorted(store.records(), key=lambda r: r.key)
    assert len(list(store.records_dir.glob("part-*.parquet"))) == 4
    assert store.compact() == 12
    assert len(list(store.records_dir.glob("part-*.parquet"))) == 1
    assert len(list(store.sources_dir.glob("part-*.parquet"))) == 1
    after = sorted(Store(store.path).records(), key=lambda r: r.key)
    assert after == before
    assert [r.source_text for r in after] == [r.source_text for r in before]
    assert store.append([make_record(3)]) == 0  # compaction keeps de-duplication working


def test_open_store_that_must_exist_says_what_is_missing(tmp_path):
    with pytest.raises(InvalidParameterError, match=r"holds no kernelcast records"):
        open_store(tmp_path / "empty", must_exist=True)
