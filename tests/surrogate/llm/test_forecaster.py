"""LLMSurrogate on the CPU: the estimator contract, a one-step fit of the real model, calibration,
decisions, bins, and a save/load round trip of safetensors plus JSON (no pickle)."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest
from sklearn.base import clone

from kernelcast.exceptions import InvalidParameterError, NotFittedError
from kernelcast.surrogate import Decision
from kernelcast.surrogate._base import CANDIDATE_COLUMNS

TINY = dict(max_steps=1, batch_size=4, max_prefix_tokens=32, inference_batch_size=8, min_calibration_pairs=5,
            device="cpu")


def _llm():
    from kernelcast.surrogate.llm.forecaster import LLMSurrogate

    return LLMSurrogate


def test_estimator_contract():
    LLMSurrogate = _llm()
    model = LLMSurrogate(max_minutes=2.0, lora_rank=4)
    params = model.get_params()
    assert params["max_minutes"] == 2.0 and params["lora_rank"] == 4
    assert clone(model).get_params() == params
    assert not [k for k in vars(model) if k.endswith("_")]
    with pytest.raises(TypeError):
        LLMSurrogate(2.0)
    with pytest.raises(NotFittedError, match="LLMSurrogate instance is not fitted yet"):
        model.forecast(pl.DataFrame({c: ["x"] for c in CANDIDATE_COLUMNS}))


@pytest.mark.parametrize(("param", "value", "message"), [
    ("lora_rank", 0, "'lora_rank' parameter of LLMSurrogate must be a positive int. Got 0"),
    ("max_minutes", -1.0, "'max_minutes' parameter of LLMSurrogate must be a positive float. Got -1.0"),
    ("inference_dtype", "int8", "'inference_dtype' parameter of LLMSurrogate must be one of"),
    ("max_steps", 0, "'max_steps' parameter of LLMSurrogate must be a positive int or None"),
    ("checkpoint", 3, "'checkpoint' parameter of LLMSurrogate must be a file path or None. Got 3 instead"),
    ("slice_minutes", -1.0, "'slice_minutes' parameter of LLMSurrogate must be a non-negative float or None. Got -1.0"),
    ("slice_minutes", 2.0, "'slice_minutes' parameter of LLMSurrogate needs a 'checkpoint' to resume from. Got "
                           "slice_minutes=2.0 with checkpoint=None"),
])
def test_invalid_parameters(param, value, message):
    model = _llm()(**{param: value})
    frame = pl.DataFrame({**{c: ["x"] for c in CANDIDATE_COLUMNS}, "status": ["ok"], "time_ms": [1.0]})
    with pytest.raises(InvalidParameterError, match=message):
        model.fit(frame)


@pytest.fixture(scope="module")
def small_data():
    """A few records of two softmax variants on one task, plus a third variant only in the source library."""
    from kernelcast.datasets import DATASETS_DIR, load, open_store

    path = DATASETS_DIR / "kernelcast"
    frame = load(path).filter((pl.col("family") == "softmax") & (pl.col("problem_json") == '{"M":4096,"N":4096}')
                              & (pl.col("dtype") == "float16"))
    rng = np.random.default_rng(0)
    seen = frame.filter(pl.col("variant").is_in(["online", "two_pass"]))
    seen = seen[rng.permutation(seen.height)]
    ok = seen.filter(pl.col("status") == "ok")
    unseen = frame.filter((pl.col("variant") == "single_block") & (pl.col("status") == "ok")).head(3)
    return {"train": pl.concat([ok[:14], seen.filter(pl.col("status") != "ok")[:2]]), "calib": ok[14:30],
            "test": ok[30:36], "unseen": unseen, "sources": open_store(path).sources()}


@pytest.fixture(scope="module")
def fitted(small_data, llm_extra):
    model = _llm()(**TINY)
    model.fit(small_data["train"], sources=small_data["sources"])
    return model


def test_fit_trains_one_step_and_forecasts(fitted, small_data):
    assert fitted.training_log_["steps"] == 1
    assert fitted.training_log_["candidates_seen"] == 4
    assert np.isfinite(fitted.training_log_["history"][0]["loss"])
    fc = fitted.forecast(small_data["test"])
    assert len(fc) == small_data["test"].height
    assert np.all(np.isfinite(fc.log_time_mean))
    assert np.all(fc.log_time_scale > 0)
    assert np.all((fc.p_fail >= 0) & (fc.p_fail <= 1))
    assert np.all(np.isinf(fc.log_time_lower))  # uncalibrated: infinite interval
    assert fitted.decide(small_data["test"], 0.05) == [Decision.DEFER] * small_data["test"].height


def test_source_library_covers_variants_without_training_records(fitted, small_data):
    texts, keys, _ = fitted.prompts(small_data["unseen"])
    assert len(set(keys)) == 1
    prefix = texts[keys[0]]
    assert prefix.startswith("Triton kernel softmax/single_block")
    assert "(source text not available)" not in prefix
    assert "tl.program_id" in prefix.replace(" ", "")


def test_calibrate_bins_pairs_and_round_trip(fitted, small_data, tmp_path):
    from kernelcast.surrogate import load_surrogate

    fitted.calibrate(small_data["calib"])
    test = small_data["test"]
    fc = fitted.forecast(test)
    assert np.all(np.isfinite(fc.log_time_lower)) and np.all(fc.log_time_lower <= fc.log_time_upper)
    bins = fitted.predict_bin_proba(test, 0.05)
    assert bins.shape == (test.height, 8)
    np.testing.assert_allclose(bins.sum(axis=1), 1.0)
    p = fitted.predict_proba_faster(test[:3], test[3:6])
    assert p.shape == (3,) and np.all((p >= 0) & (p <= 1))
    decisions = fitted.decide(test, 0.05, incumbent=test[:1])
    assert all(isinstance(d, Decision) for d in decisions)

    path = fitted.save(tmp_path / "llm")
    names = {p.name for p in path.iterdir()}
    assert {"model.json", "adapter.safetensors", "head.safetensors", "sources.json"} <= names
    assert not [n for n in names if n.endswith((".pkl", ".pickle", ".pt", ".bin"))]
    meta = json.loads((path / "model.json").read_text())
    assert meta["class"] == "kernelcast.surrogate.llm.forecaster:LLMSurrogate"
    assert meta["model_state"]["base_model"]["name"] == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert (path / "adapter.safetensors").stat().st_size < 10 * 2**20  # small enough to commit

    loaded = load_surrogate(path)
    again = loaded.forecast(test)
    np.testing.assert_allclose(again.log_time_mean, fc.log_time_mean, atol=2e-3)  # float16 adapter on disk
    np.testing.assert_allclose(again.log_time_upper, fc.log_time_upper, atol=2e-3)
    assert loaded.decide(test, 0.05, incumbent=test[:1]) == decisions
    assert _llm().load(path, device="cpu").regressor_.device == "cpu"


def test_gbm_prior_is_where_the_forecast_starts(small_data, llm_extra, tmp_path):
    """With a near-zero learning rate the head's corrections stay at their zero start: the forecast is the
    prior GBM's, task level and units included; the prior travels with the saved model."""
    from kernelcast.surrogate import load_surrogate

    model = _llm()(**{**TINY, "learning_rate": 1e-9, "head_learning_rate": 1e-9, "prior_folds": 2})
    model.fit(small_data["train"], sources=small_data["sources"])
    assert model.training_log_["prior"]["fold_groups"] == "rows"  # one shape: rows are dealt into folds
    test = small_data["test"]
    ours = model._predict_raw(test)
    gbm = model.prior_._predict_raw(test)
    np.testing.assert_allclose(ours.mean, gbm.mean, atol=1e-3)
    np.testing.assert_allclose(ours.p_fail, gbm.p_fail, atol=1e-3)
    path = model.save(tmp_path / "llm_prior")
    assert (path / "prior" / "model.json").is_file()
    loaded = load_surrogate(path)
    assert loaded.prior == "gbm" and loaded.regressor_.prior_features == 3
    np.testing.assert_allclose(loaded._predict_raw(test).mean, ours.mean, atol=2e-3)


