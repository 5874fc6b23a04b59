from __future__ import annotations

import collections

import polars as pl
import pytest

import kernelcast.datasets as datasets
from kernelcast.datasets import DATASETS_DIR, complete_tasks, list_datasets, load, open_store
from kernelcast.exceptions import InvalidParameterError
from kernelcast.measurement.records import row_to_record


def test_public_api_is_flat():
    for name in datasets.__all__:
        assert hasattr(datasets, name), name
    assert {"Store", "open_store", "load", "list_datasets", "task_frame", "complete_tasks", "task_optimum"} <= set(
        datasets.__all__
    )


def test_shipped_datasets_are_listed_and_load_by_name():
    assert "kernel_tuner" in list_datasets()
    assert "importers" not in list_datasets()  # a package folder, not a dataset
    frame = load("kernel_tuner")
    assert isinstance(frame, pl.DataFrame)
    assert frame.height == 107_308
    lazy = load("kernel_tuner", lazy=True)
    assert isinstance(lazy, pl.LazyFrame)
    assert lazy.select(pl.len()).collect().item() == frame.height


def test_load_by_path_and_unknown_names(tmp_path):
    row = load(DATASETS_DIR / "kernel_tuner", lazy=True).head(1).collect().row(0, named=True)
    open_store(tmp_path / "copy").append([row_to_record(row)])
    copied = load(str(tmp_path / "copy"))  # a path given as a string
    assert copied.height == 1
    assert copied.row(0, named=True)["config_json"] == row["config_json"]
    with pytest.raises(InvalidParameterError, match=r"one of \[.*'kernel_tuner'.*\]\. Got 'no_such_dataset'"):
        load("no_such_dataset")
    with pytest.raises(InvalidParameterError, match="holds no kernelcast records"):
        load(tmp_path / "empty_folder")


def test_shipped_kernel_tuner_dataset_matches_a_fresh_import(imported):
    """The committed Parquet is what the importer makes of the caches today (counts per device and status)."""
    shipped = load("kernel_tuner")
    fresh = collections.Counter(
        (r.family, r.device, r.status.value) for kernel in ("convolution", "gemm", "pnpoly") for r in imported(kernel)
    )
    stored = collections.Counter(
        {(f, d, s): n for f, d, s, n in shipped.group_by("family", "device", "status").len().iter_rows()}
    )
    assert stored == fresh
    assert len(complete_tasks(shipped)) == 11


def test_a_bare_name_means_the_shipped_dataset_even_beside_a_plain_folder_of_that_name(tmp_path, monkeypatch):
    (tmp_path / "kernel_tuner").mkdir()  # e.g. the repository root holds a kernelcast/ package folder
    monkeypatch.chdir(tmp_path)
    assert load("kernel_tuner", lazy=True).select(pl.len()).collect().item() == 107_308


def test_shipped_measured_datasets_hold_what_their_cards_say():
    counts = {name: load(name, lazy=True).group_by("status").len().collect() for name in
              ("kernelcast", "inductor", "kernelcast_repeat", "kernelcast_live", "kernelcast_live_rerun")}
    ok = {name: int(frame.filter(pl.col("status") == "ok")["len"].sum()) for name, frame in counts.items()}
    assert ok == {"kernelcast": 126_388, "inductor": 3_900, "kernelcast_repeat": 6_982, "kernelcast_live": 2_120,
                  "kernelcast_live_rerun": 2_120}
    for name in ("kernelcast_live", "kernelcast_live_rerun"):
        live = load(name, lazy=True).select("device", "problem_json").unique().collect()
        assert live.rows() == [("NVIDIA H100 80GB HBM3", '{"K":3072,"M":2048,"N":5120}')]
    keys = [set(load(name, lazy=True).select("config_json").collect()["config_json"].to_list())
            for name in ("kernelcast_live", "kernelcast_live_rerun")]
    assert keys[0] == keys[1]  # the same space, measured twice
    sources = load("inductor", lazy=True).select(pl.col("source_hash").n_unique()).collect().item()
    assert sources == 2_263
