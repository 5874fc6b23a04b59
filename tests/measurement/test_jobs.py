"""How failures of compiling or launching a Triton kernel become record statuses."""

from __future__ import annotations

import pytest
from triton.compiler.errors import CompilationError
from triton.runtime.errors import OutOfResources

from kernelcast.measurement.jobs import classify_exception
from kernelcast.measurement.records import Status


@pytest.mark.parametrize(("exc", "status"), [
    (OutOfResources(300_000, 232_448, "shared memory"), Status.OUT_OF_RESOURCES),
    (RuntimeError("CUDA error: out of memory"), Status.OUT_OF_RESOURCES),
    # Triton's MLIR pipeline failing is a compiler failure, also when a launch triggered the compile
    (RuntimeError("PassManager::run failed"), Status.COMPILE_ERROR),
    (RuntimeError("CUDA error: an illegal memory access was encountered"), Status.RUNTIME_ERROR),
    (ValueError("anything else"), Status.RUNTIME_ERROR),
])
def test_exceptions_map_to_statuses(exc, status):
    assert classify_exception(exc) is status


def test_a_triton_compilation_error_is_a_compile_error():
    exc = CompilationError.__new__(CompilationError)  # its constructor wants an AST node; the type is what counts
    assert classify_exception(exc) is Status.COMPILE_ERROR