def test_without_prior_the_head_reads_the_prompt_alone(small_data, llm_extra):
    model = _llm()(**{**TINY, "prior": "none"})
    model.fit(small_data["train"], sources=small_data["sources"])
    assert model.prior_ is None and model.regressor_.prior_features == 0
    assert "prior" not in model.training_log_
    assert np.all(np.isfinite(model.forecast(small_data["test"]).log_time_mean))


def test_mix_weights_the_language_model_against_the_gbm_on_validation(small_data, llm_extra, tmp_path):
    """prior='mix': the language model reads no prior; its forecast and the GBM's are mixed with the weight
    whose validation pairwise accuracy is best, and the weight travels with the saved model."""
    from kernelcast.surrogate import load_surrogate
    from kernelcast.surrogate.gbm import GBMSurrogate
    from kernelcast.surrogate.llm.forecaster import MIX_WEIGHTS

    fitted = []
    fit = GBMSurrogate.fit

    def spy(self, records, *args, **kwargs):
        fitted.append(records.height)
        return fit(self, records, *args, **kwargs)

    model = _llm()(**{**TINY, "prior": "mix", "prior_folds": 2, "valid_fraction": 0.5})
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(GBMSurrogate, "fit", spy)
        model.fit(small_data["train"], sources=small_data["sources"])
    assert model.regressor_.prior_features == 0 and model.prior_ is not None
    # two GBMs: one without the validation rows (its forecasts of them choose the weight), one on every row
    n_valid = int(model._valid_rows(small_data["train"]).sum())
    assert fitted == [small_data["train"].height - n_valid, small_data["train"].height] and n_valid > 0
    assert model.training_log_["prior"]["fold_groups"] == "validation"
    mix = model.training_log_["mix"]
    assert mix["weights"] == list(MIX_WEIGHTS) and len(mix["valid_pairwise_accuracy"]) == len(MIX_WEIGHTS)
    assert mix["weight"] == model.mix_weight_ and mix["valid_rows"] > 1
    best = max(mix["valid_pairwise_accuracy"])
    assert mix["valid_pairwise_accuracy"][MIX_WEIGHTS.index(model.mix_weight_)] == best
    assert all(a < best for a in mix["valid_pairwise_accuracy"][: MIX_WEIGHTS.index(model.mix_weight_)])  # ties: lower
    test = small_data["test"]
    chosen = model._predict_raw(test)
    parts = {}
    for w in (0.0, 1.0, 0.3):
        model.mix_weight_ = w
        parts[w] = model._predict_raw(test)
    gbm = model.prior_._predict_raw(test)
    np.testing.assert_allclose(parts[0.0].mean, gbm.mean)
    np.testing.assert_allclose(parts[0.0].p_fail, gbm.p_fail)
    assert not np.allclose(parts[1.0].mean, gbm.mean, atol=1e-3)
    for field in ("mean", "lower", "upper", "p_fail"):
        np.testing.assert_allclose(getattr(parts[0.3], field),
                                   0.3 * getattr(parts[1.0], field) + 0.7 * getattr(parts[0.0], field), atol=1e-9)
    model.mix_weight_ = mix["weight"]
    path = model.save(tmp_path / "llm_mix")
    loaded = load_surrogate(path)
    assert loaded.prior == "mix" and loaded.mix_weight_ == mix["weight"]
    np.testing.assert_allclose(loaded._predict_raw(test).mean, chosen.mean, atol=2e-3)


