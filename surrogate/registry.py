"""The surrogate registry: model names (``kernelcast train --model NAME``) to their classes.

A new kind of surrogate (an LLM forecaster, say) plugs in by adding ``"llm": "package.module:Class"`` to
:data:`MODEL_REGISTRY` or calling :func:`register_surrogate`; its class must implement
:class:`~kernelcast.surrogate._base.Surrogate` plus ``save(path)`` and a ``load(path)`` classmethod, and its
``model.json`` must name the same ``"module:Class"`` under ``"class"``. Classes are imported on first use, so
optional heavy dependencies load only when that model is asked for.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any

from kernelcast.exceptions import InvalidParameterError, invalid_choice
from kernelcast.surrogate._artifact import read_metadata

MODEL_REGISTRY: dict[str, str] = {
    "gbm": "kernelcast.surrogate.gbm:GBMSurrogate",
    "forest": "kernelcast.surrogate.forest:ForestSurrogate",
    "roofline": "kernelcast.surrogate.roofline:RooflineSurrogate",
    "llm": "kernelcast.surrogate.llm.forecaster:LLMSurrogate",
    "llm-prompted": "kernelcast.surrogate.llm.prompted:PromptedForecaster",
}
"""Model name -> ``module:Class`` of every registered surrogate."""


def register_surrogate(name: str, ref: str) -> None:
    """Register the surrogate class at ``ref`` (``"package.module:Class"``) under ``name``."""
    if ":" not in ref:
        raise InvalidParameterError(f"A surrogate reference must look like 'package.module:Class'. Got {ref!r}.")
    MODEL_REGISTRY[name] = ref


def _import(ref: str) -> type:
    module_name, _, class_name = ref.partition(":")
    return getattr(importlib.import_module(module_name), class_name)


def surrogate_class(name: str) -> type:
    """The class registered as ``name``; an unknown name raises an error listing the registered ones."""
    if name not in MODEL_REGISTRY:
        raise invalid_choice("model", "train", name, MODEL_REGISTRY)
    return _import(MODEL_REGISTRY[name])


def make_surrogate(name: str, **params: Any) -> Any:
    """A new, unfitted surrogate of the kind ``name`` with hyperparameters ``params``."""
    return surrogate_class(name)(**params)


def load_surrogate(path: str | os.PathLike[str]) -> Any:
    """Load the model directory ``path`` with the registered class it names (only registered classes load)."""
    meta = read_metadata(Path(path))
    ref = meta.get("class")
    if ref not in MODEL_REGISTRY.values():
        raise InvalidParameterError(
            f"The model in {str(path)!r} names the class {ref!r}, which is not a registered surrogate "
            f"({', '.join(sorted(MODEL_REGISTRY.values()))})."
        )
    return _import(ref).load(path)
