"""Budgeted search: Optuna proposes through ask/tell, a surrogate screens, an oracle measures.

See :mod:`kernelcast.search.loop` for one search step, :mod:`kernelcast.search.strategies` for the strategies
and :mod:`kernelcast.search.harness` for comparing them at equal budget.
"""

from kernelcast.search._base import RANKINGS, RULES, Screener, Screening, surrogate_for_search
from kernelcast.search.adapt import TaskAdapter
from kernelcast.search.harness import HarnessResult, RunScore, curves, run_harness, score, summarize
from kernelcast.search.loop import Budget, Measurement, Search, SearchResult, run_search
from kernelcast.search.oracles import GpuOracle, Oracle, ReplayOracle, Task, default_budget, parse_task_selector
from kernelcast.search.strategies import STRATEGIES, Strategy, get_strategy, parse_strategies

__all__ = [
    "RANKINGS",
    "RULES",
    "STRATEGIES",
    "Budget",
    "GpuOracle",
    "HarnessResult",
    "Measurement",
    "Oracle",
    "ReplayOracle",
    "RunScore",
    "Screener",
    "Screening",
    "Search",
    "SearchResult",
    "Strategy",
    "Task",
    "TaskAdapter",
    "curves",
    "default_budget",
    "get_strategy",
    "parse_strategies",
    "parse_task_selector",
    "run_harness",
    "run_search",
    "score",
    "summarize",
    "surrogate_for_search",
]
