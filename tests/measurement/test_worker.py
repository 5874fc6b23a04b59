"""Worker isolation: a job that crashes, hangs or raises yields a result and a fresh worker, never a dead run."""

import os
from pathlib import Path

import pytest

from kernelcast.measurement.worker import IsolatedWorker

SUPPORT = str(Path(__file__).parent / "support")


@pytest.fixture
def worker():
    env = {"PYTHONPATH": SUPPORT + os.pathsep + os.environ.get("PYTHONPATH", ""), "KC_TEST_FLAG": "on"}
    w = IsolatedWorker("test", env=env, startup_timeout_s=60)
    yield w
    w.close()


def test_ok_job_returns_value_and_keeps_the_process(worker):
    first = worker.call("worker_jobs:echo", {"x": 1}, timeout_s=30)
    second = worker.call("worker_jobs:echo", [2], timeout_s=30)
    assert first.kind == "ok" and first.value["payload"] == {"x": 1}
    assert second.value["pid"] == first.value["pid"]  # same process serves both
    assert first.value["pid"] != os.getpid()
    assert worker.restarts == 0


def test_environment_is_set_before_the_job(worker):
    result = worker.call("worker_jobs:environment", ["KC_TEST_FLAG"], timeout_s=30)
    assert result.value == {"KC_TEST_FLAG": "on"}


def test_raising_job_reports_the_error_and_the_worker_survives(worker):
    pid = worker.call("worker_jobs:echo", None, timeout_s=30).value["pid"]
    result = worker.call("worker_jobs:boom", 7, timeout_s=30)
    assert result.kind == "error"
    assert result.error_type == "ValueError"
    assert result.error == "boom 7"
    assert "Traceback" in result.traceback
    assert not result.fatal
    assert worker.call("worker_jobs:echo", None, timeout_s=30).value["pid"] == pid


def test_hanging_job_times_out_and_is_replaced(worker):
    pid = worker.call("worker_jobs:echo", None, timeout_s=30).value["pid"]
    result = worker.call("worker_jobs:hang", None, timeout_s=1.0)
    assert result.kind == "timeout"
    assert "1 s" in result.error
    assert 1.0 <= result.elapsed_s < 15
    after = worker.call("worker_jobs:echo", None, timeout_s=30)
    assert after.kind == "ok" and after.value["pid"] != pid
    assert worker.restarts == 1


@pytest.mark.parametrize(("job", "code"), [("abort", -6), ("segfault", -11)])
def test_crashing_job_reports_exit_code_and_stderr(worker, job, code):
    result = worker.call(f"worker_jobs:{job}", None, timeout_s=30)
    assert result.kind == "crashed"
    assert f"exit code {code}" in result.error
    if job == "abort":
        assert "about to abort" in result.traceback
    assert worker.call("worker_jobs:echo", None, timeout_s=30).kind == "ok"
    assert worker.restarts == 1


def test_fatal_error_replaces_the_worker(worker):
    pid = worker.call("worker_jobs:echo", None, timeout_s=30).value["pid"]
    result = worker.call("worker_jobs:fatal", None, timeout_s=30)
    assert result.kind == "error" and result.fatal
    assert result.error == "context poisoned"
    assert worker.call("worker_jobs:echo", None, timeout_s=30).value["pid"] != pid


def test_unknown_job_is_an_error_not_a_crash(worker):
    result = worker.call("worker_jobs:nope", None, timeout_s=30)
    assert result.kind == "error"
    assert result.error_type == "AttributeError"


def test_worker_that_cannot_start_raises_with_its_stderr():
    w = IsolatedWorker("bad", initializer="no_such_module_xyz:init", startup_timeout_s=60)
    with pytest.raises(RuntimeError, match="(?s)died while starting.*no_such_module_xyz"):
        w.start()
    w.close()
