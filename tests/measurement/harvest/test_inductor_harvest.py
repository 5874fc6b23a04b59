"""Harvesting Inductor's kernels: task planning, argument roles, and a live harvest.

On the CPU, Inductor's Triton CPU backend generates the kernels and Triton's interpreter runs them; the GPU test
harvests real CUDA kernels and measures them with the benchmarker.
"""

from __future__ import annotations

import os

import pytest

from kernelcast.exceptions import InvalidParameterError
from kernelcast.measurement.harvest.inductor import (
    HarvestTask,
    arg_roles,
    harvest,
    harvest_header,
    json_safe,
    plan_tasks,
)
from kernelcast.measurement.harvest.library import read_library, write_library
from kernelcast.measurement.records import source_hash


def test_plan_is_round_robin_over_programs_and_dtypes():
    tasks = plan_tasks(programs=["gelu", "softmax"], dtypes=["float16", "float32"])
    assert [(t.program, t.dtype) for t in tasks[:4]] == [("gelu", "float16"), ("softmax", "float16"),
                                                          ("gelu", "float32"), ("softmax", "float32")]
    assert len(tasks) == 2 * 2 * 10 and len(set(tasks)) == len(tasks)
    assert plan_tasks(programs=["gelu"], max_shapes=2)[-1].shape == (128, 4096)
    assert len(plan_tasks()) >= 1500


def test_arg_roles_follow_loads_stores_and_mutations():
    source = ("tmp0 = tl.load(in_out_ptr0 + (x0), xmask)\ntl.store(in_out_ptr0 + (x0), tmp1, xmask)\n"
              "tl.store(in_out_ptr1 + (x0), tmp1, xmask)\ntl.store(out_ptr0 + (x0), tmp1, xmask)\n"
              "tl.atomic_add(in_ptr2 + (x0), tmp1, xmask)\n")
    names = ["in_out_ptr0", "in_out_ptr1", "in_ptr0", "out_ptr0", "in_ptr2"]
    assert arg_roles(source, names, ["in_out_ptr0", "in_out_ptr1", "in_ptr2"]) == {
        "in_out_ptr0": "in_out", "in_out_ptr1": "out", "in_ptr0": "in", "out_ptr0": "out", "in_ptr2": "in_out"}


def test_json_safe_turns_metadata_into_plain_data():
    from enum import Enum

    class Hint(Enum):
        INNER = 1

    value = {"hints": {1, 3}, "configs": [{(0,): [["tt.divisibility", 16]]}], "hint": Hint.INNER, "nan": float("nan"),
             "device": object()}
    safe = json_safe(value)
    assert safe["hints"] == [1, 3] and safe["hint"] == "INNER" and safe["nan"] == "nan"
    assert safe["configs"] == [{"(0,)": [["tt.divisibility", 16]]}] and isinstance(safe["device"], str)


def test_bad_parameters_are_refused():
    with pytest.raises(InvalidParameterError, match="'workers' parameter of harvest must be a positive int"):
        harvest([], workers=0)
    with pytest.raises(InvalidParameterError, match="'device' parameter of harvest must be 'cuda' or 'cpu'"):
        harvest([], workers=1, device="tpu")


@pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1", reason="the CPU harvest runs under the interpreter")
def test_cpu_harvest_records_real_inductor_kernels(tmp_path):
    tasks = [HarvestTask("sum_all", (16, 300), "float32"), HarvestTask("softmax", (4, 24), "float16")]
    seen = []
    summary = harvest(tasks, workers=1, device="cpu", cache_dir=tmp_path / "cache", on_kernel=seen.append)
    assert summary.tasks_done == 2 and summary.tasks_failed == 0, summary.errors
    kernels = summary.kernels
    assert len(kernels) >= 2 and len(seen) == len(kernels)
    kinds = {k.kind for k in kernels.values()}
    assert {"reduction", "persistent_reduction"} <= kinds
    for kernel in kernels.values():
        assert kernel.measurable, kernel.reason
        assert kernel.kernel_id == source_hash(kernel.source)
        assert f"def {kernel.kernel_name}(" in kernel.source and "@triton_heuristics." in kernel.source
        assert kernel.launched is not None and kernel.launched in kernel.configs
        assert kernel.programs[0]["program"] in ("sum_all", "softmax")
        tensors = [a for a in kernel.args if a.kind == "tensor"]
        assert any(a.written for a in tensors) and all(a.storage_bytes > 0 for a in tensors)
        assert all(a.min is not None for a in tensors if a.role == "in" and a.dtype.startswith("float"))
        assert "xnumel" in kernel.numels
    path = tmp_path / "lib.jsonl.gz"
    write_library(path, harvest_header("cpu", summary), kernels.values())
    assert read_library(path) == kernels


@pytest.mark.gpu
def test_gpu_harvest_then_measure(tmp_path, monkeypatch):
    from kernelcast.measurement import Benchmarker, Candidate, Status
    from kernelcast.measurement.families import register_family
    from kernelcast.measurement.families.inductor import ENV_KERNEL_DIR, InductorFamily, use_library

    tasks = plan_tasks(programs=["softmax", "gelu", "sum_all", "transpose_add"], dtypes=["float16"], max_shapes=1)
    summary = harvest(tasks, workers=2, device="cuda", cache_dir=tmp_path / "cache")
    assert summary.tasks_failed == 0, summary.errors
    assert all(k.measurable for k in summary.kernels.values())
    path = tmp_path / "lib.jsonl.gz"
    write_library(path, harvest_header("cuda", summary), summary.kernels.values())
    monkeypatch.setenv(ENV_KERNEL_DIR, str(tmp_path / "kernels"))
    use_library(path)
    register_family(InductorFamily)
    family = InductorFamily()
    candidates = [Candidate("inductor", k, c, family.problem_for(k))
                  for k in family.variants for c in family.considered_configs(k)[:2]]
    with Benchmarker(mode="gpu", compile_workers=2) as bench:
        records = list(bench.measure(candidates))
    assert all(r.status is Status.OK for r in records), [(r.variant, r.status, r.error) for r in records]
    assert all(r.time_ms > 0 for r in records)
