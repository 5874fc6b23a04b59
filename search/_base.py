"""The Screener: the selective rule that stands between Optuna's proposals and the GPU.

A search loop calls a screener in this order, once per step::

    screener = Screener(surrogate, rule="selective")
    screening = screener.screen(candidates, incumbent_ms)   # forecast + MEASURE/SKIP/DEFER per candidate
    for i in screening.priority():                          # MEASURE first, then DEFER, best forecast first
        ... measure candidate i while the budget allows ...
    screener.learn(new_records)                             # surrogate.update on what was just measured

Two rules:

``"selective"`` (kernelcast's)
    The surrogate's own calibrated rule, :meth:`Surrogate.decide`, against the incumbent runtime: SKIP only
    what is confidently slower, MEASURE what is promising, DEFER where the surrogate abstains. DEFER is
    treated as *measure if the budget allows*: it ranks after every MEASURE. With no incumbent yet nothing
    can be confidently slower, so every candidate is MEASURE. Where the surrogate's ``decide`` takes the
    incumbent's configuration (``incumbent=``, a one-row candidate frame; the GBM does), it is passed: the
    rule then compares two forecasts of the same model, which stays valid when the model is off on a whole
    task, as on a GPU it was never trained on.
``"top_fraction"`` (the GPU Forecasters filter)
    No confidence: rank a batch by forecast and keep the best ``keep_fraction`` (MEASURE), SKIP the rest.
    This is the selection step of Khan et al.'s surrogate-filtered search (``k_per_parent`` of
    ``samples_per_parent`` mutations promoted to GPU evaluation by an expected-bin-index ranking, 4 of 16 in
    their configs): codezakh/gpu-forecasters, ``src/gpu_forecasters/max_reward_puct/v3/actions.py``
    (``_handle_awaiting_selection``) and ``runbook/configs/kernel_search/*__surrogate_filtered.json``.

Both rules rank by *expected speed*, ``(1 - p_fail) / exp(log_time_mean)`` (a failure counts as zero speed),
the runtime analogue of the expected-bin-index score, which also puts a failure bin at the bottom. The
``selective`` rule can rank by *expected improvement* instead (``ranking="improvement"``, once something
ran): ``(1 - p_fail) * E[max(0, ln incumbent_ms - ln time)]`` with the log time normal around the forecast,
its sd the surrogate's ``uncertainty(candidates)`` where it has one (a
:class:`~kernelcast.search.adapt.TaskAdapter`: the learned correction's sd) or its predictive scale. A near
copy of the incumbent then ranks low however fast it is forecast; a configuration the correction is unsure
about ranks higher. ``optimism`` > 0 instead ranks by expected speed at a forecast that many sds faster.
The MEASURE / SKIP / DEFER decisions do not depend on the ranking.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import math
import time
from typing import Any, Literal

import numpy as np

from kernelcast.exceptions import InvalidParameterError, KernelcastError, invalid_choice
from kernelcast.surrogate._base import Decision, Forecast, Surrogate

logger = logging.getLogger(__name__)

Rule = Literal["selective", "top_fraction"]
RULES: tuple[str, ...] = ("selective", "top_fraction")
RANKINGS: tuple[str, ...] = ("speed", "improvement")
"""How the candidates a rule lets through are ordered: expected speed, or expected improvement over the
incumbent (``"improvement"``, the ``selective`` rule only, once something ran)."""


@dataclasses.dataclass(frozen=True)
class Screening:
    """A screener's verdict on one batch of ``n`` candidates.

    Attributes
    ----------
    forecast : Forecast
        The surrogate's forecasts, ``n`` of them.
    decisions : tuple of Decision
        One decision per candidate.
    expected_speed : ndarray of shape (n,)
        The ranking score, higher first: ``(1 - p_fail) / forecast time`` (1/ms), or with
        ``ranking="improvement"`` the expected improvement over the incumbent (ln ms).
    seconds : float
        Wall time the surrogate took for this batch (s).
    """

    forecast: Forecast
    decisions: tuple[Decision, ...]
    expected_speed: np.ndarray
    seconds: float

    def priority(self) -> list[int]:
        """Indices of the MEASURE candidates then the DEFER ones, each best expected speed first."""
        order = np.argsort(-self.expected_speed, kind="stable")
        measure = [int(i) for i in order if self.decisions[i] is Decision.MEASURE]
        defer = [int(i) for i in order if self.decisions[i] is Decision.DEFER]
        return measure + defer

    def skipped(self) -> list[int]:
        """Indices of the SKIP candidates."""
        return [i for i, d in enumerate(self.decisions) if d is Decision.SKIP]

    def attrs(self, i: int) -> dict[str, Any]:
        """Decision and forecast of candidate ``i``, JSON-safe (a trial's ``screen`` user attribute).

        Keys: ``decision``, ``forecast_ms`` (point forecast), ``forecast_lower_ms`` and ``forecast_upper_ms``
        (interval at ``forecast_coverage``; ``None`` where uncalibrated) and, where modelled, ``p_fail``.
        """
        f = self.forecast
        out: dict[str, Any] = {
            "decision": self.decisions[i].value,
            "forecast_ms": _finite(math.exp(f.log_time_mean[i])),
            "forecast_lower_ms": _finite(math.exp(f.log_time_lower[i])),
            "forecast_upper_ms": _finite(math.exp(f.log_time_upper[i])),
            "forecast_coverage": float(f.coverage),
        }
        if f.p_fail is not None:
            out["p_fail"] = float(f.p_fail[i])
        return out


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


class Screener:
    """Wrap a :class:`~kernelcast.surrogate._base.Surrogate` into a per-batch screening rule.

    See the module docstring for the order of calls and the two rules.

    Parameters
    ----------
    surrogate : Surrogate
        A fitted surrogate (calibrated for the ``"selective"`` rule, else it DEFERs).
    rule : {"selective", "top_fraction"}
        The screening rule.
    keep_fraction : float
        For ``"top_fraction"``: the share of each batch measured, in (0, 1].
    learn : bool
        Whether :meth:`learn` updates the surrogate with new records during the search.
    """

    def __init__(
        self, surrogate: Surrogate, *, rule: Rule = "selective", keep_fraction: float = 0.25, learn: bool = True,
        optimism: float = 0.0, ranking: str = "speed",
    ) -> None:
        if not (isinstance(optimism, (int, float)) and optimism >= 0.0):
            raise InvalidParameterError(
                f"The 'optimism' parameter of Screener must be a float >= 0. Got {optimism!r} instead."
            )
        if ranking not in RANKINGS:
            raise invalid_choice("ranking", "Screener", ranking, RANKINGS)
        self.optimism = float(optimism)
        self.ranking = ranking
        if rule not in RULES:
            raise invalid_choice("rule", "Screener", rule, RULES)
        if not 0.0 < keep_fraction <= 1.0:
            raise InvalidParameterError(
                f"The 'keep_fraction' parameter of Screener must be in (0, 1]. Got {keep_fraction!r} instead."
            )
        self.surrogate = surrogate
        self.rule: Rule = rule
        self.keep_fraction = keep_fraction
        self.learns = learn
        self.seconds = 0.0
        """Wall time spent in the surrogate so far (s): forecasts, decisions and updates."""
        self.max_update_errors = 3
        """Failed updates in a row after which the surrogate stops learning."""
        self.update_errors: list[str] = []
        """Messages of the updates that failed."""
        self._unlearned: Any = None
        self._errors_in_a_row = 0
        self._takes_incumbent = "incumbent" in inspect.signature(surrogate.decide).parameters

    def screen(self, candidates: Any, incumbent_ms: float | None, incumbent: Any = None) -> Screening:
        """Forecast ``candidates`` (a candidate frame of ``n`` rows) and decide each against the incumbent.

        Parameters
        ----------
        candidates : polars.DataFrame
            Candidate frame, ``n`` rows.
        incumbent_ms : float or None
            Measured runtime of the incumbent (ms); ``None`` before any ``ok`` measurement.
        incumbent : polars.DataFrame, optional
            One-row candidate frame of the incumbent configuration, for surrogates whose rule uses it.
        """
        start = time.perf_counter()
        forecast = self.surrogate.forecast(candidates)
        uncertainty = getattr(self.surrogate, "uncertainty", None)
        sd = np.asarray(uncertainty(candidates)) if callable(uncertainty) else forecast.log_time_scale
        if self.ranking == "improvement" and incumbent_ms is not None and self.rule == "selective" and sd is not None:
            speed = _expected_improvement(forecast, sd, incumbent_ms)
        elif self.optimism > 0.0 and callable(uncertainty):
            speed = _expected_speed(forecast, optimism=self.optimism * sd)
        else:
            speed = _expected_speed(forecast)
        n = len(forecast)
        if self.rule == "top_fraction":
            keep = set(np.argsort(-speed, kind="stable")[: max(1, math.ceil(self.keep_fraction * n))].tolist())
            decisions = tuple(Decision.MEASURE if i in keep else Decision.SKIP for i in range(n))
        elif incumbent_ms is None:
            decisions = (Decision.MEASURE,) * n
        else:
            rule = getattr(self.surrogate, "decide_from_forecast", None)
            if callable(rule):  # the forecasts are made already: decide on them (and the incumbent's)
                reference = self.surrogate.forecast(incumbent) if incumbent is not None else None
                raw = rule(forecast, incumbent_ms, incumbent=reference)
            elif incumbent is not None and self._takes_incumbent:
                raw = self.surrogate.decide(candidates, incumbent_ms, incumbent=incumbent)  # type: ignore[call-arg]
            else:
                raw = self.surrogate.decide(candidates, incumbent_ms)
            decisions = tuple(Decision(d) for d in raw)
            if len(decisions) != n:
                raise InvalidParameterError(
                    f"{type(self.surrogate).__name__}.decide returned {len(decisions)} decisions for {n} candidates."
                )
        seconds = time.perf_counter() - start
        self.seconds += seconds
        return Screening(forecast=forecast, decisions=decisions, expected_speed=speed, seconds=seconds)

    def learn(self, records: Any) -> None:
        """Update the surrogate with a record frame of new measurements (no-op when ``learn=False``).

        A failed update does not end the search, whose measurements are already paid for. A surrogate that
        cannot update at all (``NotImplementedError``, or one of its own errors such as a model loaded without
        its training records) stops learning, with a warning. Any other error is logged as a warning and the
        records are kept and offered again with the next batch; after :attr:`max_update_errors` such errors in
        a row learning stops. :attr:`update_errors` lists the messages.
        """
        if not self.learns or len(records) == 0:
            return
        import polars as pl

        batch = pl.concat([self._unlearned, records], how="diagonal_relaxed") if self._unlearned is not None \
            else records
        start = time.perf_counter()
        try:
            self.surrogate.update(batch)
            self._unlearned = None
            self._errors_in_a_row = 0
        except (NotImplementedError, KernelcastError) as exc:
            logger.warning("the surrogate cannot learn during this search, going on without updates: %s", exc)
            self.update_errors.append(f"{type(exc).__name__}: {exc}")
            self.learns = False
        except Exception as exc:  # noqa: BLE001 - a surrogate bug must not waste the measurements already made
            self.update_errors.append(f"{type(exc).__name__}: {exc}")
            self._errors_in_a_row += 1
            self._unlearned = batch
            logger.warning("the surrogate's update failed on %d records (%s: %s); retrying with the next batch",
                           len(batch), type(exc).__name__, exc)
            if self._errors_in_a_row >= self.max_update_errors:
                logger.warning("the surrogate's update failed %d times in a row; going on without updates",
                               self._errors_in_a_row)
                self.learns = False
        finally:
            self.seconds += time.perf_counter() - start


def _expected_improvement(forecast: Forecast, sd: np.ndarray, incumbent_ms: float) -> np.ndarray:
    """``(1 - p_fail) * E[max(0, ln incumbent_ms - ln time)]`` under ``N(log_time_mean, sd**2)``, shape (n,)."""
    from scipy.special import ndtr

    sd = np.maximum(np.asarray(sd, dtype=np.float64), 1e-6)
    z = (math.log(incumbent_ms) - np.asarray(forecast.log_time_mean, dtype=np.float64)) / sd
    gain = sd * (z * ndtr(z) + np.exp(-0.5 * z**2) / math.sqrt(2.0 * math.pi))
    if forecast.p_fail is not None:
        gain = gain * (1.0 - np.clip(np.asarray(forecast.p_fail, dtype=np.float64), 0.0, 1.0))
    return np.nan_to_num(gain, nan=-1.0)


def _expected_speed(forecast: Forecast, optimism: np.ndarray | float = 0.0) -> np.ndarray:
    """``(1 - p_fail) * exp(-(log_time_mean - optimism))``, shape (n,); NaN forecasts rank last."""
    speed = np.exp(-(np.asarray(forecast.log_time_mean, dtype=np.float64) - optimism))
    if forecast.p_fail is not None:
        speed = speed * (1.0 - np.clip(np.asarray(forecast.p_fail, dtype=np.float64), 0.0, 1.0))
    return np.nan_to_num(speed, nan=-1.0)


def uses_compiled_metadata(surrogate: Surrogate) -> bool:
    """Whether ``surrogate``, or the prior it wraps (``prior``), forecasts from compiler metadata.

    Such a surrogate screens candidates after they are compiled (``Oracle.compiled_metadata``).
    """
    while surrogate is not None:
        if getattr(surrogate, "use_compiled_metadata", False) is True:
            return True
        surrogate = getattr(surrogate, "prior", None)
    return False


def surrogate_for_search(surrogate: Surrogate) -> Surrogate:
    """Prepare a surrogate loaded from disk for a search, in which it learns by :meth:`Surrogate.update`.

    A model saved without its training records cannot refit on them plus the new ones; where the estimator
    offers a warm-start update (``update_mode="warm_start"``: new boosting rounds on the new records), it is
    switched to it, so that it still learns the task, and its device, during the search.
    """
    get_params = getattr(surrogate, "get_params", None)
    if get_params is not None and getattr(surrogate, "training_records_", True) is None:
        if get_params(deep=False).get("update_mode") == "refit":
            surrogate.set_params(update_mode="warm_start")  # type: ignore[attr-defined]
    return surrogate
