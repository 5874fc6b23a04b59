"""Harvest the Triton kernels that torch.compile (Inductor) generates and launches for small programs.

Each harvest task compiles one (program, shape, dtype) with ``torch.compile(dynamic=False)`` and runs it once.
A hook on ``torch._inductor.runtime.triton_heuristics.CachingAutotuner.run`` -- the call every generated
kernel goes through -- records, at a kernel's first launch in a task: its source text (the module file Inductor
wrote), the decorator's ``triton_meta``/``inductor_meta``, the configurations Inductor considered and the one it
launched after autotuning, and every argument (tensors by shape, stride, dtype, storage size, role and value
range; scalars by value). What an installed torch does not expose is listed in the kernel's ``missing`` field
rather than failing the harvest.

Tasks run in parallel :class:`~kernelcast.measurement.worker.IsolatedWorker` processes (Inductor's compile is
CPU-bound); a task that crashes or hangs costs its own kernels only. The parent de-duplicates kernels by the
hash of their source text and streams new ones to a JSON-lines file as they arrive.

On a CPU-only machine (tests), ``device="cpu"`` compiles with Inductor's Triton CPU backend and runs the kernels
through Triton's interpreter; see :mod:`kernelcast.measurement.harvest._interpret`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from enum import Enum
from pathlib import Path
from typing import Any

from kernelcast.exceptions import InvalidParameterError
from kernelcast.measurement.harvest.library import ArgSpec, HarvestedKernel, LaunchConfig, library_header
from kernelcast.measurement.harvest.programs import PROGRAMS, Program, get_program
from kernelcast.measurement.records import source_hash

logger = logging.getLogger(__name__)

SUPPORTED_HEURISTICS: tuple[str, ...] = ("pointwise", "reduction", "persistent_reduction")
"""Inductor heuristics whose kernels the inductor family can launch."""
SUPPORTED_GRIDS: tuple[str, ...] = ("Grid1D", "Grid2D", "Grid3D", "Grid2DWithYZOverflow")
"""Inductor grid types the inductor family can compute."""
BLOCK_NAME = re.compile(r"^(X|Y|Z|R0_|R1_)BLOCK$")
"""Names of the block-size constexprs of Inductor kernels."""

_JOB = "kernelcast.measurement.harvest.inductor:harvest_job"


# -- tasks ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class HarvestTask:
    """One compile: a program at one of its shapes in one dtype."""

    program: str
    shape: tuple[int, ...]
    dtype: str
    seed: int = 0

    def label(self) -> str:
        """E.g. ``softmax 128x4096 float16``."""
        return f"{self.program} {'x'.join(map(str, self.shape))} {self.dtype}"


def plan_tasks(
    programs: Iterable[str] | None = None,
    dtypes: Iterable[str] | None = None,
    max_shapes: int | None = None,
) -> list[HarvestTask]:
    """Every (program, shape, dtype) task, round-robin: the first shape of every program in every dtype first.

    A harvest cut short by its time budget therefore covers every program, in every dtype, at fewer shapes.
    """
    chosen: list[Program] = [get_program(p) for p in programs] if programs else list(PROGRAMS)
    wanted = list(dtypes) if dtypes else None
    n_shapes = max(len(p.shapes) for p in chosen) if chosen else 0
    if max_shapes is not None:
        n_shapes = min(n_shapes, max_shapes)
    tasks = []
    for i in range(n_shapes):
        for dtype in ("float16", "bfloat16", "float32"):
            if wanted is not None and dtype not in wanted:
                continue
            for program in chosen:
                if i < len(program.shapes) and dtype in program.dtypes:
                    tasks.append(HarvestTask(program.name, tuple(program.shapes[i]), dtype, seed=i))
    return tasks


# -- worker side ---------------------------------------------------------------------------------------


class _Recorder:
    """Per-process state of the ``CachingAutotuner.run`` hook."""

    def __init__(self) -> None:
        self.task: dict[str, Any] | None = None
        self.task_number = 0
        self.kernels: list[dict[str, Any]] = []
        self.errors: list[str] = []
        self.launches = 0
        self.lock = threading.Lock()


_RECORDER = _Recorder()
_SETUP: dict[str, Any] = {}


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def _setup(device: str) -> None:
    """Configure Inductor once per process and install the hook."""
    if _SETUP.get("device") == device:
        return
    import torch
    import torch._dynamo
    import torch._inductor.config as inductor_config
    from torch._inductor.runtime import triton_heuristics

    inductor_config.compile_threads = 1  # one compile per process; the harvest runs many processes
    torch._dynamo.config.cache_size_limit = max(64, torch._dynamo.config.cache_size_limit)
    if device == "cpu":
        inductor_config.cpu_backend = "triton"
        if _interpreting():
            _allow_triton_without_a_driver()
    if not getattr(triton_heuristics.CachingAutotuner.run, "_kernelcast_hook", False):
        original = triton_heuristics.CachingAutotuner.run

        def run(self: Any, *args: Any, **kwargs: Any) -> Any:
            return _hooked_run(original, self, args, kwargs)

        run._kernelcast_hook = True  # type: ignore[attr-defined]
        triton_heuristics.CachingAutotuner.run = run
    _SETUP["device"] = device


def _allow_triton_without_a_driver() -> None:
    """Inductor asks Triton's active driver for a backend hash; a CPU-only machine has none (tests only)."""
    import torch.utils._triton as torch_triton

    try:
        torch_triton.triton_hash_with_backend()
    except RuntimeError:
        torch_triton.triton_hash_with_backend = lambda: "kernelcast-cpu-interpreter"  # type: ignore[assignment]
        try:
            import torch._inductor.codegen.triton as codegen_triton

            if hasattr(codegen_triton, "triton_hash_with_backend"):
                codegen_triton.triton_hash_with_backend = torch_triton.triton_hash_with_backend
        except ImportError:  # pragma: no cover - older layouts
            pass


