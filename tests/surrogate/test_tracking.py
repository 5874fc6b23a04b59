"""kernelcast.tracking: the MLflow compat module (SQLite default in the working directory)."""

from __future__ import annotations

import pytest

from kernelcast import tracking


def test_tracking_uri_default_and_environment(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert tracking.tracking_uri() == "sqlite:///mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///elsewhere.db")
    assert tracking.tracking_uri() == "sqlite:///elsewhere.db"


def test_disabled_tracking_logs_nothing(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("KERNELCAST_MLFLOW", "0")
    assert tracking.log_run(experiment="x", run_name="y", metrics={"a": 1.0}) is None
    assert not (tmp_path / "mlflow.db").exists()


@pytest.mark.slow
def test_log_run_to_the_sqlite_default(monkeypatch, tmp_path):
    pytest.importorskip("mlflow")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("KERNELCAST_MLFLOW", raising=False)
    figure = tmp_path / "fig.png"
    figure.write_bytes(b"\x89PNG")
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "model.json").write_text("{}")
    run_id = tracking.log_run(experiment="kernelcast-test", run_name="t", params={"split": {"kind": "device"}},
                              metrics={"ece": 0.01, "nan": float("nan")}, artifacts=[figure],
                              artifact_dirs={"model": tmp_path / "model"})
    assert run_id
    assert (tmp_path / "mlflow.db").is_file()
    import mlflow

    run = mlflow.get_run(run_id)
    assert run.data.metrics == {"ece": 0.01}
    assert run.data.params["split.kind"] == "device"
