"""Plain-Python jobs for worker isolation tests (imported by worker processes through PYTHONPATH)."""

import os
import time

from kernelcast.measurement.worker import FatalJobError


def echo(payload):
    return {"pid": os.getpid(), "payload": payload}


def boom(payload):
    raise ValueError(f"boom {payload}")


def hang(payload):
    time.sleep(3600)


def abort(payload):
    os.write(2, b"about to abort\n")
    os.abort()


def segfault(payload):
    import ctypes

    ctypes.string_at(0)


def fatal(payload):
    raise FatalJobError("context poisoned", kind="runtime_error")


def environment(payload):
    return {name: os.environ.get(name) for name in payload}
