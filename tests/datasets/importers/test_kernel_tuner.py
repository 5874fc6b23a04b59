from __future__ import annotations

import collections
import gzip
import json
import logging
import statistics
from pathlib import Path

import pytest

from kernelcast.datasets.importers import import_kernel_tuner, read_cache
from kernelcast.datasets.importers.kernel_tuner import FAILURE_STATUSES
from kernelcast.exceptions import InvalidParameterError
from kernelcast.measurement.records import Status

SECONDS_FILES = {"RTX_2080_Ti.json.gz", "RTX_Titan.json.gz"}  # pnpoly caches whose times are in seconds


def _by_file(records):
    grouped = collections.defaultdict(list)
    for record in records:
        grouped[record.protocol["file"]].append(record)
    return grouped


@pytest.mark.parametrize("kernel", ["convolution", "gemm", "pnpoly"])
def test_every_cache_entry_becomes_one_record_with_its_status(kernel, imported, cache_files, raw_cache):
    by_file = _by_file(imported(kernel))
    assert set(by_file) == {p.name for p in cache_files(kernel)}
    for path in cache_files(kernel):
        cache = raw_cache(path)
        records = by_file[path.name]
        assert len(records) == len(cache["cache"])
        expected = collections.Counter(
            FAILURE_STATUSES[e["time"]] if isinstance(e["time"], str) else Status.OK for e in cache["cache"].values()
        )
        assert collections.Counter(r.status for r in records) == expected
        assert {r.device for r in records} == {cache["device_name"]}
        assert {r.family for r in records} == {f"kernel_tuner/{cache['kernel_name']}"}
        configs = {json.dumps(dict(r.config), sort_keys=True) for r in records}
        assert len(configs) == len(records)  # one record per configuration
        for record in records:
            assert list(record.config) == cache["tune_params_keys"]
            if record.status is Status.OK:
                assert record.stats is not None
                assert record.error is None
            else:
                assert record.samples_ms == ()
                assert record.stats is None
                assert record.error in FAILURE_STATUSES
            assert record.compile_time_ms is not None


def test_failure_records_are_kept_with_their_failure_text(imported):
    records = [r for r in imported("convolution") if r.device == "NVIDIA GeForce RTX 3090"]
    compile_errors = [r for r in records if r.status is Status.COMPILE_ERROR]
    assert len(compile_errors) == 1426
    assert {r.error for r in compile_errors} == {"CompilationFailedConfig"}
    assert all(r.compile_time_ms > 0 for r in compile_errors)


def test_samples_are_all_repetitions_in_ms(imported, cache_files, raw_cache):
    for path in cache_files("pnpoly"):
        cache = raw_cache(path)["cache"]
        scale = 1000.0 if path.name in SECONDS_FILES else 1.0
        for record in _by_file(imported("pnpoly"))[path.name][:50]:
            if record.status is not Status.OK:
                continue
            key = ",".join(str(v) for v in record.config.values())
            assert record.samples_ms == pytest.approx([t * scale for t in cache[key]["times"]], rel=1e-12)
            assert record.stats.mean_ms == pytest.approx(cache[key]["time"] * scale, rel=1e-9)
            assert record.compile_time_ms == cache[key]["compile_time"]  # compile times are ms in every file


def test_pnpoly_seconds_files_are_normalised_to_the_3090s_scale(imported):
    by_file = _by_file(imported("pnpoly"))
    medians = {name: statistics.median(r.time_ms for r in recs if r.time_ms) for name, recs in by_file.items()}
    units = {name: recs[0].protocol["time_unit_in_file"] for name, recs in by_file.items()}
    assert units == {
        "RTX_2080_Ti.json.gz": "s",
        "RTX_Titan.json.gz": "s",
        "RTX_3090.json.gz": "ms",
        "RTX_3060_laptop.json.gz": "ms",
    }
    assert {recs[0].protocol["time_unit_basis"] for recs in by_file.values()} == {"cross-device"}
    reference = medians["RTX_3090.json.gz"]
    for name in SECONDS_FILES:
        assert 1 / 3 < medians[name] / reference < 3, (name, medians[name], reference)


