from __future__ import annotations

import json

import pytest

from kernelcast.search import ReplayOracle, RunScore, Task, curves, run_harness, summarize


def _task(device: str) -> Task:
    return Task("toy/axpy", "default", '{"n":4096}', "float32", device)


def _run(strategy: str, seed: int, curve: list[float], device: str = "GPU A", budget: int = 5) -> RunScore:
    return RunScore(task=_task(device), strategy=strategy, seed=seed, budget=budget, measurements=len(curve),
                    gpu_seconds=2.0 * len(curve), surrogate_seconds=0.5 if strategy == "surrogate" else 0.0,
                    wall_seconds=1.0, optimum_ms=1.0, best_config={"x": 1},
                    best_reference_ms=1.0 / curve[-1] if curve and curve[-1] else None, curve=tuple(curve),
                    actions={"measure": len(curve)})


# A hand-made result set: speeds after each measurement (optimum time / time of the pick).
RUNS = [
    _run("surrogate", 0, [0.50, 0.90, 0.97, 0.97, 1.00]),   # within 5% (>= 0.952) from measurement 3
    _run("surrogate", 1, [0.80, 0.96, 0.96, 0.96, 0.96]),   # from measurement 2
    _run("surrogate", 2, [0.0, 0.70, 0.80, 0.90, 0.94]),    # never (0.94 < 1/1.05)
    _run("tpe", 0, [0.40, 0.60, 0.70, 0.80, 0.96]),         # from measurement 5
    _run("tpe", 1, [0.30, 0.50, 0.60, 0.70, 0.80]),         # never
    _run("tpe", 2, [0.30, 0.40], budget=5),                 # stopped early, never
]


def test_summary_metrics_on_a_hand_made_result_set():
    summary = summarize(RUNS)
    assert list(summary) == ["surrogate", "tpe"]
    s, t = summary["surrogate"], summary["tpe"]
    assert s["median_best_over_optimum_speed"] == pytest.approx(0.96)
    assert t["median_best_over_optimum_speed"] == pytest.approx(0.80)
    assert s["runs_within_5pct"] == 2
    assert t["runs_within_5pct"] == 1
    # measurements to 5%: surrogate 3, 2, never -> median 3; tpe 5, never, never -> median is "never"
    assert s["median_measurements_to_5pct"] == 3.0
    assert t["median_measurements_to_5pct"] is None
    assert s["measurements"] == 15
    assert t["measurements"] == 12
    assert s["gpu_seconds"] == pytest.approx(30.0)
    assert s["surrogate_seconds"] == pytest.approx(1.5)
    assert t["surrogate_seconds"] == 0.0
    (label,) = s["per_task"]
    assert s["per_task"][label]["runs"] == 3


def test_scores_round_trip_through_json():
    from kernelcast.search import RunScore as Score

    again = [Score.from_dict(json.loads(json.dumps(r.to_dict()))) for r in RUNS]
    assert again == RUNS


def test_measurements_to_within():
    assert RUNS[0].measurements_to() == 3
    assert RUNS[1].measurements_to() == 2
    assert RUNS[2].measurements_to() is None
    assert RUNS[2].measurements_to(within=0.10) == 5  # 0.94 >= 1/1.10
    assert RUNS[0].speed == 1.0
    assert RUNS[5].speed == pytest.approx(0.40)


def test_curves_take_medians_and_pad_short_runs():
    data = curves(RUNS)
    assert data["surrogate"]["measurements"] == [1, 2, 3, 4, 5]
    assert data["surrogate"]["median"] == pytest.approx([0.50, 0.90, 0.96, 0.96, 0.96])
    assert data["surrogate"]["p25"][0] == pytest.approx(0.25)
    # the tpe run that stopped after two measurements keeps its last value (0.40)
    assert data["tpe"]["median"][-1] == pytest.approx(0.80)
    assert data["tpe"]["median"][2] == pytest.approx(0.60)


def test_harness_end_to_end_on_a_replay(toy_frame, make_knn, tmp_path):
    oracle = ReplayOracle(toy_frame)
    tasks = oracle.list_tasks("device=3090")
    result = run_harness(oracle, tasks, "surrogate,random", seeds=2, budget=6,
                         surrogate_factory=lambda task: make_knn())
    summary = result.summary()
    assert summary["surrogate"]["runs"] == summary["random"]["runs"] == 2
    assert all(r.measurements == 6 for r in result.runs)
    assert all(0.0 < r.speed <= 1.0 for r in result.runs)
    assert summary["surrogate"]["surrogate_seconds"] > 0
    out = json.loads(result.write_json(tmp_path / "harness.json").read_text())
    assert set(out) == {"config", "summary", "curves", "runs"}
    assert out["config"]["budget"] == 6
    assert result.plot(tmp_path / "curves.png").stat().st_size > 1000


def test_searches_are_logged_to_mlflow_one_run_each(toy_frame, tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("KERNELCAST_MLFLOW", "1")
    monkeypatch.chdir(tmp_path)
    oracle = ReplayOracle(toy_frame)
    run_harness(oracle, oracle.list_tasks("device=3090"), "random,tpe", seeds=1, budget=3, track=True)
    import mlflow

    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(experiment_names=["kernelcast-search"])
    assert sorted(runs["params.strategy"]) == ["random", "tpe"]
    assert (runs["metrics.measurements"] == 3).all()
    assert runs["metrics.best_over_optimum_speed"].between(0, 1).all()
