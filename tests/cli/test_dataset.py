from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kernelcast.cli.main import app
from kernelcast.datasets import Store

runner = CliRunner()


@pytest.fixture(scope="module")
def pnpoly_files(shared_data: Path) -> list[Path]:
    files = sorted((shared_data / "kernel_tuner" / "pnpoly").glob("*.json.gz"))
    assert len(files) == 4
    return files


@pytest.fixture(scope="module")
def pnpoly_store(pnpoly_files, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "pnpoly"
    result = runner.invoke(app, ["dataset", "import-kernel-tuner", *map(str, pnpoly_files), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "read 16368 records" in result.output
    return out


def test_import_writes_every_entry_once(pnpoly_store, pnpoly_files):
    n_entries = 0
    for path in pnpoly_files:
        with gzip.open(path, "rt") as handle:
            n_entries += len(json.load(handle)["cache"])
    assert len(Store(pnpoly_store)) == n_entries == 16368
    again = runner.invoke(app, ["dataset", "import-kernel-tuner", *map(str, pnpoly_files), "--out", str(pnpoly_store)])
    assert again.exit_code == 0, again.output
    assert "wrote 0 new" in again.output
    assert len(Store(pnpoly_store)) == 16368


def test_info_json_counts_match_the_store(pnpoly_store):
    result = runner.invoke(app, ["dataset", "info", str(pnpoly_store), "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    frame = Store(pnpoly_store).read()
    assert info["n_records"] == frame.height
    assert info["n_ok"] == frame.filter(frame["status"] == "ok").height
    assert info["n_source_hashes"] == 1
    expected = {
        (f, p, dt, dev, s): n
        for f, p, dt, dev, s, n in frame.group_by("family", "problem_json", "dtype", "device", "status")
        .len()
        .iter_rows()
    }
    shown = {
        (g["family"], g["problem"], g["dtype"], g["device"], s): n
        for g in info["groups"]
        for s, n in g["status_counts"].items()
    }
    assert shown == expected
    cv = frame.filter((frame["status"] == "ok") & (frame["n_samples"] >= 2))["cv"]
    assert info["cv_quantiles"]["p50"] == pytest.approx(cv.quantile(0.5, interpolation="linear"))
    assert info["cv_quantiles"]["p10"] <= info["cv_quantiles"]["p50"] <= info["cv_quantiles"]["p90"]


def test_info_table_shows_devices_statuses_and_noise(pnpoly_store):
    result = runner.invoke(app, ["dataset", "info", str(pnpoly_store)])
    assert result.exit_code == 0, result.output
    for text in ("NVIDIA TITAN RTX", "runtime_error", "16368", "ok records: 15032 of 16368", "p99"):
        assert text in result.output


def test_compact_keeps_every_record(pnpoly_files, tmp_path):
    out = tmp_path / "two_batches"
    for path in pnpoly_files[:2]:
        runner.invoke(app, ["dataset", "import-kernel-tuner", str(path), "--out", str(out), "--time-unit", "s"])
    store = Store(out)
    before = store.read().sort("device", "config_json")
    assert len(list(store.records_dir.glob("part-*.parquet"))) == 2
    result = runner.invoke(app, ["dataset", "compact", str(out)])
    assert result.exit_code == 0, result.output
    assert len(list(store.records_dir.glob("part-*.parquet"))) == 1
    assert Store(out).read().sort("device", "config_json").equals(before)


def test_missing_device_is_a_clean_error_and_device_fixes_it(pnpoly_files, tmp_path):
    with gzip.open(pnpoly_files[0], "rt") as handle:
        document = json.load(handle)
    document["device_name"] = ""
    cache = tmp_path / "anonymous.json"
    cache.write_text(json.dumps(document))
    result = runner.invoke(app, ["dataset", "import-kernel-tuner", str(cache), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert "device_name" in result.output
    assert "anonymous.json" in result.output
    result = runner.invoke(
        app,
        ["dataset", "import-kernel-tuner", str(cache), "--out", str(tmp_path / "out"), "--device", "My GPU"],
    )
    assert result.exit_code == 0, result.output
    assert {r.device for r in Store(tmp_path / "out").records()} == {"My GPU"}


def test_import_kernelbench_run_folder(shared_data, tmp_path):
    out = tmp_path / "kb"
    result = runner.invoke(
        app, ["dataset", "import-kernelbench", str(shared_data / "kernelbench_timing" / "T4_modal"), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert len(Store(out)) == 500
    info = json.loads(runner.invoke(app, ["dataset", "info", str(out), "--json"]).output)
    assert info["n_records"] == 500
    assert {g["device"] for g in info["groups"]} == {"Tesla T4"}
