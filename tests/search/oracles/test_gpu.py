from __future__ import annotations

import pytest

from kernelcast.measurement.offline import tools_available
from kernelcast.measurement.records import Status
from kernelcast.search import GpuOracle, run_search


@pytest.mark.gpu
def test_gpu_oracle_searches_a_small_matmul(tmp_path):
    with GpuOracle(["matmul"], shapes=["512x512x512"], dtypes=["float16"], variants=["blocked"]) as oracle:
        (task,) = oracle.list_tasks("kernel=matmul")
        assert task.device == oracle.tasks()[0].device
        assert "matmul" in task.label()
        assert 0 < oracle.space_size(task) <= len(oracle.space(task))
        result = run_search(task, oracle, strategy="random", budget=4, seed=0, run_dir=tmp_path)
        assert len(result.measurements) == 4
        assert oracle.spent.measurements == 4
        assert result.gpu_seconds > 0
        assert any(m.status == Status.OK.value and m.time_ms > 0 for m in result.measurements)
        # resuming measures nothing again
        again = run_search(task, oracle, strategy="random", budget=4, seed=0, run_dir=tmp_path)
        assert oracle.spent.measurements == 4
        assert len(again.measurements) == 4


def test_gpu_oracle_keeps_every_measurement_in_its_store(tmp_path):
    """On the CPU through Triton's interpreter: what the oracle measures lands in the store, failures
    included, and nothing is written twice."""
    from kernelcast.datasets import Store
    from kernelcast.measurement import Benchmarker

    bench = Benchmarker(mode="interpret", origin="kernelcast.search")
    with GpuOracle(["matmul"], shapes=["32x32x32"], dtypes=["float16"], variants=["blocked"], benchmarker=bench,
                   store=tmp_path / "store") as oracle:
        (task,) = oracle.tasks()
        configs = [c for c in oracle.space(task) if oracle.check(task, c) is None][:3]
        records = oracle.measure(task, configs)
        assert len(records) == 3
        oracle.measure(task, configs[:1])
    frame = Store(tmp_path / "store").read()
    assert frame.height == 3
    assert sorted(frame["config_json"].to_list()) == sorted(r.key[1] for r in records)
    assert set(frame["status"].to_list()) <= {s.value for s in Status}
    assert frame["source_hash"].n_unique() == 1


@pytest.mark.skipif(not tools_available(), reason="Triton's wheel has no ptxas/cuobjdump here")
def test_gpu_oracle_compiles_candidates_for_their_metadata_without_measuring():
    """On the CPU: the oracle's device limits name the compute capability, the candidates are compiled for it,
    and nothing is measured or charged."""
    from kernelcast.measurement import Benchmarker
    from kernelcast.measurement.records import COMPILED_COLUMNS

    bench = Benchmarker(mode="interpret", origin="kernelcast.search")
    with GpuOracle(["matmul"], shapes=["256x256x256"], dtypes=["float16"], variants=["blocked"], benchmarker=bench,
                   compile_jobs=1) as oracle:
        (task,) = oracle.tasks()
        configs = [c for c in oracle.space(task) if oracle.check(task, c) is None][:2]
        frame = oracle.compiled_metadata(task, oracle.candidate_frame(task, configs))
        assert oracle.spent.measurements == 0
        assert oracle.offline_compile_seconds > 0
    assert frame["num_warps"].to_list() == [c["num_warps"] for c in configs]
    assert frame["num_stages"].to_list() == [c["num_stages"] for c in configs]
    assert all(16 <= r <= 255 for r in frame["n_regs"].to_list())
    assert all(s > 0 for s in frame["shared_bytes"].to_list())
    assert set(COMPILED_COLUMNS) <= set(frame.columns)


@pytest.mark.gpu
def test_metadata_compiled_on_the_cpu_is_what_the_gpu_reports():
    with GpuOracle(["matmul"], shapes=["1000x3000x700"], dtypes=["float16"], variants=["blocked", "persistent"],
                   compile_jobs=2) as oracle:
        for task in oracle.tasks():
            configs = [c for c in oracle.space(task) if oracle.check(task, c) is None][::37][:6]
            frame = oracle.compiled_metadata(task, oracle.candidate_frame(task, configs))
            records = {r.key[1]: r for r in oracle.measure(task, configs)}
            for row in frame.iter_rows(named=True):
                record = records[row["config_json"]]
                if record.status is not Status.OK or record.compiled is None:
                    continue
                measured = record.compiled
                assert (row["n_regs"], row["n_spills"], row["shared_bytes"]) == (
                    measured.n_regs, measured.n_spills, measured.shared_bytes), row["config_json"]
