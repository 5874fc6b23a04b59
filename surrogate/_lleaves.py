"""Optional compiled inference of LightGBM boosters with lleaves (LLVM): the one module that imports it.

lleaves compiles a LightGBM text model into native code that returns the same predictions (to float
rounding, ~1e-15 here) several times faster than ``Booster.predict``: for the four boosters of a
:class:`~kernelcast.surrogate.gbm.GBMSurrogate` with 300 mean rounds, 0.84 s instead of 5.0 s on one core
for 200,000 candidates; with the 600 of the current default, 1.07M instead of 0.13M candidates/s on 16 host
cores of an H100 machine (the "models" rates of ``benchmarks/results/surrogate_throughput_h100_host.json``).
Compiling takes ~30 s per model, so the object code is cached by the SHA-256 of the model text under
``$KERNELCAST_CACHE/lleaves`` (default ``~/.cache/kernelcast/lleaves``), never in the model directory.

Install with ``pip install 'kernelcast[fast]'`` (lleaves 1.3 needs ``llvmlite < 0.45``).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np

from kernelcast.exceptions import InvalidParameterError


def cache_dir() -> Path:
    """Folder of the compiled object files."""
    root = os.environ.get("KERNELCAST_CACHE") or str(Path.home() / ".cache" / "kernelcast")
    return Path(root) / "lleaves"


def available() -> bool:
    """Whether lleaves can be imported."""
    try:
        import lleaves  # noqa: F401
    except ImportError:
        return False
    return True


class CompiledBooster:
    """A LightGBM booster compiled by lleaves; :meth:`predict` matches ``Booster.predict``.

    Parameters
    ----------
    booster : lightgbm.Booster
        The booster to compile (its text model is the cache key).
    n_jobs : int
        Threads of :meth:`predict`.
    """

    def __init__(self, booster: Any, *, n_jobs: int = 1) -> None:
        try:
            import lleaves
        except ImportError as exc:
            raise InvalidParameterError(
                "compiled_inference=True needs lleaves; install it with pip install 'kernelcast[fast]' "
                "(lleaves and llvmlite<0.45)."
            ) from exc
        text = booster.model_to_string()
        if "\nobjective=" not in text.split("\nTree=", 1)[0]:
            # A booster trained with a callable objective (the ranking loss, kernelcast.surrogate.ranking) names
            # none, and lleaves requires one; its predictions are raw scores, which lleaves gives for "custom".
            text = text.replace("\nfeature_names=", "\nobjective=custom\nfeature_names=", 1)
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:24]
        folder = cache_dir()
        folder.mkdir(parents=True, exist_ok=True)
        model_file = folder / f"{digest}.txt"
        if not model_file.exists():
            tmp = folder / f".{digest}.{os.getpid()}.txt"
            tmp.write_text(text)
            os.replace(tmp, model_file)
        self._model = lleaves.Model(model_file=str(model_file))
        self._model.compile(cache=str(folder / f"{digest}.o"))
        self.n_jobs = n_jobs

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Predictions for ``X`` (shape (n, d)), as ``Booster.predict`` gives them, shape (n,)."""
        return self._model.predict(np.ascontiguousarray(X, dtype=np.float64), n_jobs=self.n_jobs)
