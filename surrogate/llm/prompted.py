"""PromptedForecaster: ask any OpenAI-compatible chat endpoint for the speedup bin, then calibrate it.

The question is the GPU Forecasters one: given a *reference* kernel of the same task with its measured
runtime, and a candidate, which of the eight half-octave speedup bins (:mod:`kernelcast.surrogate.bins`)
holds ``reference_ms / candidate_ms``? The model answers with one JSON object::

    {"bin": 5, "probabilities": [0.0, 0.02, 0.08, 0.2, 0.4, 0.2, 0.07, 0.03], "defer": false}

Parsing is robust by construction (:func:`parse_answer`): the first JSON object in the reply is read
(code fences and prose around it are ignored), probabilities may be a list of eight or a mapping by bin,
negative or missing entries count as zero and the rest is renormalised, a bare ``"bin"`` becomes a
smoothed one-hot distribution, and anything else — no JSON, no usable numbers, ``"defer": true``, an HTTP
error, a timeout — is a *deferral*: the candidate gets an infinite predictive scale, its interval is
unbounded, its pairwise and bin probabilities are uninformative, and :meth:`PromptedForecaster.decide`
returns DEFER for it. Nothing here raises on a bad answer.

The bin distribution becomes a log-runtime forecast (mean ``ln ref - ln2 * E[log2 S]`` over bin centres,
variance of the bin distribution plus the within-bin spread), and from there the shared machinery of
:class:`~kernelcast.surrogate._calibrated.CalibratedSurrogate` applies: conformal intervals, calibrated
pairwise probabilities, bins from the calibrated predictive distribution, and the risk-controlled SKIP
rule, all calibrated on held-out records (deferred ones are left out of calibration).

References
----------
Each task needs one measured reference: :meth:`~PromptedForecaster.fit` takes, per task of the training
records, the ``ok`` record of median runtime; :meth:`~PromptedForecaster.add_references` adds or replaces
them later (a search's incumbent, or one measured record per held-out task). A candidate of a task with no
reference is deferred. The client is the standard library (``urllib``); the API key, if the endpoint
needs one, is read from the environment variable ``api_key_env`` and never stored.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from scipy.special import ndtri

from kernelcast.exceptions import InvalidParameterError
from kernelcast.surrogate._base import TASK_COLUMNS, Decision, Forecast
from kernelcast.surrogate._calibrated import RawForecast
from kernelcast.surrogate.bins import BIN_EDGES_LOG2, BIN_LABELS, N_BINS
from kernelcast.surrogate.llm._frame import FrameSurrogate
from kernelcast.surrogate.llm.prompts import compress_source
from kernelcast.surrogate.tasks import ok_mask, require_records

logger = logging.getLogger(__name__)

BIN_CENTERS_LOG2: np.ndarray = np.concatenate([[BIN_EDGES_LOG2[0] - 0.25], BIN_EDGES_LOG2[:-1] + 0.25,
                                               [BIN_EDGES_LOG2[-1] + 0.25]])
"""Centre of each bin in log2 of the speedup (the open end bins are taken half a bin wide)."""

WITHIN_BIN_VAR_LOG2 = 0.5**2 / 12.0
"""Variance of a uniform spread over one half-octave bin (log2 units squared)."""

ONE_HOT_MASS = 0.7
"""Probability a bare ``"bin"`` answer puts on its bin; the rest goes to the neighbours, then evenly."""

SYSTEM_PROMPT = (
    "You are an expert in GPU performance who forecasts Triton kernel runtimes. Answer with one JSON object "
    "and nothing else."
)


def _bins_table() -> str:
    return "; ".join(f"{i + 1}: {label}" for i, label in enumerate(BIN_LABELS))


def parse_answer(text: str | None) -> np.ndarray | None:
    """Bin probabilities, shape (8,), from a model's reply; None means the model deferred or the reply is unusable.

    Parameters
    ----------
    text : str or None
        The reply's content.

    Returns
    -------
    ndarray of shape (8,) or None
        Non-negative, summing to one.
    """
    if not text:
        return None
    obj = _first_json_object(text)
    if obj is None:
        return None
    defer = obj.get("defer", obj.get("defer_to_gpu", False))
    if defer is True or (isinstance(defer, str) and defer.strip().lower() in ("true", "yes", "1")):
        return None
    probs = _probabilities(obj.get("probabilities", obj.get("probs", obj.get("p"))))
    if probs is None:
        chosen = _bin_number(obj.get("bin", obj.get("speedup_bin")))
        if chosen is None:
            return None
        probs = _smoothed_one_hot(chosen)
    total = probs.sum()
    if not np.isfinite(total) or total <= 0:
        return None
    return probs / total


ANSWER_KEYS = ("bin", "speedup_bin", "probabilities", "probs", "p", "defer", "defer_to_gpu")
"""Keys that make a JSON object in a reply an answer."""


def _first_json_object(text: str) -> dict[str, Any] | None:
    """The first JSON object in ``text`` that has an answer key (else the first object, else None)."""
    decoder = json.JSONDecoder()
    first = None
    for match in re.finditer(r"\{", text):
        try:
            value, _ = decoder.raw_decode(text[match.start():])
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict):
            if any(k in value for k in ANSWER_KEYS):
                return value
            first = value if first is None else first
    return first


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, str):
        try:
            out = float(value.strip().rstrip("%")) / (100.0 if value.strip().endswith("%") else 1.0)
        except ValueError:
            return None
        return out if math.isfinite(out) else None
    return None


def _probabilities(value: Any) -> np.ndarray | None:
    probs = np.zeros(N_BINS)
    if isinstance(value, list) and len(value) == N_BINS:
        for i, v in enumerate(value):
            probs[i] = max(_number(v) or 0.0, 0.0)
    elif isinstance(value, Mapping):
        for k, v in value.items():
            b = _bin_number(k)
            if b is not None:
                probs[b - 1] = max(_number(v) or 0.0, 0.0)
    else:
        return None
    return probs if probs.sum() > 0 else None


def _bin_number(value: Any) -> int | None:
    number = _number(value)
    if number is None or not float(number).is_integer() or not 1 <= number <= N_BINS:
        return None
    return int(number)


def _smoothed_one_hot(chosen: int) -> np.ndarray:
    probs = np.full(N_BINS, 0.0)
    neighbours = [b for b in (chosen - 1, chosen + 1) if 1 <= b <= N_BINS]
    probs[chosen - 1] = ONE_HOT_MASS
    for b in neighbours:
        probs[b - 1] = 0.2 / len(neighbours)
    rest = [i for i in range(N_BINS) if probs[i] == 0.0]
    probs[rest] = (1.0 - probs.sum()) / len(rest)
    return probs


def bin_moments(probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation of ``log2(speedup)`` of bin distributions, shape (n, 8) -> two (n,)."""
    mean = probs @ BIN_CENTERS_LOG2
    var = probs @ (BIN_CENTERS_LOG2**2) - mean**2 + WITHIN_BIN_VAR_LOG2
    return mean, np.sqrt(np.maximum(var, WITHIN_BIN_VAR_LOG2))


