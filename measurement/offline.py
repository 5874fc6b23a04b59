"""Compiler metadata without a GPU: compile candidates for a target GPU on the CPU and read their resources.

Registers, spills and shared memory are what Triton's compiler and ``ptxas`` decide; the GPU only reports them
once the binary is loaded. Both tools run on the CPU, so a candidate can be compiled for, say, an H100
(compute capability 9.0) on a machine without one, and its resource usage read from the binary with
``cuobjdump -res-usage`` (both ship with Triton's wheel). The figures are the ones the GPU worker records
(``kernelcast.measurement.jobs.compiled_info``): ``n_regs`` is ``REG``; ``n_spills`` is the thread's local
memory over 4 bytes, as Triton's driver computes it from ``CU_FUNC_ATTRIBUTE_LOCAL_SIZE_BYTES``, which is
``STACK`` plus ``LOCAL`` in ``cuobjdump``'s terms (spilled registers live in the stack frame); and
``shared_bytes`` is Triton's ``metadata.shared``.
``benchmarks/offline_compile_agreement.py`` measures the agreement on stored records.

This is what lets a surrogate trained with compiler metadata (``use_compiled_metadata=True``) screen candidates
that were never run: :class:`OfflineCompiler` fills the metadata columns of a candidate frame.

Compiles run in worker processes (spawned, one Triton driver stand-in each), so the calling process's own
Triton state, and any GPU it uses, are never touched.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import re
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import polars as pl

from kernelcast.exceptions import InvalidParameterError
from kernelcast.measurement.records import COMPILED_COLUMNS

logger = logging.getLogger(__name__)

_RESOURCE_LINE = re.compile(r"REG:(\d+)\s+STACK:(\d+)\s+SHARED:(\d+)\s+LOCAL:(\d+)")


def parse_capability(capability: str | tuple[int, int]) -> tuple[int, int]:
    """``"9.0"`` or ``(9, 0)`` to ``(9, 0)``; a clear error for anything else."""
    if isinstance(capability, tuple) and len(capability) == 2 and all(isinstance(x, int) for x in capability):
        return capability
    match = re.fullmatch(r"(\d+)\.(\d+)", str(capability).strip())
    if match is None:
        raise InvalidParameterError(
            f"capability={capability!r} is not a compute capability; use 'MAJOR.MINOR', e.g. '9.0' for an H100")
    major, minor = int(match.group(1)), int(match.group(2))
    if major < 7:
        raise InvalidParameterError(f"capability={capability!r}: Triton compiles for compute capability 7.0 or newer")
    return major, minor


class _TargetOnlyDriver:
    """Stands in for Triton's CUDA driver while compiling: it names a target and never touches a GPU."""

    def __init__(self, capability: tuple[int, int]) -> None:
        from triton.backends.compiler import GPUTarget

        self.target = GPUTarget("cuda", capability[0] * 10 + capability[1], 32)
        self.capability = capability

    def get_current_device(self) -> int:
        return 0

    def set_current_device(self, *_: Any) -> None:
        return None

    def get_current_stream(self, *_: Any) -> int:
        return 0

    def get_current_target(self) -> Any:
        return self.target

    def get_device_capability(self, *_: Any) -> tuple[int, int]:
        return self.capability


def _install_driver(capability: tuple[int, int]) -> None:
    """Worker initializer: compile for ``capability`` with no GPU (the worker compiles, nothing else).

    Triton's CPU interpreter (``TRITON_INTERPRET=1``, inherited from a test session) would make the kernels
    interpreted functions without a binary, so it is switched off before any kernel is defined.
    """
    os.environ["TRITON_INTERPRET"] = "0"
    from triton.runtime import driver

    driver.set_active(_TargetOnlyDriver(capability))


def tools_available() -> bool:
    """Whether this Triton has its NVIDIA backend's ``ptxas`` and ``cuobjdump``, which offline compiles need."""
    try:
        from triton import knobs

        return os.path.isfile(knobs.nvidia.cuobjdump.path) and os.path.isfile(knobs.nvidia.ptxas.path)
    except Exception:  # noqa: BLE001 - a Triton without an NVIDIA backend, or one that fails to import
        return False


