"""The on-disk model directory: JSON metadata next to model files, never pickle.

Layout of a model directory::

    DIR/model.json        format, surrogate class, hyperparameters, feature schema version and names,
                          featurizer state, training-data identity, calibration state, versions
    DIR/<name>.txt        LightGBM boosters in LightGBM's text format (GBM surrogate)
    DIR/<name>.skops      scikit-learn estimators in skops format (random-forest surrogate)

Loading checks the format and the feature schema version before anything else, and a mismatch names
both versions.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from kernelcast.exceptions import InvalidParameterError, SchemaVersionError
from kernelcast.surrogate.features import FEATURE_SCHEMA_VERSION, check_feature_schema

MODEL_FILE = "model.json"
FORMAT = "kernelcast-surrogate"
FORMAT_VERSION = 1
"""Version of the model-directory layout (independent of the feature schema version)."""

IDENTITY_COLUMNS: tuple[str, ...] = ("source_hash", "config_json", "problem_json", "dtype", "device")


def json_safe(value: Any) -> Any:
    """``value`` with NaN/inf floats turned into None / "inf" / "-inf" and numpy scalars into Python ones."""
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return [json_safe(v) for v in value.tolist()]
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        f = float(value)
        if math.isnan(f):
            return None
        if math.isinf(f):
            return "inf" if f > 0 else "-inf"
        return f
    return value


def float_from_json(value: Any) -> float:
    """Inverse of :func:`json_safe` for one float."""
    if value is None:
        return math.nan
    if value == "inf":
        return math.inf
    if value == "-inf":
        return -math.inf
    return float(value)


def training_identity(frame: pl.DataFrame, data_path: str | os.PathLike[str] | None) -> dict[str, Any]:
    """What a model was trained on: a SHA-256 of the sorted record keys, the row count, the dataset path."""
    keys = frame.select([pl.col(c).cast(pl.String).fill_null("") for c in IDENTITY_COLUMNS])
    lines = sorted(keys.select(pl.concat_str(pl.all(), separator="\x1f")).to_series().to_list())
    digest = hashlib.sha256("\n".join(lines).encode("utf-8")).hexdigest()
    return {
        "key_sha256": digest,
        "n_rows": frame.height,
        "n_ok": int((frame["status"] == "ok").sum()) if "status" in frame.columns else None,
        "data_path": str(Path(data_path).resolve()) if data_path is not None else None,
        "families": sorted(frame["family"].unique().drop_nulls().to_list()),
        "devices": sorted(frame["device"].unique().drop_nulls().to_list()),
    }


def versions() -> dict[str, str]:
    """Versions of the software that wrote a model."""
    import importlib.metadata

    from kernelcast import __version__ as kernelcast_version

    out = {"kernelcast": str(kernelcast_version), "python": platform.python_version(), "numpy": np.__version__,
           "polars": pl.__version__}
    for name in ("lightgbm", "scikit-learn"):  # absent packages are left out (e.g. no lightgbm on a GPU image)
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


def write_metadata(path: Path, metadata: Mapping[str, Any]) -> None:
    """Write ``model.json`` atomically into the model directory ``path``."""
    path.mkdir(parents=True, exist_ok=True)
    body = {"format": FORMAT, "format_version": FORMAT_VERSION, "feature_schema_version": FEATURE_SCHEMA_VERSION,
            **metadata}
    tmp = path / f".{MODEL_FILE}.tmp"
    tmp.write_text(json.dumps(json_safe(body), indent=1, sort_keys=False, allow_nan=False))
    os.replace(tmp, path / MODEL_FILE)


def read_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and check ``model.json`` of the model directory ``path``.

    Raises
    ------
    InvalidParameterError
        If ``path`` is not a kernelcast model directory.
    SchemaVersionError
        If the directory layout is newer than this code, or the feature schema version differs
        (:class:`~kernelcast.surrogate.features.FeatureSchemaMismatchError`, naming both versions).
    """
    file = Path(path) / MODEL_FILE
    if not file.is_file():
        raise InvalidParameterError(
            f"The model directory {str(path)!r} holds no {MODEL_FILE}; train one with 'kernelcast train'."
        )
    try:
        meta = json.loads(file.read_text())
    except json.JSONDecodeError as exc:
        raise InvalidParameterError(f"The model file {str(file)!r} is not valid JSON: {exc}") from exc
    if meta.get("format") != FORMAT:
        raise InvalidParameterError(
            f"The file {str(file)!r} is not a kernelcast surrogate (format {meta.get('format')!r}, "
            f"expected {FORMAT!r})."
        )
    if int(meta.get("format_version", 0)) > FORMAT_VERSION:
        raise SchemaVersionError(f"The model directory {str(path)!r}", meta["format_version"], FORMAT_VERSION)
    check_feature_schema(meta.get("feature_schema_version"), f"The model in {str(path)!r}")
    return meta