def test_other_kernels_are_all_detected_as_ms(imported):
    for kernel in ("convolution", "gemm"):
        assert {r.protocol["time_unit_in_file"] for r in imported(kernel)} == {"ms"}


def test_time_unit_override_applies_to_a_lone_cache(cache_files):
    path = next(p for p in cache_files("pnpoly") if p.name == "RTX_2080_Ti.json.gz")
    records = import_kernel_tuner([path], time_unit="s")
    ok = [r for r in records if r.time_ms]
    assert {r.protocol["time_unit_basis"] for r in records} == {"override"}
    assert 5.0 < statistics.median(r.time_ms for r in ok) < 100.0  # ms, as on the other GPUs


def test_lone_cache_without_unit_is_assumed_ms_with_a_warning(cache_files, caplog):
    path = next(p for p in cache_files("pnpoly") if p.name == "RTX_3090.json.gz")
    with caplog.at_level(logging.WARNING):
        records = import_kernel_tuner([path])
    assert {r.protocol["time_unit_basis"] for r in records} == {"assumed"}
    assert "assuming" in caplog.text
    assert "RTX_3090.json.gz" in caplog.text


def test_invalid_time_unit_lists_the_allowed_ones(cache_files):
    with pytest.raises(InvalidParameterError, match=r"'time_unit'.*'s', 'ms', 'us'.*Got 'min'"):
        import_kernel_tuner(cache_files("pnpoly")[:1], time_unit="min")


def test_problem_size_becomes_named_dimensions(imported):
    assert {json.dumps(dict(r.problem)) for r in imported("pnpoly")} == {'{"n0": 20000000}'}
    assert {json.dumps(dict(r.problem)) for r in imported("convolution")} == {'{"n0": 4096, "n1": 4096}'}


def test_gemm_dtype_comes_from_its_precision_parameter(imported):
    assert {r.dtype for r in imported("gemm")} == {"float32"}
    assert {r.config["PRECISION"] for r in imported("gemm")} == {32}


# -- files left open, damaged, or without a device ---------------------------------------------------
def _text(path: Path) -> str:
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        return handle.read()


def _entry_line_ends(text: str) -> list[int]:
    """Offsets just past the closing brace of each cache entry (Kernel Tuner writes one entry per line)."""
    offset = text.index('"cache": {')
    lines = text[offset:].splitlines(keepends=True)
    offset += len(lines[0])
    ends = []
    for line in lines[1:]:
        content = line.rstrip("\r\n")
        if content.startswith('"') and content.endswith(("},", "}}")):
            ends.append(offset + len(content) - 1)
        offset += len(line)
    return ends


@pytest.fixture
def pnpoly_3090(cache_files) -> Path:
    return next(p for p in cache_files("pnpoly") if p.name == "RTX_3090.json.gz")


