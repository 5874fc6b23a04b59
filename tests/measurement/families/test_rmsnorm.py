from __future__ import annotations

import pytest
import torch

from kernelcast.exceptions import InvalidParameterError
from kernelcast.measurement.families.rmsnorm import RMSNormFamily
from kernelcast.measurement.space import DeviceLimits

HOPPER = DeviceLimits.hopper()
FAMILY = RMSNormFamily()

CONFIGS = {
    "single_block": [
        {"BLOCK_M": 1, "BLOCK_N": 512, "num_warps": 4},
        {"BLOCK_M": 4, "BLOCK_N": 512, "num_warps": 1},
        {"BLOCK_M": 16, "BLOCK_N": 1024, "num_warps": 8},
    ],
    "looped": [
        {"BLOCK_M": 1, "BLOCK_N": 32, "num_warps": 1, "num_stages": 1},
        {"BLOCK_M": 4, "BLOCK_N": 64, "num_warps": 4, "num_stages": 3},
        {"BLOCK_M": 8, "BLOCK_N": 128, "num_warps": 2, "num_stages": 2},
    ],
}
CASES = [(v, c) for v, configs in CONFIGS.items() for c in configs]


def test_spaces_have_the_documented_knobs_and_sizes():
    assert FAMILY.variants == ("single_block", "looped")
    assert FAMILY.space("single_block").names == ("BLOCK_M", "BLOCK_N", "num_warps")
    assert len(FAMILY.space("single_block")) == 390
    assert FAMILY.space("looped").names == ("BLOCK_M", "BLOCK_N", "num_warps", "num_stages")
    assert len(FAMILY.space("looped")) == 800


def test_single_block_needs_the_whole_row():
    problem = FAMILY.problem("33x100", "float32")
    reason = FAMILY.check_config("single_block", {"BLOCK_M": 2, "BLOCK_N": 64, "num_warps": 2}, problem, HOPPER)
    assert reason is not None
    assert "BLOCK_N=64 < N=100" in reason
    assert all(c["BLOCK_N"] >= 100 for c in FAMILY.configs("single_block", problem, HOPPER))


def test_register_and_shared_memory_limits_depend_on_the_device():
    problem = FAMILY.problem("4096x8192", "float16")
    config = {"BLOCK_M": 2, "BLOCK_N": 8192, "num_warps": 4, "num_stages": 1}
    reason = FAMILY.check_config("looped", config, problem, HOPPER)
    assert reason is not None
    assert "registers per thread with 4 warps" in reason
    assert FAMILY.check_config("looped", {**config, "num_warps": 16}, problem, HOPPER) is None
    small = DeviceLimits(name="small-smem GPU", max_shared_bytes_per_block=48 * 1024)
    deep = {"BLOCK_M": 4, "BLOCK_N": 4096, "num_warps": 16, "num_stages": 3}
    assert FAMILY.check_config("looped", deep, problem, HOPPER) is None
    reason = FAMILY.check_config("looped", deep, problem, small)
    assert reason is not None
    assert "small-smem GPU allows 49152" in reason


def test_out_of_space_knob_raises():
    problem = FAMILY.problem("64x100", "float16")
    with pytest.raises(InvalidParameterError, match=r"'BLOCK_M' knob .* must be one of \[1, 2, 4, 8\]\. Got 16"):
        FAMILY.check_config("looped", {"BLOCK_M": 16, "BLOCK_N": 64, "num_warps": 4, "num_stages": 2}, problem, HOPPER)


@pytest.mark.parametrize("dtype", ["float16", "float32"])
@pytest.mark.parametrize("shape", ["33x100", "64x300"])
@pytest.mark.parametrize(("variant", "config"), CASES)
def test_variant_matches_reference(run_variant, variant, config, shape, dtype):
    run_variant(FAMILY, variant, config, shape, dtype, seed=1)


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
    problem = FAMILY.problem("33x100", "float32")
    a = FAMILY.make_inputs(problem, device="cpu", seed=7)
    b = FAMILY.make_inputs(problem, device="cpu", seed=7)
    assert {k: v.shape for k, v in a.items()} == {"x": (33, 100), "weight": (100,)}
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["x"], FAMILY.make_inputs(problem, device="cpu", seed=8)["x"])
    assert all((v != 0).all() for v in a.values())


def test_roofline_quantities():
    problem = FAMILY.problem("1000x3000", "float32")
    assert FAMILY.flops(problem) == 4 * 1000 * 3000
    assert FAMILY.min_bytes(problem) == (2 * 1000 * 3000 + 3000) * 4


def test_variants_have_distinct_sources():
    assert FAMILY.source_hash("single_block") != FAMILY.source_hash("looped")
    assert "rmsnorm_looped_kernel" in FAMILY.source("looped")
