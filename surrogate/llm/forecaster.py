"""LLMSurrogate: a language model that reads the kernel's source and forecasts its runtime, with confidence.

SmolLM2-135M-Instruct (:mod:`kernelcast.surrogate.llm.base`) reads a prompt made of the candidate's
source text, problem, dtype, device and configuration (:mod:`kernelcast.surrogate.llm.prompts`); LoRA
adapters and a small head (:mod:`kernelcast.surrogate.llm.regressor`) turn it into a Gaussian forecast of
the log runtime and a failure probability. Everything after that is the tabular surrogates' machinery,
reused, not copied (:class:`~kernelcast.surrogate._calibrated.CalibratedSurrogate`): the task level
(with ``centering``, the model learns the log time minus the level of the task), CQR intervals,
conformal predictive distributions, the eight speedup bins, calibrated pairwise probabilities and the
conformal-risk-controlled MEASURE/SKIP/DEFER rule.

The source library
------------------
A candidate's source text is part of the candidate (known before it is measured), so the model keeps
every text given to :meth:`LLMSurrogate.fit` through ``sources`` (``Store.sources()``), including texts of
variants with no training record, and :meth:`LLMSurrogate.add_sources` adds more later; a candidate frame
may also carry a ``source_text`` column. A candidate whose text is unknown is forecast from the rest of
its prompt (a warning says so).

The GBM prior
-------------
With ``prior="gbm"`` (the default) the model does not forecast from nothing: a
:class:`~kernelcast.surrogate.gbm.GBMSurrogate` forecasts every candidate first, and the language model's head
reads that forecast and corrects it (:mod:`kernelcast.surrogate.llm.regressor`). So that the corrections
learn what the GBM misses on *unseen* groups, the training rows get out-of-fold GBM forecasts: the groups of
``prior_groups`` (shapes by default) are dealt into ``prior_folds`` folds and each fold is forecast by a GBM
fitted on the others. A final GBM fitted on every training row forecasts new candidates; it is saved in the
model directory (``prior/``, LightGBM text plus JSON). ``prior="none"`` is the language model alone.

``prior="mix"`` keeps the two apart instead: the language model forecasts from the prompt alone, and the
forecast is ``w`` times its forecast plus ``1 - w`` times the GBM's (means, interval bounds and failure
probabilities alike, before calibration). ``w`` is chosen from :data:`MIX_WEIGHTS` by the within-task
pairwise accuracy on the validation groups (``valid_fraction``), which neither model was trained on: the
GBM's forecasts of them come from one GBM fitted without them (two GBM fits in all, not ``prior_folds + 1``).
A source the GBM's features cannot describe can so pull
``w`` up, and a validation set where the language model adds nothing leaves ``w = 0``: the GBM. With
``mix_by_family`` each kernel family that has validation rows gets its own ``w``, chosen the same way on its
rows, and the other families the overall one. :meth:`LLMSurrogate.refit_mix` chooses the weights again for a
trained model (its training records given back) without training the language model again.

Training runs on the GPU when there is one (``device="auto"``), for ``max_minutes`` or ``max_steps``;
the adapters and the head are saved as safetensors plus JSON and load on the CPU.

Training in slices
------------------
Where one call may run only for so long (a GPU machine lent for 10 minutes at a time), ``checkpoint`` and
``slice_minutes`` spread ``max_minutes`` of training over several calls of :meth:`LLMSurrogate.fit` with the
same records, sources and parameters: each call trains for ``slice_minutes``, saves the training state to
``checkpoint`` and raises :class:`TrainingSliceEnded`, leaving the model unfitted (``training_complete_`` is
False and forecasting raises :class:`~kernelcast.exceptions.NotFittedError`); the call that reaches the
budget finishes the fit as one uninterrupted call would (see "Training in slices" in
:mod:`kernelcast.surrogate.llm.regressor`). With ``prior="gbm"`` every call fits the GBM prior before
training, as the language model reads it; with ``prior="mix"`` only the last call fits the GBMs, after the
training, and chooses the weight.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from scipy.special import ndtri

from kernelcast.exceptions import InvalidParameterError, KernelcastError, NotFittedError, invalid_choice
from kernelcast.surrogate._calibrated import RawForecast
from kernelcast.surrogate.llm import prompts
from kernelcast.surrogate.llm._frame import FrameSurrogate, source_mapping
from kernelcast.surrogate.tasks import relative_noise, task_ids

logger = logging.getLogger(__name__)

PRIORS: tuple[str, ...] = ("gbm", "mix", "none")
"""Allowed values of ``LLMSurrogate.prior``."""

MIX_WEIGHTS: tuple[float, ...] = tuple(round(0.1 * k, 1) for k in range(11))
"""Weights of the language model's forecast tried by ``prior="mix"`` (0: the GBM alone, 1: the language model)."""

