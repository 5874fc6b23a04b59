"""Search strategies: which Optuna sampler proposes, and whether and how a surrogate screens the proposals.

=========== ========= ================ ============================================================
strategy    sampler   screening        what it is
=========== ========= ================ ============================================================
surrogate   random    selective        kernelcast: 256 proposals in the first step, then 64 random
                                       ones plus 32 one-knob neighbours of the best measured configs
                                       per step (at most 4 measured), screened by the surrogate's
                                       calibrated MEASURE/SKIP/DEFER rule against the incumbent
                                       configuration, ranked by expected improvement; the surrogate
                                       learns the task during the run (TaskAdapter).
tpe         TPE       none             Optuna's TPE alone, one proposal measured per step.
gp          GP        none             Optuna's Gaussian-process sampler alone.
cmaes       CMA-ES    none             Optuna's CMA-ES sampler alone (needs the ``cmaes`` package).
random      random    none             Uniform random proposals.
greedy      TPE       top_fraction     The GPU Forecasters filter: forecast 4 proposals per
                                       measurement (16 per step), measure the best quarter by
                                       forecast; no confidence and no learning during the run (their
                                       surrogate is fixed), as in codezakh/gpu-forecasters.
=========== ========= ================ ============================================================

The ``top_fraction`` rule keeps ``measures_per_step / proposals_per_step`` of each batch.

How the ``surrogate`` settings were chosen, on development tasks only (the Kernel Tuner spaces of the TITAN
RTX, searched with the GBM trained without that GPU, 3 seeds; and the 18 H200 tasks of the 1000x3000 shape
whose 2% budget is at least 5 measurements, searched with a GBM trained without that shape, 2 seeds), at the
2% budget, with the replay's noise the median of resampled repetitions:

- *Which proposals.* Optuna's TPE as the proposer costs O(trials) per ask, and a screened search asks
  thousands (most are skipped, and told PRUNED): a 50-measurement search of the Kernel Tuner GEMM space took
  110 s, almost all of it in TPE's asks. Random proposals cost about 1 ms each, so the surrogate can rank a
  wide first batch (256), where its forecast is all there is. Local proposals (one knob one step from the
  three best measured configs) carry the refinement a TPE sampler would: without them the TITAN tasks' median
  best fell from 0.999 to 0.959 of the optimum (8 and 7 of 9 runs within 5%).
- *Learning during the run.* The loaded GBM's own warm-start update fits new trees on the 4 records of a
  step, which, with ``min_child_samples=20``, only shifts every forecast of the task by one level: the
  ranking does not change. :class:`~kernelcast.search.adapt.TaskAdapter` fits a correction on all the run's
  records instead: TITAN pnpoly 2 of 3 runs within 5% against 1 of 3 without learning or with the warm start,
  Xgemm within 5% after a median of 11 measurements against 18.
- *Ranking.* Ranked by expected speed, the measurements after the first went to near copies of the
  incumbent (a knob that does not matter changed); ranked by expected improvement over the incumbent under
  the correction's uncertainty, the H200 development tasks' median best rose from 0.988 to 0.996 of the
  optimum (33 and 34 of 36 runs within 5%; TITAN: 0.999 and 1.000, 8 and 7 of 9).

On all tasks afterwards (``benchmarks/results/search_summary.md``: feature schema v3 models, 5 seeds), without
learning the H200 searches got 262 instead of 303 of 370 runs within 5% of the optimum; the Kernel Tuner
searches the same 50 of 55 (learning shortened the GEMM searches: within 5% after 13 instead of 22
measurements on the RTX 2080 Ti); without local proposals Kernel Tuner fell to 0.983 (49 of 55).
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
    first_proposals : int
        Fresh proposals asked in a step taken before anything was measured (0: ``proposals_per_step``); with
        no measurement to learn from yet, the surrogate's ranking of a wide first batch is all there is.
    local_proposals : int
        Proposals per step that change one knob of one of the best measured configurations by one step
        (enqueued into the study, so they are asked and told like the sampler's own); 0 for none.
    learner : str
        How the surrogate learns during the run, when ``learn``: ``"adapter"`` (a correction fitted on the
        run's records, :class:`~kernelcast.search.adapt.TaskAdapter`) or ``"update"`` (the surrogate's own
        :meth:`~kernelcast.surrogate._base.Surrogate.update`, refit or warm start). A surrogate the adapter
        cannot wrap (:func:`~kernelcast.search.adapt.adaptable`) learns by its own ``update``.
    optimism : float
        Candidates to measure are ranked by expected speed at a forecast this many standard deviations of the
        learned correction faster (:meth:`~kernelcast.search.adapt.TaskAdapter.uncertainty`): configurations
        far from everything measured get a chance. 0 ranks by the forecast alone.
    ranking : str
        ``"speed"`` (expected speed, above) or ``"improvement"``: expected improvement of the log runtime over
        the incumbent's, under the corrected forecast and the learned correction's uncertainty; a near copy
        of a measured configuration then ranks low however fast it is forecast.
    """

    name: str
    sampler: str
    screening: str | None
    learn: bool
    proposals_per_step: int
    measures_per_step: int
    description: str
    first_proposals: int = 0
    local_proposals: int = 0
    learner: str = "adapter"
    optimism: float = 0.0
    ranking: str = "speed"

    @property
    def needs_surrogate(self) -> bool:
        """Whether the strategy screens with a surrogate."""
        return self.screening is not None


STRATEGIES: dict[str, Strategy] = {
    s.name: s
    for s in (
        Strategy("surrogate", "random", "selective", True, 64, 4,
                 "wide random and local proposals screened by the calibrated surrogate; it learns the task during "
                 "the run", first_proposals=256, local_proposals=32, learner="adapter", ranking="improvement"),
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
