"""Jobs that run inside worker processes: compile a candidate, or check and time it.

Each job takes a plain-dict payload and returns a plain dict, so both cross the process boundary safely.
A failure the job understands (compile error, out of resources, wrong output) is returned as a status; a
failure that leaves the CUDA context unusable is raised as :class:`FatalJobError` so the worker is replaced.
"""

from __future__ import annotations

import os
import time
from typing import Any

from kernelcast.measurement.families import Family, load_family_ref
from kernelcast.measurement.fingerprint import device_fingerprint, interpreter_fingerprint, telemetry
from kernelcast.measurement.protocol import Protocol, time_kernel
from kernelcast.measurement.records import Status
from kernelcast.measurement.space import Problem
from kernelcast.measurement.worker import FatalJobError

_FAMILIES: dict[str, Family] = {}


def interpreting() -> bool:
    """Whether this process runs Triton through its CPU interpreter."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def _family(ref: str) -> Family:
    if ref not in _FAMILIES:
        _FAMILIES[ref] = load_family_ref(ref)
    return _FAMILIES[ref]


def _problem(payload: dict[str, Any]) -> Problem:
    p = payload["problem"]
    return Problem(dims=p["dims"], dtype=p["dtype"], options=p.get("options", {}))


def classify_exception(exc: BaseException) -> Status:
    """Map an exception raised while compiling or launching a Triton kernel to a record status."""
    from triton.compiler.errors import CompilationError
    from triton.runtime.errors import OutOfResources

    if isinstance(exc, OutOfResources):
        return Status.OUT_OF_RESOURCES
    if isinstance(exc, CompilationError):
        return Status.COMPILE_ERROR
    text = str(exc).lower()
    if "passmanager::run failed" in text:
        # Triton's MLIR pipeline rejected the kernel: a compiler failure, even when the launch is what compiled it.
        return Status.COMPILE_ERROR
    if "out of resource" in text or "out of memory" in text:
        return Status.OUT_OF_RESOURCES
    return Status.RUNTIME_ERROR


def gpu_init() -> None:
    """Worker initializer: create the CUDA context up front, so start-up cost is not charged to a job."""
    import torch

    if not interpreting():
        torch.empty(1, device="cuda")


def compile_init() -> None:
    """Compile-worker initializer: let Triton compile for the device without ever creating a CUDA context.

    Triton asks torch for the current device, stream and capability even when it only compiles, and those
    calls create a CUDA context; fifteen compile workers' contexts then time-slice with the kernel being
    timed. With ``KERNELCAST_COMPILE_CAPABILITY`` (e.g. ``"9.0"``) set by the benchmarker, the driver answers
    from it instead. Registers and spills are then read by the GPU worker (see :func:`run_job`).
    """
    capability = os.environ.get("KERNELCAST_COMPILE_CAPABILITY")
    if interpreting() or not capability:
        return
    major, minor = (int(x) for x in capability.split("."))
    from triton.runtime import driver

    active = driver.active
    active.get_current_device = lambda: 0
    active.set_current_device = lambda *_: None
    active.get_current_stream = lambda *_: 0
    active.get_device_capability = lambda *_: (major, minor)


def fingerprint_job(payload: dict[str, Any]) -> dict[str, Any]:
    """Return the device fingerprint seen by this worker."""
    return interpreter_fingerprint() if interpreting() else device_fingerprint(0)


def compile_job(payload: dict[str, Any]) -> dict[str, Any]:
    """Compile one candidate without launching it; report status, compiler metadata and compile time (ms)."""
    family = _family(payload["family_ref"])
    problem = _problem(payload)
    t0 = time.perf_counter()
    try:
        kernels = family.compile(payload["variant"], payload["config"], problem)
        info = compiled_info(kernels, load=False)
    except Exception as exc:  # noqa: BLE001 - every compile failure becomes a record
        # Anything that fails while compiling (e.g. an MLIR "PassManager::run failed") is a compile error,
        # unless the kernel compiled but needs more resources than the device has.
        status = Status.OUT_OF_RESOURCES if classify_exception(exc) is Status.OUT_OF_RESOURCES else Status.COMPILE_ERROR
        return {"status": status.value, "error": f"{type(exc).__name__}: {exc}"[:4000],
                "compile_time_ms": (time.perf_counter() - t0) * 1e3}
    compile_ms = (time.perf_counter() - t0) * 1e3
    limit = payload.get("max_shared_bytes")
    if limit is not None and info["shared_bytes"] is not None and info["shared_bytes"] > int(limit):
        # What Triton's loader would raise as OutOfResources, found without loading the binary on the GPU.
        return {"status": Status.OUT_OF_RESOURCES.value, "compiled": info, "compile_time_ms": compile_ms,
                "error": f"OutOfResources: out of resource: shared memory, Required: {info['shared_bytes']}, "
                         f"Hardware limit: {int(limit)}"}
    return {"status": Status.OK.value, "compiled": info, "compile_time_ms": compile_ms}


def compiled_info(kernels: list[Any], *, load: bool = True) -> dict[str, int | None]:
    """Registers, spills and shared memory of compiled kernels (the largest over a variant's kernels).

    Registers and spills are known only once the binary is loaded on the device (``_init_handles``), which
    needs a CUDA context. Compile workers pass ``load=False`` so they never hold a context that would
    time-slice with the kernel being timed; the GPU worker fills registers in after the run.
    """
    regs: list[int] = []
    spills: list[int] = []
    shared: list[int] = []
    for kernel in kernels:
        if load:
            kernel._init_handles()
            regs.append(int(kernel.n_regs))
            spills.append(int(kernel.n_spills))
        shared.append(int(kernel.metadata.shared))
    first = kernels[0].metadata if kernels else None
    return {
        "n_regs": max(regs) if regs else None,
        "n_spills": max(spills) if spills else None,
        "shared_bytes": max(shared) if shared else None,
        "num_warps": int(first.num_warps) if first is not None else None,
        "num_stages": int(first.num_stages) if first is not None else None,
    }


def _poison(out: Any) -> None:
    if out.is_floating_point():
        out.fill_(float("nan"))
    else:
        out.fill_(-1)


class _InputCache:
    """Inputs, a pristine copy and the reference of the last problem this worker ran.

    Regenerating random inputs and a float32 reference costs milliseconds per candidate (a 4096^3 fp32
    matmul alone ~3 ms), so a worker reuses them for up to ``Protocol.inputs_reuse`` candidates of one
    problem. A pristine copy is compared after every candidate: a kernel that writes into its inputs is
    recorded as ``incorrect`` and the inputs are regenerated, so it cannot spoil the next candidate's check.
    """

    def __init__(self) -> None:
        self.key: str | None = None
        self.uses = 0
        self.inputs: dict[str, Any] = {}
        self.pristine: dict[str, Any] = {}
        self.reference: Any = None

    def get(self, family: Family, problem: Problem, seed: int, reuse: int, device: str) -> tuple[dict, Any]:
        key = f"{type(family).__module__}:{family.name}:{problem.label()}"
        if key != self.key or self.uses >= reuse:
            self.inputs = family.make_inputs(problem, device=device, seed=seed)
            self.pristine = {k: v.clone() for k, v in self.inputs.items()}
            self.reference = family.reference(problem, self.inputs).float()
            self.key, self.uses = key, 0
        self.uses += 1
        return self.inputs, self.reference

    def intact(self) -> bool:
        import torch

        return all(torch.equal(self.inputs[k], v) for k, v in self.pristine.items())

    def drop(self) -> None:
        self.key = None


_INPUTS = _InputCache()
_TELEMETRY: dict[str, Any] = {"at": -1e9, "value": {}}


def _recent_telemetry(max_age_s: float = 1.0) -> dict[str, Any]:
    """GPU telemetry at most ``max_age_s`` old: NVML queries cost milliseconds, candidates take tens of them."""
    now = time.monotonic()
    if now - _TELEMETRY["at"] > max_age_s:
        _TELEMETRY["value"] = {**telemetry(0), "age_limit_s": max_age_s}
        _TELEMETRY["at"] = now
    return _TELEMETRY["value"]


def run_job(payload: dict[str, Any]) -> dict[str, Any]:
    """Check one candidate against the reference, then time it (unless interpreting).

    Returns a dict with ``status``, ``samples_ms``, ``error`` and ``check`` (max abs and relative-norm error).
    """
    import torch

    family = _family(payload["family_ref"])
    problem = _problem(payload)
    protocol = Protocol(**payload["protocol"])
    variant, config = payload["variant"], payload["config"]
    device = "cpu" if interpreting() else "cuda"
    t0 = time.perf_counter()

    inputs, ref = _INPUTS.get(family, problem, int(payload["seed"]), protocol.inputs_reuse, device)
    out = family.new_output(problem, inputs)
    _poison(out)

    def launch() -> None:
        family.launch(variant, config, problem, inputs, out)

    def failed(status: Status, error: str, **extra: Any) -> dict[str, Any]:
        _INPUTS.drop()
        return {"status": status.value, "error": error[:4000], "gpu_s": time.perf_counter() - t0, **extra}

    try:
        launch()
        if device == "cuda":
            torch.cuda.synchronize()
    except Exception as exc:  # noqa: BLE001 - launch failures become records
        _raise_if_context_lost(exc)
        return failed(classify_exception(exc), f"{type(exc).__name__}: {exc}")

    if not _INPUTS.intact():
        return failed(Status.INCORRECT, "the kernel modified its input tensors")
    check: dict[str, float] = {}
    if protocol.check:
        got = out.float()
        unwritten = int(torch.isnan(got).sum())
        if unwritten:
            return failed(Status.INCORRECT, f"{unwritten} of {got.numel()} output elements were not written "
                                            "(still NaN)")
        atol, rtol = family.tolerance(problem.dtype)
        diff = (got - ref).abs()
        norm_err = torch.linalg.vector_norm(got - ref) / torch.linalg.vector_norm(ref).clamp_min(1e-30)
        check = {"max_abs_err": float(diff.max()), "rel_norm_err": float(norm_err)}
        if not torch.allclose(got, ref, atol=atol, rtol=rtol):
            return failed(Status.INCORRECT, f"output differs from the reference: max abs error "
                                            f"{check['max_abs_err']:.3g}, relative norm error "
                                            f"{check['rel_norm_err']:.3g} (atol={atol}, rtol={rtol})", check=check)
    if device == "cpu":
        return {"status": Status.OK.value, "samples_ms": [], "check": check, "gpu_s": 0.0}
    try:
        samples = time_kernel(launch, protocol, l2_bytes=int(payload.get("l2_bytes") or 50 * 2**20),
                              incumbent_ms=payload.get("incumbent_ms"))
    except Exception as exc:  # noqa: BLE001
        _raise_if_context_lost(exc)
        return failed(classify_exception(exc), f"{type(exc).__name__}: {exc}")
    if not _INPUTS.intact():
        return failed(Status.INCORRECT, "the kernel modified its input tensors while being timed")
    state = _recent_telemetry() if payload.get("telemetry", True) else {}
    return {"status": Status.OK.value, "samples_ms": samples, "check": check, "gpu_s": time.perf_counter() - t0,
            "telemetry": state, "compiled": _loaded_info(family, variant, config, problem)}


def _loaded_info(family: Family, variant: str, config: dict[str, Any], problem: Problem) -> dict[str, int | None]:
    """Registers and spills of a kernel this GPU worker has launched (Triton's in-memory cache: no compile)."""
    try:
        return compiled_info(family.compile(variant, config, problem), load=True)
    except Exception:  # noqa: BLE001 - metadata is optional; the measurement stands without it
        return {}


def _raise_if_context_lost(exc: BaseException) -> None:
    """A CUDA error such as an illegal address poisons the context: report it and replace the worker."""
    import torch

    if not torch.cuda.is_available() or interpreting():
        return
    try:
        torch.cuda.synchronize()
        torch.zeros(1, device="cuda").add_(1).item()
    except Exception:  # noqa: BLE001
        raise FatalJobError(f"{type(exc).__name__}: {exc}"[:4000], kind=classify_exception(exc).value) from exc
