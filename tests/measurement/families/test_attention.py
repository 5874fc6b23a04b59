from __future__ import annotations

import pytest
import torch

from kernelcast.exceptions import InvalidParameterError
from kernelcast.measurement.families import get_family
from kernelcast.measurement.families.attention import AttentionFamily
from kernelcast.measurement.space import DeviceLimits

HOPPER = DeviceLimits.hopper()
FAMILY = AttentionFamily()
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
# bf16 tl.dot is wrong in Triton's interpreter, so bf16 runs only on a GPU.
DTYPES = ("float16", "float32", "bfloat16") if DEVICE == "cuda" else ("float16", "float32")

# Tiny blocks keep the interpreter fast; S=48 is ragged against 32-wide blocks.
CONFIGS = {
    "fa2": [
        {"BLOCK_M": 16, "BLOCK_N": 32, "num_warps": 2, "num_stages": 1},
        {"BLOCK_M": 32, "BLOCK_N": 16, "num_warps": 4, "num_stages": 2},
    ],
    "two_pass": [
        {"BLOCK_M": 16, "BLOCK_N": 32, "num_warps": 4, "num_stages": 3},
        {"BLOCK_M": 32, "BLOCK_N": 16, "num_warps": 2, "num_stages": 1},
    ],
    "split_kv": [
        # 3 key blocks in 2 splits of 2 blocks (keys 0-31 and 32-47). Causal: query block 0 (rows 0-15) skips
        # split 1; with 64-row query blocks, rows 0-31 of block 0 see no key of split 1 while rows 32-47 do.
        {"BLOCK_M": 16, "BLOCK_N": 16, "num_warps": 2, "num_stages": 2, "NUM_SPLITS": 2},
        {"BLOCK_M": 64, "BLOCK_N": 16, "num_warps": 4, "num_stages": 1, "NUM_SPLITS": 2},
    ],
}
CASES = [(v, c) for v, configs in CONFIGS.items() for c in configs]


def check_against_reference(variant, config, shape, dtype, causal, seed=0):
    problem = FAMILY.problem(shape, dtype, causal=causal)
    assert FAMILY.check_config(variant, config, problem, HOPPER) is None
    inputs = FAMILY.make_inputs(problem, device=DEVICE, seed=seed)
    out = FAMILY.new_output(problem, inputs)
    out.fill_(float("nan"))
    FAMILY.launch(variant, config, problem, inputs, out)
    assert not torch.isnan(out).any(), f"{variant} {config} {shape} {dtype} causal={causal} left NaN"
    ref = FAMILY.reference(problem, inputs)
    atol, rtol = FAMILY.tolerance(dtype)
    torch.testing.assert_close(out.float(), ref, atol=atol, rtol=rtol)
    return out, ref


def test_registered_under_its_name():
    assert isinstance(get_family("attention"), AttentionFamily)
    assert FAMILY.variants == ("fa2", "two_pass", "split_kv")
    assert FAMILY.dims == ("B", "H", "S", "D")


def test_spaces_have_the_documented_knobs_and_sizes():
    for variant in ("fa2", "two_pass"):
        assert FAMILY.space(variant).names == ("BLOCK_M", "BLOCK_N", "num_warps", "num_stages")
        assert len(FAMILY.space(variant)) == 192
    assert FAMILY.space("split_kv").names == ("BLOCK_M", "BLOCK_N", "num_warps", "num_stages", "NUM_SPLITS")
    assert len(FAMILY.space("split_kv")) == 768
    with pytest.raises(InvalidParameterError, match=r"'variant' parameter of attention.*'fa2'.*Got 'fa3'"):
        FAMILY.space("fa3")


def test_default_shapes_are_valid_problems_with_valid_configs():
    assert len(FAMILY.default_shapes) >= 5
    for shape in FAMILY.default_shapes:
        problem = FAMILY.problem(shape, "float16")
        for variant in FAMILY.variants:
            assert FAMILY.configs(variant, problem, HOPPER), f"no valid {variant} config for {shape}"


