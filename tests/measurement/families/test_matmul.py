from __future__ import annotations

import dataclasses

import pytest
import torch

from kernelcast.exceptions import InvalidParameterError
from kernelcast.measurement.families import _matmul_persistent
from kernelcast.measurement.families.matmul import MatmulFamily
from kernelcast.measurement.space import DeviceLimits

HOPPER = DeviceLimits.hopper()
FAMILY = MatmulFamily()
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
# bf16 tl.dot is wrong in Triton's interpreter, so bf16 runs only on a GPU.
DTYPES = ("float16", "float32", "bfloat16") if DEVICE == "cuda" else ("float16", "float32")

CONFIGS = {
    "blocked": [
        {"BLOCK_M": 16, "BLOCK_N": 32, "BLOCK_K": 16, "GROUP_M": 8, "num_warps": 2, "num_stages": 2},
        {"BLOCK_M": 32, "BLOCK_N": 16, "BLOCK_K": 32, "GROUP_M": 1, "num_warps": 4, "num_stages": 3},
    ],
    "splitk": [
        # 3 slices of K=47 in 2 splits: split 0 takes slices 0 and 2 (the ragged one), split 1 slice 1.
        {"BLOCK_M": 16, "BLOCK_N": 32, "BLOCK_K": 16, "SPLIT_K": 2, "num_warps": 2, "num_stages": 2},
        # K=64 gives each of the 4 splits one slice; K=47 has only 3 slices, so this one runs on 64x64x64 only.
        {"BLOCK_M": 32, "BLOCK_N": 16, "BLOCK_K": 16, "SPLIT_K": 4, "num_warps": 4, "num_stages": 3},
    ],
    "persistent": [
        {"BLOCK_M": 16, "BLOCK_N": 16, "BLOCK_K": 32, "GROUP_M": 8, "PROGRAMS_PER_SM": 2, "num_warps": 4,
         "num_stages": 2},
        {"BLOCK_M": 32, "BLOCK_N": 16, "BLOCK_K": 16, "GROUP_M": 1, "PROGRAMS_PER_SM": 1, "num_warps": 8,
         "num_stages": 3},
    ],
}
SHAPES = ("33x65x47", "64x64x64")
RUNS = [
    (v, c, s) for v, configs in CONFIGS.items() for c in configs for s in SHAPES
    if FAMILY.check_config(v, c, FAMILY.problem(s, "float16"), HOPPER) is None
]


