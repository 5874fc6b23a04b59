"""Fixtures of the dataset tests: the real Kernel Tuner caches, each kernel imported once per session."""

from __future__ import annotations

import functools
import gzip
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from kernelcast.datasets.importers import import_kernel_tuner
from kernelcast.measurement.records import Record

KERNELS = ("convolution", "gemm", "pnpoly")


@pytest.fixture(scope="session")
def kernel_tuner_dir(shared_data: Path) -> Path:
    return shared_data / "kernel_tuner"


@pytest.fixture(scope="session")
def cache_files(kernel_tuner_dir: Path) -> Callable[[str], list[Path]]:
    def files(kernel: str) -> list[Path]:
        found = sorted((kernel_tuner_dir / kernel).glob("*.json.gz"))
        assert len(found) == 4, f"expected the caches of four GPUs for {kernel}, found {found}"
        return found

    return files


@pytest.fixture(scope="session")
def raw_cache() -> Callable[[Path], dict[str, Any]]:
    @functools.cache
    def load(path: Path) -> dict[str, Any]:
        with gzip.open(path, "rt", encoding="utf-8") as handle:
            return json.load(handle)

    return load


@pytest.fixture(scope="session")
def imported(cache_files: Callable[[str], list[Path]]) -> Callable[[str], list[Record]]:
    """The records of the four caches of one kernel, imported together (once per session)."""

    @functools.cache
    def records(kernel: str) -> list[Record]:
        return import_kernel_tuner(cache_files(kernel))

    return records
