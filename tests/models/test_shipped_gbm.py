"""The shipped GBM for kernelcast's own families: what it was trained on, and that it reads compiler metadata."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from scipy.stats import spearmanr
from typer.testing import CliRunner

from kernelcast.cli.main import app
from kernelcast.cli.search import DEFAULT_KERNELCAST_MODEL, DEFAULT_MODEL, shipped_model
from kernelcast.datasets import load
from kernelcast.measurement.records import COMPILED_COLUMNS
from kernelcast.surrogate import load_surrogate

MODELS = Path(__file__).resolve().parents[2] / "models"
MODEL = MODELS / DEFAULT_KERNELCAST_MODEL


def test_each_family_gets_the_shipped_model_of_its_kind():
    assert shipped_model("matmul") == MODEL
    assert shipped_model("softmax") == MODEL
    assert shipped_model("Xgemm") == MODELS / DEFAULT_MODEL  # an imported Kernel Tuner kernel


@pytest.fixture(scope="module")
def records() -> pl.DataFrame:
    return load("kernelcast")


def test_trained_on_every_kernelcast_record_with_compiler_metadata(records):
    meta = json.loads((MODEL / "model.json").read_text())
    assert meta["extra"]["split"]["kind"] == "none"
    assert meta["extra"]["split"]["n_train"] == records.height
    assert meta["params"]["use_compiled_metadata"] is True
    assert load_surrogate(MODEL).use_compiled_metadata is True


def test_it_ranks_a_stored_task_and_reads_the_metadata(records):
    model = load_surrogate(MODEL)
    task = records.filter((pl.col("family") == "matmul") & (pl.col("variant") == "blocked")
                          & (pl.col("status") == "ok") & (pl.col("problem_json") == '{"K":1023,"M":127,"N":255}')
                          & (pl.col("dtype") == "float16")).head(400)
    assert task.height == 400
    forecast = model.forecast(task)
    # in-sample (the model saw these records): a check that the shipped files forecast, not an accuracy claim
    assert spearmanr(forecast.log_time_mean, np.log(task["time_ms"].to_numpy())).statistic > 0.9
    blind = model.forecast(task.drop(list(COMPILED_COLUMNS)))
    assert not np.allclose(blind.log_time_mean, forecast.log_time_mean)  # the metadata moves the forecasts


def test_a_replayed_kernelcast_task_is_searched_with_it(tmp_path):
    result = CliRunner().invoke(app, [
        "search", "--oracle", "replay:kernelcast", "--task", "kernel=softmax,variant=online,problem=127",
        "--budget", "4", "--strategy", "surrogate", "--seeds", "1", "--no-mlflow", "--json", str(tmp_path / "r.json"),
    ], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert f"surrogate: {MODEL}" in result.output
    runs = json.loads((tmp_path / "r.json").read_text())["runs"]
    assert runs and all(r["measurements"] == 4 for r in runs)
