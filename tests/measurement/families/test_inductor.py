"""The inductor family, end to end under the interpreter, on real Inductor kernels.

``data/inductor_cpu_library.jsonl.gz`` holds 12 kernels Inductor generated (its Triton CPU backend, under the
interpreter) for small programs -- pointwise, 2D tiled, looped and persistent reductions, an int64 output, int64
index inputs -- harvested with::

    harvest([HarvestTask("softmax", (33, 100), "float32"), ...], workers=2, device="cpu")

(see ``tests/measurement/harvest/test_inductor_harvest.py``, which runs such a harvest live).
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import math
from pathlib import Path

import pytest
import torch

from kernelcast.exceptions import InvalidParameterError
from kernelcast.measurement import Benchmarker, Candidate, Status
from kernelcast.measurement.families import get_family, register_family
from kernelcast.measurement.families.inductor import ENV_KERNEL_DIR, ENV_LIBRARY, InductorFamily
from kernelcast.measurement.harvest.library import read_library
from kernelcast.measurement.records import source_hash
from kernelcast.measurement.space import DeviceLimits

LIBRARY = Path(__file__).parent / "data" / "inductor_cpu_library.jsonl.gz"
HOPPER = DeviceLimits.hopper()


@pytest.fixture
def family(monkeypatch, tmp_path) -> InductorFamily:
    monkeypatch.setenv(ENV_LIBRARY, str(LIBRARY))
    monkeypatch.setenv(ENV_KERNEL_DIR, str(tmp_path / "kernels"))
    return InductorFamily()


def _valid_configs(family: InductorFamily, kernel_id: str) -> list[dict]:
    problem = family.problem_for(kernel_id)
    return [c for c in family.space(kernel_id) if family.check_config(kernel_id, c, problem, HOPPER) is None]


def _few_programs(family: InductorFamily, kernel_id: str, n: int) -> list[dict]:
    """``n`` valid configs with distinct block sizes and the fewest programs (the interpreter runs each one)."""
    info = family.info(kernel_id)
    picks, seen = [], set()
    for config in sorted(_valid_configs(family, kernel_id), key=lambda c: (math.prod(info.grid(c)), str(c))):
        blocks = tuple(info.blocks(config).items())
        if blocks not in seen:
            seen.add(blocks)
            picks.append(config)
    return picks[:n]


def _run(family: InductorFamily, kernel_id: str, config: dict, inputs: dict) -> torch.Tensor:
    problem = family.problem_for(kernel_id)
    out = family.new_output(problem, inputs)
    out.fill_(float("nan") if out.is_floating_point() else -1)
    family.launch(kernel_id, config, problem, inputs, out)
    return out


def test_library_fixture_has_every_kind(family):
    kinds = {family.kernel(k).kind for k in family.variants}
    assert {"pointwise", "pointwise_2d", "reduction", "persistent_reduction"} <= kinds
    assert len(family.variants) == 12
    for kernel_id in family.variants:
        assert family.source_hash(kernel_id) == kernel_id == source_hash(family.source(kernel_id))


@pytest.mark.parametrize("kernel_id", list(read_library(LIBRARY)))
def test_every_kernel_matches_its_inductor_config_across_configs(family, kernel_id):
    problem = family.problem_for(kernel_id)
    inputs = family.make_inputs(problem, device="cpu", seed=3)
    pristine = {k: v.clone() for k, v in inputs.items()}
    ref = family.reference(problem, inputs)
    assert ref.dtype == torch.float32 and not torch.isnan(ref).any()
    configs = _valid_configs(family, kernel_id)
    assert family.inductor_config(kernel_id) in configs
    picks = _few_programs(family, kernel_id, 3)
    atol, rtol = family.tolerance(problem.dtype)
    for config in picks:
        got = _run(family, kernel_id, config, inputs).float()
        assert not torch.isnan(got).any(), f"{config} left NaN"
        assert torch.allclose(got, ref, atol=atol, rtol=rtol), f"{config}: {(got - ref).abs().max()}"
    assert all(torch.equal(inputs[k], v) for k, v in pristine.items())
    assert family.flops(problem) > 0 and family.min_bytes(problem) > 0


def test_spaces_follow_the_kernel_kind(family):
    for kernel_id in family.variants:
        info = family.info(kernel_id)
        space = family.space(kernel_id).describe()
        kind = info.kernel.kind
        if kind == "persistent_reduction":
            assert len(space["R0_BLOCK"]) == 1 and space["R0_BLOCK"][0] >= info.numels["r0_numel"]
            assert space["num_stages"] == [1]
        if kind == "reduction":
            assert len(space["R0_BLOCK"]) > 1 and len(space["num_stages"]) == 4
        if kind.startswith("pointwise"):
            assert "R0_BLOCK" not in space and space["num_stages"] == [1]
        if kind == "pointwise_2d":
            assert "YBLOCK" in space


def test_check_config_explains_rejections(family):
    kernel_id = next(k for k in family.variants if family.kernel(k).kind == "reduction")
    problem = family.problem_for(kernel_id)
    config = {**family.inductor_config(kernel_id), "XBLOCK": 1024}
    assert "XBLOCK=1024 exceeds" in family.check_config(kernel_id, config, problem, HOPPER)
    config = {**family.inductor_config(kernel_id), "XBLOCK": 1, "R0_BLOCK": 2, "num_warps": 32}
    assert "threads" in family.check_config(kernel_id, config, problem, HOPPER)
    other = next(k for k in family.variants if k != kernel_id)
    with pytest.raises(InvalidParameterError, match="variant is"):
        family.check_config(other, family.inductor_config(other), problem, HOPPER)


def test_benchmarker_measures_inductor_kernels_in_interpret_mode(family):
    register_family(InductorFamily)
    fam = get_family("inductor")
    candidates = []
    for kernel_id in list(fam.variants)[:3]:
        problem = fam.problem_for(kernel_id)
        candidates += [Candidate("inductor", kernel_id, c, problem) for c in _few_programs(fam, kernel_id, 2)]
    with Benchmarker(mode="interpret") as bench:
        records = list(bench.measure(candidates))
    assert len(records) == len(candidates)
    assert all(r.status is Status.OK for r in records), [(r.status, r.error) for r in records]
    for record in records:
        assert record.source_hash == record.variant == record.problem["kernel"]
        assert record.source_text == fam.source(record.variant)


def test_gpu_form_source_loads_under_the_interpreter(monkeypatch, tmp_path):
    """A kernel harvested on a GPU calls ``set_driver_to_gpu()`` at import; the interpreter skips it."""
    with gzip.open(LIBRARY, "rt") as handle:
        header, *lines = [json.loads(line) for line in handle]
    kernel = next(k for k in lines if k["kind"] == "persistent_reduction")
    kernel["source"] = kernel["source"].replace("set_driver_to_cpu()", "set_driver_to_gpu()")
    kernel["kernel_id"] = source_hash(kernel["source"])
    path = tmp_path / "gpu.jsonl"
    path.write_text(json.dumps(header) + "\n" + json.dumps(kernel) + "\n")
    monkeypatch.setenv(ENV_LIBRARY, str(path))
    monkeypatch.setenv(ENV_KERNEL_DIR, str(tmp_path / "kernels"))
    family = InductorFamily()
    problem = family.problem_for(kernel["kernel_id"])
    inputs = family.make_inputs(problem, device="cpu", seed=0)
    got = _run(family, kernel["kernel_id"], family.inductor_config(kernel["kernel_id"]), inputs)
    assert not torch.isnan(got.float()).any()


def test_in_out_arguments_are_copied_in_on_every_launch(family):
    """An ``in_out`` argument starts from its input each launch, so repeated launches give the same result."""
    kernel_id = next(k for k in family.variants if family.kernel(k).kind == "persistent_reduction")
    kernel = family.kernel(kernel_id)
    info = family.info(kernel_id)
    primary = info.primary
    # Turn the primary output into an in_out argument that the kernel only stores to: the copy must still
    # leave a correct result, and the input it copies from must stay untouched.
    info.args = [dataclasses.replace(a, role="in_out") if a.name == primary.name else a for a in info.args]
    problem = family.problem_for(kernel_id)
    inputs = family.make_inputs(problem, device="cpu", seed=1)
    assert primary.name in inputs
    before = inputs[primary.name].clone()
    first = _run(family, kernel_id, family.inductor_config(kernel_id), inputs).clone()
    second = _run(family, kernel_id, family.inductor_config(kernel_id), inputs)
    assert torch.equal(first, second) and torch.equal(inputs[primary.name], before)
    assert kernel.kernel_id == kernel_id


def test_unknown_kernel_names_the_library(family):
    with pytest.raises(InvalidParameterError, match=r"kernel id of the library .*inductor_cpu_library.*Got 'nope'"):
        family.problem_for("nope")


def test_missing_library_names_the_environment_variable(monkeypatch):
    monkeypatch.delenv(ENV_LIBRARY, raising=False)
    family = InductorFamily()
    assert family.variants == ()
    with pytest.raises(InvalidParameterError, match=ENV_LIBRARY):
        family.problem_for("abc")


def test_a_size_not_passed_is_read_from_the_kernel_body(monkeypatch, tmp_path):
    with gzip.open(LIBRARY, "rt") as handle:
        header, *lines = [json.loads(line) for line in handle]
    kernel = next(k for k in lines if k["kind"] == "pointwise")
    kernel["args"] = [a for a in kernel["args"] if a["name"] != "xnumel"]
    path = tmp_path / "lib.jsonl"
    path.write_text(json.dumps(header) + "\n" + json.dumps(kernel) + "\n")
    monkeypatch.setenv(ENV_LIBRARY, str(path))
    monkeypatch.setenv(ENV_KERNEL_DIR, str(tmp_path / "kernels"))
    family = InductorFamily()
    problem = family.problem_for(kernel["kernel_id"])
    assert problem["xnumel"] > 1
    inputs = family.make_inputs(problem, device="cpu", seed=0)
    ref = family.reference(problem, inputs)
    assert not torch.isnan(ref).any()
