"""Compact prompts that describe a candidate to a language model: a shared prefix and a short suffix.

Every candidate of one (source, problem, dtype, device) shares the *prefix*::

    Triton kernel softmax/online, float16, NVIDIA H200, problem M=4096 N=4096
    <the source text, comments and docstrings removed, indentation compressed>

and differs only in its *suffix*, the configuration::

    config: BLOCK_N=1024 num_stages=2 num_warps=8
    runtime:

so a batch of candidates encodes the prefix once and reuses its key-value cache for all their suffixes
(:mod:`kernelcast.surrogate.llm.regressor`), which is what makes thousands of candidates per second
possible. Plain Python: no polars, no torch.
"""

from __future__ import annotations

import functools
import io
import json
import re
import tokenize
from collections.abc import Mapping
from typing import Any

SOURCE_MISSING = "(source text not available)"
"""What the prefix holds for a candidate whose source text is unknown."""

SUFFIX_END = "\nruntime:"
"""Every suffix ends with this marker: the head reads the hidden state of its last token."""


def _strip_comments(source: str) -> str:
    """Remove comments and docstrings of Python source; the text is returned unchanged if it does not tokenize."""
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(source).readline))
    except (tokenize.TokenError, IndentationError, SyntaxError):
        return source
    kept: list[tokenize.TokenInfo] = []
    previous = tokenize.INDENT
    for tok in tokens:
        if tok.type == tokenize.COMMENT:
            continue
        # A string statement right after a newline/indent (or at the start) is a docstring.
        if tok.type == tokenize.STRING and previous in (tokenize.INDENT, tokenize.NEWLINE, tokenize.DEDENT,
                                                         tokenize.NL, tokenize.ENCODING):
            previous = tok.type
            continue
        kept.append(tok)
        if tok.type not in (tokenize.NL, tokenize.COMMENT):
            previous = tok.type
    try:
        return tokenize.untokenize(kept)
    except ValueError:
        return source


@functools.lru_cache(maxsize=256)  # a search forecasts the same few sources over and over (~4 ms each)
def compress_source(source: str | None) -> str:
    """A shorter equivalent of a kernel's source for a prompt.

    Comments and docstrings go, blank lines go, each indentation level becomes one space, and runs of
    spaces inside a line become one. Decorators, signatures and the body stay.

    Parameters
    ----------
    source : str or None
        Python source of the kernel (and its launcher); None or empty gives :data:`SOURCE_MISSING`.
    """
    if not source:
        return SOURCE_MISSING
    text = _strip_comments(source)
    lines: list[str] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        stripped = line.lstrip(" ")
        depth = (len(line) - len(stripped)) // 4
        body = re.sub(r"[ \t]+", " ", stripped.rstrip())
        body = re.sub(r" ?([=+\-*/<>,:()\[\]]) ?", r"\1", body) if not body.startswith(("@", "def ")) else body
        lines.append(" " * depth + body)
    return "\n".join(lines)


def _compact_json(text: str | None) -> str:
    """``{"M":4096,"N":4096}`` -> ``M=4096 N=4096`` (other values verbatim)."""
    if not text:
        return "?"
    try:
        value = json.loads(text)
    except (json.JSONDecodeError, TypeError):
        return str(text)
    if isinstance(value, Mapping):
        return " ".join(f"{k}={_scalar(v)}" for k, v in value.items())
    return _scalar(value)


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, list | tuple):
        return "x".join(_scalar(v) for v in value)
    return str(value)


def prefix_text(
    family: str, variant: str | None, source: str | None, problem_json: str, dtype: str, device: str
) -> str:
    """The shared prefix of every candidate of one (source, problem, dtype, device)."""
    kernel = f"{family}/{variant}" if variant else family
    head = f"Triton kernel {kernel}, {dtype}, {device}, problem {_compact_json(problem_json)}"
    return f"{head}\n{compress_source(source)}\n"


def suffix_text(config_json: str) -> str:
    """The per-candidate suffix: its configuration and the :data:`SUFFIX_END` marker."""
    return f"config: {_compact_json(config_json)}{SUFFIX_END}"


def prefix_key(source_hash: str | None, problem_json: str, dtype: str, device: str) -> str:
    """Key of a prefix: candidates with the same key share it."""
    return "\x1f".join(str(v) for v in (source_hash, problem_json, dtype, device))
