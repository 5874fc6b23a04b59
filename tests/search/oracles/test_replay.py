from __future__ import annotations

import numpy as np
import pytest

from kernelcast.exceptions import InvalidParameterError
from kernelcast.measurement.records import Status
from kernelcast.measurement.records import canonical_json as canonical
from kernelcast.search.oracles import ReplayOracle, default_budget, parse_task_selector


def _task(oracle: ReplayOracle, selector: str = "device=3090"):
    (task,) = oracle.list_tasks(selector)
    return task


def test_a_query_is_the_median_of_resampled_repetitions(toy_frame):
    oracle = ReplayOracle(toy_frame, seed=3)
    task = _task(oracle)
    config = {"BLOCK": 128, "UNROLL": 2, "VEC": 4, "WARPS": 4}
    stored = np.asarray(oracle.stored_samples_ms(task, config))
    draws = [oracle.measure(task, [config])[0] for _ in range(200)]
    medians = np.asarray([r.time_ms for r in draws])
    assert all(len(r.samples_ms) == len(stored) and set(r.samples_ms) <= set(stored) for r in draws)
    assert len(set(medians)) > 1
    # as noisy as a median of 8 repetitions: far less spread than single repetitions, centred on the median
    assert medians.std() < 0.7 * stored.std()
    assert abs(np.median(medians) - np.median(stored)) < 0.5 * stored.std()
    exact = ReplayOracle(toy_frame, noise="none")
    assert exact.measure(task, [config])[0].samples_ms == tuple(stored)
    with pytest.raises(InvalidParameterError, match=r"'noise' parameter of ReplayOracle must be one of"):
        ReplayOracle(toy_frame, noise="gaussian")


def test_noise_repetition_draws_one_stored_repetition_per_query(toy_frame):
    oracle = ReplayOracle(toy_frame, seed=3, noise="repetition")
    task = _task(oracle)
    config = {"BLOCK": 128, "UNROLL": 2, "VEC": 4, "WARPS": 4}
    stored = oracle.stored_samples_ms(task, config)
    draws = [oracle.measure(task, [config])[0] for _ in range(40)]
    values = [r.samples_ms[0] for r in draws]
    assert all(len(r.samples_ms) == 1 and r.status is Status.OK for r in draws)
    assert set(values) <= set(stored)
    assert np.var(values) > 0
    assert len(set(values)) > 1
    # the reference runtime is the stored median, not a draw
    assert oracle.reference_time_ms(task, config) == pytest.approx(float(np.median(stored)))


def test_draws_repeat_with_the_seed_and_forks_draw_anew(toy_frame):
    config = {"BLOCK": 64, "UNROLL": 1, "VEC": 1, "WARPS": 2}
    base = ReplayOracle(toy_frame, seed=1)
    task = _task(base)
    first = [base.measure(task, [config])[0].time_ms for _ in range(5)]
    again = ReplayOracle(toy_frame, seed=1)
    assert [again.measure(task, [config])[0].time_ms for _ in range(5)] == first
    fork = base.fork(2)
    assert fork.spent.measurements == 0
    assert [fork.measure(task, [config])[0].time_ms for _ in range(5)] != first


def test_failures_replay_as_failures_and_cost_their_compile_time(toy_frame):
    oracle = ReplayOracle(toy_frame)
    task = _task(oracle)
    (record,) = oracle.measure(task, [{"BLOCK": 512, "UNROLL": 4, "VEC": 2, "WARPS": 2}])
    assert record.status is Status.COMPILE_ERROR
    assert record.samples_ms == ()
    assert record.time_ms is None
    assert "ptxas" in record.error
    assert oracle.cost_seconds(record) == pytest.approx(2.0)
    assert oracle.spent.measurements == 1
    assert oracle.spent.gpu_seconds == pytest.approx(2.0)


def test_cost_is_compile_time_plus_the_stored_repetitions(toy_frame):
    oracle = ReplayOracle(toy_frame)
    task = _task(oracle)
    config = {"BLOCK": 32, "UNROLL": 2, "VEC": 8, "WARPS": 1}
    (record,) = oracle.measure(task, [config])
    expected = (50.0 + sum(oracle.stored_samples_ms(task, config))) / 1000.0
    assert oracle.cost_seconds(record) == pytest.approx(expected)


