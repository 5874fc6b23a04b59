"""PromptRegressor: a LoRA-adapted language model with a small head that forecasts a kernel's log runtime.

The model reads a candidate's prompt (:mod:`kernelcast.surrogate.llm.prompts`): a prefix shared by every
candidate of one (source, problem, dtype, device) and a short configuration suffix. The hidden state of
the suffix's last token goes through a two-layer head that outputs three numbers per candidate: the mean
and the log variance of its (standardised) log runtime, and the logit of its failing.

Shared-prefix batching
----------------------
The prefix (the source text: hundreds of tokens) is encoded once per group of candidates and its key-value
cache is reused, broadcast over the batch, by every suffix (tens of tokens); training does the same per
step, with gradients through the prefix. So the cost per candidate is that of its suffix, not of its
whole prompt.

Training objective (per step, the candidates of one task, all its source variants)
------------------------------------------------------------------------------------
- Gaussian negative log likelihood of the standardised log runtime of ``ok`` candidates;
- a pairwise logistic (RankNet) loss on the forecast means of every ``ok`` pair of the step whose measured
  runtimes do not tie within noise, at temperature ``rank_temperature`` (log units);
- binary cross-entropy of failing, on every candidate.

Prior forecasts (optional)
--------------------------
With ``prior_features=3`` every candidate also comes with a prior forecast from another model (the
LLM surrogate passes a GBM's out-of-fold forecast): its mean log runtime, the log width of its interval and
the logit of its failing. The head reads them next to the hidden state, and its mean and failure outputs
are corrections added to the prior's (the head's last layer starts at zero, so an untrained head returns
the prior). The language model then learns what the tabular model misses, from the source text.

Training in slices
------------------
One call on a GPU machine may run for only so long, so :meth:`PromptRegressor.fit` can spread one training
run over several calls: with ``checkpoint`` and ``slice_seconds`` a call trains for ``slice_seconds`` (to the
end of the step under way then, so at least one step), writes the training state to ``checkpoint`` and
returns with ``complete`` False; the next call with the same rows and hyperparameters resumes from it
(weights, AdamW state, step, the NumPy and torch random states, the histories and the best validation
snapshot) as if it had never stopped. ``max_seconds`` stays the budget of the whole run: the learning-rate
schedule and the stop rule read the training time of every slice so far. The call that reaches the budget
(or ``max_steps``) finishes as an uninterrupted run does, keeps the best validation step, returns
``complete`` True and writes the finished state, so a call that fails after training can be run again
without training again. The checkpoint records a fingerprint of the training rows and the hyperparameters
that shape training; resuming with others raises :class:`~kernelcast.exceptions.InvalidParameterError`
naming what differs. It is a transient resume file (``torch.save`` of tensors and plain Python, read back
with ``weights_only=True``), not a model file.

Plain NumPy in and out; torch, transformers and peft are imported here only. No polars.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import logging
import math
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kernelcast.exceptions import InvalidParameterError
from kernelcast.surrogate.llm.base import BaseModel, resolve_device

logger = logging.getLogger(__name__)

LORA_TARGETS: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
"""Linear layers of the decoder that get LoRA adapters."""

HEAD_OUTPUTS = 3
"""Head outputs: standardised mean, log variance, failure logit."""

MIN_LOG_VAR = -9.0
MAX_LOG_VAR = 4.0
"""Clamp of the head's log variance (standardised units)."""

CHECKPOINT_FORMAT = "kernelcast-llm-training-checkpoint"
CHECKPOINT_VERSION = 1
"""Identity of the resume files of :meth:`PromptRegressor.fit` (see "Training in slices")."""

PRIOR_TOLERANCE = 1e-3
"""Largest difference between the prior inputs of a resumed run and those it started with (standardised units)."""


@dataclasses.dataclass(frozen=True)
class TrainingRows:
    """What :meth:`PromptRegressor.fit` learns from: one entry per record.

    Attributes
    ----------
    prefixes : dict of str to str
        Prefix text by prefix key.
    prefix_keys : list of str, length n
        Each record's prefix key.
    suffixes : list of str, length n
        Each record's suffix text.
    log_time : ndarray of shape (n,)
        Target log runtime (ln ms, centred by the caller if it likes); NaN for failed records.
    failed : ndarray of bool, shape (n,)
        Whether the record failed (any status but ``ok``).
    task : ndarray of int, shape (n,)
        Task code: the candidates of one step come from one task.
    noise : ndarray of shape (n,)
        Relative noise of each runtime (ties within ``2 * sqrt(noise_a**2 + noise_b**2)`` carry no rank loss).
    prior : ndarray of shape (n, 3), optional
        Prior forecasts (mean log runtime in the units of ``log_time``, log interval width, failure logit);
        required when the regressor has ``prior_features=3``.
    """

    prefixes: Mapping[str, str]
    prefix_keys: Sequence[str]
    suffixes: Sequence[str]
    log_time: np.ndarray
    failed: np.ndarray
    task: np.ndarray
    noise: np.ndarray
    prior: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.suffixes)


@dataclasses.dataclass(frozen=True)
class Prediction:
    """Forecasts of :meth:`PromptRegressor.predict`, each of shape (n,).

    Attributes
    ----------
    mean : ndarray
        Mean of the log runtime (the caller's units, ln ms).
    scale : ndarray
        Standard deviation of the log runtime.
    p_fail : ndarray
        Probability of failing.
    """

    mean: np.ndarray
    scale: np.ndarray
    p_fail: np.ndarray


def _torch() -> Any:
    import torch

    return torch


