"""The harvest programs run in eager mode on the CPU, at every declared shape, and give finite results."""

from __future__ import annotations

import math

import pytest
import torch

from kernelcast.exceptions import InvalidParameterError
from kernelcast.measurement.harvest.programs import PROGRAMS, Program, get_program, program_names


def _outputs(program: Program, shape, dtype: str) -> list[torch.Tensor]:
    result = program.fn(*program.make_inputs(shape, dtype, device="cpu", seed=0))
    return list(result) if isinstance(result, (tuple, list)) else [result]


def test_there_are_enough_programs_shapes_and_dtypes():
    assert len(PROGRAMS) >= 45
    tasks = sum(len(p.shapes) * len(p.dtypes) for p in PROGRAMS)
    assert tasks >= 1500
    assert len(set(program_names())) == len(PROGRAMS)


@pytest.mark.parametrize("program", PROGRAMS, ids=lambda p: p.name)
def test_program_runs_on_every_shape_in_float32(program):
    assert len(program.shapes) >= 8 and program.description
    for shape in program.shapes:
        for out in _outputs(program, shape, "float32"):
            assert isinstance(out, torch.Tensor)
            if out.is_floating_point():
                assert torch.isfinite(out).all(), f"{program.name} {shape}: non-finite output"


@pytest.mark.parametrize("program", PROGRAMS, ids=lambda p: p.name)
def test_program_runs_in_half_precisions(program):
    for dtype in ("float16", "bfloat16"):
        for out in _outputs(program, program.shapes[0], dtype):
            if out.is_floating_point():
                assert torch.isfinite(out.float()).all(), f"{program.name} {dtype}: non-finite output"


@pytest.mark.parametrize("program", PROGRAMS, ids=lambda p: p.name)
def test_shapes_of_a_program_have_distinct_sizes(program):
    """Pointwise kernels flatten their iteration space: equal sizes would give equal kernel sources."""
    sizes = [math.prod(s) for s in program.shapes]
    assert len(set(sizes)) == len(sizes)


def test_inputs_are_reproducible():
    program = get_program("cross_entropy")
    a = program.make_inputs((16, 10), "float32", seed=5)
    b = program.make_inputs((16, 10), "float32", seed=5)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert a[1].dtype == torch.int64 and int(a[1].max()) < 10


def test_unknown_program_lists_the_names():
    with pytest.raises(InvalidParameterError, match=r"'program' parameter of harvest must be one of 'gelu'.*Got 'nope'"):
        get_program("nope")