MAX_MIX_ROWS = 16_384
"""Validation rows (at most) forecast to choose the weight of ``prior="mix"``."""

PRIOR_DIR = "prior"
"""Folder of the prior GBM inside an LLM model directory."""

INFERENCE_DTYPES: tuple[str, ...] = ("auto", "float32", "bfloat16", "float16")
"""Allowed values of ``LLMSurrogate.inference_dtype`` (``auto``: bfloat16 on a GPU, float32 on the CPU)."""

SOURCES_FILE = "sources.json"
TRAINING_LOG_FILE = "training_log.json"


class TrainingSliceEnded(KernelcastError):
    """:meth:`LLMSurrogate.fit` trained one slice and saved it; training is not finished (see the module docstring).

    Call ``fit`` again with the same records, sources and parameters to resume from the checkpoint.

    Attributes
    ----------
    log : dict
        The training log of the slice (:meth:`~kernelcast.surrogate.llm.regressor.PromptRegressor.fit`).
    steps : int
        Optimiser steps done so far, over every slice.
    seconds, max_seconds : float
        Training time so far, over every slice, and the whole budget (s).
    checkpoint : str
        The file training resumes from.
    """

    def __init__(self, log: Mapping[str, Any]) -> None:
        self.log = dict(log)
        self.steps = int(log["steps"])
        self.seconds = float(log["seconds"])
        self.max_seconds = float(log["max_seconds"])
        self.checkpoint = str(log["checkpoint"])
        steps = f" of {log['max_steps']}" if log.get("max_steps") is not None else ""
        super().__init__(
            f"Training slice ended at step {self.steps}{steps} ({self.seconds:.0f} of {self.max_seconds:.0f} s "
            f"trained); call fit again with the same records and parameters to resume from {self.checkpoint!r}."
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.log,))