class ChatClient:
    """Minimal OpenAI-compatible chat client (``POST {base_url}/chat/completions``), standard library only.

    Parameters
    ----------
    base_url : str
        Endpoint root, e.g. ``http://127.0.0.1:8000/v1``.
    model : str
        Model name sent with each request.
    api_key_env : str
        Environment variable holding the API key (a placeholder is sent when unset: local servers want the
        header, not a key).
    timeout_s : float
        Seconds per request.
    """

    def __init__(self, base_url: str, model: str, *, api_key_env: str = "OPENAI_API_KEY", timeout_s: float = 60.0):
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.api_key_env = api_key_env
        self.timeout_s = timeout_s

    def complete(self, messages: Sequence[Mapping[str, str]], *, max_tokens: int, temperature: float) -> str | None:
        """The reply's text, or None on any transport or format error (logged)."""
        body = json.dumps({"model": self.model, "messages": list(messages), "max_tokens": max_tokens,
                           "temperature": temperature}).encode("utf-8")
        key = os.environ.get(self.api_key_env) or "no-key"
        request = urllib.request.Request(self.url, data=body, method="POST", headers={
            "Content-Type": "application/json", "Authorization": f"Bearer {key}"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:  # noqa: S310 - user's URL
                payload = json.loads(response.read().decode("utf-8"))
            return str(payload["choices"][0]["message"]["content"])
        except (urllib.error.URLError, TimeoutError, OSError, ValueError, KeyError, IndexError, TypeError) as exc:
            logger.warning("Chat endpoint %s gave no usable reply: %s", self.url, exc)
            return None


def _task_key(row: Mapping[str, Any]) -> str:
    return "\x1f".join(str(row[c]) for c in TASK_COLUMNS)


class PromptedForecaster(FrameSurrogate):
    """Speedup-bin forecasts from a prompted chat model, calibrated like every kernelcast surrogate.

    Parameters
    ----------
    base_url : str, default="http://127.0.0.1:8000/v1"
        OpenAI-compatible endpoint root.
    model : str, default="smollm2"
        Model name sent to the endpoint.
    api_key_env : str, default="OPENAI_API_KEY"
        Environment variable of the API key (never stored).
    timeout_s : float, default=60.0
        Seconds per request.
    max_tokens : int, default=96
        Reply length limit (tokens).
    temperature : float, default=0.0
        Sampling temperature.
    max_source_chars : int, default=1500
        Each compressed source text in a prompt is cut to this many characters.
    max_workers : int, default=4
        Concurrent requests.
    coverage, skip_error_rate, pair_calibration, min_calibration_pairs, incumbent_top_fraction, random_state
        As for the other surrogates (calibration and the decision rule).

    Attributes
    ----------
    references_ : dict
        Per task: the reference record (``config_json``, ``variant``, ``source_hash``, ``time_ms``).
    sources_ : dict of str to str
        Source texts by ``source_hash``.
    n_requests_, n_deferred_ : int
        Requests sent and answers that were deferrals, since fit.
    """

    model_name = "llm-prompted"
    fitted_attribute = "references_"

    def __init__(
        self,
        *,
        base_url: str = "http://127.0.0.1:8000/v1",
        model: str = "smollm2",
        api_key_env: str = "OPENAI_API_KEY",
        timeout_s: float = 60.0,
        max_tokens: int = 96,
        temperature: float = 0.0,
        max_source_chars: int = 1500,
        max_workers: int = 4,
        coverage: float = 0.9,
        skip_error_rate: float = 0.05,
        pair_calibration: str = "isotonic",
        min_calibration_pairs: int = 100,
        incumbent_top_fraction: float = 0.25,
        random_state: int | None = 0,
    ) -> None:
        self.base_url = base_url
        self.model = model
        self.api_key_env = api_key_env
        self.timeout_s = timeout_s
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.max_source_chars = max_source_chars
        self.max_workers = max_workers
        self.coverage = coverage
        self.skip_error_rate = skip_error_rate
        self.pair_calibration = pair_calibration
        self.min_calibration_pairs = min_calibration_pairs
        self.incumbent_top_fraction = incumbent_top_fraction
        self.random_state = random_state

    def _validate_params(self) -> None:
        super()._validate_params()
        owner = type(self).__name__
        if not (isinstance(self.base_url, str) and self.base_url.startswith(("http://", "https://"))):
            raise InvalidParameterError(
                f"The 'base_url' parameter of {owner} must be an http(s) URL. Got {self.base_url!r} instead.")
        for name in ("max_tokens", "max_source_chars", "max_workers"):
            value = getattr(self, name)
            if not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
                raise InvalidParameterError(
                    f"The {name!r} parameter of {owner} must be a positive int. Got {value!r} instead.")
        if not (isinstance(self.timeout_s, int | float) and self.timeout_s > 0):
            raise InvalidParameterError(
                f"The 'timeout_s' parameter of {owner} must be a positive float. Got {self.timeout_s!r} instead.")

    # -- fitting: references and sources --------------------------------------------------------------
    def _fit_frame(self, records: pl.DataFrame, log_time: np.ndarray, failed: np.ndarray) -> None:
        """Take one reference per task of ``records``: its ``ok`` record of median runtime."""
        self.references_: dict[str, dict[str, Any]] = {}
        self.n_requests_ = 0
        self.n_deferred_ = 0
        self._answers: dict[str, np.ndarray | None] = {}
        self.add_references(records, replace=False, median=True)

    def add_references(
        self, records: pl.DataFrame, *, replace: bool = True, median: bool = False
    ) -> PromptedForecaster:
        """Use measured ``ok`` records as task references (one per task: the first, or the median with ``median``).

        Parameters
        ----------
        records : polars.DataFrame
            Measured records (e.g. a search's incumbent).
        replace : bool
            Replace a task's existing reference.
        median : bool
            Take the record of median runtime of each task instead of its first one.
        """
        require_records(records, "The reference records")
        ok = records.filter(pl.Series(ok_mask(records)))
        for _, task in ok.group_by(list(TASK_COLUMNS), maintain_order=True):
            task = task.sort("time_ms") if median else task
            row = task.row(task.height // 2 if median else 0, named=True)
            key = _task_key(row)
            if replace or key not in self.references_:
                self.references_[key] = {c: row[c] for c in ("family", "variant", "source_hash", "config_json",
                                                             "problem_json", "dtype", "device", "time_ms")}
        return self

    # -- prompting ------------------------------------------------------------------------------------
    def _source(self, source_hash: str) -> str:
        text = compress_source(self.sources_.get(str(source_hash)))
        return text[: self.max_source_chars]

    def messages(self, candidate: Mapping[str, Any], reference: Mapping[str, Any]) -> list[dict[str, str]]:
        """The chat messages asking for the speedup bin of ``candidate`` over ``reference`` (same task)."""
        same_source = candidate["source_hash"] == reference["source_hash"]
        lines = [
            f"Task: {candidate['family']} on {candidate['device']}, dtype {candidate['dtype']}, "
            f"problem {candidate['problem_json']}.",
            f"Reference kernel ({reference['variant']}), measured {reference['time_ms']:.4g} ms, "
            f"configuration {reference['config_json']}:",
            self._source(reference["source_hash"]),
            f"Candidate kernel ({candidate['variant']}"
            + (", same source as the reference" if same_source else "") + f"), configuration {candidate['config_json']}"
            + (":" if not same_source else "."),
        ]
        if not same_source:
            lines.append(self._source(candidate["source_hash"]))
        lines.append(
            "Speedup S = reference time / candidate time. Bins: " + _bins_table() + ". Reply with JSON only: "
            '{"bin": <1-8>, "probabilities": [<8 numbers summing to 1>], "defer": <true if only a GPU '
            "measurement can tell>}"
        )
        return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": "\n".join(lines)}]

    def _ask(self, messages: list[dict[str, str]]) -> np.ndarray | None:
        client = ChatClient(self.base_url, self.model, api_key_env=self.api_key_env, timeout_s=self.timeout_s)
        return parse_answer(client.complete(messages, max_tokens=self.max_tokens, temperature=self.temperature))

    def predict_bin_answers(self, frame: pl.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Ask the endpoint about each candidate of ``frame`` against its task's reference.

        Returns
        -------
        probs : ndarray of shape (n, 8)
            Renormalised bin probabilities (uniform where deferred).
        deferred : ndarray of bool, shape (n,)
            No reference, no usable answer, or the model deferred.
        reference_ms : ndarray of shape (n,)
            The reference runtime of each candidate's task (ms; NaN without one).
        """
        self._check_fitted()
        n = frame.height
        probs = np.full((n, N_BINS), 1.0 / N_BINS)
        deferred = np.ones(n, dtype=bool)
        reference_ms = np.full(n, np.nan)
        jobs: dict[str, list[int]] = {}
        prompts: dict[str, list[dict[str, str]]] = {}
        for i, row in enumerate(frame.iter_rows(named=True)):
            reference = self.references_.get(_task_key(row))
            if reference is None:
                continue
            reference_ms[i] = float(reference["time_ms"])
            messages = self.messages(row, reference)
            key = json.dumps(messages)
            jobs.setdefault(key, []).append(i)
            prompts[key] = messages
        answers = getattr(self, "_answers", None)
        if answers is None:
            answers = self._answers = {}
        todo = [k for k in jobs if k not in answers]
        if todo:
            with ThreadPoolExecutor(max_workers=self.max_workers) as pool:
                for key, answer in zip(todo, pool.map(lambda k: self._ask(prompts[k]), todo), strict=True):
                    answers[key] = answer
            self.n_requests_ += len(todo)
            self.n_deferred_ += sum(answers[k] is None for k in todo)
        for key, rows in jobs.items():
            if answers[key] is not None:
                probs[rows] = answers[key]
                deferred[rows] = False
        return probs, deferred, reference_ms

    def _predict_raw(self, frame: pl.DataFrame) -> RawForecast:
        """Log-runtime forecasts from the bin answers; deferred candidates get an infinite scale."""
        probs, deferred, reference_ms = self.predict_bin_answers(frame)
        mean_log2, sd_log2 = bin_moments(probs)
        log_ref = np.log(np.where(np.isfinite(reference_ms), reference_ms, 1.0))
        mean = log_ref - math.log(2.0) * mean_log2
        half = float(ndtri(0.5 + self.coverage / 2.0)) * math.log(2.0) * sd_log2
        half = np.where(deferred, np.inf, half)
        return RawForecast(mean=mean, lower=mean - half, upper=mean + half, p_fail=None)

    # -- calibration and decisions --------------------------------------------------------------------
    def calibrate(self, records: pl.DataFrame) -> PromptedForecaster:
        """Calibrate on held-out records, leaving out candidates the model deferred on; return self."""
        self._check_fitted()
        require_records(records, "The calibration records")
        frame = records.filter(pl.Series(ok_mask(records)))
        raw = self._predict_raw(frame) if frame.height else None
        if raw is not None:
            kept = np.isfinite(raw.upper)
            frame = frame.filter(pl.Series(kept))
            raw = RawForecast(raw.mean[kept], raw.lower[kept], raw.upper[kept], None)
        self.calibration_ = self._calibration_from_raw(frame, raw, method="split")
        return self

    def decide_from_forecast(self, forecast: Forecast, incumbent_ms: float | Sequence[float], *,
                             incumbent: Forecast | None = None) -> list[Decision]:
        """As for every calibrated surrogate, and DEFER wherever the model deferred (infinite scale)."""
        decisions = super().decide_from_forecast(forecast, incumbent_ms, incumbent=incumbent)
        scale = forecast.log_time_scale
        if scale is None:
            return decisions
        unknown = ~np.isfinite(scale)
        if incumbent is not None and incumbent.log_time_scale is not None:
            unknown |= ~np.isfinite(incumbent.log_time_scale)
        return [Decision.DEFER if u else d for d, u in zip(decisions, unknown.tolist(), strict=True)]

    # -- persistence ----------------------------------------------------------------------------------
    def _save_models(self, path: Path) -> dict[str, Any]:
        (path / "sources.json").write_text(json.dumps(self.sources_, indent=0, sort_keys=True))
        return {"references": self.references_, "sources_file": "sources.json"}

    def _load_models(self, path: Path, state: Mapping[str, Any]) -> None:
        self.references_ = {k: dict(v) for k, v in state["references"].items()}
        self.sources_ = json.loads((path / state.get("sources_file", "sources.json")).read_text())
        self.n_requests_ = 0
        self.n_deferred_ = 0
        self._answers = {}
