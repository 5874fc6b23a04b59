from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import pytest

from kernelcast.datasets import open_store
from kernelcast.datasets.importers import import_kernelbench, read_kernelbench_file
from kernelcast.datasets.importers.kernelbench import mode_from_filename
from kernelcast.exceptions import InvalidParameterError
from kernelcast.measurement.records import Status


@pytest.fixture(scope="module")
def timing_dir(shared_data: Path) -> Path:
    return shared_data / "kernelbench_timing"


def _entries(path: Path):
    document = json.loads(path.read_text())
    return [(level, problem, entry) for level, problems in document.items() for problem, entry in problems.items()]


def test_modes_come_from_file_names():
    assert mode_from_filename("baseline_time_torch.json") == "torch_eager"
    assert mode_from_filename("baseline_time_torch_compile_inductor_default.json") == "torch_compile_inductor_default"
    with pytest.raises(InvalidParameterError, match=r"'results\.json' does not match"):
        mode_from_filename("results.json")


def test_a_run_folder_imports_every_entry_with_honest_statistics(timing_dir):
    run = timing_dir / "L40S_matx3"
    records = import_kernelbench(run)
    files = sorted(run.glob("baseline_time_*.json"))
    entries = {(f.name, level, problem): entry for f in files for level, problem, entry in _entries(f)}
    assert len(records) == len(entries) == 6 * 250
    by_key = {(r.protocol["file"], r.family.split("/")[1], r.family.split("/")[2] + ".py"): r for r in records}
    assert set(by_key) == set(entries)
    for key, entry in entries.items():
        record = by_key[key]
        assert record.device == "NVIDIA L40S"
        assert record.problem == {"run": "L40S_matx3"}
        assert record.variant == record.config["mode"] == mode_from_filename(key[0])
        if entry is None:  # a baseline that did not run is a failure record
            assert record.status is Status.RUNTIME_ERROR
            assert record.stats is None
            continue
        assert record.status is Status.OK
        assert record.samples_ms == ()  # KernelBench keeps no samples, and none are invented
        assert record.time_ms == entry["mean"]  # time_ms is the mean: the protocol says so
        assert record.protocol["statistic"] == "mean"
        assert record.stats.cv == pytest.approx(entry["std"] / entry["mean"])
        assert record.stats.n_samples == entry["num_trials"]
        assert (record.stats.min_ms, record.stats.max_ms) == (entry["min"], entry["max"])
        assert math.isnan(record.stats.iqr_ms)
    assert sum(r.status is Status.RUNTIME_ERROR for r in records) == sum(e is None for e in entries.values()) == 4
    source_lines = set((timing_dir / "SOURCE.txt").read_text().splitlines())
    for record in records:  # provenance: the commit SOURCE.txt gives for the record's file
        line = f"{record.protocol['source_commit']}:results/timing/L40S_matx3/{record.protocol['file']}"
        assert line in source_lines


def test_device_is_each_entrys_hardware_in_a_mixed_run(timing_dir, caplog):
    path = timing_dir / "H100_modal" / "baseline_time_torch.json"
    with caplog.at_level(logging.WARNING):
        records = read_kernelbench_file(path)
    entries = _entries(path)
    hardware = {(level, problem): e["hardware"] for level, problem, e in entries if e is not None}
    assert {r.device for r in records} == {"NVIDIA H100 80GB HBM3", "NVIDIA H200"}
    for record in records:
        _, level, problem = record.family.split("/")
        assert record.device == hardware[(level, problem + ".py")]
    # null entries name no GPU and the run names two: they are skipped, and the log says so
    n_null = sum(e is None for _, _, e in entries)
    assert len(records) == len(entries) - n_null
    assert n_null == 4
    assert "skipped 4 null entries" in caplog.text


def test_a_file_with_only_means_is_an_error_naming_the_field(timing_dir):
    path = timing_dir / "A6000_babel_new" / "baseline_time_torch.json"
    with pytest.raises(InvalidParameterError, match=r"A6000_babel_new/baseline_time_torch\.json.*\.std' is missing"):
        read_kernelbench_file(path)


def test_skip_unreadable_goes_on_past_such_a_file(timing_dir, tmp_path, caplog):
    run = tmp_path / "timing" / "A6000_babel_new"
    run.mkdir(parents=True)
    (run / "baseline_time_torch.json").write_bytes(
        (timing_dir / "A6000_babel_new/baseline_time_torch.json").read_bytes()
    )
    good = tmp_path / "timing" / "T4_modal"
    good.mkdir()
    (good / "baseline_time_torch.json").write_bytes((timing_dir / "T4_modal/baseline_time_torch.json").read_bytes())
    with pytest.raises(InvalidParameterError, match="std"):
        import_kernelbench(tmp_path / "timing")
    with caplog.at_level(logging.WARNING):
        records = import_kernelbench(tmp_path / "timing", skip_unreadable=True)
    assert {r.device for r in records} == {"Tesla T4"}
    assert len(records) == 250
    assert "skipped" in caplog.text
    assert "A6000_babel_new" in caplog.text


def test_records_survive_the_store(timing_dir, tmp_path):
    records = read_kernelbench_file(timing_dir / "T4_modal" / "baseline_time_torch.json")
    store = open_store(tmp_path / "kb")
    assert store.append(records) == len(records)
    frame = store.read()
    ok = frame.filter(frame["status"] == "ok")
    assert ok["samples_ms"].list.len().max() == 0
    stored = {(r.family, r.device): r for r in store.records()}
    for record in records:
        again = stored[(record.family, record.device)]
        assert again.time_ms == record.time_ms
        assert again.protocol == record.protocol
