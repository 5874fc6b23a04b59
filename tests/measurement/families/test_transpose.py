from __future__ import annotations

import pytest
import torch

from kernelcast.exceptions import InvalidParameterError
from kernelcast.measurement.families.transpose import TransposeFamily
from kernelcast.measurement.space import DeviceLimits

HOPPER = DeviceLimits.hopper()
FAMILY = TransposeFamily()

CONFIGS = {
    "tiled": [
        {"BLOCK_M": 16, "BLOCK_N": 16, "GROUP_M": 1, "num_warps": 1},
        {"BLOCK_M": 32, "BLOCK_N": 64, "GROUP_M": 4, "num_warps": 4},
        {"BLOCK_M": 64, "BLOCK_N": 32, "GROUP_M": 8, "num_warps": 2},
    ],
    "naive": [
        {"BLOCK": 128, "num_warps": 1},
        {"BLOCK": 1024, "num_warps": 4},
        {"BLOCK": 4096, "num_warps": 8},
    ],
}
CASES = [(v, c) for v, configs in CONFIGS.items() for c in configs]


def test_spaces_have_the_documented_knobs_and_sizes():
    assert FAMILY.variants == ("tiled", "naive")
    assert FAMILY.space("tiled").names == ("BLOCK_M", "BLOCK_N", "GROUP_M", "num_warps")
    assert len(FAMILY.space("tiled")) == 375
    assert FAMILY.space("naive").names == ("BLOCK", "num_warps")
    assert len(FAMILY.space("naive")) == 48


def test_a_tile_must_fit_in_shared_memory_for_its_dtype():
    config = {"BLOCK_M": 256, "BLOCK_N": 256, "GROUP_M": 1, "num_warps": 16}
    reason = FAMILY.check_config("tiled", config, FAMILY.problem("4096x4096", "float32"), HOPPER)
    assert reason is not None
    assert "needs 262144 bytes of shared memory" in reason
    assert FAMILY.check_config("tiled", config, FAMILY.problem("4096x4096", "float16"), HOPPER) is None
    reason = FAMILY.check_config("tiled", {**config, "num_warps": 1}, FAMILY.problem("4096x4096", "float16"), HOPPER)
    assert reason is not None
    assert "registers per thread with 1 warps" in reason


def test_out_of_space_knob_raises():
    problem = FAMILY.problem("64x100", "float16")
    with pytest.raises(InvalidParameterError, match=r"'GROUP_M' knob .* must be one of \[1, 4, 8\]\. Got 2 instead"):
        FAMILY.check_config("tiled", {"BLOCK_M": 16, "BLOCK_N": 16, "GROUP_M": 2, "num_warps": 4}, problem, HOPPER)


@pytest.mark.parametrize("dtype", ["float16", "float32"])
@pytest.mark.parametrize("shape", ["33x100", "100x33", "64x300"])
@pytest.mark.parametrize(("variant", "config"), CASES)
def test_variant_matches_reference_exactly(run_variant, variant, config, shape, dtype):
    out = run_variant(FAMILY, variant, config, shape, dtype, seed=1)
    M, N = map(int, shape.split("x"))
    assert out.shape == (N, M)
    assert out.is_contiguous()


def test_bfloat16_is_copied_bit_for_bit(run_variant):
    out = run_variant(FAMILY, "tiled", CONFIGS["tiled"][1], "33x100", "bfloat16", seed=4)
    x = FAMILY.make_inputs(FAMILY.problem("33x100", "bfloat16"), device="cpu", seed=4)["x"]
    assert torch.equal(out, x.t())


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
    a = FAMILY.make_inputs(problem, device="cpu", seed=7)["x"]
    assert torch.equal(a, FAMILY.make_inputs(problem, device="cpu", seed=7)["x"])
    assert not torch.equal(a, FAMILY.make_inputs(problem, device="cpu", seed=8)["x"])
    assert (a != 0).float().mean() > 0.9


def test_roofline_quantities():
    problem = FAMILY.problem("1000x3000", "float32")
    assert FAMILY.flops(problem) == 0.0
    assert FAMILY.min_bytes(problem) == 2 * 1000 * 3000 * 4
    assert FAMILY.tolerance("float16") == (0.0, 0.0)


def test_variants_have_distinct_sources():
    assert FAMILY.source_hash("tiled") != FAMILY.source_hash("naive")
    assert "tl.trans" in FAMILY.source("tiled")
