from __future__ import annotations

import pytest
import torch

from kernelcast.exceptions import InvalidParameterError
from kernelcast.measurement.families.softmax import SoftmaxFamily
from kernelcast.measurement.space import DeviceLimits

HOPPER = DeviceLimits.hopper()
FAMILY = SoftmaxFamily()

CONFIGS = {
    "single_block": [
        {"BLOCK_M": 1, "BLOCK_N": 512, "num_warps": 4},
        {"BLOCK_M": 4, "BLOCK_N": 512, "num_warps": 1},
        {"BLOCK_M": 16, "BLOCK_N": 1024, "num_warps": 8},
    ],
    "online": [
        {"BLOCK_M": 1, "BLOCK_N": 32, "num_warps": 1, "num_stages": 1},
        {"BLOCK_M": 4, "BLOCK_N": 64, "num_warps": 4, "num_stages": 3},
        {"BLOCK_M": 8, "BLOCK_N": 128, "num_warps": 2, "num_stages": 2},
    ],
    "two_pass": [
        {"BLOCK_M": 1, "BLOCK_N": 32, "num_warps": 1, "num_stages": 1},
        {"BLOCK_M": 2, "BLOCK_N": 64, "num_warps": 4, "num_stages": 3},
        {"BLOCK_M": 8, "BLOCK_N": 128, "num_warps": 2, "num_stages": 2},
    ],
}
CASES = [(v, c) for v, configs in CONFIGS.items() for c in configs]


def test_spaces_have_the_documented_knobs_and_sizes():
    assert FAMILY.variants == ("single_block", "online", "two_pass")
    assert FAMILY.space("single_block").names == ("BLOCK_M", "BLOCK_N", "num_warps")
    assert len(FAMILY.space("single_block")) == 390
    for variant in ("online", "two_pass"):
        assert FAMILY.space(variant).names == ("BLOCK_M", "BLOCK_N", "num_warps", "num_stages")
        assert len(FAMILY.space(variant)) == 800


def test_single_block_needs_the_whole_row():
    problem = FAMILY.problem("64x100", "float16")
    reason = FAMILY.check_config("single_block", {"BLOCK_M": 1, "BLOCK_N": 64, "num_warps": 4}, problem, HOPPER)
    assert reason is not None
    assert "BLOCK_N=64 < N=100" in reason
    assert FAMILY.check_config("single_block", {"BLOCK_M": 1, "BLOCK_N": 128, "num_warps": 4}, problem, HOPPER) is None
    big = FAMILY.problem("4096x4096", "float16")
    valid = FAMILY.configs("single_block", big, HOPPER)
    assert valid
    assert all(c["BLOCK_N"] >= 4096 for c in valid)


def test_vocabulary_rows_fit_one_block_only_with_enough_warps():
    problem = FAMILY.problem("8192x50257", "float16")
    few = {"BLOCK_M": 1, "BLOCK_N": 65536, "num_warps": 4}
    reason = FAMILY.check_config("single_block", few, problem, HOPPER)
    assert reason is not None
    assert "registers per thread with 4 warps" in reason
    assert FAMILY.check_config("single_block", {**few, "num_warps": 16}, problem, HOPPER) is None


def test_pipelined_tiles_must_fit_in_shared_memory():
    problem = FAMILY.problem("4096x4096", "float32")
    config = {"BLOCK_M": 8, "BLOCK_N": 16384, "num_warps": 16, "num_stages": 4}
    reason = FAMILY.check_config("online", config, problem, HOPPER)
    assert reason is not None
    assert "shared memory" in reason
    assert FAMILY.check_config("online", {**config, "BLOCK_M": 1, "num_stages": 2}, problem, HOPPER) is None


def test_out_of_space_knob_and_unknown_variant_raise():
    problem = FAMILY.problem("64x100", "float16")
    with pytest.raises(InvalidParameterError, match=r"'BLOCK_N' knob .* must be one of .*Got 48 instead"):
        FAMILY.check_config("online", {"BLOCK_M": 1, "BLOCK_N": 48, "num_warps": 4, "num_stages": 2}, problem, HOPPER)
    with pytest.raises(InvalidParameterError, match=r"Missing knob\(s\) \['num_stages'\]"):
        FAMILY.check_config("two_pass", {"BLOCK_M": 1, "BLOCK_N": 64, "num_warps": 4}, problem, HOPPER)
    with pytest.raises(InvalidParameterError, match=r"'variant' parameter of softmax must be one of 'single_block'"):
        FAMILY.space("looped")


@pytest.mark.parametrize("dtype", ["float16", "float32"])
@pytest.mark.parametrize("shape", ["33x100", "64x300"])
@pytest.mark.parametrize(("variant", "config"), CASES)
def test_variant_matches_reference(run_variant, variant, config, shape, dtype):
    out = run_variant(FAMILY, variant, config, shape, dtype, seed=1)
    assert torch.allclose(out.float().sum(dim=1), torch.ones(out.shape[0]), atol=2e-2)


@pytest.mark.parametrize("variant", FAMILY.variants)
def test_large_logits_do_not_overflow(run_variant, variant):
    problem = FAMILY.problem("5x300", "float32")
    x = FAMILY.make_inputs(problem, device="cpu", seed=3)["x"] + 100.0  # exp(100) overflows fp32
    run_variant(FAMILY, variant, CONFIGS[variant][0], "5x300", "float32", inputs={"x": x})


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
    b = FAMILY.make_inputs(problem, device="cpu", seed=7)["x"]
    c = FAMILY.make_inputs(problem, device="cpu", seed=8)["x"]
    assert a.dtype == torch.bfloat16
    assert a.shape == (33, 100)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert (a != 0).float().mean() > 0.9


def test_roofline_quantities():
    problem = FAMILY.problem("1000x3000", "float16")
    assert FAMILY.flops(problem) == 5 * 1000 * 3000
    assert FAMILY.min_bytes(problem) == 2 * 1000 * 3000 * 2
    assert FAMILY.min_bytes(FAMILY.problem("1000x3000", "float32")) == 2 * 1000 * 3000 * 4


def test_variants_have_distinct_sources():
    hashes = {v: FAMILY.source_hash(v) for v in FAMILY.variants}
    assert len(set(hashes.values())) == len(FAMILY.variants)
    assert hashes["online"] == FAMILY.source_hash("online")
    assert "softmax_online_kernel" in FAMILY.source("online")
    assert "launch_online" in FAMILY.source("online")
