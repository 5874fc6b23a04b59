"""Isolated worker processes: a job that crashes, hangs or raises never takes the run down.

An :class:`IsolatedWorker` owns one spawned process. :meth:`IsolatedWorker.call` sends it a job (an
importable ``module:function`` and a picklable payload) and waits at most ``timeout_s``:

* the job returns -> ``WorkerResult(kind="ok", value=...)``;
* the job raises -> ``kind="error"`` with the exception's type, message and traceback; if the job marked the
  error fatal (e.g. a CUDA error that poisons the context) the process exits and is replaced;
* the job runs past ``timeout_s`` -> the process is killed, ``kind="timeout"``;
* the process dies (abort, segfault, illegal address) -> ``kind="crashed"`` with the exit code and the tail
  of its stderr.

The process is (re)started lazily on the next call, so a broken worker costs one restart, not the run.
The child sets its environment (e.g. ``TRITON_INTERPRET``, ``CUDA_VISIBLE_DEVICES``) before importing
anything, which is why this module imports neither torch nor triton.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Mapping
from multiprocessing.connection import Connection
from typing import Any, Literal

logger = logging.getLogger(__name__)

ResultKind = Literal["ok", "error", "timeout", "crashed"]


class FatalJobError(Exception):
    """Raised by a job whose failure leaves its process unusable (the worker exits after reporting it)."""

    def __init__(self, message: str, kind: str = "runtime_error") -> None:
        super().__init__(message)
        self.kind = kind

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (str(self), self.kind))


@dataclasses.dataclass(frozen=True)
class WorkerResult:
    """Outcome of one job in a worker process.

    Attributes
    ----------
    kind : {"ok", "error", "timeout", "crashed"}
        What happened.
    value : Any
        The job's return value when ``kind == "ok"``.
    error_type, error : str or None
        Exception class name and message (``"error"``), or a description (``"timeout"``, ``"crashed"``).
    traceback : str or None
        Formatted traceback of an ``"error"``, or the stderr tail of a ``"crashed"`` process.
    fatal : bool
        The worker process was replaced after this job.
    elapsed_s : float
        Wall time the parent waited (s).
    """

    kind: ResultKind
    value: Any = None
    error_type: str | None = None
    error: str | None = None
    traceback: str | None = None
    fatal: bool = False
    elapsed_s: float = 0.0


def _resolve(ref: str) -> Any:
    module_name, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module_name), attr)


def _worker_main(fd: int, initializer: str | None) -> None:
    """Child side: serve jobs over the inherited socket ``fd`` until told to stop."""
    conn = Connection(fd)
    if initializer:
        _resolve(initializer)()
    conn.send(("ready", os.getpid()))
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message is None:
            return
        fn_ref, payload = message
        try:
            value = _resolve(fn_ref)(payload)
            conn.send(("ok", value))
        except FatalJobError as exc:
            conn.send(("error", (type(exc).__name__, str(exc), traceback.format_exc(), True)))
            conn.close()
            os._exit(3)
        except BaseException as exc:  # noqa: BLE001 - every failure of a job is data for the parent
            conn.send(("error", (type(exc).__name__, str(exc), traceback.format_exc(), False)))


class IsolatedWorker:
    """One replaceable worker process. See the module docstring.

    Parameters
    ----------
    name : str
        Label for logs.
    env : mapping of str to str, optional
        Environment variables set in the child before it imports anything.
    initializer : str, optional
        ``module:function`` run once in the child after start-up (e.g. to initialise CUDA).
    nice : int
        Scheduling niceness added to the child (compile workers run at lower priority than the GPU worker,
        whose host-side launches must not wait for a CPU core).
    startup_timeout_s : float
        Wall-time limit of start-up and ``initializer`` (s).
    """

    def __init__(
        self,
        name: str,
        *,
        env: Mapping[str, str] | None = None,
        initializer: str | None = None,
        startup_timeout_s: float = 180.0,
        nice: int = 0,
    ) -> None:
        self.name = name
        self.nice = nice
        self.env = dict(env or {})
        self.initializer = initializer
        self.startup_timeout_s = startup_timeout_s
        self.restarts = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._conn: Connection | None = None
        handle, self._stderr_path = tempfile.mkstemp(prefix=f"kernelcast-{name}-", suffix=".stderr")
        os.close(handle)

    # -- lifecycle ----------------------------------------------------------------------------------
    @property
    def alive(self) -> bool:
        """Whether the process is running."""
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        """Start the process if it is not running; raise ``RuntimeError`` if it cannot start."""
        if self.alive:
            return
        self._cleanup()
        # A fresh interpreter (not multiprocessing's spawn), so the caller's __main__ is never re-imported;
        # jobs travel over a socket pair whose child end the process inherits.
        parent_sock, child_sock = socket.socketpair()
        with open(self._stderr_path, "w") as stderr:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "kernelcast.measurement._worker_entry", str(child_sock.fileno()),
                 self.initializer or ""],
                env={**os.environ, **self.env},
                stdin=subprocess.DEVNULL,
                stdout=stderr,
                stderr=stderr,
                pass_fds=(child_sock.fileno(),),
                start_new_session=True,
                preexec_fn=(lambda: os.nice(self.nice)) if self.nice else None,  # noqa: PLW1509
            )
        child_sock.close()
        self._conn = Connection(parent_sock.detach())
        if not self._conn.poll(self.startup_timeout_s):
            tail = self.stderr_tail()
            self._kill()
            raise RuntimeError(f"worker {self.name} did not start within {self.startup_timeout_s} s: {tail}")
        try:
            self._conn.recv()
        except (EOFError, OSError) as exc:
            tail = self.stderr_tail()
            self._kill()
            raise RuntimeError(f"worker {self.name} died while starting: {tail}") from exc

    def _kill(self) -> None:
        if self.alive:
            # The worker leads its own session: kill its children too (e.g. a hung compiler).
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self._proc.pid, signal.SIGKILL)
        self._cleanup()

    def _cleanup(self) -> None:
        if self._proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=10)
        if self._conn is not None:
            self._conn.close()
        self._proc = None
        self._conn = None

    def close(self) -> None:
        """Ask the process to exit, then make sure it has."""
        if self.alive and self._conn is not None:
            try:
                self._conn.send(None)
                self._proc.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                pass
        self._kill()
        if os.path.exists(self._stderr_path):
            os.unlink(self._stderr_path)

    def stderr_tail(self, max_chars: int = 4000) -> str:
        """The end of the process's stderr (the text a crash left behind)."""
        try:
            with open(self._stderr_path, errors="replace") as handle:
                return handle.read()[-max_chars:]
        except OSError:
            return ""

    # -- jobs ---------------------------------------------------------------------------------------
    def call(self, fn_ref: str, payload: Any, timeout_s: float) -> WorkerResult:
        """Run ``fn_ref(payload)`` in the process, waiting at most ``timeout_s`` seconds."""
        self.start()
        assert self._conn is not None  # noqa: S101 - set by start()
        t0 = time.perf_counter()
        try:
            self._conn.send((fn_ref, payload))
        except (OSError, BrokenPipeError):
            return self._crashed(t0)
        if not self._conn.poll(timeout_s):
            self._kill()
            self.restarts += 1
            logger.warning("worker %s: job timed out after %.1f s; replaced", self.name, timeout_s)
            return WorkerResult(kind="timeout", error=f"no result within {timeout_s:g} s; worker killed",
                                fatal=True, elapsed_s=time.perf_counter() - t0)
        try:
            kind, value = self._conn.recv()
        except (EOFError, OSError):
            return self._crashed(t0)
        elapsed = time.perf_counter() - t0
        if kind == "ok":
            return WorkerResult(kind="ok", value=value, elapsed_s=elapsed)
        error_type, message, tb, fatal = value
        if fatal:
            self._cleanup()
            self.restarts += 1
        return WorkerResult(kind="error", error_type=error_type, error=message, traceback=tb, fatal=fatal,
                            elapsed_s=elapsed)

    def _crashed(self, t0: float) -> WorkerResult:
        proc = self._proc
        code = None
        if proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                code = proc.wait(timeout=10)
        tail = self.stderr_tail()
        self._cleanup()
        self.restarts += 1
        logger.warning("worker %s crashed (exit code %s); replaced", self.name, code)
        return WorkerResult(kind="crashed", error=f"worker process died with exit code {code}", traceback=tail,
                            fatal=True, elapsed_s=time.perf_counter() - t0)

    def __enter__(self) -> IsolatedWorker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