class LLMSurrogate(FrameSurrogate):
    """Selective language-model surrogate of kernel runtimes (scikit-learn estimator contract).

    Parameters
    ----------
    coverage, skip_error_rate, pair_calibration, min_calibration_pairs, incumbent_top_fraction
        As for :class:`~kernelcast.surrogate.gbm.GBMSurrogate` (calibration and the decision rule).
    centering : bool, default=True
        Learn the log time minus the task's level (:class:`~kernelcast.surrogate.level.TaskLevelModel`).
    max_minutes : float, default=5.0
        Training time budget (minutes of wall time; over every call when training in slices).
    max_steps : int or None, default=None
        Stop after this many optimiser steps (None: only the time budget stops training).
    batch_size : int, default=64
        Candidates per step (all of one task).
    lora_rank, lora_alpha : int, default=8, 16
        LoRA rank and scaling numerator.
    lora_dropout : float, default=0.05
    head_width : int, default=256
        Hidden width of the forecast head.
    learning_rate, head_learning_rate : float, default=3e-4, 1e-3
        AdamW learning rates of the adapters and of the head (warm-up, then cosine decay to 10%).
    rank_weight : float, default=1.0
        Weight of the pairwise ranking loss.
    rank_temperature : float, default=0.1
        Temperature of the ranking loss (log-runtime units).
    fail_weight : float, default=0.2
        Weight of the failure loss.
    max_prefix_tokens : int, default=1024
        Prompt prefixes (header and source) are cut to this many tokens.
    device : str, default="auto"
        Where the model runs: ``"auto"`` (a CUDA GPU when present), ``"cpu"``, ``"cuda[:N]"``.
    inference_batch_size : int, default=256
        Candidates per forward pass when forecasting.
    inference_dtype : {"auto", "float32", "bfloat16", "float16"}, default="auto"
        Dtype of the forecasting model (the adapters are merged into a copy of the weights).
    prior : {"gbm", "mix", "none"}, default="gbm"
        Forecast a correction of a GBM's forecast, a validation-weighted mix of the language model's and a
        GBM's forecasts (see the module docstring), or from the prompt alone.
    prior_folds : int, default=4
        Folds of the out-of-fold GBM forecasts of the training rows (at least 2).
    prior_groups : {"shapes", "variants", "families", "device"}, default="shapes"
        Groups kept whole within one fold (:data:`~kernelcast.surrogate.evaluation.splits.GROUP_COLUMNS`).
    prior_n_jobs : int, default=-1
        LightGBM threads of the prior GBMs (-1: every core).
    head_norm : bool, default=True
        Start the head with a LayerNorm (models saved before this option have none).
    valid_fraction : float, default=0.1
        Fraction of the ``prior_groups`` groups (whole groups; at least one) held out of training to choose
        the training step whose weights are kept (see :meth:`PromptRegressor.fit`); 0 keeps the last weights.
    eval_every : int, default=20
        Steps between validations.
    mix_by_family : bool, default=False
        With ``prior="mix"``: choose the language model's weight per kernel family on that family's validation
        rows (families without any keep the overall weight; see the module docstring).
    checkpoint : str or None, default=None
        File of the training state (see "Training in slices" in the module docstring): training resumes from
        it when it exists (same records, sources and parameters, else ``fit`` raises
        :class:`~kernelcast.exceptions.InvalidParameterError` naming what differs), and it is written when a
        slice ends and when training finishes. A transient resume file (``torch.save``), not a model file.
    slice_minutes : float or None, default=None
        Minutes of training per call of ``fit``, to the end of the step under way then (so at least one
        step; needs ``checkpoint``): a call whose slice ends before ``max_minutes`` (or ``max_steps``) is used
        up saves the checkpoint and raises :class:`TrainingSliceEnded`. None: train to the end in one call.
    random_state : int or None, default=0
        Seed.

    Attributes
    ----------
    regressor_ : PromptRegressor
        The adapted language model and head.
    sources_ : dict of str to str
        The source library (see the module docstring).
    training_log_ : dict
        Steps, seconds, candidates seen and the loss history of the last ``fit`` (of the training so far,
        after a slice ended).
    training_complete_ : bool
        Whether the last ``fit`` finished (False after a slice ended: the model is not fitted).
    prior_ : GBMSurrogate or None
        The prior GBM fitted on every training row (None with ``prior="none"``).
    mix_weights_by_family_ : dict of str to float
        The weights of the families that have their own (``mix_by_family``); empty otherwise.
    mix_weight_ : float or None
        The language model's weight with ``prior="mix"`` (None otherwise).
    featurizer_, level_model_, calibration_, training_data_
        As for the tabular surrogates.
    """

    model_name = "llm"
    fitted_attribute = "regressor_"

    def __init__(
        self,
        *,
        coverage: float = 0.9,
        skip_error_rate: float = 0.05,
        pair_calibration: str = "isotonic",
        min_calibration_pairs: int = 100,
        incumbent_top_fraction: float = 0.25,
        centering: bool = True,
        max_minutes: float = 5.0,
        max_steps: int | None = None,
        batch_size: int = 64,
        lora_rank: int = 8,
        lora_alpha: int = 16,
        lora_dropout: float = 0.05,
        head_width: int = 256,
        learning_rate: float = 3e-4,
        head_learning_rate: float = 1e-3,
        rank_weight: float = 1.0,
        rank_temperature: float = 0.1,
        fail_weight: float = 0.2,
        max_prefix_tokens: int = 1024,
        device: str = "auto",
        inference_batch_size: int = 256,
        inference_dtype: str = "auto",
        prior: str = "gbm",
        prior_folds: int = 4,
        prior_groups: str = "shapes",
        prior_n_jobs: int = -1,
        head_norm: bool = True,
        valid_fraction: float = 0.1,
        eval_every: int = 20,
        mix_by_family: bool = False,
        checkpoint: str | None = None,
        slice_minutes: float | None = None,
        random_state: int | None = 0,
    ) -> None:
        self.coverage = coverage
        self.skip_error_rate = skip_error_rate
        self.pair_calibration = pair_calibration
        self.min_calibration_pairs = min_calibration_pairs
        self.incumbent_top_fraction = incumbent_top_fraction
        self.centering = centering
        self.max_minutes = max_minutes
        self.max_steps = max_steps
        self.batch_size = batch_size
        self.lora_rank = lora_rank
        self.lora_alpha = lora_alpha
        self.lora_dropout = lora_dropout
        self.head_width = head_width
        self.learning_rate = learning_rate
        self.head_learning_rate = head_learning_rate
        self.rank_weight = rank_weight
        self.rank_temperature = rank_temperature
        self.fail_weight = fail_weight
        self.max_prefix_tokens = max_prefix_tokens
        self.device = device
        self.inference_batch_size = inference_batch_size
        self.inference_dtype = inference_dtype
        self.prior = prior
        self.prior_folds = prior_folds
        self.prior_groups = prior_groups
        self.prior_n_jobs = prior_n_jobs
        self.head_norm = head_norm
        self.valid_fraction = valid_fraction
        self.eval_every = eval_every
        self.mix_by_family = mix_by_family
        self.checkpoint = checkpoint
        self.slice_minutes = slice_minutes
        self.random_state = random_state

    # -- validation -----------------------------------------------------------------------------------
    def _validate_params(self) -> None:
        super()._validate_params()
        owner = type(self).__name__
        for name in ("batch_size", "lora_rank", "lora_alpha", "head_width", "max_prefix_tokens",
                     "inference_batch_size", "eval_every"):
            value = getattr(self, name)
            if not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
                raise InvalidParameterError(
                    f"The {name!r} parameter of {owner} must be a positive int. Got {value!r} instead."
                )
        if self.max_steps is not None and not (isinstance(self.max_steps, int) and self.max_steps >= 1):
            raise InvalidParameterError(
                f"The 'max_steps' parameter of {owner} must be a positive int or None. Got {self.max_steps!r} instead."
            )
        for name in ("max_minutes", "learning_rate", "head_learning_rate", "rank_temperature"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and value > 0 and math.isfinite(value)):
                raise InvalidParameterError(
                    f"The {name!r} parameter of {owner} must be a positive float. Got {value!r} instead."
                )
        for name in ("rank_weight", "fail_weight", "lora_dropout"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and value >= 0):
                raise InvalidParameterError(
                    f"The {name!r} parameter of {owner} must be a non-negative float. Got {value!r} instead."
                )
        if self.inference_dtype not in INFERENCE_DTYPES:
            raise invalid_choice("inference_dtype", owner, self.inference_dtype, INFERENCE_DTYPES)
        if not (isinstance(self.valid_fraction, int | float) and 0.0 <= self.valid_fraction < 1.0):
            raise InvalidParameterError(
                f"The 'valid_fraction' parameter of {owner} must be a float in [0, 1). Got {self.valid_fraction!r} "
                "instead."
            )
        if self.prior == "mix" and self.valid_fraction <= 0:
            raise InvalidParameterError(
                f"prior='mix' chooses its weight on validation groups: the 'valid_fraction' parameter of {owner} "
                f"must be above 0. Got {self.valid_fraction!r}."
            )
        if not isinstance(self.head_norm, bool):
            raise InvalidParameterError(f"The 'head_norm' parameter of {owner} must be a bool. Got {self.head_norm!r}.")
        if self.prior not in PRIORS:
            raise invalid_choice("prior", owner, self.prior, PRIORS)
        from kernelcast.surrogate.evaluation.splits import GROUP_COLUMNS

        if self.prior_groups not in GROUP_COLUMNS:
            raise invalid_choice("prior_groups", owner, self.prior_groups, tuple(GROUP_COLUMNS))
        folds = self.prior_folds
        if not (isinstance(folds, int) and not isinstance(folds, bool) and folds >= 2):
            raise InvalidParameterError(
                f"The 'prior_folds' parameter of {owner} must be an int of at least 2. Got {folds!r} instead."
            )
        if not (isinstance(self.prior_n_jobs, int) and not isinstance(self.prior_n_jobs, bool)
                and self.prior_n_jobs != 0):
            raise InvalidParameterError(
                f"The 'prior_n_jobs' parameter of {owner} must be a non-zero int. Got {self.prior_n_jobs!r} instead."
            )
        if self.checkpoint is not None and not (isinstance(self.checkpoint, str | os.PathLike)
                                                and os.fspath(self.checkpoint)):
            raise InvalidParameterError(
                f"The 'checkpoint' parameter of {owner} must be a file path or None. Got {self.checkpoint!r} instead."
            )
        minutes = self.slice_minutes
        if minutes is not None:
            if not (isinstance(minutes, int | float) and not isinstance(minutes, bool) and math.isfinite(minutes)
                    and minutes >= 0):
                raise InvalidParameterError(
                    f"The 'slice_minutes' parameter of {owner} must be a non-negative float or None. Got {minutes!r} "
                    "instead."
                )
            if self.checkpoint is None:
                raise InvalidParameterError(
                    f"The 'slice_minutes' parameter of {owner} needs a 'checkpoint' to resume from. Got "
                    f"slice_minutes={minutes!r} with checkpoint=None."
                )

    def _check_fitted(self) -> None:
        super()._check_fitted()
        if getattr(self, "training_complete_", True) is False:
            log = getattr(self, "training_log_", {})
            raise NotFittedError(
                f"This {type(self).__name__} instance is not fitted yet: its training stopped at the end of a slice "
                f"(step {log.get('steps')}). Call 'fit' again with the same records and parameters to resume from "
                f"{self.checkpoint!r}."
            )

    # -- sources and prompts --------------------------------------------------------------------------
    def prompts(self, frame: pl.DataFrame) -> tuple[dict[str, str], list[str], list[str]]:
        """The prompts of a candidate frame: prefix text by key, each row's prefix key and suffix text."""
        library = dict(getattr(self, "sources_", {}))
        if "source_text" in frame.columns:
            library.update(source_mapping(frame.select("source_hash", "source_text")))
        groups = frame.select("family", "variant", "source_hash", "problem_json", "dtype", "device").unique()
        texts: dict[str, str] = {}
        missing: set[str] = set()
        for family, variant, source_hash, problem, dtype, device in groups.iter_rows():
            key = prompts.prefix_key(source_hash, problem, dtype, device)
            source = library.get(str(source_hash))
            if source is None:
                missing.add(f"{family}/{variant} ({source_hash})")
            texts[key] = prompts.prefix_text(family, variant, source, problem, dtype, device)
        if missing:
            logger.warning("No source text for %s: forecast from the rest of the prompt.", ", ".join(sorted(missing)))
        keys = frame.select(
            pl.concat_str([pl.col(c).cast(pl.String).fill_null("None") for c in
                           ("source_hash", "problem_json", "dtype", "device")], separator="\x1f")
        ).to_series().to_list()
        suffixes = [prompts.suffix_text(c) for c in frame["config_json"].to_list()]
        return texts, keys, suffixes

    # -- fitting --------------------------------------------------------------------------------------
    def _fit_frame(self, records: pl.DataFrame, log_time: np.ndarray, failed: np.ndarray) -> None:
        from kernelcast.surrogate.llm.base import load_base_model
        from kernelcast.surrogate.llm.regressor import PromptRegressor

        self.training_complete_ = False  # until the last step below: a fit that stops early leaves no model
        self.prior_ = None
        self.mix_weight_ = None
        valid = self._valid_rows(records)
        reads_prior = self.prior == "gbm"
        # The language model reads the "gbm" prior, so it is fitted first (in every slice, the same each time);
        # "mix" GBMs are only mixed in afterwards, so they are fitted once training has finished.
        _, sources = self._fit_context
        prior = self._fit_prior(records, valid, sources) if reads_prior else None
        rows = self._training_rows(records, log_time, failed, prior)
        base = load_base_model("cpu")
        self.regressor_ = PromptRegressor(
            base, lora_rank=self.lora_rank, lora_alpha=self.lora_alpha, lora_dropout=self.lora_dropout,
            head_width=self.head_width, max_prefix_tokens=self.max_prefix_tokens, device=self.device,
            seed=self._seed(),
            prior_features=3 if reads_prior else 0, head_norm=self.head_norm,
        )
        self.training_log_ = self.regressor_.fit(
            rows, max_seconds=60.0 * self.max_minutes, max_steps=self.max_steps, batch_size=self.batch_size,
            learning_rate=self.learning_rate, head_learning_rate=self.head_learning_rate,
            rank_weight=self.rank_weight, rank_temperature=self.rank_temperature, fail_weight=self.fail_weight,
            valid=valid, eval_every=self.eval_every,
            checkpoint=None if self.checkpoint is None else Path(self.checkpoint),
            slice_seconds=None if self.slice_minutes is None else 60.0 * self.slice_minutes,
        )
        if not self.training_log_["complete"]:
            raise TrainingSliceEnded(self.training_log_)
        if self.prior == "mix":
            prior = self._fit_prior(records, valid, sources)
            self._choose_mix_weight(rows, np.flatnonzero(valid & ~failed), prior[:, 0],
                                    records["family"].to_numpy().astype(str))
        if prior is not None:
            self.training_log_["prior"] = self.prior_info_
        logger.info("Trained %d steps in %.0f s (%d candidates seen)", self.training_log_["steps"],
                    self.training_log_["seconds"], self.training_log_["candidates_seen"])
        self.training_complete_ = True

    def _training_rows(self, records: pl.DataFrame, log_time: np.ndarray, failed: np.ndarray,
                       prior: np.ndarray | None = None) -> Any:
        """The :class:`~kernelcast.surrogate.llm.regressor.TrainingRows` of ``records`` (prompts, targets, tasks)."""
        from kernelcast.surrogate.llm.regressor import TrainingRows

        texts, keys, suffixes = self.prompts(records)
        return TrainingRows(prefixes=texts, prefix_keys=keys, suffixes=suffixes, log_time=log_time, failed=failed,
                            task=task_ids(records), noise=relative_noise(records), prior=prior)

    def _choose_mix_weight(self, rows: Any, index: np.ndarray, gbm_mean: np.ndarray, families: np.ndarray) -> float:
        """Choose the mix weights on validation rows ``index``; return the overall one.

        Sets ``mix_weight_`` (and, with ``mix_by_family``, ``mix_weights_by_family_``) to the weights of
        :data:`MIX_WEIGHTS` whose mix ranks the rows (of the family) best; ties go to the lower weight.
        """
        from kernelcast.surrogate.llm.regressor import validation_accuracy

        if index.size > MAX_MIX_ROWS:
            index = np.sort(np.random.default_rng(self._seed() + 2).choice(index, MAX_MIX_ROWS, replace=False))
        llm = self.regressor_.predict(rows.prefixes, [rows.prefix_keys[i] for i in index],
                                      [rows.suffixes[i] for i in index], batch_size=self.inference_batch_size).mean

        def best(where: np.ndarray) -> tuple[float, list[float]]:
            accuracy = [validation_accuracy(rows, index[where], w * llm[where] + (1.0 - w) * gbm_mean[index[where]])
                        for w in MIX_WEIGHTS]
            scores = np.nan_to_num(np.asarray(accuracy, dtype=np.float64), nan=-1.0)
            return float(MIX_WEIGHTS[int(np.argmax(scores))]), accuracy

        weight, accuracy = best(np.ones(index.size, dtype=bool))
        self.training_log_["mix"] = {"weights": list(MIX_WEIGHTS), "valid_pairwise_accuracy": accuracy,
                                     "valid_rows": int(index.size), "weight": weight}
        logger.info("mix: language model weight %.1f (validation pairwise accuracy %.4f; GBM alone %.4f, language "
                    "model alone %.4f)", weight, max(accuracy), accuracy[0], accuracy[-1])
        self.mix_weight_ = weight
        self.mix_weights_by_family_ = {}
        if self.mix_by_family:
            by_family = {}
            for family in np.unique(families[index]):
                family_weight, family_accuracy = best(families[index] == family)
                if max(np.nan_to_num(family_accuracy, nan=-1.0)) < 0:  # no untied pair to rank: the overall weight
                    continue
                self.mix_weights_by_family_[str(family)] = family_weight
                by_family[str(family)] = {"weight": family_weight, "valid_pairwise_accuracy": family_accuracy,
                                          "valid_rows": int((families[index] == family).sum())}
                logger.info("mix: %s: language model weight %.1f (validation pairwise accuracy %.4f; GBM alone "
                            "%.4f)", family, family_weight, np.nanmax(family_accuracy), family_accuracy[0])
            self.training_log_["mix"]["by_family"] = by_family
        return weight

    def refit_mix(self, records: pl.DataFrame, *, sources: Mapping[str, str] | pl.DataFrame | None = None,
                  ) -> LLMSurrogate:
        """Choose the mix weights of a trained ``prior="mix"`` model again, without training it again.

        For instance after setting ``mix_by_family``. ``records`` must be the training records: the same
        validation groups are held out, a GBM fitted without them (with the model's source library, plus
        ``sources``) forecasts them as in :meth:`fit`, and the weights are chosen on them. The language model
        and the GBM fitted on every row are kept; the calibration is dropped (calibrate again).

        Returns
        -------
        self
        """
        from kernelcast.surrogate import _artifact
        from kernelcast.surrogate.tasks import log_time, ok_mask

        self._check_fitted()
        if getattr(self, "mix_weight_", None) is None:
            raise InvalidParameterError(f"refit_mix needs a model trained with prior='mix'; this one has "
                                        f"prior={self.prior!r}.")
        identity = _artifact.training_identity(records, None)["key_sha256"]
        if identity != self.training_data_["key_sha256"]:
            raise InvalidParameterError(
                f"refit_mix needs the records this {type(self).__name__} was trained on (key hash "
                f"{self.training_data_['key_sha256'][:12]}); got records with key hash {identity[:12]}."
            )
        if sources is not None:
            self.add_sources(sources)
        sources = dict(self.sources_)  # the GBM without the validation rows reads them, as in fit
        valid = self._valid_rows(records)
        if valid is None or not valid.any():
            raise InvalidParameterError("refit_mix needs validation groups: the model was trained with "
                                        f"valid_fraction={self.valid_fraction!r}.")
        failed = ~ok_mask(records)
        # Uncentred log times: the weights are chosen by within-task ranking, which a task's level cannot change.
        rows = self._training_rows(records, log_time(records), failed)
        prior = self._fit_prior(records, valid, sources, refit_final=False)  # the GBM of every row stays
        self._choose_mix_weight(rows, np.flatnonzero(valid & ~failed), prior[:, 0],
                                records["family"].to_numpy().astype(str))
        self.calibration_ = None
        return self

    def _valid_rows(self, records: pl.DataFrame) -> np.ndarray | None:
        """Rows held out of training to choose the kept step: whole ``prior_groups`` groups, at least one."""
        if self.valid_fraction <= 0:
            return None
        from kernelcast.surrogate.evaluation.splits import group_labels

        groups, group_of_row = np.unique(group_labels(records, self.prior_groups), return_inverse=True)
        rng = np.random.default_rng(self._seed() + 1)
        if groups.size < 3:  # too few groups to hold one out: rows instead
            return rng.random(records.height) < self.valid_fraction
        chosen = rng.permutation(groups.size)[: max(1, int(round(self.valid_fraction * groups.size)))]
        return np.isin(group_of_row, chosen)

    def _seed(self) -> int:
        """The integer seed of ``random_state`` (0 when it is None)."""
        return self.random_state if isinstance(self.random_state, int) else 0

    # -- the GBM prior --------------------------------------------------------------------------------
    def _new_prior(self) -> Any:
        from kernelcast.surrogate.gbm import GBMSurrogate

        n_jobs = self.prior_n_jobs if self.prior_n_jobs > 0 else max(1, (os.cpu_count() or 1) + 1 + self.prior_n_jobs)
        return GBMSurrogate(centering=self.centering, n_jobs=n_jobs,
                            random_state=self._seed())

    def _level(self, frame: pl.DataFrame) -> np.ndarray | None:
        """Task level of each row by this model's level model (None without ``centering``)."""
        if getattr(self, "level_model_", None) is None:
            return None
        X, _ = self._feature_matrices(frame)
        return self.task_level(frame, X)

    def _prior_columns(self, gbm: Any, frame: pl.DataFrame, level: np.ndarray | None = None) -> np.ndarray:
        """The prior of each row of ``frame`` from ``gbm``, shape (n, 3).

        Columns: mean log time in this model's units (minus this model's task ``level``, computed here when
        not given), log interval width, failure logit.
        """
        raw = gbm._predict_raw(frame)
        mean = np.asarray(raw.mean, dtype=np.float64)
        if level is None:
            level = self._level(frame)
        if level is not None:
            mean = mean - level
        width = np.log(np.maximum(np.asarray(raw.upper) - np.asarray(raw.lower), 1e-3))
        p = np.clip(np.asarray(raw.p_fail, dtype=np.float64), 1e-5, 1.0 - 1e-5)
        return np.stack([mean, width, np.log(p) - np.log1p(-p)], axis=1)

    def _fit_prior(self, records: pl.DataFrame, valid: np.ndarray | None, sources: Any, *,
                   refit_final: bool = True) -> np.ndarray:
        """GBM forecasts of the training rows that no GBM saw (see the module docstring).

        ``prior="gbm"``: out of fold for every row (``prior_folds`` folds of whole ``prior_groups`` groups).
        ``prior="mix"``: only the ``valid`` rows are needed (to choose the weight), so one GBM fitted without
        them forecasts them; the other rows are NaN. With ``refit_final`` the GBM of every row is fitted too, as
        :attr:`prior_`; without, the current :attr:`prior_` stays.
        """
        import time

        from kernelcast.surrogate.evaluation.splits import group_labels

        started = time.perf_counter()
        groups, group_of_row = np.unique(group_labels(records, self.prior_groups), return_inverse=True)
        rng = np.random.default_rng(self._seed())
        if self.prior == "mix" and valid is not None and valid.any():
            folds, fold, by = 1, np.where(valid, 0, -1), "validation"
        elif groups.size >= 2:
            folds = min(self.prior_folds, groups.size)
            fold = (rng.permutation(groups.size) % folds)[group_of_row]
            by = self.prior_groups
        else:  # one group: rows are dealt into folds instead
            folds = self.prior_folds
            fold = rng.permutation(records.height) % folds
            by = "rows"
        prior = np.full((records.height, 3), np.nan)
        ok = (records["status"] == "ok").to_numpy()
        for k in range(folds):
            test = fold == k
            train = ~test
            if not test.any() or ok[train].sum() < 2:
                continue
            gbm = self._new_prior().fit(records.filter(pl.Series(train)), sources=sources)
            prior[test] = self._prior_columns(gbm, records.filter(pl.Series(test)))
        if refit_final:
            self.prior_ = self._new_prior().fit(records, sources=sources)
        missing = np.isnan(prior[:, 0]) & (fold >= 0)
        if missing.any():  # a fold whose complement had no runtimes: the final GBM fills it in
            prior[missing] = self._prior_columns(self.prior_, records.filter(pl.Series(missing)))
        seconds = round(time.perf_counter() - started, 2)
        if refit_final:
            self.prior_info_ = {"kind": "gbm", "folds": int(folds), "fold_groups": by, "groups": int(groups.size),
                                "seconds": seconds}
        logger.info("GBM prior: %d folds over %d %s groups in %.0f s", folds, groups.size, by, seconds)
        return prior

    # -- forecasting ----------------------------------------------------------------------------------
    def _predict_raw(self, frame: pl.DataFrame) -> RawForecast:
        """Uncalibrated forecasts of a candidate frame: the language model plus the task level (and the mix)."""
        texts, keys, suffixes = self.prompts(frame)
        dtype = None if self.inference_dtype == "auto" else self.inference_dtype
        gbm = getattr(self, "prior_", None)
        weight = getattr(self, "mix_weight_", None)
        level = self._level(frame)  # featurized once: for the prior and for the forecast
        prior = self._prior_columns(gbm, frame, level) if gbm is not None and weight is None else None
        pred = self.regressor_.predict(texts, keys, suffixes, batch_size=self.inference_batch_size, dtype=dtype,
                                       prior=prior)
        half_width = float(ndtri(0.5 + self.coverage / 2.0)) * pred.scale
        mean = pred.mean if level is None else pred.mean + level
        raw = RawForecast(mean=mean, lower=mean - half_width, upper=mean + half_width, p_fail=pred.p_fail)
        if weight is None:
            return raw
        other = gbm._predict_raw(frame)
        by_family = getattr(self, "mix_weights_by_family_", None)
        if by_family:
            weight = frame["family"].replace_strict(by_family, default=weight, return_dtype=pl.Float64).to_numpy()

        def mix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
            return weight * np.asarray(a, dtype=np.float64) + (1.0 - weight) * np.asarray(b, dtype=np.float64)

        return RawForecast(mean=mix(raw.mean, other.mean), lower=mix(raw.lower, other.lower),
                           upper=mix(raw.upper, other.upper), p_fail=mix(raw.p_fail, other.p_fail))

    # -- persistence ----------------------------------------------------------------------------------
    def _save_models(self, path: Path) -> dict[str, Any]:
        import importlib.metadata

        state = self.regressor_.save(path)
        if getattr(self, "prior_", None) is not None:
            self.prior_.save(path / PRIOR_DIR)
            state["prior"] = {**getattr(self, "prior_info_", {"kind": "gbm"}), "dir": PRIOR_DIR}
        if getattr(self, "mix_weight_", None) is not None:
            state["mix_weight"] = self.mix_weight_
            state["mix_weights_by_family"] = dict(getattr(self, "mix_weights_by_family_", {}))
        (path / SOURCES_FILE).write_text(json.dumps(self.sources_, indent=0, sort_keys=True))
        log = dict(getattr(self, "training_log_", None) or {})
        (path / TRAINING_LOG_FILE).write_text(json.dumps(log, indent=0))
        state["sources_file"] = SOURCES_FILE
        state["training"] = {k: log.get(k) for k in ("steps", "seconds", "candidates_seen")}
        llm_versions = {}
        for name in ("torch", "transformers", "peft", "safetensors"):
            try:
                llm_versions[name] = importlib.metadata.version(name)
            except importlib.metadata.PackageNotFoundError:
                pass
        state["llm_versions"] = llm_versions
        return state

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, device: str | None = None) -> LLMSurrogate:
        """Read a model directory written by :meth:`save`; ``device`` overrides the saved ``device`` parameter.

        A model trained with ``device="auto"`` loads onto a GPU when there is one and onto the CPU otherwise.
        """
        if device is None:
            return super().load(path)
        cls._load_device = device
        try:
            return super().load(path)
        finally:
            del cls._load_device

    def _load_models(self, path: Path, state: Mapping[str, Any]) -> None:
        from kernelcast.surrogate.llm.base import load_base_model
        from kernelcast.surrogate.llm.regressor import PromptRegressor

        base = load_base_model("cpu")
        expected = state["base_model"]["gguf_sha256"]
        if base.info.gguf_sha256 != expected:
            raise InvalidParameterError(
                f"The model in {str(path)!r} was trained on the base model with GGUF SHA-256 {expected[:12]}, but "
                f"the installed one has {base.info.gguf_sha256[:12]} ({base.info.name})."
            )
        override = getattr(type(self), "_load_device", None)
        if override is not None:
            self.device = override
        lora = state["lora"]
        self.regressor_ = PromptRegressor(
            base, lora_rank=int(lora["r"]), lora_alpha=int(lora["lora_alpha"]),
            lora_dropout=float(lora["lora_dropout"]), head_width=int(state["head_width"]),
            max_prefix_tokens=int(state["max_prefix_tokens"]), device=self.device,
            seed=self._seed(),
            prior_features=int(state.get("prior_features", 0)), head_norm=bool(state.get("head_norm", False)),
        )
        self.regressor_.load_weights(path, state)
        self.head_norm = self.regressor_.head_norm
        self.prior_ = None
        if not state.get("prior"):
            self.prior = "none"  # a model saved without a prior (also every model saved before priors existed)
        else:
            from kernelcast.surrogate.gbm import GBMSurrogate

            self.prior_ = GBMSurrogate.load(path / state["prior"]["dir"])
            self.prior_info_ = {k: v for k, v in state["prior"].items() if k != "dir"}
        self.mix_weight_ = state.get("mix_weight")
        self.mix_weights_by_family_ = {str(k): float(v) for k, v in state.get("mix_weights_by_family", {}).items()}
        if self.mix_weight_ is not None:
            self.prior = "mix"
        # A loaded model resumes nobody's training: how it was trained in slices stays in its training log.
        self.checkpoint = None
        self.slice_minutes = None
        self.sources_ = json.loads((path / state.get("sources_file", SOURCES_FILE)).read_text())
        log_file = path / TRAINING_LOG_FILE
        self.training_log_ = json.loads(log_file.read_text()) if log_file.is_file() else {}
        self.training_complete_ = True  # only finished fits are saved
