from __future__ import annotations

import math

import pytest
import torch

from kernelcast.exceptions import InvalidParameterError
from kernelcast.measurement.families.bias_gelu import BiasGeluFamily
from kernelcast.measurement.space import DeviceLimits

HOPPER = DeviceLimits.hopper()
FAMILY = BiasGeluFamily()

CONFIGS = {
    "tiled": [
        {"BLOCK_M": 1, "BLOCK_N": 128, "num_warps": 4},
        {"BLOCK_M": 4, "BLOCK_N": 32, "num_warps": 1},
        {"BLOCK_M": 16, "BLOCK_N": 64, "num_warps": 2},
    ],
    "flat": [
        {"BLOCK": 128, "num_warps": 1},
        {"BLOCK": 1024, "num_warps": 4},
        {"BLOCK": 4096, "num_warps": 8},
    ],
}
CASES = [(v, c) for v, configs in CONFIGS.items() for c in configs]


def test_spaces_have_the_documented_knobs_and_sizes():
    assert FAMILY.variants == ("tiled", "flat")
    assert FAMILY.space("tiled").names == ("BLOCK_M", "BLOCK_N", "num_warps")
    assert len(FAMILY.space("tiled")) == 280
    assert FAMILY.space("flat").names == ("BLOCK", "num_warps")
    assert len(FAMILY.space("flat")) == 54


def test_register_limit_rejects_big_tiles_with_few_warps():
    problem = FAMILY.problem("4096x4096", "float16")
    reason = FAMILY.check_config("tiled", {"BLOCK_M": 64, "BLOCK_N": 4096, "num_warps": 8}, problem, HOPPER)
    assert reason is not None
    assert "262144 32-bit values live" in reason
    reason = FAMILY.check_config("flat", {"BLOCK": 32768, "num_warps": 1}, problem, HOPPER)
    assert reason is not None
    assert "1024 registers per thread with 1 warps" in reason
    assert FAMILY.check_config("flat", {"BLOCK": 32768, "num_warps": 8}, problem, HOPPER) is None


def test_out_of_space_knob_raises():
    problem = FAMILY.problem("64x100", "float16")
    with pytest.raises(InvalidParameterError, match=r"'BLOCK' knob .* must be one of \[128, .*Got 100 instead"):
        FAMILY.check_config("flat", {"BLOCK": 100, "num_warps": 4}, problem, HOPPER)
    with pytest.raises(InvalidParameterError, match=r"'variant' parameter of bias_gelu must be one of 'tiled', 'flat'"):
        FAMILY.check_config("default", {"BLOCK": 128, "num_warps": 4}, problem, HOPPER)


@pytest.mark.parametrize("dtype", ["float16", "float32"])
@pytest.mark.parametrize("shape", ["33x100", "64x300"])
@pytest.mark.parametrize(("variant", "config"), CASES)
def test_variant_matches_reference(run_variant, variant, config, shape, dtype):
    run_variant(FAMILY, variant, config, shape, dtype, seed=1)


@pytest.mark.parametrize("variant", FAMILY.variants)
def test_bias_is_broadcast_over_rows_and_gelu_is_the_tanh_form(run_variant, variant):
    # Rows of x are 0, bias is [-3, 0, 1, 3]: every row must equal gelu_tanh(bias).
    problem = FAMILY.problem("3x4", "float32")
    inputs = {"x": torch.zeros((3, 4)), "bias": torch.tensor([-3.0, 0.0, 1.0, 3.0])}
    config = CONFIGS[variant][0]
    out = run_variant(FAMILY, variant, config, "3x4", "float32", inputs=inputs)

    def gelu_tanh(z: float) -> float:
        return 0.5 * z * (1.0 + math.tanh(math.sqrt(2.0 / math.pi) * (z + 0.044715 * z**3)))

    expected = torch.tensor([gelu_tanh(z) for z in (-3.0, 0.0, 1.0, 3.0)])
    assert torch.allclose(out, expected.expand(3, 4), atol=1e-6, rtol=1e-5)
    # The erf form differs by about 4e-4 at z = -3: the tolerance tells the two apart.
    erf_form = torch.nn.functional.gelu(torch.tensor(-3.0))
    assert abs(out[0, 0].item() - erf_form.item()) > FAMILY.tolerance("float32")[0] * 10
    assert problem.dims == {"M": 3, "N": 4}


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
    assert {k: v.shape for k, v in a.items()} == {"x": (33, 100), "bias": (100,)}
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["bias"], FAMILY.make_inputs(problem, device="cpu", seed=8)["bias"])
    assert all((v != 0).float().mean() > 0.9 for v in a.values())


def test_roofline_quantities():
    problem = FAMILY.problem("1000x3000", "float16")
    assert FAMILY.flops(problem) == 10 * 1000 * 3000
    assert FAMILY.min_bytes(problem) == (2 * 1000 * 3000 + 3000) * 2


def test_variants_have_distinct_sources():
    assert FAMILY.source_hash("tiled") != FAMILY.source_hash("flat")
    assert "_gelu_tanh" in FAMILY.source("flat")
    assert "0.044715" in FAMILY.source("tiled")
