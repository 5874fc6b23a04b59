"""Oracles: what turns a task's configurations into measured records (a live GPU, or a replayed dataset)."""

from kernelcast.search.oracles._base import (
    SELECTOR_KEYS,
    Oracle,
    Spend,
    Task,
    config_key,
    default_budget,
    parse_task_selector,
    select_tasks,
)
from kernelcast.search.oracles.gpu import GpuOracle
from kernelcast.search.oracles.replay import ReplayOracle

__all__ = [
    "SELECTOR_KEYS",
    "GpuOracle",
    "Oracle",
    "ReplayOracle",
    "Spend",
    "Task",
    "config_key",
    "default_budget",
    "parse_task_selector",
    "select_tasks",
]
