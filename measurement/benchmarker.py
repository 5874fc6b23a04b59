"""The Benchmarker: turns candidates into records, compiling on CPU cores while the GPU times.

Pipeline for each candidate::

    check_config (parent, no GPU)  --invalid-->  invalid_config record
        |
    compile_job in one of N compile workers (parallel; fills Triton's on-disk cache, reads registers,
        |         spills and shared memory, detects out-of-resources)  --failure-->  failure record
        |
    run_job in the GPU worker of one device (loads the cached binary, poisons the output, checks it
              against the reference, times it with :func:`~kernelcast.measurement.protocol.time_kernel`)

Every worker is an :class:`~kernelcast.measurement.worker.IsolatedWorker`: a crash, hang or CUDA error
becomes a failure record and the worker is replaced; records already yielded are never affected.
Under ``mode="interpret"`` there is no compile stage and the run job checks correctness on the CPU
through ``TRITON_INTERPRET=1`` (no timings).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import queue
import time
import zlib
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Literal

from kernelcast.exceptions import InvalidParameterError, invalid_choice
from kernelcast.measurement.families import Family, family_ref, get_family
from kernelcast.measurement.fingerprint import INTERPRETER_DEVICE
from kernelcast.measurement.protocol import Protocol
from kernelcast.measurement.records import CompiledInfo, Record, Scalar, Status, canonical_json, record_key
from kernelcast.measurement.space import DeviceLimits, Problem
from kernelcast.measurement.worker import IsolatedWorker, WorkerResult

logger = logging.getLogger(__name__)

Mode = Literal["gpu", "interpret"]
_JOBS = "kernelcast.measurement.jobs"


@dataclasses.dataclass(frozen=True)
class Candidate:
    """A kernel to measure: a family variant, a configuration and a problem.

    Attributes
    ----------
    family : str
        Registered family name (see :func:`~kernelcast.measurement.families.get_family`).
    variant : str
        Source variant of the family.
    config : mapping of str to scalar
        Configuration within the variant's space.
    problem : Problem
        The problem to solve.
    """

    family: str
    variant: str
    config: Mapping[str, Scalar]
    problem: Problem

    def seed(self) -> int:
        """A stable per-candidate seed for its random inputs."""
        return zlib.crc32(canonical_json([self.family, self.variant, dict(self.config), self.problem.as_dict(),
                                          self.problem.dtype]).encode())


class Benchmarker:
    """Measure candidates safely. Use as a context manager; see the module docstring.

    Parameters
    ----------
    mode : {"gpu", "interpret"}
        Time on CUDA GPUs, or check correctness on the CPU through Triton's interpreter.
    protocol : Protocol, optional
        Timing protocol and time limits.
    compile_workers : int, optional
        Parallel compile processes (GPU mode); default: CPU cores minus one per GPU, at least one.
    devices : sequence of int, optional
        CUDA device indices, one GPU worker each; default: all visible devices.
    limits : DeviceLimits, optional
        Limits used by ``check_config``; default: read from device 0 (GPU mode) or Hopper's.
    origin : str
        Stored in every record's ``origin``.
    """

    def __init__(
        self,
        *,
        mode: Mode = "gpu",
        protocol: Protocol | None = None,
        compile_workers: int | None = None,
        devices: Iterable[int] | None = None,
        limits: DeviceLimits | None = None,
        origin: str = "kernelcast.measure",
    ) -> None:
        if mode not in ("gpu", "interpret"):
            raise invalid_choice("mode", "Benchmarker", mode, ("gpu", "interpret"))
        self.mode: Mode = mode
        self.protocol = protocol or Protocol()
        self.origin = origin
        self._requested_devices = list(devices) if devices is not None else None
        self._requested_compile_workers = compile_workers
        self.limits = limits
        self.fingerprint: dict[str, Any] = {}
        self.fingerprint_end: dict[str, Any] = {}
        self.gpu_seconds = 0.0
        self.startup_s = 0.0
        self._fastest_ms: dict[str, float] = {}
        self._sources: dict[tuple[str, str], tuple[str, str]] = {}
        self._run_workers: list[IsolatedWorker] = []
        self._compile_workers: list[IsolatedWorker] = []
        self._started = False

    # -- lifecycle ----------------------------------------------------------------------------------
    def __enter__(self) -> Benchmarker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        """Start the workers and read the device fingerprint."""
        if self._started:
            return
        if self.mode == "interpret":
            self._run_workers = [IsolatedWorker("interpret", env={"TRITON_INTERPRET": "1"})]
        else:
            import torch

            if not torch.cuda.is_available():
                raise InvalidParameterError(
                    "The 'mode' parameter of Benchmarker is 'gpu' but no CUDA GPU is visible; "
                    "use mode='interpret' (kernelcast measure --interpret) to check correctness on the CPU."
                )
            devices = self._requested_devices or list(range(torch.cuda.device_count()))
            self._run_workers = [
                IsolatedWorker(f"gpu{d}", env={"CUDA_VISIBLE_DEVICES": str(d)}, initializer=f"{_JOBS}:gpu_init")
                for d in devices
            ]
            n_compile = self._requested_compile_workers or max(1, (os.cpu_count() or 2) - len(devices))
            major, minor = torch.cuda.get_device_capability(devices[0])
            compile_env = {"CUDA_VISIBLE_DEVICES": str(devices[0]), "KERNELCAST_COMPILE_CAPABILITY": f"{major}.{minor}"}
            self._compile_workers = [
                IsolatedWorker(f"compile{i}", env=compile_env, nice=10, initializer=f"{_JOBS}:compile_init")
                for i in range(n_compile)
            ]
        # Start every worker now, in parallel: a broken set-up fails here, and start-up is not charged to jobs.
        t0 = time.perf_counter()
        with ThreadPoolExecutor(len(self._run_workers) + len(self._compile_workers)) as pool:
            list(pool.map(IsolatedWorker.start, self._run_workers + self._compile_workers))
        self.startup_s = time.perf_counter() - t0
        first = self._run_workers[0].call(f"{_JOBS}:fingerprint_job", {}, timeout_s=120)
        if first.kind != "ok":
            raise RuntimeError(f"could not read the device fingerprint: {first.error}\n{first.traceback or ''}")
        self.fingerprint = first.value
        if self.limits is None:
            self.limits = self._limits_from_fingerprint(self.fingerprint)
        self._started = True

    def _limits_from_fingerprint(self, fingerprint: Mapping[str, Any]) -> DeviceLimits:
        if self.mode == "interpret":
            return DeviceLimits.hopper()
        import torch

        return DeviceLimits.from_torch(0 if self._requested_devices is None else self._requested_devices[0]) \
            if torch.cuda.is_available() else DeviceLimits.hopper()

    def close(self) -> None:
        """Read the end-of-run fingerprint and stop every worker."""
        if self._started and self._run_workers:
            end = self._run_workers[0].call(f"{_JOBS}:fingerprint_job", {}, timeout_s=60)
            self.fingerprint_end = end.value if end.kind == "ok" else {}
        for worker in self._run_workers + self._compile_workers:
            worker.close()
        self._run_workers, self._compile_workers = [], []
        self._started = False

    @property
    def device_name(self) -> str:
        """Name of the measured device (``cpu-interpreter`` under the interpreter)."""
        if self.mode == "interpret":
            return INTERPRETER_DEVICE
        self.start()
        return str(self.fingerprint["name"])

    @property
    def restarts(self) -> int:
        """Worker processes replaced so far (crashes, hangs, fatal CUDA errors)."""
        return sum(w.restarts for w in self._run_workers + self._compile_workers)

    # -- keys ---------------------------------------------------------------------------------------
    def _source(self, family: Family, variant: str) -> tuple[str, str]:
        """(source text, source hash) of a variant, read once per run."""
        if (family.name, variant) not in self._sources:
            self._sources[family.name, variant] = (family.source(variant), family.source_hash(variant))
        return self._sources[family.name, variant]

    def key(self, candidate: Candidate) -> tuple[str, ...]:
        """The store key the candidate's record will have on this benchmarker's device."""
        _, source_hash = self._source(get_family(candidate.family), candidate.variant)
        return record_key(source_hash, candidate.config, candidate.problem.as_dict(), candidate.problem.dtype,
                          self.device_name)

    # -- measuring ----------------------------------------------------------------------------------
    def measure(self, candidates: Iterable[Candidate]) -> Iterator[Record]:
        """Yield one record per candidate, in completion order.

        Raises
        ------
        InvalidParameterError
            If a candidate names an unknown family or variant, or a config outside the variant's space.
        """
        self.start()
        assert self.limits is not None  # noqa: S101 - set by start()
        out: queue.Queue[Record] = queue.Queue()
        n_run = len(self._run_workers)
        run_pool: queue.Queue[IsolatedWorker] = queue.Queue()
        for w in self._run_workers:
            run_pool.put(w)
        compile_pool: queue.Queue[IsolatedWorker] = queue.Queue()
        for w in self._compile_workers:
            compile_pool.put(w)
        max_in_flight = max(2 * len(self._compile_workers), 4 * n_run)
        in_flight = 0

        with ThreadPoolExecutor(max(1, len(self._compile_workers)), thread_name_prefix="kc-compile") as compile_exec, \
                ThreadPoolExecutor(n_run, thread_name_prefix="kc-run") as run_exec:

            def finish(future: Future[Record]) -> None:
                try:
                    out.put(future.result())
                except BaseException as exc:  # noqa: BLE001 - surface orchestration bugs in the main thread
                    out.put(exc)  # type: ignore[arg-type]

            def run_stage(prepared: _Prepared, compile_result: dict[str, Any] | None) -> Record:
                worker = run_pool.get()
                try:
                    return self._run_one(worker, prepared, compile_result)
                finally:
                    run_pool.put(worker)

            def compile_then_run(prepared: _Prepared) -> None:
                worker = compile_pool.get()
                try:
                    result = worker.call(f"{_JOBS}:compile_job", prepared.payload, self.protocol.compile_timeout_s)
                finally:
                    compile_pool.put(worker)
                compiled = self._compile_outcome(result)
                if compiled.get("status") != Status.OK.value:
                    done: Future[Record] = Future()
                    done.set_result(self._failure(prepared, compiled, compile_ms=compiled.get("compile_time_ms")))
                    finish(done)
                    return
                run_exec.submit(run_stage, prepared, compiled).add_done_callback(finish)

            def submit(prepared: _Prepared) -> None:
                if self.mode == "interpret":
                    run_exec.submit(run_stage, prepared, None).add_done_callback(finish)
                else:
                    future = compile_exec.submit(compile_then_run, prepared)
                    future.add_done_callback(lambda f: f.exception() and out.put(f.exception()))  # type: ignore[arg-type]

            for candidate in candidates:
                prepared = self._prepare(candidate)
                if isinstance(prepared, Record):
                    yield prepared
                    continue
                submit(prepared)
                in_flight += 1
                while in_flight >= max_in_flight:
                    yield self._take(out)
                    in_flight -= 1
            while in_flight:
                yield self._take(out)
                in_flight -= 1

    @staticmethod
    def _take(out: queue.Queue[Any]) -> Record:
        item = out.get()
        if isinstance(item, BaseException):
            raise item
        return item

    # -- stages -------------------------------------------------------------------------------------
    def _prepare(self, candidate: Candidate) -> _Prepared | Record:
        family = get_family(candidate.family)
        family.check_variant(candidate.variant)
        owner = f"{family.name}/{candidate.variant} config"
        config = family.space(candidate.variant).validate(candidate.config, owner=owner)
        prepared = _Prepared(
            candidate=dataclasses.replace(candidate, config=config),
            family=family,
            payload={
                "family_ref": family_ref(family),
                "variant": candidate.variant,
                "config": config,
                "problem": {"dims": dict(candidate.problem.dims), "dtype": candidate.problem.dtype,
                            "options": dict(candidate.problem.options)},
                "protocol": self.protocol.as_dict(),
                "seed": candidate.seed(),
                "l2_bytes": self.fingerprint.get("l2_bytes") or 50 * 2**20,
                "max_shared_bytes": self.limits.max_shared_bytes_per_block if self.limits else None,
            },
        )
        reason = family.check_config(candidate.variant, config, candidate.problem, self.limits or DeviceLimits())
        if reason is not None:
            return self._failure(prepared, {"status": Status.INVALID_CONFIG.value, "error": reason})
        return prepared

    @staticmethod
    def _compile_outcome(result: WorkerResult) -> dict[str, Any]:
        if result.kind == "ok":
            return result.value
        if result.kind == "timeout":
            return {"status": Status.TIMEOUT.value, "error": f"compilation: {result.error}"}
        if result.kind == "crashed":
            return {"status": Status.COMPILE_ERROR.value,
                    "error": f"compiler crashed: {result.error}\n{result.traceback}"}
        return {"status": Status.COMPILE_ERROR.value, "error": f"{result.error_type}: {result.error}"}

    def _run_one(self, worker: IsolatedWorker, prepared: _Prepared, compiled: dict[str, Any] | None) -> Record:
        problem_key = canonical_json([prepared.payload["problem"], prepared.candidate.family])
        payload = {**prepared.payload, "incumbent_ms": self._fastest_ms.get(problem_key)}
        result = worker.call(f"{_JOBS}:run_job", payload, self.protocol.run_timeout_s)
        if result.kind == "ok" and result.value["status"] == Status.OK.value and result.value["samples_ms"]:
            median_ms = float(sorted(result.value["samples_ms"])[len(result.value["samples_ms"]) // 2])
            self._fastest_ms[problem_key] = min(median_ms, self._fastest_ms.get(problem_key, float("inf")))
        compile_ms = compiled.get("compile_time_ms") if compiled else None
        info = compiled.get("compiled") if compiled else None
        if result.kind == "ok":
            value = result.value
            loaded = {k: v for k, v in (value.get("compiled") or {}).items() if v is not None}
            if loaded:  # registers and spills, read by the GPU worker that loaded the binary
                info = {**(info or {}), **loaded}
            self.gpu_seconds += float(value.get("gpu_s", 0.0))
            if value["status"] != Status.OK.value:
                return self._failure(prepared, value, compile_ms=compile_ms, compiled=info)
            return self._record(prepared, Status.OK, samples_ms=value["samples_ms"], compile_ms=compile_ms,
                                compiled=info, extra={"check": value.get("check", {}),
                                                      "telemetry": value.get("telemetry", {}),
                                                      "incumbent_ms": payload["incumbent_ms"]})
        self.gpu_seconds += result.elapsed_s
        if result.kind == "timeout":
            outcome = {"status": Status.TIMEOUT.value, "error": result.error}
        elif result.kind == "crashed":
            outcome = {"status": Status.RUNTIME_ERROR.value, "error": f"{result.error}\n{result.traceback}"}
        else:
            outcome = {"status": Status.RUNTIME_ERROR.value,
                       "error": f"{result.error_type}: {result.error}\n{result.traceback}"}
        return self._failure(prepared, outcome, compile_ms=compile_ms, compiled=info)

    def _failure(
        self,
        prepared: _Prepared,
        outcome: Mapping[str, Any],
        *,
        compile_ms: float | None = None,
        compiled: Mapping[str, Any] | None = None,
    ) -> Record:
        return self._record(prepared, Status(outcome["status"]), error=str(outcome.get("error", ""))[:8000],
                            compile_ms=compile_ms, compiled=compiled)

    def _record(
        self,
        prepared: _Prepared,
        status: Status,
        *,
        samples_ms: Iterable[float] = (),
        error: str | None = None,
        compile_ms: float | None = None,
        compiled: Mapping[str, Any] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> Record:
        candidate, family = prepared.candidate, prepared.family
        fingerprint = dict(self.fingerprint)
        if extra and extra.get("telemetry"):
            fingerprint["at_measurement"] = extra["telemetry"]
        protocol = {**self.protocol.as_dict(), "mode": self.mode, "seed": prepared.payload["seed"]}
        if extra and extra.get("check"):
            protocol["check"] = extra["check"]
        if extra and extra.get("incumbent_ms") is not None:
            protocol["incumbent_ms"] = extra["incumbent_ms"]
        source_text, source_hash = self._source(family, candidate.variant)
        return Record(
            family=family.name,
            variant=candidate.variant,
            source_hash=source_hash,
            config=dict(candidate.config),
            problem=candidate.problem.as_dict(),
            dtype=candidate.problem.dtype,
            device=self.device_name,
            status=status,
            samples_ms=tuple(samples_ms),
            compiled=CompiledInfo(**compiled) if compiled else None,
            compile_time_ms=compile_ms,
            error=error,
            protocol=protocol,
            fingerprint=fingerprint,
            origin=self.origin,
            source_text=source_text,
        )


@dataclasses.dataclass(frozen=True)
class _Prepared:
    candidate: Candidate
    family: Family
    payload: dict[str, Any]


def candidates_for(
    family_name: str,
    problem: Problem,
    *,
    variants: Iterable[str] | None = None,
    space: str = "full",
    seed: int = 0,
) -> list[Candidate]:
    """Candidates of a family's variants on ``problem``: the full space, or ``random:N`` per variant.

    Invalid configurations are included: they become ``invalid_config`` records, so a full space is
    recorded completely.
    """
    family = get_family(family_name)
    chosen = list(variants) if variants else list(family.variants)
    for variant in chosen:
        family.check_variant(variant)
    out: list[Candidate] = []
    for variant in chosen:
        cspace = family.space(variant)
        if space == "full":
            configs = list(cspace)
        elif space.startswith("random:"):
            try:
                n = int(space.split(":", 1)[1])
            except ValueError:
                n = 0
            if n <= 0:
                raise InvalidParameterError(f"The 'space' parameter of measure must be 'full' or 'random:N' with a "
                                            f"positive N. Got {space!r} instead.")
            configs = cspace.sample(n, seed=seed)
        else:
            raise InvalidParameterError(f"The 'space' parameter of measure must be 'full' or 'random:N'. "
                                        f"Got {space!r} instead.")
        out.extend(Candidate(family_name, variant, c, problem) for c in configs)
    return out

