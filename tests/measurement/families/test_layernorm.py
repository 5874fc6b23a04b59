from __future__ import annotations

import pytest
import torch

from kernelcast.exceptions import InvalidParameterError
from kernelcast.measurement.families.layernorm import LayerNormFamily
from kernelcast.measurement.space import DeviceLimits

HOPPER = DeviceLimits.hopper()
FAMILY = LayerNormFamily()

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
    "welford": [
        {"BLOCK_M": 1, "BLOCK_N": 32, "num_warps": 1, "num_stages": 1},
        {"BLOCK_M": 2, "BLOCK_N": 64, "num_warps": 4, "num_stages": 3},
        {"BLOCK_M": 8, "BLOCK_N": 128, "num_warps": 2, "num_stages": 2},
    ],
}
CASES = [(v, c) for v, configs in CONFIGS.items() for c in configs]


def test_spaces_have_the_documented_knobs_and_sizes():
    assert FAMILY.variants == ("single_block", "looped", "welford")
    assert FAMILY.space("single_block").names == ("BLOCK_M", "BLOCK_N", "num_warps")
    assert len(FAMILY.space("single_block")) == 390
    for variant in ("looped", "welford"):
        assert FAMILY.space(variant).names == ("BLOCK_M", "BLOCK_N", "num_warps", "num_stages")
        assert len(FAMILY.space(variant)) == 800


def test_single_block_needs_the_whole_row():
    problem = FAMILY.problem("127x4097", "float16")
    reason = FAMILY.check_config("single_block", {"BLOCK_M": 1, "BLOCK_N": 4096, "num_warps": 4}, problem, HOPPER)
    assert reason is not None
    assert "BLOCK_N=4096 < N=4097" in reason
    assert FAMILY.check_config("single_block", {"BLOCK_M": 1, "BLOCK_N": 8192, "num_warps": 4}, problem, HOPPER) is None


def test_welford_state_costs_more_registers_than_the_looped_accumulator():
    problem = FAMILY.problem("4096x4096", "float16")
    config = {"BLOCK_M": 8, "BLOCK_N": 4096, "num_warps": 16, "num_stages": 1}
    assert FAMILY.check_config("looped", config, problem, HOPPER) is None
    reason = FAMILY.check_config("welford", config, problem, HOPPER)
    assert reason is not None
    assert "registers per thread with 16 warps" in reason


def test_pipelined_tiles_must_fit_in_shared_memory():
    problem = FAMILY.problem("4096x4096", "float32")
    config = {"BLOCK_M": 8, "BLOCK_N": 4096, "num_warps": 16, "num_stages": 4}
    reason = FAMILY.check_config("looped", config, problem, HOPPER)
    assert reason is not None
    assert "shared memory" in reason


def test_out_of_space_knob_and_unknown_variant_raise():
    problem = FAMILY.problem("64x100", "float16")
    with pytest.raises(InvalidParameterError, match=r"'num_warps' knob .* must be one of .*Got 3 instead"):
        FAMILY.check_config("welford", {"BLOCK_M": 1, "BLOCK_N": 64, "num_warps": 3, "num_stages": 2}, problem, HOPPER)
    with pytest.raises(InvalidParameterError, match=r"Unknown knob\(s\) \['num_stages'\]"):
        FAMILY.check_config("single_block", {"BLOCK_M": 1, "BLOCK_N": 128, "num_warps": 4, "num_stages": 2},
                            problem, HOPPER)
    with pytest.raises(InvalidParameterError, match=r"'variant' parameter of layernorm must be one of .*'welford'"):
        FAMILY.source("two_pass")


@pytest.mark.parametrize("dtype", ["float16", "float32"])
@pytest.mark.parametrize("shape", ["33x100", "64x300"])
@pytest.mark.parametrize(("variant", "config"), CASES)
def test_variant_matches_reference(run_variant, variant, config, shape, dtype):
    out = run_variant(FAMILY, variant, config, shape, dtype, seed=1)
    assert out.float().std().item() > 0.5  # normalised rows, not a constant


@pytest.mark.parametrize("variant", FAMILY.variants)
def test_large_offset_keeps_the_variance(run_variant, variant):
    # A large mean with a small spread: E[x^2] - E[x]^2 in fp32 would lose the variance; all variants centre.
    problem = FAMILY.problem("5x300", "float32")
    inputs = FAMILY.make_inputs(problem, device="cpu", seed=3)
    inputs["x"] = inputs["x"] * 0.1 + 100.0
    run_variant(FAMILY, variant, CONFIGS[variant][0], "5x300", "float32", inputs=inputs)


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
    problem = FAMILY.problem("33x100", "float16")
    a = FAMILY.make_inputs(problem, device="cpu", seed=7)
    b = FAMILY.make_inputs(problem, device="cpu", seed=7)
    c = FAMILY.make_inputs(problem, device="cpu", seed=8)
    assert {k: v.shape for k, v in a.items()} == {"x": (33, 100), "weight": (100,), "bias": (100,)}
    assert all(v.dtype == torch.float16 for v in a.values())
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["x"], c["x"])
    assert all((v != 0).float().mean() > 0.9 for v in a.values())
    assert not torch.equal(a["weight"], torch.ones_like(a["weight"]))


def test_roofline_quantities():
    problem = FAMILY.problem("1000x3000", "bfloat16")
    assert FAMILY.flops(problem) == 7 * 1000 * 3000
    assert FAMILY.min_bytes(problem) == (2 * 1000 * 3000 + 2 * 3000) * 2


def test_variants_have_distinct_sources():
    hashes = {v: FAMILY.source_hash(v) for v in FAMILY.variants}
    assert len(set(hashes.values())) == len(FAMILY.variants)
    assert "layernorm_welford_kernel" in FAMILY.source("welford")
    assert "launch_welford" in FAMILY.source("welford")
