from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from kernelcast.cli.main import app

runner = CliRunner()


def test_list_tasks_of_a_replay(toy_store):
    result = runner.invoke(app, ["search", "--list-tasks", "--oracle", f"replay:{toy_store.path}"],
                           env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "toy/axpy" in result.output
    assert "TITAN RTX" in result.output
    assert "264" in result.output


def test_search_smoke_on_a_small_replay_task(toy_store, tmp_path):
    out = tmp_path / "out.json"
    args = ["search", "--task", "kernel=axpy,device=3090", "--budget", "5", "--strategy", "random",
            "--strategy", "tpe,cmaes", "--seeds", "2", "--oracle", f"replay:{toy_store.path}", "--json", str(out),
            "--run-dir", str(tmp_path / "runs"), "--no-mlflow"]
    result = runner.invoke(app, args, env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "Search results" in result.output
    assert "median" in result.output
    data = json.loads(out.read_text())
    assert list(data["summary"]) == ["random", "tpe", "cmaes"]
    assert [r["measurements"] for r in data["runs"]] == [5] * 6
    # the runs were kept, so running again resumes them and measures nothing new
    again = runner.invoke(app, args, env={"COLUMNS": "200"})
    assert again.exit_code == 0, again.output
    assert json.loads(out.read_text())["summary"]["tpe"]["measurements"] == 10


def test_surrogate_strategy_with_a_saved_model(toy_store, toy_frame, tmp_path):
    gbm = pytest.importorskip("kernelcast.surrogate.gbm")
    model = gbm.GBMSurrogate(n_estimators=40, quantile_estimators=20, fail_estimators=10, min_child_samples=5)
    titan = toy_frame.filter(toy_frame["device"] == "NVIDIA TITAN RTX")
    model.fit(titan).calibrate(titan).save(tmp_path / "model")
    out = tmp_path / "out.json"
    result = runner.invoke(app, ["search", "--task", "device=3090", "--budget", "6", "--strategy", "surrogate,greedy",
                                 "--oracle", f"replay:{toy_store.path}", "--surrogate", str(tmp_path / "model"),
                                 "--json", str(out), "--no-mlflow"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    summary = json.loads(out.read_text())["summary"]
    assert summary["surrogate"]["measurements"] == 6 == summary["greedy"]["measurements"]
    assert summary["surrogate"]["surrogate_seconds"] > 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--oracle", "cloud"], "'oracle' parameter of search must be 'gpu' or 'replay:DIR'"),
        (["--task", "gpus=3090"], "'task' selector key must be one of"),
        (["--strategy", "annealing"], "'strategy' parameter of search must be one of"),
        (["--budget", "0"], "'budget' parameter of search must be a positive int"),
        (["--task", "device=h100"], "matches none of the 2 tasks"),
    ],
)
def test_user_errors_are_one_clear_line(toy_store, args, message):
    result = runner.invoke(app, ["search", "--oracle", f"replay:{toy_store.path}", "--strategy", "random",
                                 "--no-mlflow", *args], env={"COLUMNS": "300"})
    assert result.exit_code == 2
    assert message in " ".join(result.output.split())