def test_causal_defaults_to_false_and_is_recorded():
    assert FAMILY.problem("1x2x48x16", "float16").as_dict() == {"B": 1, "H": 2, "S": 48, "D": 16, "causal": False}
    assert FAMILY.problem("1x2x48x16", "float16", causal=True).options == {"causal": True}
    # A command line passes strings.
    assert FAMILY.problem("1x2x48x16", "float16", causal="true").options == {"causal": True}
    with pytest.raises(InvalidParameterError, match=r"'causal' option of attention must be a bool. Got 'maybe'"):
        FAMILY.problem("1x2x48x16", "float16", causal="maybe")
    with pytest.raises(InvalidParameterError, match=r"'option' parameter of attention must be one of 'causal'"):
        FAMILY.problem("1x2x48x16", "float16", window=128)


@pytest.mark.parametrize("D", [8, 24, 48, 512])
def test_head_dim_must_be_a_supported_power_of_two(D):
    with pytest.raises(InvalidParameterError, match=rf"'D'.*one of \[16, 32, 64, 128, 256\]. Got {D} instead"):
        FAMILY.problem(f"1x2x48x{D}", "float16")


def test_huge_problems_are_refused_with_the_limit():
    with pytest.raises(InvalidParameterError, match=r"B \* H .* at most 65535 .* Got 65536 instead"):
        FAMILY.problem("256x256x16x16", "float16")
    with pytest.raises(InvalidParameterError, match=r"below 2\*\*31 .* Got 2147483648 instead"):
        FAMILY.problem("16x64x16384x128", "float16")


def test_knob_outside_the_space_raises_naming_it():
    problem = FAMILY.problem("1x2x48x16", "float16")
    config = {**CONFIGS["fa2"][0], "BLOCK_M": 256}
    with pytest.raises(InvalidParameterError, match=r"'BLOCK_M' knob of attention/fa2 config.*Got 256 instead"):
        FAMILY.check_config("fa2", config, problem, HOPPER)
    with pytest.raises(InvalidParameterError, match=r"Missing knob\(s\) \['NUM_SPLITS'\]"):
        FAMILY.check_config("split_kv", CONFIGS["fa2"][0], problem, HOPPER)


def test_shared_memory_reason_for_wide_heads_and_deep_pipelines():
    problem = FAMILY.problem("1x8x4096x256", "float16")
    config = {"BLOCK_M": 64, "BLOCK_N": 128, "num_warps": 8, "num_stages": 4}
    # (64 * 256 + 4 * 2 * 128 * 256) fp16 elements.
    reason = FAMILY.check_config("fa2", config, problem, HOPPER)
    assert reason == "needs 557056 bytes of shared memory per block; NVIDIA H100 80GB HBM3 allows 232448"
    assert FAMILY.check_config("fa2", {**config, "BLOCK_N": 32, "num_stages": 2}, problem, HOPPER) is None


def test_register_reason_for_big_tiles_with_few_warps():
    problem = FAMILY.problem("1x8x4096x128", "float16")
    config = {"BLOCK_M": 128, "BLOCK_N": 64, "num_warps": 2, "num_stages": 1}
    reason = FAMILY.check_config("two_pass", config, problem, HOPPER)
    assert reason is not None
    assert "128x128 accumulator and 128x64 score tile need 384 registers per thread with 2 warps" in reason
    assert FAMILY.check_config("two_pass", {**config, "num_warps": 8}, problem, HOPPER) is None


def test_split_kv_needs_a_key_block_per_split():
    problem = FAMILY.problem("1x2x48x16", "float16")
    config = {"BLOCK_M": 16, "BLOCK_N": 32, "num_warps": 2, "num_stages": 1, "NUM_SPLITS": 4}
    reason = FAMILY.check_config("split_kv", config, problem, HOPPER)
    assert reason == "NUM_SPLITS=4 exceeds the 2 key blocks of BLOCK_N=32 in S=48"
    assert FAMILY.check_config("split_kv", {**config, "NUM_SPLITS": 2}, problem, HOPPER) is None


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize(("variant", "config"), CASES)
def test_variant_matches_reference(variant, config, causal, dtype):
    check_against_reference(variant, config, "1x2x48x16", dtype, causal)


@pytest.mark.parametrize("causal", [False, True])
def test_split_kv_with_an_empty_split(causal):
    # 5 key blocks in 4 splits of 2 blocks: split 3 starts past S and contributes nothing to any row.
    config = {"BLOCK_M": 64, "BLOCK_N": 16, "num_warps": 2, "num_stages": 1, "NUM_SPLITS": 4}
    check_against_reference("split_kv", config, "1x1x80x16", "float32", causal)


