from __future__ import annotations

import pytest

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
