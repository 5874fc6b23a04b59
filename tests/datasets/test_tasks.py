from __future__ import annotations

import collections
import statistics

import polars as pl
import pytest

from kernelcast.datasets import TASK_COLUMNS, complete_tasks, task_frame, task_optimum, task_spaces
from kernelcast.datasets.store import records_frame
from kernelcast.exceptions import InvalidParameterError
from kernelcast.measurement.records import Record, Status
from kernelcast.surrogate._base import TASK_COLUMNS as SURROGATE_TASK_COLUMNS

LAPTOP = "NVIDIA GeForce RTX 3060 Laptop GPU"


@pytest.fixture(scope="module")
def kernel_tuner_frame(imported) -> pl.DataFrame:
    return records_frame([r for kernel in ("convolution", "gemm", "pnpoly") for r in imported(kernel)])


def test_task_columns_match_the_surrogates():
    assert TASK_COLUMNS == SURROGATE_TASK_COLUMNS


def test_task_frame_adds_one_id_per_task_and_stays_lazy(kernel_tuner_frame):
    framed = task_frame(kernel_tuner_frame)
    assert framed["task_id"].n_unique() == kernel_tuner_frame.select(TASK_COLUMNS).unique().height == 12
    assert isinstance(task_frame(kernel_tuner_frame.lazy()), pl.LazyFrame)
    with pytest.raises(InvalidParameterError, match=r"lacks \['device'\]"):
        task_frame(kernel_tuner_frame.drop("device"))


def test_complete_tasks_are_the_kernel_tuner_spaces_but_not_the_laptop_gemm_sample(kernel_tuner_frame):
    complete = complete_tasks(kernel_tuner_frame)
    assert len(complete) == 11
    gemm_laptop = [t for t in task_frame(kernel_tuner_frame)["task_id"].unique() if "Xgemm" in t and LAPTOP in t]
    assert len(gemm_laptop) == 1
    assert gemm_laptop[0] not in complete
    spaces = task_spaces(kernel_tuner_frame)
    basis = dict(zip(spaces["family"], spaces["basis"]))
    # pnpoly has no restrictions (the product of its tune_params, 4,092, is its space); the others' unrecorded
    # restrictions are inferred from what every GPU measured.
    assert basis == {
        "kernel_tuner/cn_pnpoly": "tune_params",
        "kernel_tuner/convolution_kernel": "cross_device",
        "kernel_tuner/Xgemm": "cross_device",
    }
    expected = dict(zip(spaces["family"], spaces["expected_configs"]))
    assert expected == {
        "kernel_tuner/cn_pnpoly": 4092,
        "kernel_tuner/convolution_kernel": 6768,
        "kernel_tuner/Xgemm": 17956,
    }


def test_failures_count_as_present(kernel_tuner_frame):
    pnpoly = kernel_tuner_frame.filter(pl.col("family") == "kernel_tuner/cn_pnpoly")
    assert len(complete_tasks(pnpoly)) == 4
    rtx_3090 = pl.col("device") == "NVIDIA GeForce RTX 3090"
    without_its_failures = pnpoly.filter(~rtx_3090 | (pl.col("status") == "ok"))
    complete = complete_tasks(without_its_failures)
    assert len(complete) == 3
    assert not any("RTX 3090" in t for t in complete)


def test_a_lone_device_with_unrecorded_restrictions_is_not_called_complete(kernel_tuner_frame):
    convolution_3090 = kernel_tuner_frame.filter(
        (pl.col("family") == "kernel_tuner/convolution_kernel") & (pl.col("device") == "NVIDIA GeForce RTX 3090")
    )
    assert task_spaces(convolution_3090)["basis"].to_list() == ["unknown"]
    assert complete_tasks(convolution_3090) == []
    assert len(complete_tasks(convolution_3090, spaces={"kernel_tuner/convolution_kernel": 6768})) == 1


