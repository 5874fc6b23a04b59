"""Compiling on the CPU for a target GPU reproduces the compiler metadata the GPU recorded."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from kernelcast.exceptions import InvalidParameterError
from kernelcast.measurement.offline import OfflineCompiler, parse_capability, resource_usage, tools_available
from kernelcast.measurement.records import COMPILED_COLUMNS

REPO_ROOT = Path(__file__).resolve().parents[2]
CANDIDATE = ["family", "variant", "source_hash", "config_json", "problem_json", "dtype", "device"]


needs_tools = pytest.mark.skipif(not tools_available(), reason="Triton's wheel has no ptxas/cuobjdump here")


@pytest.fixture(scope="module")
def recorded() -> pl.DataFrame:
    """Stored H200 records with metadata: a blocked and a persistent matmul (with spills) and a softmax."""
    from kernelcast.datasets.store import Store

    frame = Store(REPO_ROOT / "datasets" / "kernelcast").read().filter(
        (pl.col("status") == "ok") & pl.col("n_regs").is_not_null())
    picks = [
        frame.filter((pl.col("family") == "matmul") & (pl.col("variant") == "blocked")).head(1),
        frame.filter((pl.col("variant") == "persistent") & (pl.col("n_spills") > 0)).head(1),
        frame.filter(pl.col("family") == "softmax").head(1),
    ]
    out = pl.concat(picks)
    assert out.height == 3
    return out


@pytest.mark.parametrize("value", ["nine", "9", "6.1", (9,), "9.0.1"])
def test_a_bad_capability_is_refused_with_its_value(value):
    with pytest.raises(InvalidParameterError, match="capability"):
        parse_capability(value)


def test_capabilities_parse():
    assert parse_capability("9.0") == (9, 0)
    assert parse_capability(" 8.6 ") == (8, 6)
    assert parse_capability((9, 0)) == (9, 0)


@pytest.mark.parametrize("n_jobs", [0, -1, 1.5, True])
def test_n_jobs_must_be_a_positive_integer(n_jobs):
    with pytest.raises(InvalidParameterError, match="n_jobs"):
        OfflineCompiler("9.0", n_jobs=n_jobs)


def test_a_frame_without_the_candidate_columns_is_refused():
    with OfflineCompiler("9.0") as compiler, pytest.raises(InvalidParameterError, match="config_json"):
        compiler.annotate(pl.DataFrame({"family": ["matmul"]}))


@needs_tools
def test_a_cubin_that_is_not_one_is_an_error():
    with pytest.raises(RuntimeError, match="cuobjdump"):
        resource_usage(b"not a cubin")


@needs_tools
def test_compiling_on_the_cpu_gives_the_metadata_the_gpu_recorded(recorded):
    capability = json.loads(recorded["fingerprint_json"][0])["compute_capability"]
    unknown = recorded.head(1).select(CANDIDATE).with_columns(family=pl.lit("no_such_family"))
    frame = pl.concat([recorded.select(CANDIDATE), unknown])
    with OfflineCompiler(capability, n_jobs=1) as compiler:
        out = compiler.annotate(frame)
        seconds = compiler.compile_seconds
        again = compiler.annotate(frame)
        assert compiler.compile_seconds == seconds  # cached: nothing compiled twice
    assert out.select(CANDIDATE).equals(frame)
    for column in COMPILED_COLUMNS:
        assert out[column].head(3).to_list() == recorded[column].to_list(), column
        assert out[column][3] is None  # an unknown family is not compiled, and is not an error
    assert again.equals(out)
    assert out["n_spills"][1] > 0  # spilled registers live in the stack frame, which counts
    assert seconds > 0


@needs_tools
def test_metadata_already_in_the_frame_is_kept(recorded):
    frame = recorded.select(*CANDIDATE, *COMPILED_COLUMNS).with_columns(pl.lit(7, pl.Int64).alias("n_regs"))
    with OfflineCompiler("9.0") as compiler:
        out = compiler.annotate(frame)
        assert compiler.compile_seconds == 0.0
    assert out["n_regs"].to_list() == [7, 7, 7]


@pytest.mark.parametrize("timeout_s", [0, -1.0, True, "300"])
def test_timeout_must_be_a_positive_number(timeout_s):
    with pytest.raises(InvalidParameterError, match="timeout_s"):
        OfflineCompiler("9.0", timeout_s=timeout_s)


@needs_tools
def test_a_compile_past_the_timeout_gets_an_error_and_the_workers_are_replaced(recorded):
    rows = recorded.select(CANDIDATE).head(2).to_dicts()
    with OfflineCompiler("9.0", timeout_s=0.001) as compiler:  # the spawned workers take longer than that to start
        first, second = compiler.compile(rows)
        assert first["error"].startswith("TimeoutError") and not first["metadata"]
        assert second["error"].startswith("abandoned") and not second["metadata"]
        assert compiler._pool is None  # stopped, to be started afresh
        compiler.timeout_s = 300.0
        again_first, again_second = compiler.compile(rows)
    assert again_first is first  # a compile that used up its time is not tried again
    assert again_second["error"] is None  # one abandoned for another's timeout is
    assert again_second["metadata"]["n_regs"] == recorded["n_regs"][1]
