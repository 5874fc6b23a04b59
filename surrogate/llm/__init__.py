"""Language-model surrogates: a LoRA-adapted SmolLM2 that reads kernel sources, and a prompted forecaster.

``base`` finds and loads the base model (the one module that imports transformers), ``prompts`` builds the
shared-prefix prompts, ``regressor`` is the adapted model with its forecast head, ``forecaster`` the
:class:`LLMSurrogate` (registered as ``kernelcast train --model llm``), and ``prompted`` the
:class:`PromptedForecaster` that asks any OpenAI-compatible chat endpoint for the speedup bin
(``llm-prompted``). Importing this package imports none of the heavy dependencies.
"""

from __future__ import annotations

from typing import Any

__all__ = ["LLMSurrogate", "PromptedForecaster", "TrainingSliceEnded"]

_LAZY = {
    "LLMSurrogate": "kernelcast.surrogate.llm.forecaster",
    "TrainingSliceEnded": "kernelcast.surrogate.llm.forecaster",
    "PromptedForecaster": "kernelcast.surrogate.llm.prompted",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'kernelcast.surrogate.llm' has no attribute {name!r}")