def _kv_pairs(cache: Any) -> list[tuple[Any, Any]]:
    """(keys, values) of every layer of a transformers cache, shapes (1, kv_heads, length, head_dim)."""
    if hasattr(cache, "layers"):
        return [(layer.keys, layer.values) for layer in cache.layers]
    return list(zip(cache.key_cache, cache.value_cache, strict=True))  # older transformers


def _broadcast_cache(pairs: Sequence[tuple[Any, Any]], batch: int) -> Any:
    """A fresh cache holding the prefix ``pairs`` broadcast to ``batch`` rows (no copy until appended to)."""
    from transformers import DynamicCache

    cache = DynamicCache()
    for i, (k, v) in enumerate(pairs):
        keys, values = k.expand(batch, -1, -1, -1), v.expand(batch, -1, -1, -1)
        if hasattr(cache, "layers"):
            # Create the layer empty, then hold the broadcast views: the suffix's append is then the only copy.
            cache.update(keys[:, :, :0], values[:, :, :0], i)
            cache.layers[i].keys, cache.layers[i].values = keys, values
        else:  # older transformers: the cache copies the broadcast prefix once more
            cache.update(keys, values, i)
    return cache


class ForecastHead:
    """Factory of the head module (a ``torch.nn.Sequential``: Linear, GELU, Linear to 3 outputs)."""

    @staticmethod
    def build(hidden_size: int, width: int, prior_features: int = 0, norm: bool = False) -> Any:
        """The head for a decoder of width ``hidden_size`` (plus ``prior_features`` inputs).

        With ``norm`` a LayerNorm comes first, so the corrections' scale does not follow the size of the
        decoder's hidden states.
        """
        nn = _torch().nn
        layers = [nn.LayerNorm(hidden_size + prior_features)] if norm else []
        head = nn.Sequential(*layers, nn.Linear(hidden_size + prior_features, width), nn.GELU(),
                             nn.Linear(width, HEAD_OUTPUTS))
        if prior_features:
            # Start at the prior: zero corrections of the mean and failure logit, a moderate log variance.
            nn.init.zeros_(head[-1].weight)
            with _torch().no_grad():
                head[-1].bias.copy_(_torch().tensor([0.0, -2.0, 0.0]))
        return head


def validation_accuracy(rows: TrainingRows, index: np.ndarray, mean: np.ndarray) -> float:
    """Within-task pairwise accuracy of forecast means ``mean`` (one per row of ``index``) on rows ``index``.

    Ties within ``TIE_Z * sqrt(noise_a**2 + noise_b**2)`` are excluded, as in the rank loss and the evaluation
    suite; a runtime without a noise estimate counts as 1% noisy.
    """
    from kernelcast.surrogate.evaluation.metrics import pairwise_accuracy
    from kernelcast.surrogate.tasks import TIE_Z

    return pairwise_accuracy(np.exp(rows.log_time[index]), mean, rows.task[index],
                             tie_tolerance=TIE_Z * np.nan_to_num(rows.noise[index], nan=0.01))


def rows_fingerprint(rows: TrainingRows, valid: np.ndarray | None = None) -> dict[str, str]:
    """SHA-256 (hex) of each field of ``rows`` and of the ``valid`` mask: the data a training checkpoint is for.

    The prior forecasts are left out: a GBM refitted in every call gives them again only to within rounding,
    so a checkpoint compares them with a tolerance (:data:`PRIOR_TOLERANCE`) instead.
    """

    def of_text(value: Any) -> str:
        return hashlib.sha256(json.dumps(value).encode()).hexdigest()

    def of_array(values: np.ndarray, dtype: Any) -> str:
        values = np.ascontiguousarray(values, dtype=dtype)
        if values.dtype.kind == "f":
            values = np.where(np.isnan(values), np.nan, values)  # one bit pattern for every NaN
        return hashlib.sha256(values.tobytes()).hexdigest()

    return {
        "rows": str(len(rows)),
        "prefixes": of_text(sorted(rows.prefixes.items())),
        "prefix_keys": of_text(list(rows.prefix_keys)),
        "suffixes": of_text(list(rows.suffixes)),
        "log_time": of_array(rows.log_time, np.float64),
        "failed": of_array(rows.failed, np.bool_),
        "task": of_array(rows.task, np.int64),
        "noise": of_array(rows.noise, np.float64),
        "valid": of_array(np.zeros(len(rows), dtype=bool) if valid is None else valid, np.bool_),
    }


def _short(value: Any) -> str:
    """A value for an error message: SHA-256 digests cut to 12 characters."""
    if isinstance(value, str) and len(value) == 64:
        return value[:12]
    return repr(value)


