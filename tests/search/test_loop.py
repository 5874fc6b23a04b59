from __future__ import annotations

import math

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

from kernelcast.datasets.store import Store
from kernelcast.exceptions import InvalidParameterError, KernelcastError
from kernelcast.search import Budget, ReplayOracle, Search, run_search
from kernelcast.search.loop import decode, distributions, encode, open_storage
from kernelcast.search.oracles import config_key


def _task(oracle, selector="device=3090"):
    (task,) = oracle.list_tasks(selector)
    return task


def _study(run_dir, result):
    return optuna.load_study(study_name=result.study_name, storage=open_storage(run_dir / "study.journal"))


def test_screened_search_follows_the_ask_tell_discipline(toy_frame, knn_surrogate, tmp_path):
    oracle = ReplayOracle(toy_frame, seed=0)
    task = _task(oracle)
    result = run_search(task, oracle, strategy="surrogate", budget=14, surrogate=knn_surrogate, seed=0,
                        run_dir=tmp_path)
    study = _study(tmp_path, result)
    trials = study.get_trials(deepcopy=False)
    measured = [t for t in trials if t.user_attrs.get("action") == "measure"]
    skipped = [t for t in trials if t.user_attrs.get("action") == "skip"]

    # measured count == budget, each config once, each measurement stored in the run's records
    assert len(result.measurements) == 14 == len(measured) == oracle.spent.measurements
    assert len({config_key(m.config) for m in result.measurements}) == 14
    assert len(Store(tmp_path / "records")) == 14
    # measured trials carry the measured value (ln ms) or FAIL; the surrogate updated as they came in
    for t in measured:
        if t.user_attrs["measured"]["status"] == "ok":
            assert t.state is TrialState.COMPLETE
            assert t.value == pytest.approx(math.log(t.user_attrs["measured"]["time_ms"]))
        else:
            assert t.state is TrialState.FAIL
            assert t.value is None
    assert sorted(t.user_attrs["measured"]["index"] for t in measured) == list(range(1, 15))
    assert knn_surrogate.n_updates_ >= 3
    # skipped trials never carry a value: PRUNED, with forecast and decision kept as user attributes
    assert skipped, "the surrogate skipped nothing; the test space is too easy"
    for t in skipped:
        assert t.state is TrialState.PRUNED
        assert t.value is None
        assert t.values is None
        screen = t.user_attrs["screen"]
        assert screen["decision"] == "skip"
        assert "measured" not in t.user_attrs
        assert screen["forecast_lower_ms"] > screen["incumbent_ms"]
        assert screen["forecast_ms"] > 0
        assert screen["step"] >= 1
    # every trial is finished and accounted for; proposals far outnumber measurements
    assert all(t.state.is_finished() for t in trials)
    assert sum(result.actions.values()) == len(trials) > 2 * 14
    assert result.surrogate_seconds > 0


def test_unscreened_strategies_measure_the_budget(toy_frame):
    oracle = ReplayOracle(toy_frame, seed=0)
    task = _task(oracle)
    for strategy in ("tpe", "random", "cmaes", "gp"):
        result = run_search(task, oracle.fork(1), strategy=strategy, budget=12, seed=1)
        assert len(result.measurements) == 12, strategy
        assert len({config_key(m.config) for m in result.measurements}) == 12, strategy
        assert result.surrogate_seconds == 0.0
        assert result.best is not None
        assert result.best.time_ms > 0


def test_failures_are_told_as_fail_and_invalid_configs_are_free(toy_frame):
    oracle = ReplayOracle(toy_frame, seed=0)
    task = _task(oracle)
    storage = optuna.storages.InMemoryStorage()
    with pytest.raises(InvalidParameterError, match="needs a 'run_dir'"):
        Search(task, oracle, strategy="random", budget=5, storage=storage)
    result = run_search(task, oracle, strategy="random", budget=120, seed=2)
    statuses = [m.status for m in result.measurements]
    assert "compile_error" in statuses, "random search of 120 of 264 configs met no failure"
    assert result.actions.get("invalid", 0) >= 1
    assert oracle.spent.measurements == 120
    failed_cost = sum(m.gpu_seconds for m in result.measurements if m.status == "compile_error")
    assert failed_cost == pytest.approx(2.0 * statuses.count("compile_error"))


def test_greedy_measures_the_top_quarter_without_learning(toy_frame, make_knn):
    # greedy's surrogate is trained beforehand (here on the other GPU) and never updated
    surrogate = make_knn(toy_frame.filter(toy_frame["device"] == "NVIDIA TITAN RTX"))
    oracle = ReplayOracle(toy_frame, seed=0)
    result = run_search(_task(oracle), oracle, strategy="greedy", budget=12, surrogate=surrogate, seed=0)
    assert surrogate.n_updates_ == 1  # the fit only
    assert len(result.measurements) == 12
    # three steps of 16 fresh proposals: the best 4 of each measured, the other 12 told PRUNED
    assert result.actions["measure"] == 12
    assert result.actions["skip"] == 36


class _Interrupted(Exception):
    pass


