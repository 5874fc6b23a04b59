"""Kernel families: the registry of built-in and user families.

Built-in families are imported lazily, on first use, so importing kernelcast does not import Triton.
A user family is a :class:`Family` subclass in an importable module, registered with
:func:`register_family`; worker processes re-import it by its ``module:Class`` reference.
"""

from __future__ import annotations

import importlib

from kernelcast.exceptions import InvalidParameterError, invalid_choice
from kernelcast.measurement.families._base import Family, element_bytes, shared_memory_reason, torch_dtype

__all__ = [
    "BUILTIN_FAMILIES",
    "registered_space_size",
    "Family",
    "element_bytes",
    "family_names",
    "family_ref",
    "get_family",
    "load_family_ref",
    "register_family",
    "shared_memory_reason",
    "torch_dtype",
]

BUILTIN_FAMILIES: dict[str, str] = {
    "matmul": "kernelcast.measurement.families.matmul:MatmulFamily",
    "softmax": "kernelcast.measurement.families.softmax:SoftmaxFamily",
    "layernorm": "kernelcast.measurement.families.layernorm:LayerNormFamily",
    "rmsnorm": "kernelcast.measurement.families.rmsnorm:RMSNormFamily",
    "bias_gelu": "kernelcast.measurement.families.bias_gelu:BiasGeluFamily",
    "rowsum": "kernelcast.measurement.families.rowsum:RowSumFamily",
    "attention": "kernelcast.measurement.families.attention:AttentionFamily",
    "transpose": "kernelcast.measurement.families.transpose:TransposeFamily",
}
"""Name -> ``module:Class`` of every built-in family."""

_REGISTRY: dict[str, str] = dict(BUILTIN_FAMILIES)
_INSTANCES: dict[str, Family] = {}


def family_ref(family: Family | type[Family]) -> str:
    """The ``module:Class`` reference that re-imports ``family`` in another process."""
    cls = family if isinstance(family, type) else type(family)
    return f"{cls.__module__}:{cls.__qualname__}"


def load_family_ref(ref: str) -> Family:
    """Import and instantiate the family at ``module:Class``."""
    module_name, _, class_name = ref.partition(":")
    if not module_name or not class_name:
        raise InvalidParameterError(f"A family reference must look like 'package.module:Class'. Got {ref!r}.")
    cls = getattr(importlib.import_module(module_name), class_name)
    if not (isinstance(cls, type) and issubclass(cls, Family)):
        raise InvalidParameterError(f"{ref!r} is not a kernelcast Family subclass.")
    return cls()


def register_family(cls: type[Family]) -> type[Family]:
    """Register a user family class (usable as a decorator). Its module must be importable by workers."""
    if not (isinstance(cls, type) and issubclass(cls, Family)):
        raise InvalidParameterError(f"register_family takes a Family subclass. Got {cls!r}.")
    _REGISTRY[cls.name] = family_ref(cls)
    _INSTANCES.pop(cls.name, None)
    return cls


def family_names() -> list[str]:
    """Names of every registered family, built-in ones first."""
    return list(_REGISTRY)


def registered_space_size(name: str, variant: str | None = None) -> int | None:
    """Configurations in the space of a registered family's ``variant`` (all variants summed when None).

    None when no family is registered as ``name``, when it has no such variant, or when its space depends on
    the problem (no fixed size). Used to decide whether a stored task holds its whole space.
    """
    if name not in _REGISTRY:
        return None
    family = get_family(name)
    try:
        variants = family.variants if variant is None else (variant,)
        return sum(len(family.space(v)) for v in variants)
    except Exception:  # noqa: BLE001 - an unknown variant, or a space that depends on the problem
        return None


def get_family(name: str) -> Family:
    """Return the family registered as ``name``, or raise naming the registered ones."""
    if name not in _REGISTRY:
        raise invalid_choice("family", "measure", name, _REGISTRY)
    if name not in _INSTANCES:
        _INSTANCES[name] = load_family_ref(_REGISTRY[name])
    return _INSTANCES[name]
