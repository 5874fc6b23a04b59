"""LLMSurrogate on a GPU: LoRA training lowers the loss, bf16 forecasts match float32, the adapter loads on the CPU."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def records():
    from kernelcast.datasets import DATASETS_DIR, load, open_store

    path = DATASETS_DIR / "kernelcast"
    frame = load(path).filter(pl.col("family").is_in(["softmax", "layernorm"]) & (pl.col("dtype") == "float16"))
    frame = frame.sample(3000, seed=0)
    return frame[:2000], frame[2000:], open_store(path).sources()


def test_training_learns_and_the_adapter_loads_on_the_cpu(records, llm_extra, tmp_path):
    from kernelcast.surrogate import load_surrogate
    from kernelcast.surrogate.evaluation import evaluate_surrogate
    from kernelcast.surrogate.llm.forecaster import LLMSurrogate

    train, test, sources = records
    model = LLMSurrogate(max_steps=150, max_minutes=3.0, device="cuda").fit(train, sources=sources)
    history = model.training_log_["history"]
    first = np.mean([h["loss"] for h in history[:3]])
    last = np.mean([h["loss"] for h in history[-3:]])
    assert last < first
    metrics = evaluate_surrogate(model, test).metrics
    assert metrics["pairwise_accuracy"] > 0.6  # the task level alone ranks nothing within a task

    bf16 = model.forecast(test.head(64)).log_time_mean
    model.set_params(inference_dtype="float32")
    fp32 = model.forecast(test.head(64)).log_time_mean
    assert np.corrcoef(bf16, fp32)[0, 1] > 0.98

    path = model.save(tmp_path / "llm")
    assert load_surrogate(path).regressor_.device.startswith("cuda")
    loaded = LLMSurrogate.load(path, device="cpu")
    assert loaded.regressor_.device == "cpu"
    on_cpu = loaded.forecast(test.head(8)).log_time_mean
    np.testing.assert_allclose(on_cpu, fp32[:8], atol=0.05)
