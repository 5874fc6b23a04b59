"""PromptedForecaster: robust parsing, bins to forecasts, and a real local chat server (llm-katan) on 127.0.0.1."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

import numpy as np
import polars as pl
import pytest

from kernelcast.surrogate import Decision
from kernelcast.surrogate.llm.prompted import PromptedForecaster, bin_moments, parse_answer


@pytest.mark.parametrize("text", [
    None, "", "no json here", "{broken", '{"bin": 9}', '{"bin": "x"}', '{"probabilities": [0, 0, 0, 0, 0, 0, 0, 0]}',
    '{"bin": 3, "defer": true}', '{"defer_to_gpu": "yes", "bin": 2}', "[1, 2, 3]", '{"probabilities": [1, 2]}',
])
def test_unusable_answers_are_deferrals(text):
    assert parse_answer(text) is None


def test_answers_are_read_robustly_and_renormalised():
    p = parse_answer('Sure! ```json\n{"bin": 5, "probabilities": [0, 0, 1, 2, 4, 2, 1, 0]}\n``` hope it helps')
    np.testing.assert_allclose(p, np.array([0, 0, 1, 2, 4, 2, 1, 0]) / 10)
    p = parse_answer('{"probabilities": {"1": "50%", "8": 0.5, "9": 3, "x": 1}}')
    np.testing.assert_allclose(p, [0.5, 0, 0, 0, 0, 0, 0, 0.5])
    p = parse_answer('{"probabilities": [-1, 1, null, 1, "a", 0, 0, 0]}')
    np.testing.assert_allclose(p, [0, 0.5, 0, 0.5, 0, 0, 0, 0])
    p = parse_answer('{"bin": 1}')  # a bare bin: smoothed one-hot
    assert p.argmax() == 0 and p[0] == pytest.approx(0.7) and p.sum() == pytest.approx(1.0) and p.min() > 0
    p = parse_answer('text {"note": 1} then {"bin": 4.0, "defer": false}')
    assert p is not None and p.argmax() == 3  # the first object that is an answer


def test_bin_moments():
    one_hot = np.eye(8)
    mean, sd = bin_moments(one_hot)
    np.testing.assert_allclose(mean, [-1.25, -0.75, -0.25, 0.25, 0.75, 1.25, 1.75, 2.25])
    assert np.all(sd > 0)
    mean, sd = bin_moments(np.full((1, 8), 1 / 8))
    assert sd[0] > 1.0


def _records(n_per_task: int = 4) -> pl.DataFrame:
    from kernelcast.datasets import DATASETS_DIR, load

    frame = load(DATASETS_DIR / "kernelcast").filter(
        (pl.col("family") == "transpose") & (pl.col("status") == "ok") & (pl.col("dtype") == "float16")
        & (pl.col("problem_json") == '{"M":4096,"N":4096}'))
    return frame.sort("time_ms")[:: max(1, frame.height // n_per_task)][:n_per_task]


def _free_port() -> int:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_unreachable_endpoint_defers_and_never_raises():
    records = _records()
    model = PromptedForecaster(base_url=f"http://127.0.0.1:{_free_port()}/v1", timeout_s=5.0, min_calibration_pairs=1)
    model.fit(records)
    fc = model.forecast(records)
    assert np.all(np.isinf(fc.log_time_scale))
    assert model.n_requests_ == records.height and model.n_deferred_ == model.n_requests_
    assert model.decide(records, 1.0) == [Decision.DEFER] * records.height


@pytest.fixture(scope="module")
def katan_server(tmp_path_factory, llm_extra):
    """llm-katan serving the converted SmolLM2 from the local cache on 127.0.0.1 (offline), stopped after."""
    if importlib.util.find_spec("llm_katan") is None:
        pytest.skip("llm-katan is not installed (pip install -c constraints.txt llm-katan)")
    from kernelcast.surrogate.llm.base import ensure_converted

    folder = ensure_converted()
    port = _free_port()
    log = tmp_path_factory.mktemp("katan") / "server.log"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "llm_katan.cli", "--model", str(folder), "--served-model-name", "smollm2",
             "--host", "127.0.0.1", "--port", str(port), "--device", "cpu", "--no-quantize", "--max-tokens", "48",
             "--stats-file", str(log.with_name("stats.json"))],
            stdout=out, stderr=subprocess.STDOUT, env=env,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180.0
        while True:
            if proc.poll() is not None:
                pytest.fail(f"llm-katan exited with {proc.returncode}: {log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2.0) as response:
                    if json.loads(response.read()).get("status") == "ok":
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"llm-katan did not answer /health within 180 s: {log.read_text()[-2000:]}")
            time.sleep(1.0)
        yield f"{url}/v1"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)


def test_prompted_forecaster_against_a_real_local_server(katan_server):
    records = _records(3)
    model = PromptedForecaster(base_url=katan_server, model="smollm2", max_tokens=48, max_source_chars=160,
                               max_workers=1, timeout_s=120.0, min_calibration_pairs=1)
    model.fit(records)
    candidates = records[[0, 2]]
    fc = model.forecast(candidates)
    assert model.n_requests_ == 2  # one request per distinct (candidate, reference) prompt
    assert len(fc) == 2 and np.all(np.isfinite(fc.log_time_mean))
    probs, deferred, reference_ms = model.predict_bin_answers(candidates)
    assert model.n_requests_ == 2  # answers are memoised
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)
    assert np.all(np.isfinite(reference_ms))
    # A tiny model may answer anything: a usable answer gives a finite scale, anything else a deferral.
    assert np.array_equal(np.isinf(fc.log_time_scale), deferred)
    decisions = model.decide(candidates, float(records["time_ms"].min()))
    assert all(isinstance(d, Decision) for d in decisions)
    assert [d for d, u in zip(decisions, deferred, strict=True) if u] == [Decision.DEFER] * int(deferred.sum())