def _hooked_run(original: Callable[..., Any], autotuner: Any, args: tuple[Any, ...],
                kwargs: dict[str, Any]) -> Any:
    rec = _RECORDER
    fresh = rec.task is not None and getattr(autotuner, "_kernelcast_task", None) != rec.task_number
    if _interpreting():
        from kernelcast.measurement.harvest._interpret import use_interpreter_libdevice

        fn = getattr(autotuner, "fn", None)
        namespace = getattr(getattr(fn, "fn", fn), "__globals__", None)
        if namespace is not None:
            use_interpreter_libdevice(namespace)
    if not fresh:
        return original(autotuner, *args, **kwargs)
    autotuner._kernelcast_task = rec.task_number
    rec.launches += 1
    try:
        before = _capture_before(autotuner, args, kwargs)
    except Exception as exc:  # noqa: BLE001 - the harvest records what it can; the program still runs
        before = None
        rec.errors.append(f"capture before launch of {_kernel_name(autotuner)}: {type(exc).__name__}: {exc}")
    result = original(autotuner, *args, **kwargs)
    if before is not None:
        try:
            rec.kernels.append(_capture_after(autotuner, before))
        except Exception as exc:  # noqa: BLE001
            rec.errors.append(f"capture after launch of {_kernel_name(autotuner)}: {type(exc).__name__}: {exc}")
    return result


def _kernel_name(autotuner: Any) -> str:
    fn = getattr(autotuner, "fn", None)
    return str(getattr(fn, "__name__", None) or getattr(getattr(fn, "fn", None), "__name__", "?"))


def _python_fn(jit_fn: Any) -> Any:
    """The Python function under a JITFunction / InterpretedFunction."""
    return getattr(jit_fn, "fn", jit_fn)


def kernel_parameters(jit_fn: Any) -> tuple[list[str], list[str]]:
    """``(runtime parameter names, constexpr parameter names)`` of a Triton kernel's ``def``, in order."""
    import inspect

    runtime, constexprs = [], []
    for name, param in inspect.signature(_python_fn(jit_fn)).parameters.items():
        annotation = param.annotation
        text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", repr(annotation))
        (constexprs if "constexpr" in str(text) else runtime).append(name)
    return runtime, constexprs


def _read_source(autotuner: Any, missing: list[str]) -> str:
    import inspect

    filename = getattr(autotuner, "filename", None)
    if filename is None:
        missing.append("CachingAutotuner.filename")
        try:
            filename = inspect.getsourcefile(_python_fn(autotuner.fn))
        except TypeError:
            filename = None
    if filename and os.path.isfile(filename):
        with open(filename, encoding="utf-8") as handle:
            return handle.read()
    missing.append("kernel module file")
    return inspect.getsource(_python_fn(autotuner.fn))


def _config_dict(config: Any) -> dict[str, Any] | None:
    if config is None:
        return None
    kwargs = {str(k): int(v) for k, v in dict(getattr(config, "kwargs", {}) or {}).items()
              if isinstance(v, int) and not isinstance(v, bool)}
    return {"kwargs": kwargs, "num_warps": int(getattr(config, "num_warps", 4) or 4),
            "num_stages": int(getattr(config, "num_stages", 1) or 1)}


