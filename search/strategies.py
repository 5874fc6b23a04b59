"""Search strategies: which Optuna sampler proposes, and whether and how a surrogate screens the proposals.

=========== ========= ================ ============================================================
strategy    sampler   screening        what it is
=========== ========= ================ ============================================================
surrogate   TPE       selective        kernelcast: 64 TPE proposals per step (at most 4 measured),
                                       screened by the surrogate's calibrated MEASURE/SKIP/DEFER rule
                                       against the incumbent; the surrogate learns the task during the
                                       run.
tpe         TPE       none             Optuna's TPE alone, one proposal measured per step.
gp          GP        none             Optuna's Gaussian-process sampler alone.
cmaes       CMA-ES    none             Optuna's CMA-ES sampler alone (needs the ``cmaes`` package).
random      random    none             Uniform random proposals.
greedy      TPE       top_fraction     The GPU Forecasters filter: forecast 4 proposals per
                                       measurement (16 per step), measure the best quarter by
                                       forecast; no confidence and no learning during the run (their
                                       surrogate is fixed), as in codezakh/gpu-forecasters.
=========== ========= ================ ============================================================

The ``top_fraction`` rule keeps ``measures_per_step / proposals_per_step`` of each batch. Why 64 proposals
per step for ``surrogate``: on four Kernel Tuner tasks x 4 seeds (leave-one-GPU-out GBM), 16, 32 and 64
proposals per step gave a median best-found speed of 0.926, 0.985 and 0.997 of the optimum (7, 13 and 14
of 16 runs within 5%) at 50 measurements; each proposal costs CPU time only (Optuna's ask and a forecast).
"""

from __future__ import annotations

import dataclasses

import optuna

from kernelcast.exceptions import InvalidParameterError, invalid_choice


@dataclasses.dataclass(frozen=True)
class Strategy:
    """How one search proposes and screens.

    Attributes
    ----------
    name : str
        Registry name.
    sampler : str
        ``"tpe"``, ``"gp"``, ``"cmaes"`` or ``"random"``.
    screening : str or None
        ``None`` (measure every proposal), ``"selective"`` or ``"top_fraction"`` (see
        :class:`~kernelcast.search._base.Screener`).
    learn : bool
        Whether the surrogate is updated with the run's measurements.
    proposals_per_step : int
        Fresh proposals asked from the sampler per step.
    measures_per_step : int
        Most measurements per step.
    description : str
        One line for listings.
    """

    name: str
    sampler: str
    screening: str | None
    learn: bool
    proposals_per_step: int
    measures_per_step: int
    description: str

    @property
    def needs_surrogate(self) -> bool:
        """Whether the strategy screens with a surrogate."""
        return self.screening is not None


STRATEGIES: dict[str, Strategy] = {
    s.name: s
    for s in (
        Strategy("surrogate", "tpe", "selective", True, 64, 4,
                 "TPE proposals screened by the calibrated surrogate; it learns the task during the run"),
        Strategy("tpe", "tpe", None, False, 1, 1, "Optuna TPE alone"),
        Strategy("gp", "gp", None, False, 1, 1, "Optuna Gaussian-process sampler alone"),
        Strategy("cmaes", "cmaes", None, False, 1, 1, "Optuna CMA-ES alone"),
        Strategy("random", "random", None, False, 1, 1, "uniform random proposals"),
        Strategy("greedy", "tpe", "top_fraction", False, 16, 4,
                 "GPU Forecasters filter: forecast 4x the measurements, measure the top quarter, no confidence"),
    )
}
"""Every strategy by name."""


def get_strategy(name: str) -> Strategy:
    """Return the strategy called ``name``, or raise naming the allowed ones."""
    if name not in STRATEGIES:
        raise invalid_choice("strategy", "search", name, STRATEGIES)
    return STRATEGIES[name]


def parse_strategies(values: str | list[str] | tuple[str, ...]) -> list[Strategy]:
    """Strategies from a comma list and/or repeated values, in order, without repeats."""
    items = [values] if isinstance(values, str) else list(values)
    names: list[str] = []
    for item in items:
        for name in str(item).split(","):
            name = name.strip().lower()
            if name and name not in names:
                names.append(name)
    if not names:
        raise InvalidParameterError(
            f"The 'strategy' parameter of search must name at least one of {', '.join(map(repr, STRATEGIES))}."
        )
    return [get_strategy(n) for n in names]


def make_sampler(name: str, seed: int) -> optuna.samplers.BaseSampler:
    """A fresh Optuna sampler called ``name`` seeded with ``seed`` (Optuna's defaults otherwise)."""
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed, warn_independent_sampling=False)
    if name == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise invalid_choice("sampler", "search", name, ("tpe", "gp", "cmaes", "random"))
