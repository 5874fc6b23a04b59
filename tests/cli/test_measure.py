"""`kernelcast measure` and `kernelcast families` through the real CLI."""

import json

import polars as pl
from typer.testing import CliRunner

from kernelcast.cli.main import app
from kernelcast.datasets.store import Store
from kernelcast.measurement.families import get_family

runner = CliRunner()


def test_measure_interpret_writes_records_and_resumes(tmp_path):
    out = tmp_path / "ds"
    args = ["measure", "--family", "matmul", "--variant", "blocked", "--shape", "33x65x47", "--dtype", "fp16",
            "--space", "random:4", "--out", str(out), "--interpret"]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    frame = Store(out).read()
    assert frame.height == 4
    assert set(frame["device"]) == {"cpu-interpreter"}
    assert frame.filter(pl.col("status") == "ok").height >= 1
    assert len(list((out / "runs").glob("*.json"))) == 1
    run = json.loads(next((out / "runs").glob("*.json")).read_text())
    assert sum(run["counts"].values()) == 4

    # A larger sample with the same seed contains the first four: only the new ones are measured.
    second = runner.invoke(app, [*args[:-4], "random:6", "--out", str(out), "--interpret"])
    assert second.exit_code == 0, second.output
    assert "4 already in" in second.output
    assert Store(out).read().height == 6


def test_measure_errors_are_one_clear_line(tmp_path):
    result = runner.invoke(app, ["measure", "--family", "nope", "--out", str(tmp_path / "x"), "--interpret"])
    assert result.exit_code == 2
    assert "The 'family' parameter of measure must be one of 'matmul'" in result.output
    result = runner.invoke(app, ["measure", "--family", "matmul", "--shape", "12x12", "--out", str(tmp_path / "x"),
                                 "--interpret"])
    assert result.exit_code == 2
    assert "must have 3 sizes ['M', 'N', 'K']" in result.output
    result = runner.invoke(app, ["measure", "--family", "softmax", "--dtype", "int8", "--out", str(tmp_path / "x"),
                                 "--interpret"])
    assert result.exit_code == 2
    assert "'dtype' parameter of softmax must be one of" in result.output
    assert not (tmp_path / "x" / "records").exists()


def test_families_lists_every_builtin_with_space_sizes():
    result = runner.invoke(app, ["families", "--json"])
    assert result.exit_code == 0, result.output
    described = {d["name"]: d for d in json.loads(result.output)}
    assert {"matmul", "softmax", "layernorm", "rmsnorm", "bias_gelu", "rowsum", "attention", "transpose"} <= set(described)
    assert described["matmul"]["variants"]["blocked"]["size"] == len(get_family("matmul").space("blocked"))
    table = runner.invoke(app, ["families"])
    assert table.exit_code == 0 and "attention" in table.output