@pytest.fixture
def one_sm():
    """Make the persistent launcher see a 1-SM device, so each program loops over several tiles."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(_matmul_persistent, "device_sm_count", lambda device: 1)
        yield


def test_spaces_have_the_documented_knobs_and_sizes():
    assert FAMILY.variants == ("blocked", "splitk", "persistent")
    assert FAMILY.space("blocked").names == ("BLOCK_M", "BLOCK_N", "BLOCK_K", "GROUP_M", "num_warps", "num_stages")
    assert len(FAMILY.space("blocked")) == 2400
    assert FAMILY.space("splitk").names == ("BLOCK_M", "BLOCK_N", "BLOCK_K", "SPLIT_K", "num_warps", "num_stages")
    assert len(FAMILY.space("splitk")) == 2304
    assert FAMILY.space("persistent").names == (
        "BLOCK_M", "BLOCK_N", "BLOCK_K", "GROUP_M", "PROGRAMS_PER_SM", "num_warps", "num_stages"
    )
    assert len(FAMILY.space("persistent")) == 2304
    with pytest.raises(InvalidParameterError, match=r"'variant' parameter of matmul.*'splitk'.*Got 'stream_k'"):
        FAMILY.space("stream_k")


def test_knob_outside_the_space_raises_naming_it():
    problem = FAMILY.problem("33x65x47", "float16")
    with pytest.raises(InvalidParameterError, match=r"'SPLIT_K' knob of matmul/splitk config.*Got 3 instead"):
        FAMILY.check_config("splitk", {**CONFIGS["splitk"][0], "SPLIT_K": 3}, problem, HOPPER)
    with pytest.raises(InvalidParameterError, match=r"Missing knob\(s\) \['PROGRAMS_PER_SM'\]"):
        FAMILY.check_config("persistent", CONFIGS["blocked"][0], problem, HOPPER)
    with pytest.raises(InvalidParameterError, match=r"Unknown knob\(s\) \['GROUP_M'\] in matmul/splitk config"):
        FAMILY.check_config("splitk", {**CONFIGS["splitk"][0], "GROUP_M": 8}, problem, HOPPER)


def test_splitk_needs_a_slice_of_k_per_split():
    problem = FAMILY.problem("33x65x47", "float16")
    config = {**CONFIGS["splitk"][0], "BLOCK_K": 32, "SPLIT_K": 4}
    assert FAMILY.check_config("splitk", config, problem, HOPPER) == (
        "SPLIT_K=4 exceeds the 2 slices of BLOCK_K=32 in K=47"
    )
    assert FAMILY.check_config("splitk", {**config, "SPLIT_K": 2}, problem, HOPPER) is None


def test_persistent_programs_must_fit_on_one_sm_together():
    problem = FAMILY.problem("4096x4096x4096", "float16")
    config = {"BLOCK_M": 128, "BLOCK_N": 128, "BLOCK_K": 64, "GROUP_M": 8, "PROGRAMS_PER_SM": 4, "num_warps": 8,
              "num_stages": 3}
    # 3 stages of a 128x64 and a 64x128 fp16 tile: 98304 bytes per program.
    assert FAMILY.check_config("persistent", config, problem, HOPPER) == (
        "PROGRAMS_PER_SM=4 programs need 393216 bytes of shared memory on one SM; "
        "NVIDIA H100 80GB HBM3 allows 232448"
    )
    assert FAMILY.check_config("persistent", {**config, "PROGRAMS_PER_SM": 2}, problem, HOPPER) is None
    small_tiles = {**config, "BLOCK_K": 16, "num_stages": 2}  # 16384 bytes, but 4 x 16384 accumulator registers
    reason = FAMILY.check_config("persistent", small_tiles, problem, HOPPER)
    assert reason is not None
    assert "fp32 accumulators alone need 65536 registers on one SM" in reason
    mid_tiles = {**small_tiles, "BLOCK_M": 64, "BLOCK_N": 64}
    assert FAMILY.check_config("persistent", mid_tiles, problem, HOPPER) is None
    few_threads = dataclasses.replace(HOPPER, name="small GPU", max_threads_per_sm=768)
    assert FAMILY.check_config("persistent", mid_tiles, problem, few_threads) == (
        "PROGRAMS_PER_SM=4 programs of 8 warps need 1024 threads on one SM; small GPU allows 768"
    )


def test_blocked_space_and_source_are_unchanged():
    # Stored blocked records are keyed by this hash; adding variants must not change it.
    assert FAMILY.source_hash("blocked") == "8bb992012508374f"


def test_every_config_runs_on_some_shape():
    assert len(RUNS) == 2 * len(SHAPES) * len(FAMILY.variants) - 1  # all but SPLIT_K=4 on K=47


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("variant", "config", "shape"), RUNS)
def test_variant_matches_reference(one_sm, variant, config, shape, dtype):
    problem = FAMILY.problem(shape, dtype)
    inputs = FAMILY.make_inputs(problem, device=DEVICE, seed=1)
    out = FAMILY.new_output(problem, inputs)
    out.fill_(float("nan"))
    FAMILY.launch(variant, config, problem, inputs, out)
    assert not torch.isnan(out).any(), f"{variant} {config} {shape} {dtype} left NaN in the output"
    atol, rtol = FAMILY.tolerance(dtype)
    torch.testing.assert_close(out.float(), FAMILY.reference(problem, inputs), atol=atol, rtol=rtol)


def test_persistent_programs_loop_over_several_tiles(one_sm):
    config = CONFIGS["persistent"][0]
    grid = _matmul_persistent.persistent_grid(64, 64, config, _matmul_persistent.device_sm_count(DEVICE))
    assert grid == (2,)  # 16 tiles of 16x16, 8 per program


def test_splitk_runs_again_into_a_used_output():
    # The accumulator is zeroed in launch: a second run must not add to the first.
    problem = FAMILY.problem("33x65x47", "float32")
    inputs = FAMILY.make_inputs(problem, device=DEVICE, seed=2)
    out = FAMILY.new_output(problem, inputs)
    for _ in range(2):
        FAMILY.launch("splitk", CONFIGS["splitk"][0], problem, inputs, out)
    atol, rtol = FAMILY.tolerance("float32")
    torch.testing.assert_close(out, FAMILY.reference(problem, inputs), atol=atol, rtol=rtol)


@pytest.mark.parametrize("variant", FAMILY.variants)
def test_compile_passes_the_launch_arguments(kernel_calls, variant):
    config = CONFIGS[variant][0]
    problem = FAMILY.problem("33x65x47", "float16")
    inputs = FAMILY.make_inputs(problem, device=DEVICE, seed=0)
    out = FAMILY.new_output(problem, inputs)
    with pytest.MonkeyPatch.context() as mp:
        # compile does not touch the GPU, so it grids the persistent kernel for the default target.
        mp.setattr(_matmul_persistent, "device_sm_count", lambda device: HOPPER.sm_count)
        compiled = kernel_calls(FAMILY, variant, lambda: FAMILY.compile(variant, config, problem))
        launched = kernel_calls(FAMILY, variant, lambda: FAMILY.launch(variant, config, problem, inputs, out))
    assert [c["warmup"] for c in compiled] == [True]
    assert [c["warmup"] for c in launched] == [False]
    for key in ("kernel", "args", "kwargs", "grid"):
        assert [c[key] for c in compiled] == [c[key] for c in launched]
    assert len(FAMILY.compile(variant, config, problem)) == 1


def test_flops_and_bytes_by_hand():
    problem = FAMILY.problem("33x65x47", "float16")
    assert FAMILY.flops(problem) == 2 * 33 * 65 * 47 == 201_630
    assert FAMILY.min_bytes(problem) == (33 * 47 + 47 * 65 + 33 * 65) * 2 == 13_502


def test_variants_have_distinct_sources():
    hashes = {v: FAMILY.source_hash(v) for v in FAMILY.variants}
    assert len(set(hashes.values())) == len(FAMILY.variants)
    assert "tl.atomic_add" in FAMILY.source("splitk")
    assert "acc.zero_()" in FAMILY.source("splitk")
    assert "def device_sm_count" in FAMILY.source("persistent")
    assert "tl.num_programs(0)" in FAMILY.source("persistent")
