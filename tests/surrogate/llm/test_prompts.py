"""Prompts: compressed sources, the shared prefix and the configuration suffix."""

from __future__ import annotations

from kernelcast.surrogate.llm import prompts

SOURCE = '''
@triton.jit
def add_kernel(x_ptr, y_ptr, n, BLOCK: tl.constexpr):
    """Add two vectors."""
    # one program per block
    pid = tl.program_id(0)
    offs = pid * BLOCK + tl.arange(0, BLOCK)

    x = tl.load(x_ptr + offs, mask=offs < n)  # masked
    tl.store(y_ptr + offs, x + 1, mask=offs < n)
'''


def test_compress_source_drops_comments_docstrings_and_blank_lines():
    text = prompts.compress_source(SOURCE)
    assert "Add two vectors" not in text
    assert "#" not in text
    assert "\n\n" not in text
    assert "@triton.jit" in text
    assert "tl.store(y_ptr+offs,x+1,mask=offs<n)" in text
    assert len(text) < 0.7 * len(SOURCE)
    # indentation levels survive as one space each
    assert "\n pid=tl.program_id(0)" in text


def test_compress_source_missing_and_untokenizable():
    assert prompts.compress_source(None) == prompts.SOURCE_MISSING
    assert prompts.compress_source("") == prompts.SOURCE_MISSING
    broken = 'def f(:\n    x = "unterminated\n'
    assert prompts.compress_source(broken)  # falls back to the raw text, never raises


def test_prefix_and_suffix():
    prefix = prompts.prefix_text("softmax", "online", SOURCE, '{"M":4096,"N":4096}', "float16", "NVIDIA H200")
    assert prefix.startswith("Triton kernel softmax/online, float16, NVIDIA H200, problem M=4096 N=4096\n")
    suffix = prompts.suffix_text('{"BLOCK_N":1024,"num_warps":8,"causal":false,"ratio":2.0}')
    assert suffix == "config: BLOCK_N=1024 num_warps=8 causal=false ratio=2" + prompts.SUFFIX_END
    assert prompts.suffix_text("not json") == "config: not json" + prompts.SUFFIX_END
    a = prompts.prefix_key("abc", '{"M":1}', "float16", "H200")
    assert a != prompts.prefix_key("abd", '{"M":1}', "float16", "H200")
