from __future__ import annotations

import collections
import gzip
import json
import statistics
from pathlib import Path

import pytest

from kernelcast.datasets.importers import import_kernel_tuner, read_ktt
from kernelcast.datasets.importers.ktt import KTT_STATUSES
from kernelcast.exceptions import InvalidParameterError
from kernelcast.measurement.records import Status


@pytest.fixture(scope="module")
def ktt_files(kernel_tuner_dir: Path) -> list[Path]:
    files = sorted((kernel_tuner_dir / "ktt").glob("*.json.gz"))
    assert len(files) == 4
    return files


def _load(path: Path) -> dict:
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        return json.load(handle)


def test_every_result_becomes_a_record_with_its_status(ktt_files):
    for path in ktt_files:
        document = _load(path)
        records = read_ktt(path)
        assert len(records) == len(document["Results"])
        expected = collections.Counter(KTT_STATUSES[r["Status"]] for r in document["Results"])
        assert collections.Counter(r.status for r in records) == expected
        assert expected[Status.RUNTIME_ERROR] > 0  # the failures of the real files are kept
        assert {r.device for r in records} == {document["Metadata"]["Device"]}
        assert {r.origin for r in records} == {"import:ktt"}


def test_durations_are_converted_from_microseconds(ktt_files):
    path = ktt_files[0]
    document = _load(path)
    records = read_ktt(path)
    for result, record in list(zip(document["Results"], records))[:200]:
        assert record.config == {p["Name"]: p["Value"] for p in result["Configuration"]}
        if result["Status"] == "Ok":
            assert record.samples_ms == pytest.approx((result["ComputationResults"][0]["Duration"] / 1000.0,))
            assert record.compiled.n_regs == result["ComputationResults"][0]["CompilationData"]["RegistersCount"]
        else:
            assert record.samples_ms == ()
            assert record.error == f"KTT status {result['Status']}"


def test_ktt_and_kernel_tuner_agree_on_the_same_gpu(ktt_files, imported):
    """KTT's convolution on the 3090 runs in the same milliseconds as Kernel Tuner's cache of it."""
    ktt = read_ktt(next(p for p in ktt_files if p.name == "KTConvolutionOutput_3090.json.gz"))
    kernel_tuner = [r for r in imported("convolution") if r.device == "NVIDIA GeForce RTX 3090"]
    ktt_median = statistics.median(r.time_ms for r in ktt if r.time_ms)
    kernel_tuner_median = statistics.median(r.time_ms for r in kernel_tuner if r.time_ms)
    assert 0.5 < ktt_median / kernel_tuner_median < 2.0


def test_the_kernel_tuner_entry_point_detects_ktt_files(ktt_files):
    records = import_kernel_tuner(ktt_files[-1:])
    assert records
    assert {r.family for r in records} == {"ktt/Pnpoly"}


def _rewrite(source: Path, target: Path, change) -> Path:
    document = _load(source)
    change(document)
    target.write_text(json.dumps(document))
    return target


def test_missing_time_unit_is_an_error_naming_the_field(ktt_files, tmp_path):
    target = _rewrite(ktt_files[-1], tmp_path / "nounit.json", lambda d: d["Metadata"].pop("TimeUnit"))
    with pytest.raises(InvalidParameterError, match=r"nounit\.json.*'Metadata\.TimeUnit'"):
        read_ktt(target)
    records = read_ktt(target, time_unit="us")
    assert {r.protocol["time_unit_basis"] for r in records} == {"override"}


def test_unknown_status_is_an_error_naming_the_result(ktt_files, tmp_path):
    target = _rewrite(ktt_files[-1], tmp_path / "odd.json", lambda d: d["Results"][3].update(Status="Melted"))
    with pytest.raises(InvalidParameterError, match=r"odd\.json.*'Results\[3\]\.Status' is 'Melted'"):
        read_ktt(target)


def test_missing_device_needs_an_override(ktt_files, tmp_path):
    target = _rewrite(ktt_files[-1], tmp_path / "nodevice.json", lambda d: d["Metadata"].pop("Device"))
    with pytest.raises(InvalidParameterError, match=r"nodevice\.json.*'Metadata\.Device'"):
        read_ktt(target)
    assert {r.device for r in read_ktt(target, device="RTX 3090")} == {"RTX 3090"}