class InterruptingOracle(ReplayOracle):
    """A replay that dies before its ``stop_after + 1``-th measurement, and logs what it measured."""

    def __init__(self, *args, stop_after: int, log: list[str], **kwargs):
        super().__init__(*args, **kwargs)
        self.stop_after = stop_after
        self.log = log

    def _measure(self, task, configs):
        for record in super()._measure(task, configs):
            if len(self.log) >= self.stop_after:
                raise _Interrupted
            self.log.append(config_key(record.config))
            yield record


@pytest.mark.parametrize("strategy", ["surrogate", "tpe"])
def test_an_interrupted_search_resumes_without_measuring_anything_twice(toy_frame, make_knn, tmp_path, strategy):
    from kernelcast.search import get_strategy

    surrogate = make_knn() if get_strategy(strategy).needs_surrogate else None
    log: list[str] = []
    oracle = InterruptingOracle(toy_frame, seed=0, stop_after=6, log=log)
    task = _task(oracle)
    kwargs = dict(strategy=strategy, budget=12, seed=4, run_dir=tmp_path)
    with pytest.raises(_Interrupted):
        run_search(task, oracle, surrogate=surrogate, **kwargs)
    assert len(log) == 6
    oracle.stop_after = 10**6
    fresh_surrogate = make_knn() if surrogate else None
    result = run_search(task, oracle, surrogate=fresh_surrogate, **kwargs)
    assert result.resumed
    assert len(log) == 12 == len(set(log))
    assert len(result.measurements) == 12
    assert len(Store(tmp_path / "records")) == 12
    study = _study(tmp_path, result)
    measured = [t for t in study.get_trials(deepcopy=False) if t.user_attrs.get("action") == "measure"]
    assert len(measured) == 12
    assert all(t.state.is_finished() for t in study.get_trials(deepcopy=False))
    # resuming a finished search measures nothing
    again = run_search(task, oracle, surrogate=fresh_surrogate, **kwargs)
    assert len(log) == 12
    assert len(again.measurements) == 12


def test_a_study_of_another_search_is_refused(toy_frame, tmp_path):
    oracle = ReplayOracle(toy_frame, seed=0)
    task = _task(oracle)
    result = run_search(task, oracle, strategy="random", budget=3, seed=0, run_dir=tmp_path)
    study = _study(tmp_path, result)
    study.set_user_attr("kernelcast", {"task": "something else"})
    with pytest.raises(KernelcastError, match="belongs to another search"):
        run_search(task, oracle, strategy="random", budget=3, seed=0, run_dir=tmp_path)


def test_gpu_seconds_budget_stops_the_search(toy_frame):
    oracle = ReplayOracle(toy_frame, seed=0)
    task = _task(oracle)
    result = run_search(task, oracle, strategy="random", budget=Budget(50, gpu_seconds=0.1), seed=0)
    # each ok record costs ~50 ms compile + ~8 reps of ~1 ms: two or three measurements fit in 0.1 s
    assert 1 <= len(result.measurements) < 5
    assert result.gpu_seconds >= 0.1
    assert sum(m.gpu_seconds for m in result.measurements[:-1]) < 0.1


def test_budget_validation():
    with pytest.raises(InvalidParameterError, match=r"'budget' parameter of search must be a positive int\. Got -3"):
        Budget(-3)
    with pytest.raises(InvalidParameterError, match="'gpu_seconds' budget of search must be positive"):
        Budget(3, gpu_seconds=0)


def test_screened_strategies_need_a_surrogate(toy_frame):
    oracle = ReplayOracle(toy_frame)
    with pytest.raises(InvalidParameterError, match="strategy screens proposals with a surrogate"):
        Search(_task(oracle), oracle, strategy="greedy", budget=3)
    with pytest.raises(InvalidParameterError, match=r"'strategy' parameter of search must be one of 'surrogate'"):
        Search(_task(oracle), oracle, strategy="annealing", budget=3)


def test_space_encoding_round_trips(toy_frame):
    oracle = ReplayOracle(toy_frame)
    space = oracle.space(_task(oracle))
    dists = distributions(space)
    assert set(dists) == {"BLOCK", "UNROLL", "VEC", "WARPS"}
    assert dists["BLOCK"].high == 5  # index of 512 among 16..512
    config = {"BLOCK": 512, "UNROLL": 2, "VEC": 1, "WARPS": 1}
    assert decode(space, encode(space, config)) == config


def _screened(**changes):
    import dataclasses

    from kernelcast.search import get_strategy

    return dataclasses.replace(get_strategy("surrogate"), name="test", **changes)


def test_local_proposals_are_one_step_neighbours_of_the_best_measured(toy_frame, make_prior, tmp_path):
    oracle = ReplayOracle(toy_frame, seed=0)
    task = _task(oracle)
    space = oracle.space(task)
    strategy = _screened(sampler="random", proposals_per_step=8, local_proposals=6)
    result = run_search(task, oracle, strategy=strategy, budget=16, surrogate=make_prior(), seed=3, run_dir=tmp_path)
    trials = _study(tmp_path, result).get_trials(deepcopy=False)
    local = [t for t in trials if t.user_attrs.get("proposal") == "local"]
    assert len(local) >= 6
    order = {p.name: list(p.values) for p in space.params}
    measured = [m.config for m in result.measurements]
    for trial in local:
        config = trial.user_attrs["config"]
        steps = [min(sum(abs(order[k].index(config[k]) - order[k].index(parent[k])) for k in order)
                     for parent in measured if parent != config)]
        assert steps[0] == 1, config  # one knob, one step away from a measured configuration
    assert all(t.state.is_finished() for t in trials)


