from __future__ import annotations

import pytest
import torch

from kernelcast.exceptions import InvalidParameterError
from kernelcast.measurement.families.rowsum import RowSumFamily
from kernelcast.measurement.space import DeviceLimits

HOPPER = DeviceLimits.hopper()
FAMILY = RowSumFamily()

CONFIGS = {
    "single_block": [
        {"BLOCK_M": 1, "BLOCK_N": 512, "num_warps": 4},
        {"BLOCK_M": 4, "BLOCK_N": 512, "num_warps": 1},
        {"BLOCK_M": 32, "BLOCK_N": 1024, "num_warps": 8},
    ],
    "looped": [
        {"BLOCK_M": 1, "BLOCK_N": 32, "num_warps": 1, "num_stages": 1},
        {"BLOCK_M": 4, "BLOCK_N": 64, "num_warps": 4, "num_stages": 3},
        {"BLOCK_M": 16, "BLOCK_N": 128, "num_warps": 2, "num_stages": 2},
    ],
    "split": [
        {"BLOCK_M": 1, "BLOCK_N": 32, "SPLIT_N": 4, "num_warps": 1, "num_stages": 1},
        {"BLOCK_M": 4, "BLOCK_N": 32, "SPLIT_N": 2, "num_warps": 4, "num_stages": 3},
        {"BLOCK_M": 8, "BLOCK_N": 64, "SPLIT_N": 2, "num_warps": 2, "num_stages": 2},
    ],
}
CASES = [(v, c) for v, configs in CONFIGS.items() for c in configs]


def test_spaces_have_the_documented_knobs_and_sizes():
    assert FAMILY.variants == ("single_block", "looped", "split")
    assert FAMILY.space("single_block").names == ("BLOCK_M", "BLOCK_N", "num_warps")
    assert len(FAMILY.space("single_block")) == 468
    assert FAMILY.space("looped").names == ("BLOCK_M", "BLOCK_N", "num_warps", "num_stages")
    assert len(FAMILY.space("looped")) == 1000
    assert FAMILY.space("split").names == ("BLOCK_M", "BLOCK_N", "SPLIT_N", "num_warps", "num_stages")
    assert len(FAMILY.space("split")) == 3375


def test_single_block_needs_the_whole_row():
    problem = FAMILY.problem("64x262144", "float32")
    assert FAMILY.configs("single_block", problem, HOPPER) == []
    reason = FAMILY.check_config("single_block", {"BLOCK_M": 1, "BLOCK_N": 65536, "num_warps": 32}, problem, HOPPER)
    assert reason is not None
    assert "BLOCK_N=65536 < N=262144" in reason


def test_split_needs_a_column_block_per_split():
    problem = FAMILY.problem("1000x3000", "float16")
    config = {"BLOCK_M": 1, "BLOCK_N": 1024, "SPLIT_N": 4, "num_warps": 4, "num_stages": 2}
    reason = FAMILY.check_config("split", config, problem, HOPPER)
    assert reason is not None
    assert "SPLIT_N=4 splits a row into more parts than its 3 column block(s) of BLOCK_N=1024" in reason
    assert FAMILY.check_config("split", {**config, "SPLIT_N": 2}, problem, HOPPER) is None


def test_registers_limit_the_accumulator():
    problem = FAMILY.problem("4096x4096", "float32")
    reason = FAMILY.check_config("looped", {"BLOCK_M": 16, "BLOCK_N": 4096, "num_warps": 1, "num_stages": 1},
                                 problem, HOPPER)
    assert reason is not None
    assert "131072 32-bit values live" in reason


def test_out_of_space_knob_raises():
    problem = FAMILY.problem("64x100", "float16")
    with pytest.raises(InvalidParameterError, match=r"'SPLIT_N' knob .* must be one of \[2, 4, 8, 16, 32\]\. Got 3"):
        FAMILY.check_config("split", {"BLOCK_M": 1, "BLOCK_N": 32, "SPLIT_N": 3, "num_warps": 4, "num_stages": 2},
                            problem, HOPPER)


@pytest.mark.parametrize("dtype", ["float16", "float32"])
@pytest.mark.parametrize("shape", ["33x100", "64x300"])
@pytest.mark.parametrize(("variant", "config"), CASES)
def test_variant_matches_reference(run_variant, variant, config, shape, dtype):
    out = run_variant(FAMILY, variant, config, shape, dtype, seed=1)
    assert out.dtype == torch.float32
    assert out.shape == (int(shape.split("x")[0]),)


def test_split_zeroes_the_output_itself(run_variant):
    # Launching twice into the same output must not accumulate the first run's sums.
    problem = FAMILY.problem("33x300", "float32")
    inputs = FAMILY.make_inputs(problem, device="cpu", seed=2)
    config = CONFIGS["split"][0]
    out = FAMILY.new_output(problem, inputs)
    FAMILY.launch("split", config, problem, inputs, out)
    FAMILY.launch("split", config, problem, inputs, out)
    assert torch.allclose(out, FAMILY.reference(problem, inputs), atol=2e-3, rtol=1e-4)


@pytest.mark.parametrize(("variant", "config"), [(v, c[1]) for v, c in CONFIGS.items()])
def test_compile_passes_the_launch_arguments(kernel_calls, variant, config):
    problem = FAMILY.problem("33x100", "float16")
    inputs = FAMILY.make_inputs(problem, device="cpu", seed=0)
    out = FAMILY.new_output(problem, inputs)
    compiled = kernel_calls(FAMILY, variant, lambda: FAMILY.compile(variant, config, problem))
    launched = kernel_calls(FAMILY, variant, lambda: FAMILY.launch(variant, config, problem, inputs, out))
    assert [c["warmup"] for c in compiled] == [True]
    assert [c["warmup"] for c in launched] == [False]
    for key in ("kernel", "args", "kwargs", "grid"):
        assert [c[key] for c in compiled] == [c[key] for c in launched]


def test_make_inputs_is_seeded_and_not_zero():
    problem = FAMILY.problem("33x100", "bfloat16")
    a = FAMILY.make_inputs(problem, device="cpu", seed=7)["x"]
    assert a.dtype == torch.bfloat16
    assert torch.equal(a, FAMILY.make_inputs(problem, device="cpu", seed=7)["x"])
    assert not torch.equal(a, FAMILY.make_inputs(problem, device="cpu", seed=8)["x"])
    assert (a != 0).float().mean() > 0.9


def test_roofline_quantities():
    problem = FAMILY.problem("1000x3000", "float16")
    assert FAMILY.flops(problem) == 1000 * 3000
    assert FAMILY.min_bytes(problem) == 1000 * 3000 * 2 + 1000 * 4


def test_variants_have_distinct_sources():
    hashes = {v: FAMILY.source_hash(v) for v in FAMILY.variants}
    assert len(set(hashes.values())) == 3
    assert "tl.atomic_add" in FAMILY.source("split")
    assert "out.zero_()" in FAMILY.source("split")
