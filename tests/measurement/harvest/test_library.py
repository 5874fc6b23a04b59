"""The kernel library file: round trip, and errors that name the file, the line and the field."""

from __future__ import annotations

import gzip
import json

import pytest

from kernelcast.exceptions import InvalidParameterError, SchemaVersionError
from kernelcast.measurement.harvest.library import (
    FORMAT_VERSION,
    ArgSpec,
    HarvestedKernel,
    LaunchConfig,
    library_header,
    read_header,
    read_library,
    write_library,
)
from kernelcast.measurement.records import source_hash

SOURCE = "@triton.jit\ndef k(in_ptr0, out_ptr0, xnumel, XBLOCK: tl.constexpr):\n    pass\n"


def _kernel(source: str = SOURCE) -> HarvestedKernel:
    return HarvestedKernel(
        kernel_id=source_hash(source), kernel_name="k", kind="pointwise", heuristic="pointwise", grid_type="Grid1D",
        dtype="float16", source=source,
        args=(ArgSpec("in_ptr0", "tensor", "float16", (4, 3), (3, 1), 0, 24, "in", min=-1.0, max=2.0),
              ArgSpec("out_ptr0", "tensor", "float16", (4, 3), (3, 1), 0, 24, "out"),
              ArgSpec("xnumel", "scalar", "int", value=12)),
        configs=(LaunchConfig({"XBLOCK": 16}, 1, 1), LaunchConfig({"XBLOCK": 8}, 1, 1)),
        launched=LaunchConfig({"XBLOCK": 16}, 1, 1),
        programs=({"program": "gelu", "shape": "4x3", "dtype": "float16"},),
    )


@pytest.mark.parametrize("name", ["lib.jsonl", "lib.jsonl.gz"])
def test_round_trip(tmp_path, name):
    kernel = _kernel()
    other = _kernel(SOURCE + "# another\n")
    assert write_library(tmp_path / name, library_header(device="x"), [kernel, other, kernel]) == 2
    loaded = read_library(tmp_path / name)
    assert loaded == {kernel.kernel_id: kernel, other.kernel_id: other}
    assert read_header(tmp_path / name)["format_version"] == FORMAT_VERSION
    assert loaded[kernel.kernel_id].numels == {"xnumel": 12}
    assert kernel.args[0].span == 12 and kernel.args[1].written


def _write(path, header, *lines) -> None:
    with gzip.open(path, "wt") if path.name.endswith(".gz") else open(path, "w") as handle:
        handle.write(json.dumps(header) + "\n")
        for line in lines:
            handle.write((line if isinstance(line, str) else json.dumps(line)) + "\n")


def test_missing_file_is_named(tmp_path):
    with pytest.raises(InvalidParameterError, match=r"kernel library '.*nope.jsonl' does not exist"):
        read_library(tmp_path / "nope.jsonl")


def test_header_must_name_the_format(tmp_path):
    path = tmp_path / "bad.jsonl"
    _write(path, {"format": "something else"})
    with pytest.raises(InvalidParameterError, match=r"'.*bad.jsonl' must start with a header line whose field 'format'"):
        read_library(path)


def test_newer_format_is_refused(tmp_path):
    path = tmp_path / "new.jsonl"
    _write(path, library_header() | {"format_version": FORMAT_VERSION + 1})
    with pytest.raises(SchemaVersionError, match="schema version 2"):
        read_library(path)


def test_a_line_lacking_a_field_names_file_line_and_field(tmp_path):
    path = tmp_path / "lib.jsonl"
    data = _kernel().to_dict()
    del data["args"]
    _write(path, library_header(), data)
    with pytest.raises(InvalidParameterError, match=r"lib.jsonl', line 2, lacks the field 'args'"):
        read_library(path)


def test_kernel_id_must_be_the_source_hash(tmp_path):
    path = tmp_path / "lib.jsonl"
    _write(path, library_header(), _kernel().to_dict() | {"kernel_id": "0000000000000000"})
    with pytest.raises(InvalidParameterError, match=r"field 'kernel_id' must be the source hash of 'source'"):
        read_library(path)


def test_bad_argument_role_and_json(tmp_path):
    data = _kernel().to_dict()
    data["args"][0]["role"] = "sideways"
    path = tmp_path / "lib.jsonl"
    _write(path, library_header(), data)
    with pytest.raises(InvalidParameterError, match=r"'role' of argument 'in_ptr0' must be one of 'in', 'out', 'in_out'"):
        read_library(path)
    _write(path, library_header(), "{not json")
    with pytest.raises(InvalidParameterError, match=r"line 2, is not JSON"):
        read_library(path)
