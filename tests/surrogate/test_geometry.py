"""Launch geometry: programs, waves, loop trips and padding of configurations on problem shapes."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest

from kernelcast.datasets.store import records_frame
from kernelcast.measurement.records import Record, Status
from kernelcast.surrogate.features import Featurizer
from kernelcast.surrogate.geometry import GEOMETRY_FEATURES, geometry_features, geometry_of

H200 = "NVIDIA H200"


def _features(family: str, variant: str, config: dict, problem: dict, *, sms: float = 132.0) -> dict[str, float]:
    geometry = geometry_of(family, variant, frozenset(config), frozenset(problem))
    assert geometry is not None
    out = geometry_features(
        geometry,
        lambda name: np.array([float(config[name])]) if name in config else None,
        lambda name: np.array([float(problem[name])]) if name in problem else None,
        sm_count=np.array([sms]), max_threads_per_sm=np.array([2048.0]),
        threads=np.array([32.0 * config.get("num_warps", 4)]), dtype_bytes=np.array([2.0]),
    )
    return dict(zip(GEOMETRY_FEATURES, out[0].tolist()))


def test_matmul_on_an_odd_shape_counts_programs_trips_and_padding():
    f = _features("matmul", "blocked", {"BLOCK_M": 64, "BLOCK_N": 128, "BLOCK_K": 32, "num_warps": 4},
                  {"M": 127, "N": 255, "K": 1023})
    assert f["programs"] == 2 * 2
    assert f["waves"] == pytest.approx(4 / 132)
    assert f["last_wave"] == pytest.approx(4 / 132)  # one partial wave
    assert f["loop_trips"] == 32
    assert f["parallel_waste"] == pytest.approx(1 - 127 * 255 / (128 * 256))
    assert f["loop_waste"] == pytest.approx(1 - 1023 / 1024)
    assert f["tile_elements"] == 64 * 128 * 32
    assert f["elements_per_thread"] == 64 * 128 * 32 / 128
    assert f["work_per_program"] == pytest.approx(127 * 255 * 1023 / 4)
    assert f["bytes_per_program"] == pytest.approx(2 * 127 * 255 * 1023 / 4)


def test_split_k_multiplies_programs_and_divides_trips():
    f = _features("matmul", "splitk", {"BLOCK_M": 128, "BLOCK_N": 128, "BLOCK_K": 64, "SPLIT_K": 4},
                  {"M": 4096, "N": 4096, "K": 4096})
    assert f["programs"] == 32 * 32 * 4
    assert f["loop_trips"] == 4096 / 64 / 4
    assert f["parallel_waste"] == 0 and f["loop_waste"] == 0
    assert f["tiles_per_program"] == 1


def test_persistent_kernels_cap_programs_at_a_multiple_of_the_sms():
    f = _features("matmul", "persistent", {"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_K": 64, "PROGRAMS_PER_SM": 2},
                  {"M": 4096, "N": 4096, "K": 4096})
    assert f["programs"] == 2 * 132
    assert f["tiles_per_program"] == pytest.approx(64 * 64 / 264)
    assert f["last_wave"] == 1.0


def test_a_single_block_covers_the_row_with_padding():
    f = _features("softmax", "single_block", {"BLOCK_M": 2, "BLOCK_N": 4096, "num_warps": 8}, {"M": 1000, "N": 3000})
    assert f["programs"] == 500
    assert f["loop_trips"] == 1
    assert f["loop_block_ratio"] == pytest.approx(4096 / 3000)
    assert f["loop_waste"] == pytest.approx(1 - 3000 / 4096)
    assert f["last_wave"] == pytest.approx((500 / 132) / 4)


def test_attention_launches_query_blocks_per_batch_and_head_and_splits_keys():
    problem = {"B": 2, "H": 8, "S": 1000, "D": 64}
    fa2 = _features("attention", "fa2", {"BLOCK_M": 64, "BLOCK_N": 32}, problem)
    assert fa2["programs"] == math.ceil(1000 / 64) * 16
    assert fa2["loop_trips"] == math.ceil(1000 / 32)
    assert fa2["tile_elements"] == 64 * 32 * 64
    split = _features("attention", "split_kv", {"BLOCK_M": 64, "BLOCK_N": 32, "NUM_SPLITS": 4}, problem)
    assert split["programs"] == fa2["programs"] * 4
    assert split["loop_trips"] == math.ceil(math.ceil(1000 / 32) / 4)


def test_flat_kernels_tile_the_whole_tensor_and_unknown_families_follow_the_block_convention():
    flat = _features("bias_gelu", "flat", {"BLOCK": 1024, "num_warps": 4}, {"M": 1000, "N": 3000})
    assert flat["programs"] == math.ceil(3_000_000 / 1024)
    assert math.isnan(flat["loop_block_ratio"])  # no loop axis
    mine = geometry_of("my_gemm", "v1", frozenset({"BLOCK_M", "BLOCK_K"}), frozenset({"M", "K"}))
    assert mine is not None and [a.block for a in mine.parallel] == ["BLOCK_M"] and [a.block for a in mine.loop] == [
        "BLOCK_K"]
    assert geometry_of("kernel_tuner/Xgemm", "default", frozenset({"MWG"}), frozenset({"n0"})) is None


def _records(family: str, variant: str, configs: list[dict], problems: list[dict]) -> pl.DataFrame:
    rows = [Record(family=family, variant=variant, source_hash="0123456789abcdef", config=c, problem=p,
                   dtype="float16", device=H200, status=Status.OK, samples_ms=(1.0, 1.1))
            for p in problems for c in configs]
    return records_frame(rows)


def test_featurizer_columns_match_the_geometry_and_do_not_depend_on_the_batch():
    configs = [{"BLOCK_M": bm, "BLOCK_N": bn, "num_warps": 4} for bm in (1, 4) for bn in (1024, 4096)]
    softmax = _records("softmax", "single_block", configs, [{"M": 1000, "N": 3000}, {"M": 4096, "N": 4096}])
    gemm = _records("matmul", "splitk", [{"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_K": 32, "SPLIT_K": 2, "num_warps": 4}],
                    [{"M": 127, "N": 255, "K": 1023}])
    frame = pl.concat([softmax, gemm], how="diagonal_relaxed")
    fz = Featurizer().fit(frame)
    X = fz.transform(frame)
    col = {name: X[:, i] for i, name in enumerate(fz.feature_names_)}
    expected = _features("softmax", "single_block", configs[0], {"M": 1000, "N": 3000})
    for name, value in expected.items():
        assert col[f"geometry.{name}"][0] == pytest.approx(value, nan_ok=True)
    assert col["geometry.programs"][-1] == 2 * 4 * 2
    # a batch of one task (the fast path) gives exactly the rows of the mixed frame
    one_task = frame.filter(pl.col("problem_json") == frame["problem_json"][0])
    np.testing.assert_array_equal(fz.transform(one_task), X[: one_task.height])
    np.testing.assert_array_equal(fz.transform(frame.reverse()), X[::-1])
