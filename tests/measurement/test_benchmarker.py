"""The benchmarker under the Triton interpreter: failures become records and the run goes on."""

import pytest

from kernelcast.exceptions import InvalidParameterError
from kernelcast.measurement import Benchmarker, Candidate, Protocol, Status, candidates_for
from kernelcast.measurement.families import get_family, register_family
from kernelcast.measurement.families.faulty import FaultyFamily
from kernelcast.measurement.fingerprint import INTERPRETER_DEVICE


@pytest.fixture(scope="module")
def bench():
    register_family(FaultyFamily)
    with Benchmarker(mode="interpret", protocol=Protocol(run_timeout_s=8)) as b:
        yield b


def test_failures_become_records_and_the_run_completes(bench):
    problem = get_family("faulty").problem("1000", "float32")
    order = ["ok", "raise", "abort", "infinite_loop", "wrong", "ok"]
    cands = [Candidate("faulty", v, {"BLOCK": 128 if i < 5 else 256, "num_warps": 4}, problem)
             for i, v in enumerate(order)]
    restarts_before = bench.restarts
    records = list(bench.measure(cands))
    assert len(records) == len(cands)
    by_key = {(r.variant, r.config["BLOCK"]): r for r in records}
    assert by_key[("ok", 128)].status is Status.OK
    assert by_key[("ok", 256)].status is Status.OK  # measured after a crash and a hang
    assert by_key[("raise", 128)].status is Status.RUNTIME_ERROR
    assert "always raises" in by_key[("raise", 128)].error
    assert by_key[("abort", 128)].status is Status.RUNTIME_ERROR
    assert "exit code -6" in by_key[("abort", 128)].error
    assert by_key[("infinite_loop", 128)].status is Status.TIMEOUT
    assert by_key[("wrong", 128)].status is Status.INCORRECT
    assert "differs from the reference" in by_key[("wrong", 128)].error
    assert bench.restarts - restarts_before == 2  # the abort and the hang each cost one worker


def test_records_carry_identity_protocol_and_source(bench):
    family = get_family("matmul")
    problem = family.problem("33x65x47", "float16")
    [record] = bench.measure([Candidate("matmul", "blocked", {"BLOCK_M": 16, "BLOCK_N": 32, "BLOCK_K": 16,
                                                               "GROUP_M": 8, "num_warps": 4, "num_stages": 2}, problem)])
    assert record.status is Status.OK
    assert record.device == INTERPRETER_DEVICE
    assert record.samples_ms == ()  # the interpreter checks correctness only
    assert record.problem == {"M": 33, "N": 65, "K": 47}
    assert record.dtype == "float16"
    assert record.source_hash == family.source_hash("blocked")
    assert "matmul_blocked_kernel" in record.source_text
    assert record.protocol["mode"] == "interpret"
    assert record.protocol["check"]["rel_norm_err"] < 1e-2
    assert bench.key(Candidate("matmul", "blocked", record.config, problem)) == record.key


def test_invalid_configs_are_recorded_without_running(bench):
    problem = get_family("matmul").problem("64x64x64", "float16")
    too_big = {"BLOCK_M": 256, "BLOCK_N": 256, "BLOCK_K": 128, "GROUP_M": 1, "num_warps": 8, "num_stages": 5}
    [record] = bench.measure([Candidate("matmul", "blocked", too_big, problem)])
    assert record.status is Status.INVALID_CONFIG
    assert "shared memory" in record.error


def test_config_outside_the_space_is_a_clear_error(bench):
    problem = get_family("matmul").problem("64x64x64", "float16")
    bad = {"BLOCK_M": 48, "BLOCK_N": 32, "BLOCK_K": 16, "GROUP_M": 1, "num_warps": 4, "num_stages": 2}
    with pytest.raises(InvalidParameterError, match=r"'BLOCK_M' knob .* must be one of \[16, 32, 64, 128, 256\]. Got 48"):
        list(bench.measure([Candidate("matmul", "blocked", bad, problem)]))
    with pytest.raises(InvalidParameterError, match="Unknown knob"):
        list(bench.measure([Candidate("matmul", "blocked", {**bad, "BLOCK_M": 16, "SPLIT": 2}, problem)]))


def test_unknown_family_and_variant_are_clear_errors(bench):
    problem = get_family("matmul").problem("64x64x64", "float16")
    with pytest.raises(InvalidParameterError, match="'family' parameter of measure must be one of .*'matmul'"):
        list(bench.measure([Candidate("nope", "x", {}, problem)]))
    with pytest.raises(InvalidParameterError, match="'variant' parameter of matmul must be one of"):
        list(bench.measure([Candidate("matmul", "fancy", {}, problem)]))


def test_candidates_for_full_and_random_spaces():
    family = get_family("matmul")
    problem = family.problem("64x64x64", "float16")
    full = candidates_for("matmul", problem, variants=["blocked"], space="full")
    assert len(full) == len(family.space("blocked"))
    sampled = candidates_for("matmul", problem, variants=["blocked"], space="random:25", seed=3)
    assert len(sampled) == 25
    assert len({tuple(c.config.items()) for c in sampled}) == 25
    assert sampled == candidates_for("matmul", problem, variants=["blocked"], space="random:25", seed=3)
    with pytest.raises(InvalidParameterError, match="'full' or 'random:N'.*'random:x'"):
        candidates_for("matmul", problem, space="random:x")
    with pytest.raises(InvalidParameterError, match="'full' or 'random:N'.*'most'"):
        candidates_for("matmul", problem, space="most")


def test_gpu_mode_without_gpu_says_how_to_check_on_cpu():
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(InvalidParameterError, match="no CUDA GPU is visible; use mode='interpret'"):
        Benchmarker(mode="gpu").start()
    with pytest.raises(InvalidParameterError, match="'mode' parameter of Benchmarker must be one of"):
        Benchmarker(mode="cpu")