def test_an_explicit_size_overrides_the_inference(kernel_tuner_frame):
    gemm = kernel_tuner_frame.filter(pl.col("family") == "kernel_tuner/Xgemm")
    laptop_task = next(t for t in task_frame(gemm)["task_id"].unique() if LAPTOP in t)
    assert len(complete_tasks(gemm, spaces={laptop_task: 10_000})) == 4
    with pytest.raises(InvalidParameterError, match=r"positive ints\. Got 0 for 'kernel_tuner/Xgemm'"):
        complete_tasks(gemm, spaces={"kernel_tuner/Xgemm": 0})


def _own_record(block: int, space_size: int | None, status: Status = Status.OK) -> Record:
    return Record(
        family="matmul",
        variant="default",
        source_hash="0123456789abcdef",
        config={"BLOCK_M": block},
        problem={"m": 128, "n": 128, "k": 128},
        dtype="float16",
        device="NVIDIA H100 80GB HBM3",
        status=status,
        samples_ms=(0.1 * block, 0.1 * block) if status is Status.OK else (),
        protocol={} if space_size is None else {"space_size": space_size},
    )


def test_kernelcast_sweeps_are_complete_by_their_recorded_space_size():
    sweep = records_frame([_own_record(b, 3) for b in (16, 32)] + [_own_record(64, 3, Status.COMPILE_ERROR)])
    assert task_spaces(sweep)["basis"].to_list() == ["space_size"]
    assert len(complete_tasks(sweep)) == 1
    assert complete_tasks(sweep.head(2)) == []
    unrecorded = records_frame([_own_record(b, None) for b in (16, 32, 64)])
    described = task_spaces(unrecorded)  # matmul is registered: its space (every variant) is the yardstick
    assert described["basis"].to_list() == ["family_space"]
    assert described["expected_configs"].to_list() == [7008]
    assert complete_tasks(unrecorded) == []
    unregistered = unrecorded.with_columns(pl.lit("someone_elses_kernel").alias("family"))
    assert task_spaces(unregistered)["basis"].to_list() == ["unknown"]
    assert complete_tasks(unregistered) == []


def test_task_optimum_is_the_fastest_ok_median(kernel_tuner_frame, cache_files, raw_cache):
    frame = task_frame(kernel_tuner_frame)
    for path in cache_files("pnpoly"):
        cache = raw_cache(path)
        scale = 1000.0 if cache["device_name"] in ("NVIDIA GeForce RTX 2080 Ti", "NVIDIA TITAN RTX") else 1.0
        expected = min(statistics.median(e["times"]) * scale for e in cache["cache"].values() if "times" in e)
        task_id = frame.filter(
            (pl.col("family") == "kernel_tuner/cn_pnpoly") & (pl.col("device") == cache["device_name"])
        )["task_id"][0]
        assert task_optimum(kernel_tuner_frame, task_id) == pytest.approx(expected, rel=1e-12)


def test_task_optimum_errors(kernel_tuner_frame):
    with pytest.raises(InvalidParameterError, match=r"must name a task of the frame\. Got 'nope'"):
        task_optimum(kernel_tuner_frame, "nope")
    failed = records_frame([_own_record(16, None, Status.COMPILE_ERROR)])
    task_id = task_frame(failed)["task_id"][0]
    with pytest.raises(InvalidParameterError, match=r"has no 'ok' record"):
        task_optimum(failed, task_id)


def test_kernelcast_tasks_are_complete_by_their_registered_family_space():
    from kernelcast.datasets import load

    frame = load("kernelcast")
    spaces = task_spaces(frame)
    assert set(spaces["basis"]) == {"family_space"}
    complete = complete_tasks(frame)
    assert len(complete) == 49  # the dataset card's count
    per_family = collections.Counter(task_id.split(" | ")[0] for task_id in complete)
    assert min(per_family.values()) >= 3 and len(per_family) == 8  # the dataset issue: >= 3 shapes per family
    sampled = spaces.filter(~pl.col("complete"))
    assert (sampled["n_configs"] < sampled["expected_configs"]).all()
