"""Runtime forecasters with calibrated confidence, and the MEASURE/SKIP/DEFER rule.

``kernelcast.surrogate`` holds the :class:`Surrogate` interface (``_base``), the feature layout
(``features``), the tabular surrogates (``gbm``, ``forest``, ``roofline``) with their shared calibration
(``_calibrated``, ``conformal``, ``pairwise``), the speedup bins (``bins``), and the evaluation suite
(``kernelcast.surrogate.evaluation``). The concrete surrogates are imported lazily (LightGBM and
scikit-learn load only when a model is used).
"""

from __future__ import annotations

from typing import Any

from kernelcast.surrogate._base import CANDIDATE_COLUMNS, TASK_COLUMNS, Decision, Forecast, Surrogate

__all__ = [
    "CANDIDATE_COLUMNS",
    "TASK_COLUMNS",
    "Decision",
    "Forecast",
    "ForestSurrogate",
    "GBMSurrogate",
    "RooflineSurrogate",
    "Surrogate",
    "load_surrogate",
]

_LAZY = {
    "GBMSurrogate": "kernelcast.surrogate.gbm",
    "ForestSurrogate": "kernelcast.surrogate.forest",
    "RooflineSurrogate": "kernelcast.surrogate.roofline",
    "load_surrogate": "kernelcast.surrogate.registry",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'kernelcast.surrogate' has no attribute {name!r}")