def test_the_incumbent_configuration_given_to_the_rule_is_the_best_measured(toy_frame, make_prior):
    oracle = ReplayOracle(toy_frame, seed=0)
    task = _task(oracle)
    prior = make_prior()
    result = run_search(task, oracle, strategy=_screened(sampler="random", proposals_per_step=16, learn=False),
                        budget=12, surrogate=prior, seed=1)
    assert len(prior.seen) >= 2
    assert all(incumbent is not None and len(incumbent) == 1 for _, incumbent in prior.seen)
    # the last decision was made against the best configuration measured before the last step
    best_before_last = min((m for m in result.measurements[:-4] if m.time_ms is not None), key=lambda m: m.time_ms)
    expected = prior.forecast(oracle.candidate_frame(task, [best_before_last.config])).log_time_mean
    np.testing.assert_allclose(prior.seen[-1][1].log_time_mean, expected)


def test_the_first_step_screens_a_wider_batch(toy_frame, make_prior, tmp_path):
    oracle = ReplayOracle(toy_frame, seed=0)
    task = _task(oracle)
    strategy = _screened(sampler="random", first_proposals=60, proposals_per_step=10)
    result = run_search(task, oracle, strategy=strategy, budget=8, surrogate=make_prior(), seed=2, run_dir=tmp_path)
    trials = _study(tmp_path, result).get_trials(deepcopy=False)
    decided = [t.user_attrs["screen"]["step"] for t in trials if "screen" in t.user_attrs]
    # step 1 screened 60 fresh proposals: 4 measured, the best 10 of the rest kept pending (decided later)
    assert decided.count(1) == 60 - 10


def test_a_prior_that_decides_on_forecasts_learns_the_task_through_the_adapter(toy_frame, make_prior):
    import dataclasses

    from kernelcast.search.adapt import TaskAdapter

    oracle = ReplayOracle(toy_frame, seed=0)
    task = _task(oracle)
    strategy = _screened(sampler="random", first_proposals=0, proposals_per_step=32, local_proposals=8,
                         ranking="improvement")
    search = Search(task, oracle, strategy=strategy, budget=24, surrogate=make_prior(), seed=0)
    assert isinstance(search.screener.surrogate, TaskAdapter)
    result = search.run()
    assert search.screener.surrogate.n_updates_ >= 5
    assert search.screener.surrogate.records_.height == 24
    # the prior alone would settle on BLOCK=32; learning the task finds the right BLOCK
    assert result.best.config["BLOCK"] == 128
    unlearned = run_search(task, oracle.fork(0), strategy=dataclasses.replace(strategy, learn=False), budget=24,
                           surrogate=make_prior(), seed=0)
    assert unlearned.best.time_ms > result.best.time_ms


def test_a_surrogate_trained_with_compiler_metadata_screens_compiled_candidates(toy_frame, make_knn):
    import json

    import polars as pl

    from kernelcast.search._base import uses_compiled_metadata

    class CompiledKnn(type(make_knn())):  # the test surrogate, declaring that it forecasts from metadata
        def __init__(self, *, k: int = 3, z: float = 1.0, use_compiled_metadata: bool = True) -> None:
            super().__init__(k=k, z=z)
            self.use_compiled_metadata = use_compiled_metadata
            self.frames: list[pl.DataFrame] = []

        def forecast(self, candidates):
            self.frames.append(candidates)
            return super().forecast(candidates)

    blocks = toy_frame["config_json"].map_elements(lambda c: json.loads(c)["BLOCK"], return_dtype=pl.Int64)
    oracle = ReplayOracle(toy_frame.with_columns((32 + blocks // 8).alias("n_regs")), seed=0)
    surrogate = CompiledKnn().fit(toy_frame.head(0))
    assert uses_compiled_metadata(surrogate) and not uses_compiled_metadata(CompiledKnn(use_compiled_metadata=False))
    wrapped = type("Wrapper", (), {"prior": surrogate})()  # as TaskAdapter holds its prior
    assert uses_compiled_metadata(wrapped)
    run_search(_task(oracle), oracle, strategy="surrogate", budget=10, surrogate=surrogate, seed=0)
    assert len(surrogate.frames) >= 2
    for frame in surrogate.frames:  # every screened batch (and incumbent) came with the stored metadata
        assert frame["n_regs"].to_list() == [32 + json.loads(c)["BLOCK"] // 8 for c in frame["config_json"]]
    plain = CompiledKnn(use_compiled_metadata=False).fit(toy_frame.head(0))
    run_search(_task(oracle), oracle, strategy="surrogate", budget=10, surrogate=plain, seed=0)
    assert all("n_regs" not in frame.columns for frame in plain.frames)
