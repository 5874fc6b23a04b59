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
