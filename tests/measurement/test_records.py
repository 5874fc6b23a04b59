"""The record schema: statistics, statuses, no infinite times, and the row round trip."""

import math

import pytest

from kernelcast.exceptions import InvalidParameterError, SchemaVersionError
from kernelcast.measurement.records import (
    ROW_COLUMNS,
    SCHEMA_VERSION,
    CompiledInfo,
    Record,
    Status,
    TimingStats,
    record_to_row,
    row_to_record,
    source_hash,
)


def make_record(**overrides):
    fields = dict(family="matmul", variant="blocked", source_hash=source_hash("src"), config={"BLOCK_M": 64},
                  problem={"M": 8, "N": 8, "K": 8}, dtype="float16", device="NVIDIA H200", status="ok",
                  samples_ms=(1.0, 1.2, 0.9, 1.1), compiled=CompiledInfo(n_regs=96, n_spills=0, shared_bytes=49152,
                                                                          num_warps=4, num_stages=3),
                  compile_time_ms=250.0, protocol={"target_rse": 0.005}, fingerprint={"name": "NVIDIA H200"},
                  source_text="src")
    fields.update(overrides)
    return Record(**fields)


def test_timing_stats_from_samples():
    stats = TimingStats.from_samples([1.0, 2.0, 3.0, 4.0])
    assert stats.median_ms == 2.5
    assert stats.mean_ms == 2.5
    assert stats.min_ms == 1.0 and stats.max_ms == 4.0
    assert stats.iqr_ms == pytest.approx(1.5)
    assert stats.cv == pytest.approx(math.sqrt(5 / 3) / 2.5)
    assert stats.rse_median == pytest.approx(1.2533 * math.sqrt(5 / 3) / 2 / 2.5)
    assert stats.n_samples == 4


def test_ok_record_gets_stats_and_time():
    record = make_record()
    assert record.status is Status.OK
    assert record.time_ms == pytest.approx(1.05)
    assert record.stats.n_samples == 4


def test_failure_record_has_no_time():
    record = make_record(status="timeout", samples_ms=(), error="no result within 60 s")
    assert record.time_ms is None
    assert record.stats is None


def test_infinite_times_are_refused():
    with pytest.raises(InvalidParameterError, match="failures are statuses, not infinite times"):
        make_record(samples_ms=(1.0, math.inf))


def test_unknown_status_lists_the_allowed_ones():
    with pytest.raises(InvalidParameterError, match="'status' of a record must be one of 'ok', 'compile_error'.*Got 'great'"):
        make_record(status="great")


def test_row_round_trip_preserves_every_field():
    record = make_record()
    row = record_to_row(record)
    assert tuple(row) == ROW_COLUMNS
    back = row_to_record(row, source_text="src")
    assert back == record
    assert back.source_text == "src"
    assert back.key == record.key


def test_key_is_canonical_over_config_order():
    a = make_record(config={"A": 1, "B": 2})
    b = make_record(config={"B": 2, "A": 1})
    assert a.key == b.key


def test_newer_schema_rows_are_refused_naming_both_versions():
    row = record_to_row(make_record())
    row["schema_version"] = SCHEMA_VERSION + 1
    with pytest.raises(SchemaVersionError, match=f"schema version {SCHEMA_VERSION + 1}.*at most version {SCHEMA_VERSION}"):
        row_to_record(row)
