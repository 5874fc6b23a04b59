"""Configuration spaces, shapes and dtypes: parsing and clear errors."""

import pytest

from kernelcast.exceptions import InvalidParameterError
from kernelcast.measurement.space import ConfigSpace, Param, parse_dtype, parse_shape


def test_space_enumerates_the_product_in_order():
    space = ConfigSpace([Param("A", (1, 2)), Param("B", ("x", "y", "z"))])
    configs = list(space)
    assert len(space) == 6 == len(configs)
    assert configs[0] == {"A": 1, "B": "x"} and configs[-1] == {"A": 2, "B": "z"}


def test_sample_is_distinct_reproducible_and_inside_the_space():
    space = ConfigSpace([Param("A", tuple(range(10))), Param("B", tuple(range(7)))])
    sample = space.sample(20, seed=5)
    assert len({tuple(c.values()) for c in sample}) == 20
    assert sample == space.sample(20, seed=5)
    assert sample != space.sample(20, seed=6)
    assert all(space.validate(c) == c for c in sample)
    assert len(space.sample(1000)) == 70
    small = {tuple(c.values()) for c in space.sample(10, seed=5)}
    assert small <= {tuple(c.values()) for c in space.sample(20, seed=5)}


def test_validate_errors_name_the_knob_and_the_allowed_values():
    space = ConfigSpace([Param("BLOCK", (64, 128)), Param("num_warps", (4, 8))])
    with pytest.raises(InvalidParameterError, match=r"'BLOCK' knob of config must be one of \[64, 128\]. Got 96"):
        space.validate({"BLOCK": 96, "num_warps": 4})
    with pytest.raises(InvalidParameterError, match=r"Missing knob\(s\) \['num_warps'\]"):
        space.validate({"BLOCK": 64})
    with pytest.raises(InvalidParameterError, match=r"Unknown knob\(s\) \['SPLIT'\]"):
        space.validate({"BLOCK": 64, "num_warps": 4, "SPLIT": 2})


@pytest.mark.parametrize("text", ["4096x512x64", "M=4096,N=512,K=64", "K=64, M=4096 ,N=512", "4096×512×64"])
def test_shapes_parse_positional_and_named(text):
    assert parse_shape(text, ("M", "N", "K")) == {"M": 4096, "N": 512, "K": 64}


@pytest.mark.parametrize(("text", "message"), [
    ("4096x512", "must have 3 sizes"),
    ("4096x512x0", "must be a positive int. Got 0"),
    ("4096xbigx64", "must be a positive int. Got 'big'"),
    ("M=1,N=2,Q=3", "unknown dimension 'Q'"),
    ("M=1,N=2", r"lacks \['K'\]"),
    ("M=1,2,3", "do not mix forms"),
    ("", "Got an empty string"),
])
def test_malformed_shapes_get_clear_errors(text, message):
    with pytest.raises(InvalidParameterError, match=message):
        parse_shape(text, ("M", "N", "K"))


def test_dtype_aliases_and_errors():
    assert parse_dtype("fp16") == "float16"
    assert parse_dtype("BF16") == "bfloat16"
    with pytest.raises(InvalidParameterError, match="'dtype' parameter of softmax must be one of 'float16'.*Got 'int8'"):
        parse_dtype("int8", ("float16", "float32"), owner="softmax")