def test_configs_outside_the_stored_space_cannot_run_and_are_free(toy_frame):
    oracle = ReplayOracle(toy_frame)
    task = _task(oracle)
    excluded = {"BLOCK": 16, "UNROLL": 1, "VEC": 1, "WARPS": 8}
    assert "restrictions" in oracle.check(task, excluded)
    assert oracle.check(task, {"BLOCK": 16, "UNROLL": 1, "VEC": 1, "WARPS": 4}) is None
    (record,) = oracle.measure(task, [excluded])
    assert record.status is Status.INVALID_CONFIG
    assert oracle.spent.measurements == 0
    assert oracle.spent.gpu_seconds == 0.0


def test_configs_stored_as_invalid_config_are_free_and_outside_the_space_size(toy_frame):
    # kernelcast's own sweeps store the configs that Family.check_config rejected before compiling
    import polars as pl

    rejected = {"BLOCK": 512, "UNROLL": 4, "VEC": 8, "WARPS": 8}
    frame = toy_frame.with_columns(
        pl.when(pl.col("config_json") == canonical(rejected)).then(pl.lit("invalid_config"))
        .otherwise(pl.col("status")).alias("status"),
        pl.when(pl.col("config_json") == canonical(rejected)).then(pl.lit("shared memory 300 KB > 228 KB"))
        .otherwise(pl.col("error")).alias("error"),
    )
    oracle = ReplayOracle(frame)
    task = _task(oracle)
    assert oracle.space_size(task) == 263
    assert oracle.check(task, rejected) == "invalid_config: shared memory 300 KB > 228 KB"
    assert oracle.space(task).describe()["BLOCK"][-1] == 512
    (record,) = oracle.measure(task, [rejected])
    assert record.status is Status.INVALID_CONFIG
    assert oracle.spent.measurements == 0
    assert oracle.reference_time_ms(task, rejected) is None


def test_space_is_derived_from_the_stored_records(toy_frame):
    oracle = ReplayOracle(toy_frame)
    task = _task(oracle)
    assert oracle.space(task).describe() == {"BLOCK": [16, 32, 64, 128, 256, 512], "UNROLL": [1, 2, 4],
                                             "VEC": [1, 2, 4, 8], "WARPS": [1, 2, 4, 8]}
    assert oracle.space_size(task) == 264
    ok = toy_frame.filter((toy_frame["device"] == task.device) & (toy_frame["status"] == "ok"))
    assert oracle.optimum_ms(task) == pytest.approx(ok["time_ms"].min())
    assert default_budget(66) == 2
    assert default_budget(4092) == 50
    assert default_budget(1) == 1


def test_reads_a_store_directory(toy_store, tmp_path):
    oracle = ReplayOracle(toy_store.path)
    assert len(oracle.tasks()) == 2
    assert "replay of" in oracle.describe()
    with pytest.raises(InvalidParameterError, match="holds no kernelcast records"):
        ReplayOracle(tmp_path / "empty")


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ("kernel=axpy,device=3090", ["NVIDIA GeForce RTX 3090"]),
        ("family=toy, gpu=titan", ["NVIDIA TITAN RTX"]),
        ("KERNEL=AXPY", ["NVIDIA GeForce RTX 3090", "NVIDIA TITAN RTX"]),
        ("", ["NVIDIA GeForce RTX 3090", "NVIDIA TITAN RTX"]),
        ("problem=4096,dtype=float32", ["NVIDIA GeForce RTX 3090", "NVIDIA TITAN RTX"]),
    ],
)
def test_task_selector_matches_substrings(toy_frame, selector, expected):
    oracle = ReplayOracle(toy_frame)
    assert [t.device for t in oracle.list_tasks(selector)] == expected


def test_task_selector_parsing_and_errors(toy_frame):
    assert parse_task_selector("kernel=conv, device=3090") == {"family": "conv", "device": "3090"}
    with pytest.raises(InvalidParameterError, match=r"key must be one of 'family', 'kernel', .*Got 'gpus'"):
        parse_task_selector("gpus=3090")
    with pytest.raises(InvalidParameterError, match=r"must look like key=value.*Got 'conv'"):
        parse_task_selector("conv")
    with pytest.raises(InvalidParameterError, match=r"matches none of the 2 tasks.*toy/axpy"):
        ReplayOracle(toy_frame).list_tasks("device=h100")