class PromptRegressor:
    """LoRA-adapted decoder plus head (see the module docstring).

    Parameters
    ----------
    base : BaseModel
        The loaded base model (:func:`~kernelcast.surrogate.llm.base.load_base_model`, float32); the adapters
        are injected into it in place.
    lora_rank, lora_alpha : int
        LoRA rank and scaling numerator.
    lora_dropout : float
        Dropout on the LoRA path during training.
    head_width : int
        Hidden width of the head.
    max_prefix_tokens : int
        Prefixes are cut to this many tokens (the header line comes first, so only source is lost).
    device : str
        ``"auto"``, ``"cpu"`` or ``"cuda[:N]"``.
    seed : int
        Seed of the adapter and head initialisation and of the training batches.
    prior_features : {0, 3}
        Whether candidates come with prior forecasts (see the module docstring).
    head_norm : bool
        Whether the head starts with a LayerNorm (:meth:`ForecastHead.build`).
    """

    def __init__(
        self,
        base: BaseModel,
        *,
        lora_rank: int = 8,
        lora_alpha: int = 16,
        lora_dropout: float = 0.05,
        head_width: int = 256,
        max_prefix_tokens: int = 1024,
        device: str = "auto",
        seed: int = 0,
        prior_features: int = 0,
        head_norm: bool = False,
    ) -> None:
        torch = _torch()
        if prior_features not in (0, 3):
            raise InvalidParameterError(f"prior_features must be 0 or 3. Got {prior_features!r} instead.")
        self.prior_features = int(prior_features)
        from peft import LoraConfig, get_peft_model

        self.base_info = base.info
        self.tokenizer = base.tokenizer
        self.max_prefix_tokens = int(max_prefix_tokens)
        self.device = resolve_device(device)
        self.seed = int(seed)
        torch.manual_seed(self.seed)
        self.lora_config = LoraConfig(
            r=int(lora_rank), lora_alpha=int(lora_alpha), lora_dropout=float(lora_dropout),
            target_modules=list(LORA_TARGETS), bias="none",
        )
        self.model = get_peft_model(base.model, self.lora_config)
        self.model.to(self.device)
        self.head_norm = bool(head_norm)
        self.head = ForecastHead.build(base.info.hidden_size, int(head_width), self.prior_features,
                                       self.head_norm).to(self.device)
        self.head_width = int(head_width)
        self.target_mean = 0.0
        self.target_scale = 1.0
        self._inference: tuple[Any, Any, str] | None = None
        self._suffix_ids: dict[str, list[int]] = {}
        self._prefix_ids: dict[str, list[int]] = {}

    # -- tokens ---------------------------------------------------------------------------------------
    def prefix_ids(self, text: str) -> list[int]:
        """Token ids of a prefix, cut to ``max_prefix_tokens`` (memoised)."""
        ids = self._prefix_ids.get(text)
        if ids is None:
            ids = list(self.tokenizer(text, add_special_tokens=False)["input_ids"][: self.max_prefix_tokens])
            self._prefix_ids[text] = ids
        return ids

    def suffix_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of suffixes (memoised; new ones tokenised in one batch)."""
        new = [t for t in dict.fromkeys(texts) if t not in self._suffix_ids]
        if new:
            encoded = self.tokenizer(new, add_special_tokens=False)["input_ids"]
            self._suffix_ids.update(zip(new, (list(e) for e in encoded), strict=True))
        return [self._suffix_ids[t] for t in texts]

    # -- forward --------------------------------------------------------------------------------------
    @staticmethod
    def _decoder(model: Any) -> Any:
        """The bare decoder (``LlamaModel``) of a causal LM, with or without peft around it."""
        inner = model.get_base_model() if hasattr(model, "get_base_model") else model
        return inner.model

    def _hidden(self, decoder: Any, prefix: list[int], suffixes: list[list[int]], pad_id: int) -> Any:
        """Last-token hidden states, shape (len(suffixes), hidden), of ``prefix + suffix[i]``."""
        torch = _torch()
        device = self.device
        prefix_ids = torch.tensor([prefix], dtype=torch.long, device=device)
        out = decoder(input_ids=prefix_ids, use_cache=True)
        pairs = _kv_pairs(out.past_key_values)
        lengths_np = np.array([len(s) for s in suffixes], dtype=np.int64)
        ids_np = np.full((len(suffixes), int(lengths_np.max())), pad_id, dtype=np.int64)
        for i, s in enumerate(suffixes):
            ids_np[i, : len(s)] = s
        ids = torch.from_numpy(ids_np).to(device)  # one host-to-device copy per batch
        lengths = torch.from_numpy(lengths_np).to(device)
        # Right padding needs no mask: a causal model's real tokens never attend to pads after them.
        cache = _broadcast_cache(pairs, len(suffixes))
        hidden = decoder(input_ids=ids, past_key_values=cache, use_cache=True).last_hidden_state
        return hidden[torch.arange(len(suffixes), device=device), lengths - 1]

    def _prior_inputs(self, prior: np.ndarray | None, n: int) -> np.ndarray | None:
        """Standardised prior columns (mean z, log width relative to the target scale, failure logit), (n, 3)."""
        if not self.prior_features:
            return None
        if prior is None:
            raise InvalidParameterError("This regressor reads prior forecasts: pass prior=(n, 3) array.")
        prior = np.asarray(prior, dtype=np.float64)
        if prior.shape != (n, 3):
            raise InvalidParameterError(f"prior must have shape ({n}, 3). Got {prior.shape} instead.")
        z = (prior[:, 0] - self.target_mean) / self.target_scale
        width = prior[:, 1] - math.log(self.target_scale)
        out = np.stack([np.nan_to_num(z, nan=0.0), np.nan_to_num(width, nan=0.0),
                        np.clip(np.nan_to_num(prior[:, 2], nan=0.0), -12.0, 12.0)], axis=1)
        return out.astype(np.float32)

    def _head_outputs(self, hidden: Any, prior: Any = None) -> tuple[Any, Any, Any]:
        return self._head_outputs_with(self.head, hidden, prior)

    @staticmethod
    def _head_outputs_with(head: Any, hidden: Any, prior: Any = None) -> tuple[Any, Any, Any]:
        """Mean (z units), clamped log variance and failure logit from ``head``, with the prior added if any."""
        x = hidden.float()
        if prior is not None:
            x = _torch().cat([x, prior], dim=1)
        out = head(x)
        mu, fail = out[:, 0], out[:, 2]
        if prior is not None:
            mu, fail = mu + prior[:, 0], fail + prior[:, 2]
        return mu, out[:, 1].clamp(MIN_LOG_VAR, MAX_LOG_VAR), fail

    # -- training -------------------------------------------------------------------------------------
    def fit(
        self,
        rows: TrainingRows,
        *,
        max_seconds: float,
        max_steps: int | None = None,
        batch_size: int = 64,
        learning_rate: float = 3e-4,
        head_learning_rate: float = 1e-3,
        rank_weight: float = 1.0,
        rank_temperature: float = 0.1,
        fail_weight: float = 0.2,
        warmup_steps: int = 30,
        valid: np.ndarray | None = None,
        eval_every: int = 20,
        max_valid_rows: int = 4096,
        checkpoint: Path | None = None,
        slice_seconds: float | None = None,
    ) -> dict[str, Any]:
        """Train the adapters and the head for at most ``max_seconds`` (s) or ``max_steps`` steps.

        With ``valid`` (a boolean mask over ``rows``), those rows are never trained on: every ``eval_every``
        steps, and before the first, the within-task pairwise accuracy of the forecast means on (at most
        ``max_valid_rows`` of) them is measured, and the weights of the best evaluation are kept at the end.
        With a prior, the evaluation before the first step is the prior's own accuracy, so training never
        leaves a model that ranks the validation rows worse than its prior.

        Parameters
        ----------
        rows : TrainingRows
            The records to learn from (and to validate on, see ``valid``).
        max_seconds : float
            Training time budget (s of wall time, over every slice); the learning rate decays over it unless
            ``max_steps`` is given.
        max_steps : int, optional
            Stop after this many optimiser steps; the learning rate then decays over the steps.
        batch_size : int
            Candidates per step (all of one task).
        learning_rate, head_learning_rate : float
            AdamW learning rates of the adapters and of the head (warm-up, then cosine decay to 10%).
        rank_weight, rank_temperature, fail_weight : float
            Weight and temperature (log units) of the rank loss, weight of the failure loss.
        warmup_steps : int
            Steps of linear learning-rate warm-up.
        valid : ndarray of bool, shape (n,), optional
            Rows held out of training to choose the kept weights.
        eval_every : int
            Steps between validations.
        max_valid_rows : int
            Validation rows scored (at most; a seeded sample beyond).
        checkpoint : Path, optional
            Resume file (see "Training in slices" in the module docstring): when it exists, training resumes
            from it; it is written when a slice ends and when training finishes.
        slice_seconds : float, optional
            Training time of this call (s of wall time): the slice ends with the first step that ends after it
            (so it trains at least one step), writes ``checkpoint`` and returns with ``complete`` False. Needs
            ``checkpoint``. ``max_seconds`` stays the budget of the whole run, over every slice.

        Returns
        -------
        dict
            ``complete`` (False when a slice ended before training did; the weights are then those of the last
            step, not the kept ones), steps, seconds (training time over every slice), slices, candidates seen,
            the loss history (every 10th step) and, with ``valid``, the validation history and, once complete,
            the step whose weights were kept.
        """
        torch = _torch()
        if slice_seconds is not None:
            if checkpoint is None:
                raise InvalidParameterError(
                    f"PromptRegressor.fit: slice_seconds={slice_seconds!r} needs a checkpoint path to resume from."
                )
            if not (isinstance(slice_seconds, int | float) and math.isfinite(slice_seconds) and slice_seconds >= 0):
                raise InvalidParameterError(
                    f"The 'slice_seconds' parameter of PromptRegressor.fit must be a non-negative float or None. "
                    f"Got {slice_seconds!r} instead."
                )
        if len(rows) == 0:
            raise InvalidParameterError("PromptRegressor.fit needs at least one record.")
        ok = ~rows.failed & np.isfinite(rows.log_time)
        if ok.sum() < 2:
            raise InvalidParameterError("PromptRegressor.fit needs at least 2 records with a runtime.")
        self.target_mean = float(np.mean(rows.log_time[ok]))
        self.target_scale = float(max(np.std(rows.log_time[ok]), 1e-3))
        z = np.where(ok, (rows.log_time - self.target_mean) / self.target_scale, 0.0)
        self._inference = None

        rng = np.random.default_rng(self.seed)
        keys = np.asarray(rows.prefix_keys, dtype=object)
        valid_rows = np.zeros(0, dtype=np.int64)
        trainable = np.ones(len(rows), dtype=bool)
        if valid is not None:
            valid = np.asarray(valid, dtype=bool)
            if valid.shape != (len(rows),):
                raise InvalidParameterError(f"valid must be a boolean mask of shape ({len(rows)},). Got {valid.shape}.")
            trainable = ~valid
            if not (trainable & ok).any():
                raise InvalidParameterError("PromptRegressor.fit: every record with a runtime is in valid.")
            valid_rows = np.flatnonzero(valid & ok)
            if valid_rows.size > max_valid_rows:
                valid_rows = np.sort(rng.choice(valid_rows, size=max_valid_rows, replace=False))
        tasks, task_of_row = np.unique(rows.task[trainable], return_inverse=True)
        train_index = np.flatnonzero(trainable)
        rows_of_task = [train_index[task_of_row == t] for t in range(tasks.size)]
        # Tasks are drawn with probability ~ sqrt(size): large spaces dominate less than in proportion.
        weights = np.sqrt([r.size for r in rows_of_task])
        weights /= weights.sum()

        lora_params = [p for n, p in self.model.named_parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW([
            {"params": lora_params, "lr": learning_rate},
            {"params": list(self.head.parameters()), "lr": head_learning_rate},
        ], weight_decay=0.0)
        base_lrs = [learning_rate, head_learning_rate]
        decoder = self._decoder(self.model)
        pad_id = int(self.tokenizer.pad_token_id)
        use_amp = self.device.startswith("cuda")
        tau = rank_temperature / self.target_scale
        z_t = torch.tensor(z, dtype=torch.float32, device=self.device)
        ok_t = torch.tensor(ok, device=self.device)
        failed_t = torch.tensor(rows.failed.astype(np.float32), device=self.device)
        log_t = torch.tensor(np.nan_to_num(rows.log_time), dtype=torch.float32, device=self.device)
        noise_t = torch.tensor(np.nan_to_num(rows.noise, nan=0.01), dtype=torch.float32, device=self.device)
        prior_np = self._prior_inputs(rows.prior, len(rows))
        prior_t = torch.from_numpy(prior_np).to(self.device) if prior_np is not None else None

        history: list[dict[str, float]] = []
        valid_history: list[dict[str, float]] = []
        best: tuple[float, int, Any] | None = None
        step = 0
        seen = 0
        trained_before = 0.0  # seconds trained by earlier slices
        slices = 1
        identity: dict[str, Any] = {}
        if checkpoint is not None:
            checkpoint = Path(checkpoint)
            identity = {
                "settings": {
                    "max_seconds": float(max_seconds), "max_steps": None if max_steps is None else int(max_steps),
                    "batch_size": int(batch_size),
                    "learning_rate": float(learning_rate), "head_learning_rate": float(head_learning_rate),
                    "rank_weight": float(rank_weight), "rank_temperature": float(rank_temperature),
                    "fail_weight": float(fail_weight), "warmup_steps": int(warmup_steps),
                    "eval_every": int(eval_every), "max_valid_rows": int(max_valid_rows), **self._architecture(),
                },
                "data": rows_fingerprint(rows, valid),
            }
            if checkpoint.is_file():
                state = self._read_checkpoint(checkpoint, identity, prior_np)
                self._resume(state, optimizer, rng)
                step, seen = int(state["step"]), int(state["candidates_seen"])
                trained_before, slices = float(state["seconds"]), int(state["slices"]) + 1
                history, valid_history = list(state["history"]), list(state["valid_history"])
                if state["best"] is not None:
                    snapshot = (state["best"]["adapter"], state["best"]["head"])
                    best = (float(state["best"]["accuracy"]), int(state["best"]["step"]), snapshot)
                logger.info("resumed training from %s at step %d (%.0f of %.0f s trained)", checkpoint, step,
                            trained_before, max_seconds)

        started = time.perf_counter()

        def trained_seconds() -> float:
            return trained_before + time.perf_counter() - started

        def evaluate() -> None:
            nonlocal best
            accuracy = float(self._pairwise_accuracy(rows, valid_rows, decoder, pad_id, prior_t, use_amp))
            valid_history.append({"step": step, "seconds": round(trained_seconds(), 2),
                                  "pairwise_accuracy": accuracy})
            if not math.isfinite(accuracy):  # no untied pair to rank: nothing to choose by
                return
            if best is None or accuracy > best[0]:
                best = (accuracy, step, self._snapshot())
            logger.info("step %d: validation pairwise accuracy %.4f (best %.4f at step %d)", step, accuracy,
                        best[0], best[1])

        def save(path: Path, complete: bool) -> None:
            self._write_checkpoint(path, {
                **identity, "target_mean": self.target_mean, "target_scale": self.target_scale,
                "prior": None if prior_np is None else torch.from_numpy(prior_np),
                "complete": complete, "step": step, "candidates_seen": seen, "seconds": trained_seconds(),
                "slices": slices, "history": history, "valid_history": valid_history,
                "best": None if best is None else {"accuracy": best[0], "step": best[1], "adapter": best[2][0],
                                                   "head": best[2][1]},
            }, optimizer, rng)

        if valid_rows.size and not valid_history:
            evaluate()
        self.model.train()
        self.head.train()
        slice_steps = 0
        while True:
            elapsed = trained_seconds()
            if elapsed >= max_seconds or (max_steps is not None and step >= max_steps):
                break
            if (slice_seconds is not None and checkpoint is not None and slice_steps
                    and time.perf_counter() - started >= slice_seconds):
                save(checkpoint, complete=False)
                self.model.eval()
                self.head.eval()
                log: dict[str, Any] = {"complete": False, "steps": step, "seconds": trained_seconds(),
                                       "max_seconds": float(max_seconds), "max_steps": max_steps, "slices": slices,
                                       "candidates_seen": seen, "checkpoint": str(checkpoint), "history": history}
                if valid_rows.size:
                    log.update(valid_rows=int(valid_rows.size), valid_history=valid_history)
                logger.info("training slice ended at step %d (%.0f of %.0f s trained); state saved to %s", step,
                            log["seconds"], max_seconds, checkpoint)
                return log
            progress = min(1.0, elapsed / max_seconds) if max_steps is None else step / max(max_steps, 1)
            factor = min(1.0, (step + 1) / warmup_steps) * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress)))
            for group, base_lr in zip(optimizer.param_groups, base_lrs, strict=True):
                group["lr"] = base_lr * factor

            members = rows_of_task[rng.choice(tasks.size, p=weights)]
            batch = rng.choice(members, size=min(batch_size, members.size), replace=False)
            batch = batch[np.argsort(keys[batch], kind="stable")]
            outputs = []
            with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=use_amp):
                for key in dict.fromkeys(keys[batch]):
                    idx = batch[keys[batch] == key]
                    suffixes = self.suffix_ids([rows.suffixes[i] for i in idx])
                    outputs.append(self._hidden(decoder, self.prefix_ids(rows.prefixes[key]), suffixes, pad_id))
            hidden = torch.cat(outputs)
            sel = torch.as_tensor(batch, device=self.device)
            mu, log_var, fail_logit = self._head_outputs(hidden, prior_t[sel] if prior_t is not None else None)
            ok_b, z_b = ok_t[sel], z_t[sel]
            loss_fail = torch.nn.functional.binary_cross_entropy_with_logits(fail_logit, failed_t[sel])
            loss = fail_weight * loss_fail
            nll = torch.zeros((), device=self.device)
            rank = torch.zeros((), device=self.device)
            if ok_b.any():
                nll = 0.5 * (log_var[ok_b] + (z_b[ok_b] - mu[ok_b]) ** 2 * torch.exp(-log_var[ok_b])).mean()
                loss = loss + nll
                m, y, nz = mu[ok_b], log_t[sel][ok_b], noise_t[sel][ok_b]
                gap = y[:, None] - y[None, :]
                tie = gap.abs() <= 2.0 * torch.sqrt(nz[:, None] ** 2 + nz[None, :] ** 2)
                mask = torch.triu(torch.ones_like(tie), diagonal=1) & ~tie
                if mask.any():
                    pred_gap = (m[:, None] - m[None, :]) / tau
                    rank = torch.nn.functional.softplus(-torch.sign(gap) * pred_gap)[mask].mean()
                    loss = loss + rank_weight * rank
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(lora_params + list(self.head.parameters()), 1.0)
            optimizer.step()
            step += 1
            slice_steps += 1
            seen += int(batch.size)
            if valid_rows.size and step % eval_every == 0:
                evaluate()
                self.model.train()
                self.head.train()
            if step % 10 == 1:
                history.append({"step": step, "seconds": round(trained_seconds(), 2),
                                "loss": float(loss.detach()), "nll": float(nll.detach()),
                                "rank": float(rank.detach()), "fail": float(loss_fail.detach())})
                if step % 200 == 1:
                    logger.info("step %d, %.0f s: loss %.4f (nll %.4f, rank %.4f, fail %.4f)", step,
                                history[-1]["seconds"], history[-1]["loss"], history[-1]["nll"],
                                history[-1]["rank"], history[-1]["fail"])
        if valid_rows.size and (not valid_history or valid_history[-1]["step"] != step):
            evaluate()
        self.model.eval()
        self.head.eval()
        log = {"complete": True, "steps": step, "seconds": trained_seconds(), "slices": slices,
               "candidates_seen": seen, "history": history}
        if checkpoint is not None:  # the finished state: a call that fails after training need not train again
            save(checkpoint, complete=True)
        if best is not None:
            self._restore(best[2])
            log.update(valid_rows=int(valid_rows.size), valid_history=valid_history, kept_step=best[1],
                       kept_valid_pairwise_accuracy=best[0])
            logger.info("kept the weights of step %d (validation pairwise accuracy %.4f)", best[1], best[0])
        return log

    # -- resume files ---------------------------------------------------------------------------------
    def _architecture(self) -> dict[str, Any]:
        """What shapes the adapted model: checked when a training checkpoint is resumed."""
        return {"lora_rank": int(self.lora_config.r), "lora_alpha": int(self.lora_config.lora_alpha),
                "lora_dropout": float(self.lora_config.lora_dropout), "head_width": self.head_width,
                "head_norm": self.head_norm, "prior_features": self.prior_features,
                "max_prefix_tokens": self.max_prefix_tokens, "seed": self.seed,
                "base_model": self.base_info.gguf_sha256}

    def _write_checkpoint(self, path: Path, state: dict[str, Any], optimizer: Any, rng: np.random.Generator) -> None:
        """Write the training ``state`` plus weights, optimizer and random states to ``path`` atomically."""
        torch = _torch()

        def on_cpu(weights: Mapping[str, Any]) -> dict[str, Any]:
            return {k: v.detach().cpu() for k, v in weights.items()}

        adapter, head = self._snapshot()
        state = {
            "format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, **state,
            "adapter": on_cpu(adapter), "head": on_cpu(head),
            "optimizer": optimizer.state_dict(),
            "numpy_rng": rng.bit_generator.state,
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state(self.device) if self.device.startswith("cuda") else None,
        }
        if state["best"] is not None:
            state["best"] = {**state["best"], "adapter": on_cpu(state["best"]["adapter"]),
                             "head": on_cpu(state["best"]["head"])}
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
        try:
            torch.save(state, partial)
            os.replace(partial, path)  # a reader sees the old checkpoint or the new one, never half of one
        finally:
            partial.unlink(missing_ok=True)

    def _read_checkpoint(self, path: Path, identity: Mapping[str, Any], prior: np.ndarray | None) -> dict[str, Any]:
        """The training state in ``path``, once checked to belong to this run (``identity``, targets, ``prior``)."""
        import pickle

        torch = _torch()
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except (OSError, RuntimeError, EOFError, ValueError, pickle.UnpicklingError) as exc:
            raise InvalidParameterError(f"Cannot read the training checkpoint {str(path)!r}: {exc}") from exc
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        if found != CHECKPOINT_FORMAT:
            raise InvalidParameterError(
                f"{str(path)!r} is not a training checkpoint of PromptRegressor.fit: its format is {found!r}, "
                f"expected {CHECKPOINT_FORMAT!r}."
            )
        if state.get("version") != CHECKPOINT_VERSION:
            raise InvalidParameterError(
                f"The training checkpoint {str(path)!r} has version {state.get('version')!r}; this kernelcast "
                f"resumes version {CHECKPOINT_VERSION}. Delete it to train from the start."
            )
        for key, what in (("settings", "hyperparameters"), ("data", "training rows")):
            saved, now = state.get(key) or {}, identity[key]
            differences = [f"{name} {_short(saved.get(name))} in the checkpoint, {_short(value)} now"
                           for name, value in now.items() if saved.get(name) != value]
            if differences:
                raise InvalidParameterError(
                    f"The training checkpoint {str(path)!r} was written for other {what}: "
                    f"{'; '.join(differences)}. Resume with the {what} it was written for, or give another "
                    "checkpoint path to train from the start."
                )
        for name in ("target_mean", "target_scale"):
            saved_value, value = float(state[name]), float(getattr(self, name))
            if abs(saved_value - value) > 1e-9 * max(1.0, abs(value)):
                raise InvalidParameterError(
                    f"The training checkpoint {str(path)!r} is for other data: its {name} is {saved_value!r}, "
                    f"that of these rows {value!r}."
                )
        if (state["prior"] is None) != (prior is None):
            raise InvalidParameterError(
                f"The training checkpoint {str(path)!r} was written {'without' if state['prior'] is None else 'with'} "
                f"prior forecasts, and this run has {'none' if prior is None else 'some'}."
            )
        if prior is not None:
            gap = float(np.max(np.abs(state["prior"].numpy() - prior), initial=0.0))
            if not gap <= PRIOR_TOLERANCE:
                raise InvalidParameterError(
                    f"The training checkpoint {str(path)!r} was written for other prior forecasts: they differ from "
                    f"these by up to {gap:.3g} (standardised units; allowed {PRIOR_TOLERANCE})."
                )
        return state

    def _resume(self, state: Mapping[str, Any], optimizer: Any, rng: np.random.Generator) -> None:
        """Load the weights, optimizer state and random states of a checked training checkpoint."""
        torch = _torch()
        self._restore((state["adapter"], state["head"]))
        optimizer.load_state_dict(state["optimizer"])
        rng.bit_generator.state = state["numpy_rng"]
        torch.set_rng_state(state["torch_rng"])  # LoRA dropout draws from it
        if state["cuda_rng"] is not None and self.device.startswith("cuda"):
            torch.cuda.set_rng_state(state["cuda_rng"], self.device)

    # -- checkpoints and validation ----------------------------------------------------------------------
    def _snapshot(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """Copies of the adapter and head weights (on the model's device)."""
        from peft import get_peft_model_state_dict

        adapter = {k: v.detach().clone() for k, v in get_peft_model_state_dict(self.model).items()}
        head = {k: v.detach().clone() for k, v in self.head.state_dict().items()}
        return adapter, head

    def _restore(self, snapshot: tuple[dict[str, Any], dict[str, Any]]) -> None:
        """Copy adapter and head weights (:meth:`_snapshot`, or a training checkpoint's) into the model."""
        from peft import set_peft_model_state_dict

        result = set_peft_model_state_dict(self.model, snapshot[0])  # copies into the parameters in place
        unexpected = getattr(result, "unexpected_keys", None)
        if unexpected:
            raise InvalidParameterError(f"Unexpected adapter weights: {unexpected[:5]}")
        self.head.load_state_dict(snapshot[1])
        self._inference = None

    def _pairwise_accuracy(self, rows: TrainingRows, index: np.ndarray, decoder: Any, pad_id: int, prior_t: Any,
                           use_amp: bool) -> float:
        """Within-task pairwise accuracy of the forecast means on rows ``index`` (ties within noise excluded)."""
        torch = _torch()
        self.model.eval()
        self.head.eval()
        keys = np.asarray(rows.prefix_keys, dtype=object)[index]
        mu = np.zeros(index.size)
        with torch.no_grad(), torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=use_amp):
            for key in dict.fromkeys(keys.tolist()):
                members = np.flatnonzero(keys == key)
                for start in range(0, members.size, 512):
                    chunk = index[members[start:start + 512]]
                    suffixes = self.suffix_ids([rows.suffixes[i] for i in chunk])
                    hidden = self._hidden(decoder, self.prefix_ids(rows.prefixes[key]), suffixes, pad_id)
                    prior = prior_t[torch.as_tensor(chunk, device=self.device)] if prior_t is not None else None
                    mu[members[start:start + 512]] = self._head_outputs(hidden, prior)[0].float().cpu().numpy()
        return validation_accuracy(rows, index, mu)

    # -- inference ------------------------------------------------------------------------------------
    def _inference_model(self, dtype: str) -> tuple[Any, Any]:
        """A merged copy of the adapted model in ``dtype`` (LoRA folded into the weights), built once."""
        torch = _torch()
        if self._inference is None or self._inference[2] != dtype:
            merged = copy.deepcopy(self.model).merge_and_unload()
            torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
            merged.to(device=self.device, dtype=torch_dtype).eval()
            head = copy.deepcopy(self.head).to(self.device).eval()
            self._inference = (merged, head, dtype)
        return self._inference[0], self._inference[1]

    def default_dtype(self) -> str:
        """bfloat16 on a GPU, float32 on the CPU."""
        return "bfloat16" if self.device.startswith("cuda") else "float32"

    def predict(
        self,
        prefixes: Mapping[str, str],
        prefix_keys: Sequence[str],
        suffixes: Sequence[str],
        *,
        batch_size: int = 256,
        dtype: str | None = None,
        prior: np.ndarray | None = None,
    ) -> Prediction:
        """Forecast candidates (one prefix key and suffix each), grouped by prefix for the shared cache.

        Parameters
        ----------
        prefixes : dict of str to str
            Prefix text by key.
        prefix_keys, suffixes : sequence of str, length n
            Each candidate's prefix key and suffix text.
        batch_size : int
            Suffixes per forward pass.
        dtype : {"float32", "bfloat16", "float16"}, optional
            Inference dtype (default :meth:`default_dtype`).
        prior : ndarray of shape (n, 3), optional
            Prior forecasts, required with ``prior_features=3`` (see :class:`TrainingRows`).

        Returns
        -------
        Prediction
            Arrays of shape (n,).
        """
        torch = _torch()
        n = len(suffixes)
        mean = np.zeros(n)
        scale = np.ones(n)
        p_fail = np.zeros(n)
        if n == 0:
            return Prediction(mean, scale, p_fail)
        prior_np = self._prior_inputs(prior, n)
        prior_all = torch.from_numpy(prior_np).to(self.device) if prior_np is not None else None
        model, head = self._inference_model(dtype or self.default_dtype())
        decoder = self._decoder(model)
        pad_id = int(self.tokenizer.pad_token_id)
        keys = np.asarray(prefix_keys, dtype=object)
        suffix_tokens = self.suffix_ids(list(suffixes))
        lengths = np.array([len(s) for s in suffix_tokens])
        with torch.inference_mode():
            for key in dict.fromkeys(keys.tolist()):
                idx = np.flatnonzero(keys == key)
                idx = idx[np.argsort(lengths[idx], kind="stable")]  # similar lengths share a batch: less padding
                prefix = self.prefix_ids(prefixes[key])
                prefix_ids = torch.tensor([prefix], dtype=torch.long, device=self.device)
                pairs = _kv_pairs(decoder(input_ids=prefix_ids, use_cache=True).past_key_values)
                for start in range(0, idx.size, batch_size):
                    chunk = idx[start:start + batch_size]
                    width = int(lengths[chunk].max())
                    ids = np.full((chunk.size, width), pad_id, dtype=np.int64)
                    for row, i in enumerate(chunk):
                        ids[row, : lengths[i]] = suffix_tokens[i]
                    ids_t = torch.from_numpy(ids).to(self.device, non_blocking=True)
                    last = torch.from_numpy(lengths[chunk] - 1).to(self.device)
                    hidden = decoder(input_ids=ids_t, past_key_values=_broadcast_cache(pairs, chunk.size),
                                     use_cache=True).last_hidden_state
                    x = hidden[torch.arange(chunk.size, device=self.device), last].float()
                    chunk_prior = None
                    if prior_all is not None:
                        chunk_prior = prior_all[torch.from_numpy(chunk).to(self.device)]
                    mu, log_var, fail = (t.float().cpu().numpy() for t in self._head_outputs_with(head, x, chunk_prior))
                    mean[chunk] = mu
                    scale[chunk] = np.exp(0.5 * log_var)
                    p_fail[chunk] = 1.0 / (1.0 + np.exp(-fail))
        return Prediction(self.target_mean + self.target_scale * mean, self.target_scale * scale, p_fail)

    # -- persistence ----------------------------------------------------------------------------------
    def save(self, path: Path) -> dict[str, Any]:
        """Write ``adapter.safetensors`` (LoRA weights, float16) and ``head.safetensors``; return JSON state."""
        torch = _torch()
        from peft import get_peft_model_state_dict
        from safetensors.torch import save_file

        adapter = {k: v.detach().to("cpu", torch.float16).contiguous()
                   for k, v in get_peft_model_state_dict(self.model).items()}
        save_file(adapter, str(path / "adapter.safetensors"))
        head = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in self.head.state_dict().items()}
        save_file(head, str(path / "head.safetensors"))
        lora = self.lora_config.to_dict()
        return {
            "adapter_file": "adapter.safetensors",
            "head_file": "head.safetensors",
            "lora": {"r": lora["r"], "lora_alpha": lora["lora_alpha"], "lora_dropout": lora["lora_dropout"],
                     "target_modules": sorted(lora["target_modules"])},
            "head_width": self.head_width,
            "prior_features": self.prior_features,
            "head_norm": self.head_norm,
            "max_prefix_tokens": self.max_prefix_tokens,
            "target_mean": self.target_mean,
            "target_scale": self.target_scale,
            "base_model": self.base_info.to_dict(),
        }

    def load_weights(self, path: Path, state: Mapping[str, Any]) -> None:
        """Read back what :meth:`save` wrote (the adapters and head of this regressor's shape)."""
        torch = _torch()
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        adapter = load_file(str(path / state["adapter_file"]))
        adapter = {k: v.to(torch.float32) for k, v in adapter.items()}
        result = set_peft_model_state_dict(self.model, adapter)
        unexpected = getattr(result, "unexpected_keys", None)
        if unexpected:
            raise InvalidParameterError(f"The adapter in {str(path)!r} has unexpected weights: {unexpected[:5]}")
        self.head.load_state_dict(load_file(str(path / state["head_file"])))
        self.target_mean = float(state["target_mean"])
        self.target_scale = float(state["target_scale"])
        self.model.eval()
        self.head.eval()
        self._inference = None
