"""Turn kernelcast's own errors into one clear line and exit code 2, not a traceback."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import typer
from rich.console import Console

from kernelcast.exceptions import KernelcastError

err_console = Console(stderr=True)


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Report a :class:`KernelcastError` as ``error: <message>`` and exit with status 2."""
    try:
        yield
    except KernelcastError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(code=2) from exc