def test_incomplete_tasks_are_left_out(toy_frame):
    # a device holding a sample of the space (the others all hold 264 configs) is incomplete
    import polars as pl

    sample = toy_frame.filter(pl.col("device") == "NVIDIA TITAN RTX").head(30).with_columns(
        pl.lit("NVIDIA GeForce RTX 3060 Laptop GPU").alias("device"))
    frame = pl.concat([toy_frame.with_columns(pl.lit('{"source":"kernel_tuner"}').alias("protocol_json")),
                       sample.with_columns(pl.lit('{"source":"kernel_tuner"}').alias("protocol_json"))])
    assert len(ReplayOracle(frame).tasks()) == 2
    assert len(ReplayOracle(frame, include_incomplete=True).tasks()) == 3


def test_kernel_tuner_pnpoly_replay(pnpoly_frame):
    oracle = ReplayOracle(pnpoly_frame, seed=0)
    task = _task(oracle, "kernel=pnpoly,device=3090")
    assert oracle.space_size(task) == 4092
    assert len(oracle.space(task)) == 4092  # pnpoly's space is its whole product
    config = {"between_method": 0, "block_size_x": 32, "tile_size": 1, "use_method": 0}
    stored = oracle.stored_samples_ms(task, config)
    draws = [oracle.measure(task, [config])[0].time_ms for _ in range(30)]
    assert all(min(stored) <= d <= max(stored) for d in draws)
    assert np.var(draws) > 0
    failed = {"between_method": 0, "block_size_x": 544, "tile_size": 20, "use_method": 1}
    assert oracle.measure(task, [failed])[0].status is Status.RUNTIME_ERROR



def test_kernelcast_sweeps_are_complete_when_every_config_of_the_variant_is_stored():
    # kernelcast's own sweeps record no space size: a registered family's variant space decides
    from kernelcast.datasets.store import records_frame
    from kernelcast.measurement.families import get_family
    from kernelcast.measurement.records import Record

    space = list(get_family("transpose").space("naive"))
    def records(problem, configs):
        return [Record(family="transpose", variant="naive", source_hash="t0", config=c, problem=problem,
                       dtype="float16", device="NVIDIA H200", status=Status.OK, samples_ms=(1.0 + i / 100,),
                       protocol={"mode": "gpu"}, origin="test") for i, c in enumerate(configs)]
    full, sample = {"M": 64, "N": 64}, {"M": 128, "N": 64}
    frame = records_frame(records(full, space) + records(sample, space[:20]))
    oracle = ReplayOracle(frame)
    (task,) = oracle.tasks()
    assert task.problem == full
    assert oracle.space_size(task) == len(space) == 48
    assert len(ReplayOracle(frame, include_incomplete=True).tasks()) == 2


def _with_registers(toy_frame):
    """The toy space with made-up compiler metadata: registers grow with the block size."""
    import polars as pl

    blocks = toy_frame["config_json"].map_elements(lambda c: __import__("json").loads(c)["BLOCK"],
                                                   return_dtype=pl.Int64)
    return toy_frame.with_columns((32 + blocks // 8).alias("n_regs"), pl.lit(0, pl.Int64).alias("n_spills"))


def test_compiled_metadata_is_what_was_stored_with_each_config(toy_frame):
    import json

    from kernelcast.search.oracles._base import Oracle

    oracle = ReplayOracle(_with_registers(toy_frame), seed=0)
    task = _task(oracle)
    configs = [{"BLOCK": 256, "UNROLL": 2, "VEC": 4, "WARPS": 4}, {"BLOCK": 16, "UNROLL": 1, "VEC": 1, "WARPS": 8}]
    frame = oracle.candidate_frame(task, configs)
    out = oracle.compiled_metadata(task, frame)
    assert out.select(frame.columns).equals(frame)
    assert [json.loads(c)["BLOCK"] for c in out["config_json"]] == [256, 16]
    # stored: 32 + 256 // 8; not stored (BLOCK=16 with WARPS=8 is excluded by a restriction): missing
    assert out["n_regs"].to_list() == [64, None]
    assert out["n_spills"].to_list() == [0, None]
    assert out["shared_bytes"].to_list() == [None, None]  # stored without it
    with pytest.raises(InvalidParameterError, match="cannot give compiler metadata"):
        Oracle.compiled_metadata(oracle, task, frame)  # what an oracle without the method says
