"""``kernelcast train`` and ``kernelcast evaluate`` end to end on a small store (MLflow off)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from kernelcast.cli.main import app
from kernelcast.datasets.store import Store
from kernelcast.measurement.records import row_to_record


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory, record_factory):
    path = tmp_path_factory.mktemp("store")
    frame = record_factory(configs_per_task=40, seed=9)
    Store(path).append(row_to_record(r) for r in frame.iter_rows(named=True))
    return path


def test_train_then_evaluate_device_holdout(store_dir, tmp_path):
    runner = CliRunner()
    model_dir = tmp_path / "model"
    result = runner.invoke(app, ["train", "--data", str(store_dir), "--model", "gbm", "--out", str(model_dir),
                                 "--holdout", "device=3090", "--param", "n_estimators=40",
                                 "--param", "quantile_estimators=30", "--param", "n_jobs=1", "--no-mlflow"])
    assert result.exit_code == 0, result.output
    assert (model_dir / "model.json").is_file()
    assert (model_dir / "mean.txt").is_file()
    meta = json.loads((model_dir / "model.json").read_text())
    assert meta["extra"]["split"]["holdouts"] == ["device=3090"]
    assert meta["params"]["n_estimators"] == 40
    assert "NVIDIA GeForce RTX 3090" not in meta["training_data"]["devices"]

    out = tmp_path / "eval.json"
    result = runner.invoke(app, ["evaluate", "--model", str(model_dir), "--data", str(store_dir), "--split", "device",
                                 "--holdout", "device=3090", "--json", str(out), "--plots", str(tmp_path / "plots"),
                                 "--no-mlflow"])
    assert result.exit_code == 0, result.output
    metrics = json.loads(out.read_text())
    for key in ("pairwise_accuracy", "kendall_tau", "ece", "brier", "aurc", "selective_accuracy_60", "skip_error",
                "interval_coverage", "bin8_accuracy", "top1_score", "mape", "log_loss"):
        assert key in metrics
    assert metrics["skip_error_ci_low"] <= metrics["skip_error"] <= metrics["skip_error_ci_high"]
    improvers = [t["n_improver_pairs"] for t in metrics["per_task"].values()]
    assert sum(improvers) == metrics["n_improver_pairs"]
    assert all(0.0 <= t["skip_error"] <= 1.0 for t in metrics["per_task"].values() if t["n_improver_pairs"])
    assert metrics["split"]["test_groups"] == ["NVIDIA GeForce RTX 3090"]
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == [
        "predicted_vs_measured.png", "reliability.png", "risk_coverage.png"]


def test_evaluate_refuses_a_split_that_would_leak(store_dir, tmp_path):
    runner = CliRunner()
    model_dir = tmp_path / "model"
    assert runner.invoke(app, ["train", "--data", str(store_dir), "--model", "roofline", "--out", str(model_dir),
                               "--holdout", "device=3090", "--no-mlflow"]).exit_code == 0
    result = runner.invoke(app, ["evaluate", "--model", str(model_dir), "--data", str(store_dir), "--split", "device",
                                 "--holdout", "device=titan", "--json", str(tmp_path / "x.json"), "--no-mlflow"])
    assert result.exit_code == 2
    assert "could hold training records" in result.output


def test_unknown_model_lists_the_registered_ones(store_dir, tmp_path):
    result = CliRunner().invoke(app, ["train", "--data", str(store_dir), "--model", "no_such_model", "--out",
                                      str(tmp_path / "m"), "--no-mlflow"])
    assert result.exit_code == 2
    assert "'gbm', 'forest', 'roofline'" in result.output
    assert "'llm'" in result.output and "no_such_model" in result.output