@pytest.mark.parametrize(("param", "value", "message"), [
    ("prior", "forest", "'prior' parameter of LLMSurrogate must be one of"),
    ("prior_folds", 1, "'prior_folds' parameter of LLMSurrogate must be an int of at least 2. Got 1"),
    ("prior_groups", "tasks", "'prior_groups' parameter of LLMSurrogate must be one of"),
])
def test_invalid_prior_parameters(param, value, message):
    test_invalid_parameters(param, value, message)


def test_mix_needs_validation_groups():
    model = _llm()(prior="mix", valid_fraction=0.0)
    frame = pl.DataFrame({**{c: ["x"] for c in CANDIDATE_COLUMNS}, "status": ["ok"], "time_ms": [1.0]})
    with pytest.raises(InvalidParameterError, match="prior='mix' chooses its weight on validation groups: .* Got 0.0"):
        model.fit(frame)


def test_validation_keeps_the_best_step(small_data, llm_extra):
    """Held-out rows are scored before the first step and after each one; the kept weights are those of the
    best score, and they are what the model forecasts with."""
    model = _llm()(**{**TINY, "max_steps": 2, "eval_every": 1, "valid_fraction": 0.5})
    model.fit(small_data["train"], sources=small_data["sources"])
    log = model.training_log_
    assert [h["step"] for h in log["valid_history"]] == [0, 1, 2]
    scores = [h["pairwise_accuracy"] for h in log["valid_history"]]
    assert log["kept_valid_pairwise_accuracy"] == max(scores)
    assert log["kept_step"] == scores.index(max(scores))
    assert 0 < log["valid_rows"] < small_data["train"].height
    assert model.training_log_["candidates_seen"] == 8


