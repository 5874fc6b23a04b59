"""The Featurizer: stable names, kinds of knobs, device table, derived quantities, persistence."""

from __future__ import annotations

import json
import math

import numpy as np
import polars as pl
import pytest

from kernelcast.datasets.store import records_frame
from kernelcast.exceptions import NotFittedError, SchemaVersionError
from kernelcast.measurement.records import Record, Status
from kernelcast.surrogate.devices import DEVICE_TABLE, device_spec
from kernelcast.surrogate.features import FEATURE_SCHEMA_VERSION, Featurizer, check_feature_schema


def _kt_records() -> pl.DataFrame:
    common = dict(family="kernel_tuner/convolution_kernel", variant="default", source_hash="0123456789abcdef",
                  problem={"n0": 4096, "n1": 4096}, dtype="float32")
    records = [
        Record(**common, config={"block_size_x": 16, "read_only": 1, "mode": "a"}, device="NVIDIA GeForce RTX 3090",
               status=Status.OK, samples_ms=(2.0, 2.1)),
        Record(**common, config={"block_size_x": 32, "read_only": 0, "mode": "b"}, device="NVIDIA TITAN RTX",
               status=Status.COMPILE_ERROR, error="too many registers"),
    ]
    return records_frame(records)


def test_feature_names_and_kinds(record_factory):
    frame = pl.concat([record_factory(configs_per_task=5, devices=["NVIDIA H100 80GB HBM3"],
                                      shapes=[(1024, 1024, 1024)]), _kt_records()])
    fz = Featurizer().fit(frame)
    names = fz.feature_names_
    assert names[:4] == ["family", "variant", "dtype", "dtype.bytes"]
    assert "config.BLOCK_M" in names
    assert "config.block_size_x" in names
    assert "problem.n0" in names
    assert "config.mode" in fz.categorical_features_  # strings become categorical codes
    assert "config.read_only" not in fz.categorical_features_
    X = fz.transform(frame)
    assert X.shape == (frame.height, len(names))
    kt = X[-1]
    assert math.isnan(kt[names.index("config.BLOCK_M")])  # a knob of another family is missing
    assert kt[names.index("device.sm_count")] == 72  # TITAN RTX
    assert kt[names.index("derived.flops")] == pytest.approx(2 * 4096 * 4096 * 225)  # the Kernel Tuner work model
    mm = X[0]
    cfg = json.loads(frame["config_json"][0])
    assert mm[names.index("derived.flops")] == pytest.approx(2 * 1024**3)
    expected_tiles = math.ceil(1024 / cfg["BLOCK_M"]) * math.ceil(1024 / cfg["BLOCK_N"])
    assert mm[names.index("derived.tiles")] == expected_tiles
    assert mm[names.index("derived.blocks.K")] == math.ceil(1024 / cfg["BLOCK_K"])
    assert mm[names.index("derived.tile_efficiency")] == 1.0  # powers of two divide 1024
    assert math.isnan(kt[names.index("derived.tile_efficiency")])  # no BLOCK_<dim> knobs
    assert 0 < mm[names.index("derived.occupancy")] <= 1


def test_unseen_categories_are_missing_and_layout_is_stable():
    frame = _kt_records()
    fz = Featurizer().fit(frame.head(1))
    other = frame.tail(1)
    X = fz.transform(other)
    assert math.isnan(X[0, fz.feature_names_.index("config.mode")])  # "b" unseen
    assert X.shape[1] == len(fz.feature_names_)


def test_round_trip_through_json_gives_identical_features(record_factory):
    frame = record_factory(configs_per_task=10, shapes=[(1024, 1024, 1024)])
    fz = Featurizer().fit(frame, sources={"synthetic0000000": "for k in range(4):\n    acc = tl.dot(a, b)\n"})
    state = json.loads(json.dumps(fz.to_dict(), allow_nan=False))
    assert state["feature_schema_version"] == FEATURE_SCHEMA_VERSION
    again = Featurizer.from_dict(state)
    np.testing.assert_array_equal(again.transform(frame), fz.transform(frame))
    assert fz.transform(frame)[0, fz.feature_names_.index("source.n_dot")] == 1


def test_schema_mismatch_names_both_versions():
    with pytest.raises(SchemaVersionError, match=f"version 0.*version {FEATURE_SCHEMA_VERSION}"):
        check_feature_schema(0, "The model in 'x'")
    with pytest.raises(NotFittedError, match="not fitted"):
        Featurizer().transform(_kt_records())


@pytest.mark.parametrize(("name", "expected"), [
    ("NVIDIA GeForce RTX 2080 Ti", "NVIDIA GeForce RTX 2080 Ti"),
    ("NVIDIA GeForce RTX 3060 Laptop GPU", "NVIDIA GeForce RTX 3060 Laptop GPU"),
    ("NVIDIA GeForce RTX 3090", "NVIDIA GeForce RTX 3090"),
    ("NVIDIA TITAN RTX", "NVIDIA TITAN RTX"),
    ("NVIDIA H100 80GB HBM3", "NVIDIA H100 80GB HBM3"),
    ("NVIDIA H100 PCIe", "NVIDIA H100 PCIe"),
    ("NVIDIA H200", "NVIDIA H200"),
    ("NVIDIA GeForce RTX 2080", None),
])
def test_device_table_matches_reported_names(name, expected):
    spec = device_spec(name)
    assert (spec.name if spec else None) == expected


def test_device_table_is_plausible():
    for spec in DEVICE_TABLE:
        # Peak FP32 = 2 FLOPs x cores x clock; cores per SM are 64 (Turing) or 128 (Ampere, Hopper).
        cores = 64 if spec.compute_capability == 7.5 else 128
        implied = 2 * cores * spec.sm_count * spec.boost_clock_mhz * 1e6 / 1e12
        assert implied == pytest.approx(spec.fp32_tflops, rel=0.12), spec.name


def test_many_distinct_configs_decode_like_single_ones():
    """Batches of 64+ distinct configurations take the newline-delimited JSON path; bools still become numbers."""
    common = dict(family="kernel_tuner/convolution_kernel", variant="default", source_hash="0123456789abcdef",
                  problem={"n0": 4096, "n1": 4096}, dtype="float32", device="NVIDIA GeForce RTX 3090")
    records = [Record(**common, config={"block_size_x": 16 * (i + 1), "use_shared": bool(i % 2), "mode": "ab"[i % 2]},
                      status=Status.OK, samples_ms=(1.0, 1.1)) for i in range(80)]
    frame = records_frame(records)
    fz = Featurizer().fit(frame)
    X = fz.transform(frame)
    names = fz.feature_names_
    assert X[:, names.index("config.block_size_x")].tolist() == [16.0 * (i + 1) for i in range(80)]
    assert X[:, names.index("config.use_shared")].tolist() == [float(i % 2) for i in range(80)]
    assert X[:, names.index("config.mode")].tolist() == [float(i % 2) for i in range(80)]
    np.testing.assert_array_equal(np.vstack([fz.transform(frame[i:i + 1]) for i in range(80)]), X)