@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize("cut", ["mid_entry", "trailing_comma"])
def test_cache_left_open_recovers_every_complete_entry(pnpoly_3090, raw_cache, tmp_path, caplog, compress, cut):
    text = _text(pnpoly_3090)
    ends = _entry_line_ends(text)
    assert len(ends) == len(raw_cache(pnpoly_3090)["cache"])
    n_complete = len(ends) * 3 // 5
    if cut == "mid_entry":
        truncated = text[: ends[n_complete - 1] + (ends[n_complete] - ends[n_complete - 1]) // 2]
    else:
        truncated = text[: ends[n_complete - 1]] + ","  # what Kernel Tuner leaves after writing an entry
        assert truncated.endswith("},")
    target = tmp_path / ("open.json.gz" if compress else "open.json")
    target.write_bytes(gzip.compress(truncated.encode()) if compress else truncated.encode())

    with caplog.at_level(logging.WARNING):
        cache = read_cache(target)
    assert cache.recovered
    assert list(cache.entries) == list(raw_cache(pnpoly_3090)["cache"])[:n_complete]
    assert f"recovered {n_complete} complete entries" in caplog.text
    records = import_kernel_tuner([target], time_unit="ms")
    assert len(records) == n_complete
    assert {r.protocol["recovered_from_open_cache"] for r in records} == {True}


def test_gzip_stream_cut_short_recovers_a_prefix(pnpoly_3090, raw_cache, tmp_path):
    data = pnpoly_3090.read_bytes()
    target = tmp_path / "cut.json.gz"
    target.write_bytes(data[: len(data) // 2])
    cache = read_cache(target)
    keys = list(raw_cache(pnpoly_3090)["cache"])
    assert cache.recovered
    assert 0 < len(cache.entries) < len(keys)
    assert list(cache.entries) == keys[: len(cache.entries)]
    assert cache.entries == {k: raw_cache(pnpoly_3090)["cache"][k] for k in cache.entries}


def test_damage_in_the_middle_is_an_error_not_a_truncation(pnpoly_3090, tmp_path):
    text = _text(pnpoly_3090)
    ends = _entry_line_ends(text)
    middle = ends[len(ends) // 3]  # just past an entry, outside any string
    target = tmp_path / "damaged.json"
    target.write_text(text[:middle] + " #garbage# " + text[middle:])
    with pytest.raises(InvalidParameterError, match=r"damaged\.json.*'cache'.*damaged, not just cut short"):
        read_cache(target)


def _rewrite(source: Path, target: Path, change) -> Path:
    document = json.loads(_text(source))
    change(document)
    target.write_text(json.dumps(document))
    return target


def test_empty_device_name_is_an_error_naming_file_and_field(pnpoly_3090, tmp_path):
    target = _rewrite(pnpoly_3090, tmp_path / "nodevice.json", lambda d: d.update(device_name=""))
    with pytest.raises(InvalidParameterError, match=r"nodevice\.json.*'device_name' is empty"):
        import_kernel_tuner([target])


def test_device_override_names_the_device_and_keeps_the_file_value(pnpoly_3090, tmp_path):
    target = _rewrite(pnpoly_3090, tmp_path / "nodevice.json", lambda d: d.update(device_name=""))
    records = import_kernel_tuner([target], device="RTX 3090 (lab box 2)")
    assert len(records) == 4092
    assert {r.device for r in records} == {"RTX 3090 (lab box 2)"}
    assert {r.fingerprint["device_name"] for r in records} == {""}
    records = import_kernel_tuner([pnpoly_3090], device="renamed")
    assert {r.device for r in records} == {"renamed"}
    assert {r.fingerprint["device_name"] for r in records} == {"NVIDIA GeForce RTX 3090"}


def test_unknown_failure_string_is_an_error_naming_the_entry(pnpoly_3090, tmp_path):
    def corrupt(document):
        first = next(iter(document["cache"]))
        document["cache"][first]["time"] = "OutOfCoffeeConfig"

    target = _rewrite(pnpoly_3090, tmp_path / "odd.json", corrupt)
    with pytest.raises(InvalidParameterError, match=r"odd\.json.*cache\['0,32,1,0'\]\.time.*OutOfCoffeeConfig"):
        import_kernel_tuner([target])


def test_missing_header_field_is_an_error_naming_it(pnpoly_3090, tmp_path):
    target = _rewrite(pnpoly_3090, tmp_path / "nokernel.json", lambda d: d.pop("kernel_name"))
    with pytest.raises(InvalidParameterError, match=r"nokernel\.json.*'kernel_name' is missing"):
        import_kernel_tuner([target])


def test_time_and_times_in_different_units_is_an_error(pnpoly_3090, tmp_path):
    def rescale(document):
        for entry in document["cache"].values():
            if "times" in entry:
                entry["times"] = [t * 1000 for t in entry["times"]]

    target = _rewrite(pnpoly_3090, tmp_path / "mixed.json", rescale)
    with pytest.raises(InvalidParameterError, match=r"mixed\.json.*'time'.*different units"):
        import_kernel_tuner([target])


def test_not_json_at_all_is_an_error_naming_the_file(tmp_path):
    target = tmp_path / "notes.json"
    target.write_text("device_name: my gpu\n")
    with pytest.raises(InvalidParameterError, match=r"notes\.json.*format is unknown"):
        import_kernel_tuner([target])