def resource_usage(cubin: bytes) -> dict[str, int]:
    """Registers, stack, static shared memory and local memory (bytes) of a cubin, by ``cuobjdump -res-usage``.

    The largest over the cubin's functions (a Triton cubin has one).
    """
    from triton import knobs

    tool = knobs.nvidia.cuobjdump.path
    with tempfile.TemporaryDirectory(prefix="kernelcast-cubin-") as folder:
        path = os.path.join(folder, "kernel.cubin")
        with open(path, "wb") as f:
            f.write(cubin)
        done = subprocess.run([tool, "-res-usage", path], capture_output=True, text=True, check=False)  # noqa: S603
    found = _RESOURCE_LINE.findall(done.stdout)
    if done.returncode != 0 or not found:
        said = (done.stderr or done.stdout)[-500:]
        raise RuntimeError(f"cuobjdump -res-usage found no function in the cubin: {said}")
    regs, stack, shared, local = (max(int(f[i]) for f in found) for i in range(4))
    return {"regs": regs, "stack": stack, "shared": shared, "local": local}


def _compile_one(payload: Mapping[str, Any]) -> dict[str, Any]:
    """Worker job: compile one candidate, return its metadata or the error (never raises)."""
    from kernelcast.measurement.families import get_family

    t0 = time.perf_counter()
    try:
        family = get_family(payload["family"])
        problem = family.problem(payload["dims"], payload["dtype"], **payload["options"])
        kernels = family.compile(payload["variant"], payload["config"], problem)
        usage = [resource_usage(k.asm["cubin"]) for k in kernels]
        first = kernels[0].metadata
        info: dict[str, Any] = {
            "n_regs": max(u["regs"] for u in usage),
            "n_spills": max(u["stack"] + u["local"] for u in usage) // 4,
            "shared_bytes": max(int(k.metadata.shared) for k in kernels),
            "num_warps": int(first.num_warps),
            "num_stages": int(first.num_stages),
        }
        error = None
    except Exception as exc:  # noqa: BLE001 - a candidate that does not compile gets no metadata, not a crash
        info, error = {}, f"{type(exc).__name__}: {exc}"[:2000]
    return {"metadata": info, "error": error, "compile_s": time.perf_counter() - t0}