def test_mix_trains_in_slices_and_fits_its_gbms_after_the_last(small_data, llm_extra, tmp_path):
    """prior='mix' over one-step slices: a slice that ends early fits no GBM and leaves the model unfitted; the
    call that finishes fits both GBMs and chooses the weight, exactly as one uninterrupted fit does."""
    import pickle

    from kernelcast.surrogate.gbm import GBMSurrogate
    from kernelcast.surrogate.llm.forecaster import TrainingSliceEnded

    params = {**TINY, "max_steps": 2, "eval_every": 1, "prior": "mix", "prior_folds": 2, "valid_fraction": 0.5}
    checkpoint = tmp_path / "ckpt" / "train.pt"
    model = _llm()(**params, checkpoint=str(checkpoint), slice_minutes=0.0)
    assert clone(model).get_params()["checkpoint"] == str(checkpoint)
    train, test = small_data["train"], small_data["test"]
    fitted = []
    fit = GBMSurrogate.fit

    def spy(self, records, *args, **kwargs):
        fitted.append(records.height)
        return fit(self, records, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(GBMSurrogate, "fit", spy)
        with pytest.raises(TrainingSliceEnded, match=r"Training slice ended at step 1 of 2 .* resume from") as ended:
            model.fit(train, sources=small_data["sources"])
        assert fitted == [] and checkpoint.is_file()
        assert ended.value.steps == 1 and ended.value.checkpoint == str(checkpoint)
        assert str(pickle.loads(pickle.dumps(ended.value))) == str(ended.value)
        assert model.training_complete_ is False and model.prior_ is None and model.mix_weight_ is None
        assert model.training_log_["complete"] is False and model.training_log_["steps"] == 1
        with pytest.raises(NotFittedError, match=r"stopped at the end of a slice \(step 1\)"):
            model.forecast(test)
        with pytest.raises(NotFittedError, match="stopped at the end of a slice"):
            model.calibrate(small_data["calib"])
        model.fit(train, sources=small_data["sources"])  # resumes and finishes
    n_valid = int(model._valid_rows(train).sum())
    assert fitted == [train.height - n_valid, train.height]
    assert model.training_complete_ is True
    log = model.training_log_
    assert log["complete"] and log["steps"] == 2 and log["slices"] == 2 and log["candidates_seen"] == 8
    assert log["prior"]["fold_groups"] == "validation" and model.mix_weight_ == log["mix"]["weight"]

    whole = _llm()(**params).fit(train, sources=small_data["sources"])
    assert whole.training_log_["slices"] == 1
    assert log["kept_step"] == whole.training_log_["kept_step"]
    assert log["mix"]["valid_pairwise_accuracy"] == whole.training_log_["mix"]["valid_pairwise_accuracy"]
    assert model.mix_weight_ == whole.mix_weight_
    forecast = model.forecast(test)
    np.testing.assert_allclose(forecast.log_time_mean, whole.forecast(test).log_time_mean, atol=1e-6)
    assert np.all(np.isfinite(forecast.log_time_mean))
    loaded = _llm().load(model.save(tmp_path / "sliced"), device="cpu")
    assert loaded.checkpoint is None and loaded.slice_minutes is None  # loading resumes no training
    assert loaded.training_log_["slices"] == 2


def test_gbm_prior_trains_in_slices(small_data, llm_extra, tmp_path):
    """prior='gbm' refits its prior in every slice (the same each time) and resumes from the checkpoint."""
    from kernelcast.surrogate.llm.forecaster import TrainingSliceEnded

    params = {**TINY, "max_steps": 2, "prior_folds": 2, "valid_fraction": 0.0}
    model = _llm()(**params, checkpoint=str(tmp_path / "train.pt"), slice_minutes=0.0)
    with pytest.raises(TrainingSliceEnded, match="step 1 of 2"):
        model.fit(small_data["train"], sources=small_data["sources"])
    model.fit(small_data["train"], sources=small_data["sources"])
    assert model.training_log_["steps"] == 2 and model.training_log_["slices"] == 2 and model.prior_ is not None
    whole = _llm()(**params).fit(small_data["train"], sources=small_data["sources"])
    test = small_data["test"]
    np.testing.assert_allclose(model._predict_raw(test).mean, whole._predict_raw(test).mean, atol=1e-6)


def test_refit_mix_chooses_a_weight_per_family_and_keeps_the_rest(small_data, llm_extra, tmp_path):
    """refit_mix chooses the weights again on the same validation rows, without training; with mix_by_family a
    family with validation rows gets its own weight, and a row of any other family gets the overall one."""
    from kernelcast.surrogate import load_surrogate
    from kernelcast.surrogate.llm.forecaster import MIX_WEIGHTS

    train, test = small_data["train"], small_data["test"]
    model = _llm()(**{**TINY, "prior": "mix", "prior_folds": 2, "valid_fraction": 0.5})
    model.fit(train, sources=small_data["sources"]).calibrate(small_data["calib"])
    adapter = {k: v.clone() for k, v in model.regressor_.model.state_dict().items() if "lora" in k}
    weight, gbm = model.mix_weight_, model.prior_
    model.set_params(mix_by_family=True).refit_mix(train)
    assert model.calibration_ is None  # forecasts changed: calibrate again
    assert model.prior_ is gbm and model.mix_weight_ == weight  # same rows, same overall choice
    by_family = model.training_log_["mix"]["by_family"]
    assert set(model.mix_weights_by_family_) == set(by_family) == {"softmax"}  # the only family here
    accuracy = by_family["softmax"]["valid_pairwise_accuracy"]
    assert accuracy[MIX_WEIGHTS.index(model.mix_weights_by_family_["softmax"])] == max(accuracy)
    for k, v in model.regressor_.model.state_dict().items():
        if k in adapter:
            assert (v == adapter[k]).all()  # the language model was not trained again

    model.mix_weight_, model.mix_weights_by_family_ = 0.0, {"softmax": 1.0}
    llm_alone = model._predict_raw(test).mean
    model.mix_weights_by_family_ = {"matmul": 1.0}  # not this family: the overall weight 0 applies
    np.testing.assert_allclose(model._predict_raw(test).mean, gbm._predict_raw(test).mean)
    assert not np.allclose(llm_alone, gbm._predict_raw(test).mean, atol=1e-3)
    model.mix_weights_by_family_ = {"softmax": 0.4}
    loaded = load_surrogate(model.save(tmp_path / "by_family"))
    assert loaded.mix_weights_by_family_ == {"softmax": 0.4}
    np.testing.assert_allclose(loaded._predict_raw(test).mean, 0.4 * llm_alone + 0.6 * gbm._predict_raw(test).mean,
                               atol=2e-3)
    with pytest.raises(InvalidParameterError, match="records this LLMSurrogate was trained on"):
        model.refit_mix(train.head(10))