def _considered_configs(autotuner: Any, missing: list[str]) -> list[dict[str, Any]]:
    launchers = list(getattr(autotuner, "launchers", None) or [])
    if launchers:
        return [c for c in (_config_dict(getattr(launcher, "config", None)) for launcher in launchers) if c]
    results = list(getattr(autotuner, "compile_results", None) or [])
    if results:
        return [c for c in (_config_dict(getattr(r, "config", None)) for r in results) if c]
    configs = getattr(autotuner, "configs", None)
    if configs:
        return [c for c in (_config_dict(c) for c in configs) if c]
    missing.append("considered configs")
    return []


def json_safe(value: Any, depth: int = 0) -> Any:
    """``value`` as JSON-safe plain data: sets become sorted lists, enums their names, objects their ``repr``."""
    if depth > 8:
        return repr(value)
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, Enum):
        return value.name
    if isinstance(value, Mapping):
        return {str(k): json_safe(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (set, frozenset)):
        return sorted((json_safe(v, depth + 1) for v in value), key=repr)
    if isinstance(value, (list, tuple)):
        return [json_safe(v, depth + 1) for v in value]
    return repr(value)


def arg_roles(source: str, names: Sequence[str], mutated: Iterable[str]) -> dict[str, str]:
    """Role of each pointer argument: ``in``, ``out`` (every element written) or ``in_out``.

    An argument is written if its name starts with ``out_ptr``/``in_out_ptr`` or Inductor lists it as mutated;
    a written argument is ``in_out`` when the kernel also loads from it or updates it atomically, since then its
    initial values matter.
    """
    mutated = set(mutated)
    roles = {}
    for name in names:
        written = name.startswith(("out_ptr", "in_out_ptr")) or name in mutated
        if not written:
            roles[name] = "in"
            continue
        reads = re.search(rf"tl\.(load|atomic_\w+)\(\s*{re.escape(name)}\b", source) is not None
        roles[name] = "in_out" if reads else "out"
    return roles


def _value_range(tensor: Any) -> tuple[float | None, float | None]:
    import torch

    if tensor.numel() == 0 or tensor.dtype == torch.bool or tensor.is_complex():
        return None, None
    if tensor.is_floating_point():
        values = tensor.detach().float()
        values = values[torch.isfinite(values)]
        if values.numel() == 0:
            return None, None
        return float(values.min()), float(values.max())
    values = tensor.detach()
    return int(values.min()), int(values.max())


def _capture_before(autotuner: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> dict[str, Any]:
    import torch

    missing: list[str] = []
    source = _read_source(autotuner, missing)
    runtime_params, constexpr_params = kernel_parameters(autotuner.fn)
    inductor_meta = dict(getattr(autotuner, "inductor_meta", None) or {})
    triton_meta = dict(getattr(autotuner, "triton_meta", None) or {})
    if not inductor_meta:
        missing.append("CachingAutotuner.inductor_meta")
    mutated = list(getattr(autotuner, "mutated_arg_names", None) or inductor_meta.get("mutated_arg_names") or [])
    call_kwargs = {k: v for k, v in kwargs.items() if k not in ("stream", "benchmark_run")}
    names = runtime_params[: len(args)]
    if len(args) > len(runtime_params):
        missing.append(f"{len(args) - len(runtime_params)} positional args beyond the def's parameters")
    values = list(zip(names, args)) + [(k, v) for k, v in call_kwargs.items() if k in runtime_params]
    pointer_names = [n for n, v in values if isinstance(v, torch.Tensor)]
    roles = arg_roles(source, pointer_names, mutated)
    arg_specs = []
    for name, value in values:
        if isinstance(value, torch.Tensor):
            role = roles[name]
            lo, hi = _value_range(value) if role != "out" else (None, None)
            arg_specs.append(ArgSpec(
                name=name, kind="tensor", dtype=str(value.dtype).removeprefix("torch."), shape=tuple(value.shape),
                stride=tuple(value.stride()), storage_offset=int(value.storage_offset()),
                storage_bytes=int(value.untyped_storage().nbytes()), role=role, min=lo, max=hi,
            ).to_dict())
        elif isinstance(value, (bool, int, float)):
            arg_specs.append(ArgSpec(name=name, kind="scalar", dtype=type(value).__name__, value=value).to_dict())
        else:
            missing.append(f"argument {name} of type {type(value).__name__}")
            arg_specs.append(ArgSpec(name=name, kind="scalar", dtype=type(value).__name__,
                                     value=repr(value)).to_dict())
    heuristic_type = getattr(autotuner, "heuristic_type", None)
    heuristic = heuristic_type.name.lower() if isinstance(heuristic_type, Enum) else None
    if heuristic is None:
        match = re.search(r"@triton_heuristics\.(\w+)\(", source)
        heuristic = match.group(1) if match else "unknown"
        missing.append("CachingAutotuner.heuristic_type")
    return {
        "source": source, "args": arg_specs, "heuristic": heuristic, "constexpr_params": constexpr_params,
        "considered": _considered_configs(autotuner, missing), "missing": missing,
        "triton_meta": json_safe(triton_meta), "inductor_meta": json_safe(inductor_meta),
        "size_hints": json_safe(getattr(autotuner, "size_hints", None)),
    }


def _capture_after(autotuner: Any, before: dict[str, Any]) -> dict[str, Any]:
    missing = before["missing"]
    launchers = list(getattr(autotuner, "launchers", None) or [])
    launched = _config_dict(getattr(launchers[0], "config", None)) if len(launchers) == 1 else None
    if launched is None and getattr(autotuner, "triton_interpret", False) and before["considered"]:
        launched = before["considered"][0]  # the interpreter launches the first config, without autotuning
    if launched is None and before["considered"]:
        if len(before["considered"]) > 1:
            missing.append("the launched config (more than one launcher after the launch)")
        launched = before["considered"][0]
    considered = before["considered"] or ([launched] if launched else [])
    source = before["source"]
    inductor_meta = before["inductor_meta"] if isinstance(before["inductor_meta"], dict) else {}
    grid_type = inductor_meta.get("grid_type")
    heuristic = before["heuristic"]
    kind, reason = _kind(heuristic, grid_type, launched, before["constexpr_params"], before["args"])
    triton_meta = dict(before["triton_meta"]) if isinstance(before["triton_meta"], dict) else {}
    if before.get("size_hints") is not None:
        triton_meta.setdefault("size_hints", before["size_hints"])
    task = _RECORDER.task or {}
    return HarvestedKernel(
        kernel_id=source_hash(source), kernel_name=_kernel_name(autotuner), kind=kind, heuristic=heuristic,
        grid_type=grid_type, dtype=str(task.get("dtype", "float32")), source=source,
        args=tuple(ArgSpec.from_dict(a, "harvest") for a in before["args"]),
        configs=tuple(LaunchConfig.from_dict(c, "harvest") for c in considered),
        launched=LaunchConfig.from_dict(launched, "harvest") if launched else None,
        programs=({"program": task.get("program"), "shape": task.get("shape"), "dtype": task.get("dtype")},),
        triton_meta=triton_meta, inductor_meta=inductor_meta, missing=tuple(missing),
        measurable=reason is None, reason=reason,
    ).to_dict()


def _kind(heuristic: str, grid_type: str | None, launched: Mapping[str, Any] | None,
          constexpr_params: Sequence[str], args: Sequence[Mapping[str, Any]]) -> tuple[str, str | None]:
    """The kernel's kind and, if the inductor family cannot launch it, why."""
    dims = {"Grid1D": "", "Grid2D": "_2d", "Grid2DWithYZOverflow": "_2d", "Grid3D": "_3d"}
    kind = heuristic + dims.get(str(grid_type), "") if heuristic in SUPPORTED_HEURISTICS else heuristic
    if heuristic not in SUPPORTED_HEURISTICS:
        return kind, f"the {heuristic!r} heuristic is not supported (only {', '.join(SUPPORTED_HEURISTICS)})"
    if grid_type not in SUPPORTED_GRIDS:
        return kind, f"grid type {grid_type!r} is not supported (only {', '.join(SUPPORTED_GRIDS)})"
    if launched is None:
        return kind, "the launched config was not captured"
    other = [p for p in constexpr_params if not BLOCK_NAME.match(p)]
    if other:
        return kind, f"the kernel has constexpr parameters other than block sizes: {other}"
    extra = [k for k in launched["kwargs"] if not BLOCK_NAME.match(k)]
    if extra:
        return kind, f"the launched config has knobs other than block sizes: {extra}"
    if any(a["kind"] == "scalar" and not isinstance(a.get("value"), (int, float)) for a in args):
        return kind, "an argument is neither a tensor nor a number"
    if not any(a["kind"] == "tensor" and a["role"] != "in" for a in args):
        return kind, "no argument is written"
    return kind, None


def harvest_job(payload: Mapping[str, Any]) -> dict[str, Any]:
    """Worker job: compile and run one task; return the kernels launched and what went wrong.

    ``payload``: ``{"program", "shape", "dtype", "seed", "device"}``. Returns ``{"kernels": [kernel dicts],
    "errors": [str], "compile_s": float, "launches": int}``.
    """
    import torch
    import torch._dynamo

    device = str(payload.get("device", "cuda"))
    _setup(device)
    program = get_program(str(payload["program"]))
    rec = _RECORDER
    with rec.lock:
        rec.task_number += 1
        rec.task = {"program": program.name, "shape": "x".join(map(str, payload["shape"])),
                    "dtype": str(payload["dtype"])}
        rec.kernels, rec.errors, rec.launches = [], [], 0
    try:
        torch._dynamo.reset()
        inputs = program.make_inputs(payload["shape"], str(payload["dtype"]), device=device,
                                     seed=int(payload.get("seed", 0)))
        t0 = time.perf_counter()
        compiled = torch.compile(program.fn, dynamic=False)
        compiled(*inputs)
        if device == "cuda":
            torch.cuda.synchronize()
        compile_s = time.perf_counter() - t0
        return {"kernels": list(rec.kernels), "errors": list(rec.errors), "compile_s": compile_s,
                "launches": rec.launches}
    finally:
        rec.task = None


# -- parent side ---------------------------------------------------------------------------------------


@dataclasses.dataclass
class HarvestSummary:
    """What a harvest did.

    Attributes
    ----------
    kernels : dict of str to HarvestedKernel
        Distinct kernels by ``kernel_id`` (each with every program that produced it).
    tasks_done, tasks_failed, tasks_skipped : int
        Tasks that ran, that failed (error, crash, timeout), and that the time budget left out.
    errors : list of str
        One line per failed task or capture problem.
    wall_s : float
        Wall time of the harvest (s).
    """

    kernels: dict[str, HarvestedKernel] = dataclasses.field(default_factory=dict)
    tasks_done: int = 0
    tasks_failed: int = 0
    tasks_skipped: int = 0
    errors: list[str] = dataclasses.field(default_factory=list)
    wall_s: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """A JSON-safe summary (without the kernels themselves)."""
        kinds: dict[str, int] = {}
        for k in self.kernels.values():
            kinds[k.kind] = kinds.get(k.kind, 0) + 1
        return {"kernels": len(self.kernels), "measurable": sum(k.measurable for k in self.kernels.values()),
                "kinds": kinds, "tasks_done": self.tasks_done, "tasks_failed": self.tasks_failed,
                "tasks_skipped": self.tasks_skipped, "wall_s": self.wall_s, "errors": self.errors[:200]}


def _merge(known: HarvestedKernel, new: HarvestedKernel) -> HarvestedKernel:
    programs = list(known.programs)
    for p in new.programs:
        if p not in programs:
            programs.append(p)
    return dataclasses.replace(known, programs=tuple(programs))


def harvest(
    tasks: Sequence[HarvestTask],
    *,
    workers: int,
    device: str = "cuda",
    budget_s: float | None = None,
    task_timeout_s: float = 240.0,
    cache_dir: str | os.PathLike[str] | None = None,
    on_kernel: Callable[[HarvestedKernel], None] | None = None,
) -> HarvestSummary:
    """Run ``tasks`` in ``workers`` parallel processes and collect the distinct kernels they launch.

    Parameters
    ----------
    tasks : sequence of HarvestTask
        What to compile, in priority order (see :func:`plan_tasks`).
    workers : int
        Parallel worker processes.
    device : {"cuda", "cpu"}
        Where programs run; ``"cpu"`` uses Inductor's Triton CPU backend under the interpreter (tests).
    budget_s : float, optional
        Start no task after this many seconds (tasks under way finish).
    task_timeout_s : float
        A task running longer is killed and counted as failed (s).
    cache_dir : path, optional
        Inductor's cache directory for the workers (``TORCHINDUCTOR_CACHE_DIR``); a fresh one gives every
        kernel Inductor's full autotuning (a warm cache would replay its stored best config).
    on_kernel : callable, optional
        Called in the parent with each new distinct kernel, as it arrives (e.g. to append it to a file).
    """
    from kernelcast.measurement.worker import IsolatedWorker

    if workers < 1:
        raise InvalidParameterError(f"The 'workers' parameter of harvest must be a positive int. Got {workers}.")
    if device not in ("cuda", "cpu"):
        raise InvalidParameterError(f"The 'device' parameter of harvest must be 'cuda' or 'cpu'. Got {device!r}.")
    env = {"PYTHONUNBUFFERED": "1"}
    if cache_dir is not None:
        env["TORCHINDUCTOR_CACHE_DIR"] = str(cache_dir)
        env["TRITON_CACHE_DIR"] = str(Path(cache_dir) / "triton")
    summary = HarvestSummary()
    t0 = time.perf_counter()
    queue = list(reversed(tasks))
    lock = threading.Lock()
    pool = [IsolatedWorker(f"harvest{i}", env=env) for i in range(min(workers, max(1, len(tasks))))]

    def next_task() -> HarvestTask | None:
        with lock:
            if budget_s is not None and time.perf_counter() - t0 > budget_s:
                summary.tasks_skipped += len(queue)
                queue.clear()
            return queue.pop() if queue else None

    def serve(worker: IsolatedWorker) -> None:
        while (task := next_task()) is not None:
            payload = {"program": task.program, "shape": list(task.shape), "dtype": task.dtype,
                       "seed": task.seed, "device": device}
            try:
                result = worker.call(_JOB, payload, task_timeout_s)
            except RuntimeError as exc:  # the worker could not (re)start
                result = None
                error = f"{task.label()}: worker did not start: {exc}"
            with lock:
                if result is None or result.kind != "ok":
                    summary.tasks_failed += 1
                    if result is not None:
                        error = f"{task.label()}: {result.kind}: {result.error_type or ''} {result.error}"[:2000]
                    summary.errors.append(error)
                    logger.warning("harvest %s", error[:500])
                    continue
                summary.tasks_done += 1
                summary.errors.extend(f"{task.label()}: {e}"[:2000] for e in result.value.get("errors", []))
                new = 0
                for data in result.value.get("kernels", []):
                    try:
                        kernel = HarvestedKernel.from_dict(data, f"kernel from {task.label()}")
                    except InvalidParameterError as exc:
                        summary.errors.append(str(exc)[:2000])
                        continue
                    if kernel.kernel_id in summary.kernels:
                        summary.kernels[kernel.kernel_id] = _merge(summary.kernels[kernel.kernel_id], kernel)
                        continue
                    summary.kernels[kernel.kernel_id] = kernel
                    new += 1
                    if on_kernel is not None:
                        on_kernel(kernel)
                done = summary.tasks_done + summary.tasks_failed
                logger.info("harvest [%d/%d] %s: %d kernels (%d new), compile %.1f s; %d distinct, %.0f s",
                            done, len(tasks), task.label(), len(result.value.get("kernels", [])), new,
                            result.value.get("compile_s", 0.0), len(summary.kernels), time.perf_counter() - t0)

    try:
        with ThreadPoolExecutor(len(pool), thread_name_prefix="kc-harvest") as executor:
            list(executor.map(serve, pool))
    finally:
        for worker in pool:
            worker.close()
    summary.wall_s = time.perf_counter() - t0
    return summary


def harvest_header(device: str, summary: HarvestSummary | None = None, **fields: Any) -> dict[str, Any]:
    """A library header: versions of torch and Triton, the device, and the harvest summary."""
    import torch
    import triton

    name = torch.cuda.get_device_name(0) if device == "cuda" and torch.cuda.is_available() else "cpu-interpreter"
    header = library_header(torch=torch.__version__, triton=triton.__version__, cuda=torch.version.cuda,
                            device=name, **fields)
    if summary is not None:
        header["harvest"] = summary.as_dict()
    return header


class KernelStream:
    """Append kernels to a JSON-lines library file as they arrive (header first), flushing each line."""

    def __init__(self, path: str | os.PathLike[str], header: Mapping[str, Any]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._handle = open(self.path, "w", encoding="utf-8")  # noqa: SIM115 - closed in close()
        self._handle.write(json.dumps(dict(header), sort_keys=True) + "\n")
        self._handle.flush()
        self.count = 0

    def __call__(self, kernel: HarvestedKernel) -> None:
        """Append one kernel."""
        self._handle.write(json.dumps(kernel.to_dict(), sort_keys=True) + "\n")
        self._handle.flush()
        self.count += 1

    def close(self) -> None:
        """Close the file."""
        self._handle.close()
