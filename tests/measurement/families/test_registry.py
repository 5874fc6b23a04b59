from __future__ import annotations

import importlib.util

import pytest

from kernelcast.exceptions import InvalidParameterError
from kernelcast.measurement.families import BUILTIN_FAMILIES, Family, family_names, get_family
from kernelcast.measurement.space import DeviceLimits

HOPPER = DeviceLimits.hopper()


def _load(name: str) -> Family:
    """The built-in family ``name``; skipped while its module is not written yet (attention is in progress)."""
    module = BUILTIN_FAMILIES[name].partition(":")[0]
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} does not exist yet")
    return get_family(name)


@pytest.mark.parametrize("name", list(BUILTIN_FAMILIES))
def test_builtin_family_loads_and_describes_itself(name):
    family = _load(name)
    assert isinstance(family, Family)
    assert family.name == name
    assert get_family(name) is family
    assert len(family.variants) >= 1
    assert len(set(family.variants)) == len(family.variants)
    for variant in family.variants:
        assert len(family.space(variant)) > 0
    hashes = {family.source_hash(v) for v in family.variants}
    assert len(hashes) == len(family.variants)
    assert family.describe()["name"] == name


@pytest.mark.parametrize("name", list(BUILTIN_FAMILIES))
def test_default_shapes_parse_for_every_dtype(name):
    family = _load(name)
    assert len(family.default_shapes) >= 5
    assert len(set(family.default_shapes)) == len(family.default_shapes)
    for shape in family.default_shapes:
        for dtype in family.dtypes:
            problem = family.problem(shape, dtype)
            assert set(problem.dims) == set(family.dims)
            assert problem.dtype == dtype
            assert family.flops(problem) >= 0
            assert family.min_bytes(problem) > 0


@pytest.mark.parametrize("name", list(BUILTIN_FAMILIES))
def test_every_default_shape_has_a_valid_config_on_hopper(name):
    family = _load(name)
    for shape in family.default_shapes:
        problem = family.problem(shape, family.dtypes[0])
        assert any(
            family.check_config(variant, config, problem, HOPPER) is None
            for variant in family.variants
            for config in family.space(variant)
        ), f"{name}: no variant has a valid configuration for {shape}"


def test_unknown_family_lists_the_registered_ones():
    with pytest.raises(InvalidParameterError, match=r"'family' parameter of measure must be one of 'matmul', .*"
                                                   r"'softmax'.*'transpose'.*Got 'nope' instead"):
        get_family("nope")
    assert family_names()[: len(BUILTIN_FAMILIES)] == list(BUILTIN_FAMILIES)


def test_registered_space_size_per_variant_and_per_family():
    from kernelcast.measurement.families import get_family, registered_space_size

    matmul = get_family("matmul")
    sizes = {v: len(matmul.space(v)) for v in matmul.variants}
    assert registered_space_size("matmul", "blocked") == sizes["blocked"] > 0
    assert registered_space_size("matmul") == sum(sizes.values())
    assert registered_space_size("matmul", "no_such_variant") is None
    assert registered_space_size("kernel_tuner/Xgemm") is None
