"""Reading the raw files that importers take: JSON, plain or gzipped, possibly cut short.

Every importer reports a file it cannot read with :func:`malformed`, so the message always names the file and
the field, in one form: ``The file '...' cannot be imported: its field 'device_name' is empty. ...``.
"""

from __future__ import annotations

import json
import logging
import os
import zlib
from pathlib import Path
from typing import Any

from kernelcast.exceptions import InvalidParameterError

logger = logging.getLogger(__name__)

_GZIP_MAGIC = b"\x1f\x8b"


def malformed(path: str | os.PathLike[str], field: str, problem: str) -> InvalidParameterError:
    """Build the error for a file whose ``field`` cannot be read.

    Parameters
    ----------
    path : path-like
        The offending file.
    field : str
        The field, e.g. ``"device_name"`` or ``"cache['1,2'].time"``; ``"(file)"`` for the file as a whole.
    problem : str
        What is wrong, completing "its field 'X' ...", e.g. ``"is missing"``.
    """
    return InvalidParameterError(f"The file {str(path)!r} cannot be imported: its field {field!r} {problem}")


def read_bytes(path: str | os.PathLike[str]) -> tuple[bytes, bool]:
    """Return the content of ``path``, gunzipped when it is gzip data (told by its magic bytes, not its name).

    A gzip stream cut short (a copy or a download interrupted) yields what it holds up to the cut.

    Returns
    -------
    data : bytes
        The (decompressed) content.
    cut_short : bool
        Whether the gzip stream ended before its end-of-stream marker.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise malformed(path, "(file)", f"cannot be read: {exc}") from exc
    if not raw.startswith(_GZIP_MAGIC):
        return raw, False
    chunks: list[bytes] = []
    rest = raw
    while rest.startswith(_GZIP_MAGIC):  # a gzip file may hold several members, one after another
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            chunks.append(inflater.decompress(rest))
        except zlib.error as exc:
            raise malformed(path, "(file)", f"is not valid gzip data: {exc}") from exc
        if not inflater.eof:
            return b"".join(chunks), True
        rest = inflater.unused_data
    return b"".join(chunks), False


def read_text(path: str | os.PathLike[str]) -> tuple[str, bool]:
    """Return the UTF-8 text of ``path`` (see :func:`read_bytes`); a character cut in half at the end is dropped.

    Returns
    -------
    text : str
        The text.
    cut_short : bool
        Whether a gzip stream ended before its end-of-stream marker.
    """
    data, cut_short = read_bytes(path)
    try:
        return data.decode("utf-8"), cut_short
    except UnicodeDecodeError as exc:
        if exc.start >= len(data) - 3:  # a multi-byte character cut by truncation
            return data[: exc.start].decode("utf-8"), True
        raise malformed(path, "(file)", f"is not UTF-8 text (byte {exc.start})") from exc


def load_json(path: str | os.PathLike[str]) -> Any:
    """Parse the JSON file ``path`` (plain or gzipped), with an error that names the file."""
    text, _ = read_text(path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise malformed(path, "(file)", f"is not valid JSON: {exc}") from exc


def sniff_format(path: str | os.PathLike[str]) -> str:
    """Tell which tuner wrote ``path`` from its content.

    Returns
    -------
    str
        ``"ktt"`` (a KTT tuning output: ``Metadata`` and ``Results``) or ``"kernel_tuner"`` (a Kernel Tuner
        cache: ``tune_params_keys`` and ``cache``), told from the first 64 kB, so a truncated file is told too.
    """
    text, _ = read_text(path)
    head = text[:65536]
    if '"Metadata"' in head and '"Results"' in head:
        return "ktt"
    if '"tune_params_keys"' in head or '"cache"' in head:
        return "kernel_tuner"
    raise malformed(
        path,
        "(file)",
        "has neither 'Metadata'/'Results' (KTT output) nor 'tune_params_keys'/'cache' (Kernel Tuner cache) "
        "near its start, so its format is unknown",
    )