class OfflineCompiler:
    """Fill compiler-metadata columns of candidate frames by compiling on the CPU for a target GPU.

    Parameters
    ----------
    capability : str or tuple of int, default="9.0"
        Compute capability to compile for (``"9.0"``: H100/H200).
    n_jobs : int, default=1
        Compile worker processes.
    timeout_s : float, default=300.0
        Longest a compile may take (s), as the benchmarker's ``Protocol.compile_timeout_s``; a candidate still
        compiling then gets an error instead of metadata, and the workers are replaced.

    Notes
    -----
    Results are cached per (family, variant, configuration, problem, dtype) for the compiler's lifetime.
    A candidate that does not compile (or whose family kernelcast does not know) keeps missing metadata, which
    the surrogate treats as not compiled. Use it as a context manager, or call :meth:`close`.
    """

    def __init__(self, capability: str | tuple[int, int] = "9.0", n_jobs: int = 1, timeout_s: float = 300.0) -> None:
        if not isinstance(n_jobs, int) or isinstance(n_jobs, bool) or n_jobs < 1:
            raise InvalidParameterError(f"n_jobs={n_jobs!r} must be a positive integer")
        if isinstance(timeout_s, bool) or not isinstance(timeout_s, (int, float)) or not timeout_s > 0:
            raise InvalidParameterError(f"timeout_s={timeout_s!r} must be a positive number of seconds")
        self.capability = parse_capability(capability)
        self.n_jobs = n_jobs
        self.timeout_s = float(timeout_s)
        self.cache: dict[tuple[str, ...], dict[str, Any]] = {}
        self.compile_seconds = 0.0
        self._pool: Any = None  # a multiprocessing Pool (spawned), started on first use

    def __enter__(self) -> OfflineCompiler:
        return self

    def __exit__(self, *_: Any) -> None:
        self.close()

    def close(self) -> None:
        """Stop the worker processes (at once: a compile still running is abandoned)."""
        if self._pool is not None:
            self._pool.terminate()
            self._pool.join()
            self._pool = None

    def _workers(self) -> Any:
        if self._pool is None:
            self._pool = multiprocessing.get_context("spawn").Pool(
                processes=self.n_jobs, initializer=_install_driver, initargs=(self.capability,))
        return self._pool

    @staticmethod
    def _payload(row: Mapping[str, Any]) -> dict[str, Any]:
        from kernelcast.measurement.families import get_family

        family = get_family(row["family"])
        problem = json.loads(row["problem_json"])
        dims = {d: int(problem[d]) for d in family.dims}
        return {"family": row["family"], "variant": row["variant"], "config": json.loads(row["config_json"]),
                "dims": dims, "options": {k: v for k, v in problem.items() if k not in family.dims},
                "dtype": row["dtype"]}

    def compile(self, rows: Sequence[Mapping[str, Any]]) -> Iterator[dict[str, Any]]:
        """Compile the candidates of ``rows`` (dicts with the candidate columns); yield one result each, in order.

        A result is ``{"metadata": {...}, "error": str | None, "compile_s": float}``; cached candidates come back
        without compiling again.
        """
        keys = [(r["family"], r["variant"], r["config_json"], r["problem_json"], r["dtype"]) for r in rows]
        todo: dict[tuple[str, ...], dict[str, Any]] = {}
        for key, row in zip(keys, rows, strict=True):
            if key in self.cache or key in todo:
                continue
            try:
                todo[key] = self._payload(row)
            except (KeyError, ValueError, TypeError, InvalidParameterError) as exc:
                self.cache[key] = {"metadata": {}, "error": f"{type(exc).__name__}: {exc}", "compile_s": 0.0}
        abandoned: dict[tuple[str, ...], dict[str, Any]] = {}
        if todo:
            pool = self._workers()
            pending = [(key, pool.apply_async(_compile_one, (payload,))) for key, payload in todo.items()]
            # Jobs run n_jobs at a time, so the i-th may wait for i // n_jobs earlier ones before it starts.
            start = time.monotonic()
            stuck = False
            for i, (key, job) in enumerate(pending):
                wait = self.timeout_s * (i // self.n_jobs + 1) - (time.monotonic() - start)
                try:
                    result = job.get(timeout=0.0 if stuck else max(wait, 0.0))
                except multiprocessing.TimeoutError:
                    error = {"metadata": {}, "compile_s": 0.0}
                    if stuck:  # not given its own time: not cached, so a later call compiles it again
                        abandoned[key] = {**error, "error": "abandoned: the compile workers were restarted"}
                        continue
                    stuck = True
                    result = {**error, "error": f"TimeoutError: no compile result within {self.timeout_s:g} s",
                              "compile_s": self.timeout_s}
                self.cache[key] = result
                self.compile_seconds += result["compile_s"]
                if result["error"]:
                    logger.debug("offline compile of %s failed: %s", key, result["error"])
            if stuck:
                logger.warning("an offline compile ran past %g s; restarting the compile workers", self.timeout_s)
                self.close()
        for key in keys:
            yield self.cache[key] if key in self.cache else abandoned[key]

    def annotate(self, frame: pl.DataFrame) -> pl.DataFrame:
        """``frame`` with :data:`COMPILED_COLUMNS` from compiling its rows (missing where a row did not compile).

        Metadata the frame already carries is kept; only rows without ``n_regs`` are compiled.
        """
        missing = [c for c in ("family", "variant", "config_json", "problem_json", "dtype") if c not in frame.columns]
        if missing:
            raise InvalidParameterError(f"the candidate frame lacks columns {missing}; it needs the candidate columns")
        rows = frame.select("family", "variant", "config_json", "problem_json", "dtype").to_dicts()
        have = frame["n_regs"].to_list() if "n_regs" in frame.columns else [None] * frame.height
        need = [i for i, v in enumerate(have) if v is None]
        values: dict[str, list[Any]] = {
            c: frame[c].to_list() if c in frame.columns else [None] * frame.height for c in COMPILED_COLUMNS}
        for i, result in zip(need, self.compile([rows[i] for i in need]), strict=True):
            for c in COMPILED_COLUMNS:
                values[c][i] = result["metadata"].get(c)
        return frame.with_columns(pl.Series(c, values[c], dtype=pl.Int64()) for c in COMPILED_COLUMNS)
