"""On a real GPU: timing, correctness checks and isolation (skipped without one)."""

import numpy as np
import pytest

from kernelcast.measurement import Benchmarker, Candidate, Protocol, Status, time_kernel
from kernelcast.measurement.families import get_family, register_family
from kernelcast.measurement.families.faulty import FaultyFamily

pytestmark = pytest.mark.gpu


def test_matmul_is_checked_and_timed_with_low_noise():
    family = get_family("matmul")
    problem = family.problem("2048x2048x2048", "float16")
    config = {"BLOCK_M": 128, "BLOCK_N": 128, "BLOCK_K": 64, "GROUP_M": 8, "num_warps": 8, "num_stages": 3}
    with Benchmarker(mode="gpu", compile_workers=2) as bench:
        [record] = bench.measure([Candidate("matmul", "blocked", config, problem)])
    assert record.status is Status.OK, record.error
    assert record.stats.n_samples >= 10
    assert record.compiled.n_regs > 0
    assert record.fingerprint["name"] == record.device
    assert record.stats.cv < 0.05


def test_time_kernel_agrees_with_do_bench():
    import torch
    from triton.testing import do_bench

    family = get_family("matmul")
    problem = family.problem("4096x4096x4096", "float16")
    inputs = family.make_inputs(problem, device="cuda", seed=0)
    out = family.new_output(problem, inputs)
    config = {"BLOCK_M": 128, "BLOCK_N": 128, "BLOCK_K": 64, "GROUP_M": 8, "num_warps": 8, "num_stages": 3}

    def fn():
        family.launch("blocked", config, problem, inputs, out)

    # Interleaved rounds, so that clock and power drift over the test (a 4096^3 matmul draws full power) falls
    # on both timers alike rather than on whichever runs second.
    ours, reference = [], []
    for _ in range(3):
        ours.append(float(np.median(time_kernel(fn, Protocol()))))
        reference.append(float(do_bench(fn, warmup=25, rep=100, return_mode="median")))
        torch.cuda.synchronize()
    ratio = float(np.median(ours)) / float(np.median(reference))
    assert abs(ratio - 1) < 0.03, f"time_kernel {ours} ms against do_bench {reference} ms"


def test_gpu_faults_become_records():
    register_family(FaultyFamily)
    problem = FaultyFamily().problem("65536", "float32")
    order = ["oob_store", "huge_shared", "infinite_loop", "ok"]
    cands = [Candidate("faulty", v, {"BLOCK": 128, "num_warps": 4}, problem) for v in order]
    with Benchmarker(mode="gpu", compile_workers=2, protocol=Protocol(run_timeout_s=15)) as bench:
        statuses = {r.variant: r.status for r in bench.measure(cands)}
    assert statuses == {"oob_store": Status.RUNTIME_ERROR, "huge_shared": Status.OUT_OF_RESOURCES,
                        "infinite_loop": Status.TIMEOUT, "ok": Status.OK}