def test_causal_output_ignores_later_keys():
    problem = FAMILY.problem("1x2x48x16", "float32", causal=True)
    inputs = FAMILY.make_inputs(problem, device=DEVICE, seed=4)
    changed = {**inputs, "k": inputs["k"].clone(), "v": inputs["v"].clone()}
    changed["k"][:, :, 40:] += 3.0
    changed["v"][:, :, 40:] -= 5.0
    for variant, config in CASES:
        outs = []
        for ins in (inputs, changed):
            out = FAMILY.new_output(problem, ins)
            FAMILY.launch(variant, config, problem, ins, out)
            outs.append(out)
        torch.testing.assert_close(outs[0][:, :, :40], outs[1][:, :, :40], atol=1e-5, rtol=1e-5)
        assert not torch.allclose(outs[0][:, :, 40:], outs[1][:, :, 40:], atol=1e-2)


def test_launch_refuses_mismatched_layouts():
    problem = FAMILY.problem("1x2x48x16", "float16")
    inputs = FAMILY.make_inputs(problem, device=DEVICE, seed=0)
    inputs["k"] = inputs["k"].transpose(1, 2).contiguous().transpose(1, 2)  # (B, S, H, D) memory
    out = FAMILY.new_output(problem, inputs)
    with pytest.raises(InvalidParameterError, match=r"must share one layout with unit stride along D. Got strides"):
        FAMILY.launch("fa2", CONFIGS["fa2"][0], problem, inputs, out)


@pytest.mark.parametrize(("variant", "n_kernels"), [("fa2", 1), ("two_pass", 1), ("split_kv", 2)])
def test_compile_passes_the_launch_arguments(kernel_calls, variant, n_kernels):
    config = CONFIGS[variant][0]
    problem = FAMILY.problem("1x2x48x16", "float16", causal=True)
    inputs = FAMILY.make_inputs(problem, device=DEVICE, seed=0)
    out = FAMILY.new_output(problem, inputs)
    compiled = kernel_calls(FAMILY, variant, lambda: FAMILY.compile(variant, config, problem))
    launched = kernel_calls(FAMILY, variant, lambda: FAMILY.launch(variant, config, problem, inputs, out))
    assert [c["warmup"] for c in compiled] == [True] * n_kernels
    assert [c["warmup"] for c in launched] == [False] * n_kernels
    for key in ("kernel", "args", "kwargs", "grid"):
        assert [c[key] for c in compiled] == [c[key] for c in launched]
    assert len(FAMILY.compile(variant, config, problem)) == n_kernels


def test_flops_and_bytes_by_hand():
    problem = FAMILY.problem("2x3x40x16", "float16")
    assert FAMILY.flops(problem) == 4 * 2 * 3 * 40 * 40 * 16 == 614_400
    assert FAMILY.flops(FAMILY.problem("2x3x40x16", "float16", causal=True)) == 307_200
    assert FAMILY.min_bytes(problem) == 4 * (2 * 3 * 40 * 16) * 2 == 30_720
    assert FAMILY.min_bytes(FAMILY.problem("2x3x40x16", "float32")) == 61_440


def test_variants_have_distinct_sources():
    hashes = {v: FAMILY.source_hash(v) for v in FAMILY.variants}
    assert len(set(hashes.values())) == len(FAMILY.variants)
    assert "attention_split_kv_combine_kernel" in FAMILY.source("split_kv")
    assert "def launch_two_pass" in FAMILY.source("two_pass")
    assert "attention_fa2_kernel" not in FAMILY.source("two_pass")


def test_make_inputs_is_seeded_and_not_zero():
    problem = FAMILY.problem("1x2x48x16", "bfloat16")
    a = FAMILY.make_inputs(problem, device="cpu", seed=7)
    b = FAMILY.make_inputs(problem, device="cpu", seed=7)
    c = FAMILY.make_inputs(problem, device="cpu", seed=8)
    assert set(a) == {"q", "k", "v"}
    assert all(a[n].dtype == torch.bfloat16 and a[n].shape == (1, 2, 48, 16) for n in a)
    assert all(torch.equal(a[n], b[n]) for n in a)
    assert not torch.equal(a["q"], c["q"])
    assert not torch.equal(a["q"], a["k"])
    assert a["v"].abs().sum() > 0
