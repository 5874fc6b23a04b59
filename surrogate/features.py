"""The Featurizer: candidate or record frames to a numeric matrix, with stable, versioned feature names.

Features, in column order (names are saved with every model; a model refuses a featurizer of another
:data:`FEATURE_SCHEMA_VERSION`):

``family``, ``variant``, ``dtype``
    Categorical codes (vocabulary learned by :meth:`Featurizer.fit`; unseen values are missing).
``dtype.bytes``
    Bytes per element.
``config.<knob>``
    Each knob of the union of knobs over the families seen: numeric where every value is a number or a
    bool, a categorical code otherwise; a list-valued knob becomes ``config.<knob>[i]``. Missing where a
    family has no such knob.
``problem.<dim>``
    Problem dimensions and options from ``problem_json``, the same way.
``compiled.<field>``
    Compiler metadata where the frame carries it (``n_regs``, ``n_spills``, ``shared_bytes``,
    ``num_warps``, ``num_stages``); missing for candidates not yet compiled.
``device.<property>``
    From :mod:`kernelcast.surrogate.devices` (SM count, bandwidth, peak rates, L2, compute capability,
    per-SM limits, clock); missing for an unknown device. The device name itself is not a feature, so a
    model can be asked about a GPU it was not trained on.
``derived.<quantity>``
    For families with a work model (kernelcast's own families through ``Family.flops``/``min_bytes``,
    and :data:`IMPORTED_WORK_MODELS`): FLOPs, minimum bytes, arithmetic intensity, roofline time (ms);
    for configurations with ``BLOCK_<dim>`` knobs: number of output tiles (over the dims with such a knob,
    except :data:`REDUCTION_DIMS`), waves over the device's SMs, the tile efficiency (the useful fraction of
    the padded blocks, ``prod dim / (ceil(dim / block) * block)``), and per such dim the block count
    ``derived.blocks.<dim> = ceil(dim / block)`` (loop trips along a reduced dim);
    with compiled metadata: blocks per SM and occupancy.
``geometry.<quantity>``
    How the configuration's blocks meet the problem shape (:data:`~kernelcast.surrogate.geometry.GEOMETRY_FEATURES`:
    programs, waves and the fullness of the last wave, loop trips, padding of the last tile, work and elements
    per program and per thread), from the launch geometry of the family
    (:mod:`kernelcast.surrogate.geometry`); missing for a family without one.
``source.<count>``
    Simple source-text features (length, lines, counts of ``tl.dot``, atomics, loops, loads, stores,
    reductions, barriers) from a ``source_text`` column or the sources given to :meth:`Featurizer.fit`.

The log-time target is ``ln(time_ms)`` (:func:`kernelcast.surrogate.tasks.log_time`).
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import polars as pl

from kernelcast.exceptions import NotFittedError, SchemaVersionError
from kernelcast.measurement.records import COMPILED_COLUMNS
from kernelcast.surrogate.devices import DeviceSpec, device_spec
from kernelcast.surrogate.geometry import GEOMETRY_FEATURES, geometry_features, geometry_of
from kernelcast.surrogate.tasks import require_candidates

logger = logging.getLogger(__name__)

FEATURE_SCHEMA_VERSION = 3
"""Version of the feature layout. Bump it when a feature is added, removed or changes meaning.

Version 2 added ``derived.tile_efficiency`` and the per-dimension block counts ``derived.blocks.<dim>``;
version 3 the launch-geometry features ``geometry.<quantity>``."""

DTYPE_BYTES: dict[str, float] = {
    "float64": 8, "float32": 4, "tfloat32": 4, "float16": 2, "bfloat16": 2, "float8_e4m3fn": 1, "float8_e5m2": 1,
    "int8": 1, "int32": 4, "int64": 8,
}
"""Bytes per element of the dtypes kernelcast and the importers write."""

DEVICE_FEATURES: tuple[str, ...] = (
    "sm_count", "mem_bandwidth_gbs", "fp32_tflops", "fp16_tensor_tflops", "l2_mb", "compute_capability",
    "regs_per_sm", "shared_kb_per_sm", "max_threads_per_sm", "boost_clock_mhz",
)
"""Device properties used as features (fields of :class:`~kernelcast.surrogate.devices.DeviceSpec`)."""

SCALE_FEATURES: tuple[str, ...] = (
    "device.sm_count", "device.mem_bandwidth_gbs", "device.fp32_tflops", "device.fp16_tensor_tflops", "device.l2_mb",
    "device.boost_clock_mhz", "derived.roofline_ms",
)
"""Features that measure how big or fast a GPU is, rather than its architecture. Models that hand the task's
level to :class:`~kernelcast.surrogate.level.TaskLevelModel` leave them out (``device_features="architecture"``):
with few training GPUs a tree splits on them arbitrarily and misroutes an unseen GPU."""

DERIVED_FEATURES: tuple[str, ...] = (
    "flops", "min_bytes", "arithmetic_intensity", "roofline_ms", "tiles", "waves", "wave_efficiency",
    "blocks_per_sm", "occupancy", "tile_efficiency",
)
"""Derived quantities, in order."""

_SOURCE_PATTERNS: dict[str, re.Pattern[str]] = {
    "n_dot": re.compile(r"tl\.dot\b|\bmma\b|wmma"),
    "n_atomic": re.compile(r"tl\.atomic_\w+|\batomic[A-Z]\w*"),
    "n_loops": re.compile(r"\bfor\b|\bwhile\b"),
    "n_load": re.compile(r"tl\.load\b"),
    "n_store": re.compile(r"tl\.store\b"),
    "n_reduce": re.compile(r"tl\.(?:sum|max|min|reduce|argmax|argmin|cumsum)\b"),
    "n_barrier": re.compile(r"__syncthreads|tl\.debug_barrier"),
    "n_where": re.compile(r"tl\.where\b"),
}
SOURCE_FEATURES: tuple[str, ...] = ("n_chars", "n_lines", *_SOURCE_PATTERNS)
"""Source-text features, in order."""

REDUCTION_DIMS: frozenset[str] = frozenset({"K"})
"""Problem dims that programs loop over rather than split into tiles (the GEMM ``K`` by convention)."""

_FILL_ROWS = 4096
"""Rows of the feature matrix written at a time (a block of about 2.5 MB stays in cache)."""

MAX_BLOCKS_PER_SM_PRE_HOPPER = 16
MAX_BLOCKS_PER_SM_HOPPER = 32

WorkModel = Callable[[Mapping[str, Any], str], tuple[float, float]]
"""``(problem, dtype) -> (flops, min_bytes)`` of a family that has no kernelcast Family object."""


def _sizes(problem: Mapping[str, Any], count: int) -> list[float]:
    """The first ``count`` sizes of a Kernel Tuner problem (``{"n0": ..., "n1": ...}`` from the importer)."""
    sizes = [float(problem[f"n{i}"]) for i in range(count) if f"n{i}" in problem]
    if not sizes:
        raise ValueError(f"no n0.. sizes in {dict(problem)!r}")
    return sizes + [sizes[-1]] * (count - len(sizes))


def _kt_gemm(problem: Mapping[str, Any], dtype: str) -> tuple[float, float]:
    m, n, k = _sizes(problem, 3)  # the benchmark hub's GEMM is square: K = N when not given
    size = DTYPE_BYTES.get(dtype, 4)
    return 2.0 * m * n * k, size * (m * k + k * n + m * n)


def _kt_convolution(problem: Mapping[str, Any], dtype: str) -> tuple[float, float]:
    w, h = _sizes(problem, 2)
    fw = fh = 15.0  # the benchmark hub's filter (filter_width/height are fixed knobs of the space)
    size = DTYPE_BYTES.get(dtype, 4)
    return 2.0 * w * h * fw * fh, size * ((w + fw - 1) * (h + fh - 1) + w * h + fw * fh)


def _kt_pnpoly(problem: Mapping[str, Any], dtype: str) -> tuple[float, float]:
    (points,) = _sizes(problem, 1)
    vertices = 600.0  # the benchmark hub's polygon
    size = DTYPE_BYTES.get(dtype, 4)
    # Each point tests every edge (about 8 flops per edge test); reads its 2 coordinates, writes one int.
    return 8.0 * points * vertices, size * 2 * points + 4 * points + size * 2 * vertices


IMPORTED_WORK_MODELS: dict[str, WorkModel] = {
    "kernel_tuner/Xgemm": _kt_gemm,
    "kernel_tuner/convolution_kernel": _kt_convolution,
    "kernel_tuner/cn_pnpoly": _kt_pnpoly,
}
"""Work models of imported kernels (family names as ``kernelcast dataset import-kernel-tuner`` writes them):
Kernel Tuner's CLBlast GEMM, 2D convolution with a 15x15 filter, and point-in-polygon with 600 vertices, as
in the Kernel Tuner benchmark hub. Approximate: they feed the roofline features, which only need the right
order of magnitude."""


def _kind_of(values: list[Any]) -> tuple[str, int]:
    """``("numeric" | "categorical" | "list", list length)`` of a knob from its observed values."""
    present = [v for v in values if v is not None]
    if present and all(isinstance(v, list | tuple) for v in present):
        if all(isinstance(x, int | float) for v in present for x in v):
            return "list", max(len(v) for v in present)
        return "categorical", 0
    if all(isinstance(v, int | float) for v in present):  # bools are ints
        return "numeric", 0
    return "categorical", 0


def _unique_codes(column: pl.Series) -> tuple[pl.Series, np.ndarray]:
    """The distinct values of ``column`` (as strings, nulls as "") and each row's index into them.

    A column with one value (a batch of candidates of one task) costs one comparison; otherwise rows are
    grouped by a 64-bit hash, checked against the strings themselves (exact join on a collision).
    """
    strings = column.cast(pl.String).fill_null("").rename("value")
    n = strings.len()
    if n == 0:
        return strings, np.zeros(0, dtype=np.int64)
    first = strings[0]
    if (strings == first).all():
        return strings.head(1), np.zeros(n, dtype=np.int64)
    _, first_rows, codes = np.unique(strings.hash(seed=0).to_numpy(), return_index=True, return_inverse=True)
    uniques = strings.gather(first_rows)
    codes = codes.reshape(-1).astype(np.int64)
    if (uniques.gather(codes) == strings).all():
        return uniques, codes
    uniques = strings.unique(maintain_order=True)  # pragma: no cover - a 64-bit hash collision
    codes = strings.to_frame().join(uniques.to_frame().with_row_index("code"), on="value", how="left",
                                    maintain_order="left")["code"].to_numpy().astype(np.int64)
    return uniques, codes


def _combine(codes: Mapping[str, tuple[pl.Series, np.ndarray]], columns: Sequence[str]) -> tuple[
        list[tuple[str, ...]], np.ndarray, np.ndarray]:
    """Distinct combinations of already-coded string columns: values, each row's index, a first row of each."""
    n = codes[columns[0]][1].shape[0]
    key = np.zeros(n, dtype=np.int64)
    for c in columns:
        key = key * codes[c][0].len() + codes[c][1]
    if n and (key == key[0]).all():
        combos_first, inverse = np.zeros(1, dtype=np.int64), np.zeros(n, dtype=np.int64)
    else:
        _, combos_first, inverse = np.unique(key, return_index=True, return_inverse=True)
        inverse = inverse.reshape(-1)
    values = {c: codes[c][0].to_list() for c in columns}
    labels = [tuple(values[c][codes[c][1][row]] for c in columns) for row in combos_first.tolist()]
    return labels, inverse, combos_first


def task_groups(frame: pl.DataFrame, columns: Sequence[str]) -> tuple[list[tuple[str, ...]], np.ndarray, np.ndarray]:
    """Distinct value combinations of the string ``columns`` of ``frame`` (nulls as "").

    Returns
    -------
    groups : list of tuple of str
        Each distinct combination.
    codes : ndarray of shape (n,)
        Each row's index into ``groups``.
    first : ndarray of shape (len(groups),)
        A row of each group.
    """
    return _combine({c: _unique_codes(frame[c]) for c in columns}, columns)


_NDJSON_ROWS = 64
"""From this many distinct JSON texts on, they are parsed as one newline-delimited document (about twice as fast)."""


def _decode_json_objects(texts: pl.Series, dtypes: Mapping[str, pl.DataType]) -> pl.DataFrame:
    """One row per JSON object of ``texts`` (an empty text is an empty object), one column per key of ``dtypes``."""
    texts = texts.cast(pl.String).fill_null("")
    if (texts == "").any():
        texts = pl.select(pl.when(texts == "").then(pl.lit("{}")).otherwise(texts)).to_series()
    if texts.len() < _NDJSON_ROWS:
        return texts.str.json_decode(dtype=pl.Struct(dict(dtypes))).struct.unnest()
    document = texts.str.join("\n").item().encode("utf-8")
    try:
        return pl.read_ndjson(io.BytesIO(document), schema=dict(dtypes))
    except pl.exceptions.ComputeError:  # e.g. a bool where a number is expected: json_decode converts it
        return texts.str.json_decode(dtype=pl.Struct(dict(dtypes))).struct.unnest()


def _subset(lookup: Callable[[str], np.ndarray | None], rows: slice | np.ndarray) -> Callable[[str], np.ndarray | None]:
    """``lookup`` restricted to ``rows``."""
    def subset(name: str) -> np.ndarray | None:
        values = lookup(name)
        return None if values is None else values[rows]

    return subset


def source_text_features(text: str | None) -> list[float]:
    """The :data:`SOURCE_FEATURES` of one source text (NaN for a missing text)."""
    if not text:
        return [math.nan] * len(SOURCE_FEATURES)
    counts = [float(len(p.findall(text))) for p in _SOURCE_PATTERNS.values()]
    return [float(len(text)), float(text.count("\n") + 1), *counts]


def _device_row(spec: DeviceSpec | None) -> list[float]:
    if spec is None:
        return [math.nan] * len(DEVICE_FEATURES)
    return [float(getattr(spec, f)) for f in DEVICE_FEATURES]


def _work(family: str, problem_json: str, dtype: str) -> tuple[float, float]:
    """``(flops, min_bytes)`` of a task, NaN where no work model applies."""
    try:
        problem = json.loads(problem_json)
    except (TypeError, ValueError):
        return math.nan, math.nan
    model = IMPORTED_WORK_MODELS.get(family)
    if model is not None:
        try:
            return model(problem, dtype)
        except (ValueError, TypeError, KeyError):
            return math.nan, math.nan
    try:
        from kernelcast.measurement.families import BUILTIN_FAMILIES, family_names, get_family

        if family not in BUILTIN_FAMILIES and family not in family_names():
            return math.nan, math.nan
        fam = get_family(family)
        from kernelcast.measurement.space import Problem

        dims = {d: int(problem[d]) for d in fam.dims}
        options = {k: v for k, v in problem.items() if k not in fam.dims}
        prob = Problem(dims=dims, dtype=dtype, options=options)
        return float(fam.flops(prob)), float(fam.min_bytes(prob))
    except Exception as exc:  # noqa: BLE001 - a family that cannot be imported here (no triton) has no work model
        logger.debug("no work model for %s %s: %s", family, problem_json, exc)
        return math.nan, math.nan


@dataclasses.dataclass(frozen=True)
class _Batch:
    """What :meth:`Featurizer.transform` has decoded of a frame, for the derived and geometry columns.

    ``codes``: distinct values and row codes of the string columns; ``knob``/``dim``: numeric knob and problem
    dim columns by name; ``compiled``, ``device``: compiler-report and device-property columns by name;
    ``dtype_bytes``: bytes per element. Every column has shape (n,).
    """

    codes: Mapping[str, tuple[pl.Series, np.ndarray]]
    knob: Callable[[str], np.ndarray | None]
    dim: Callable[[str], np.ndarray | None]
    compiled: dict[str, np.ndarray]
    device: dict[str, np.ndarray]
    dtype_bytes: np.ndarray


class Featurizer:
    """Turns a candidate or record frame into a float64 matrix with stable feature names.

    Call :meth:`fit` on training records (learns knob names, kinds and vocabularies), then
    :meth:`transform` on any frame with :data:`~kernelcast.surrogate._base.CANDIDATE_COLUMNS`.
    :meth:`to_dict`/:meth:`from_dict` give a JSON-safe state that carries :data:`FEATURE_SCHEMA_VERSION`.

    Attributes
    ----------
    feature_names_ : list of str
        Column names of :meth:`transform`'s output.
    categorical_features_ : list of str
        The names among them that hold categorical codes.
    """

    def fit(self, frame: pl.DataFrame, sources: Mapping[str, str] | pl.DataFrame | None = None) -> Featurizer:
        """Learn the feature layout from ``frame``; ``sources`` maps ``source_hash`` to source text."""
        require_candidates(frame)
        self.families_ = sorted(frame["family"].unique().drop_nulls().to_list())
        self.variants_ = sorted(frame["variant"].unique().drop_nulls().to_list())
        self.dtypes_ = sorted(frame["dtype"].unique().drop_nulls().to_list())
        self.config_keys_ = self._learn_keys(frame["config_json"])
        self.problem_keys_ = self._learn_keys(frame["problem_json"])
        self.source_table_ = self._learn_sources(frame, sources)
        names: list[str] = ["family", "variant", "dtype", "dtype.bytes"]
        categorical = ["family", "variant", "dtype"]
        for prefix, keys in (("config", self.config_keys_), ("problem", self.problem_keys_)):
            for key, spec in keys.items():
                if spec["kind"] == "list":
                    names += [f"{prefix}.{key}[{i}]" for i in range(spec["length"])]
                else:
                    names.append(f"{prefix}.{key}")
                    if spec["kind"] == "categorical":
                        categorical.append(f"{prefix}.{key}")
        names += [f"compiled.{c}" for c in COMPILED_COLUMNS]
        names += [f"device.{d}" for d in DEVICE_FEATURES]
        names += [f"derived.{d}" for d in DERIVED_FEATURES]
        names += [f"derived.blocks.{d}" for d, _ in self._block_pairs()]
        names += [f"geometry.{g}" for g in GEOMETRY_FEATURES]
        names += [f"source.{s}" for s in SOURCE_FEATURES]
        self.feature_names_ = names
        self.categorical_features_ = categorical
        return self

    @staticmethod
    def _learn_keys(column: pl.Series) -> dict[str, dict[str, Any]]:
        observed: dict[str, list[Any]] = {}
        for text in column.unique().drop_nulls().to_list():
            for key, value in json.loads(text).items():
                observed.setdefault(key, []).append(value)
        keys: dict[str, dict[str, Any]] = {}
        for key in sorted(observed):
            kind, length = _kind_of(observed[key])
            spec: dict[str, Any] = {"kind": kind}
            if kind == "list":
                spec["length"] = length
            keys[key] = spec
        # Vocabularies of categorical knobs, read back through the same decoder transform uses.
        cats = {k: pl.String() for k, s in keys.items() if s["kind"] == "categorical"}
        if cats:
            decoded = column.str.json_decode(dtype=pl.Struct(cats)).struct.unnest()
            for key in cats:
                keys[key]["values"] = sorted(decoded[key].unique().drop_nulls().to_list())
        return keys

    @staticmethod
    def _learn_sources(frame: pl.DataFrame, sources: Mapping[str, str] | pl.DataFrame | None) -> dict[str, list[float]]:
        texts: dict[str, str] = {}
        if isinstance(sources, pl.DataFrame):
            texts.update(dict(sources.select("source_hash", "source_text").iter_rows()))
        elif sources is not None:
            texts.update(sources)
        if "source_text" in frame.columns:
            texts.update(
                dict(frame.select("source_hash", "source_text").drop_nulls().unique("source_hash").iter_rows())
            )
        hashes = set(frame["source_hash"].unique().drop_nulls().to_list())
        return {h: source_text_features(t) for h, t in texts.items() if h in hashes}

    # -- transform ----------------------------------------------------------------------------------
    def _check_fitted(self) -> None:
        if not hasattr(self, "feature_names_"):
            raise NotFittedError("This Featurizer is not fitted yet. Call 'fit' with a record frame first.")

    @property
    def n_features(self) -> int:
        """Number of features."""
        self._check_fitted()
        return len(self.feature_names_)

    def transform(self, frame: pl.DataFrame) -> np.ndarray:
        """Return the feature matrix of ``frame``, shape (n, :attr:`n_features`), float64, NaN = missing.

        Everything that depends on a string column (family, variant, dtype, device, problem, source, and the
        knobs of each distinct configuration) is computed once per distinct value and gathered, so a batch of
        candidates of one task pays for its task once; the rest is vectorised NumPy.
        """
        self._check_fitted()
        require_candidates(frame)
        n = frame.height
        codes = {c: _unique_codes(frame[c]) for c in ("family", "variant", "dtype", "device", "problem_json",
                                                        "source_hash", "config_json")}
        cols: list[np.ndarray] = [
            self._gather(codes["family"], lambda v: self._vocabulary_code(v, self.families_)),
            self._gather(codes["variant"], lambda v: self._vocabulary_code(v, self.variants_)),
            self._gather(codes["dtype"], lambda v: self._vocabulary_code(v, self.dtypes_)),
        ]
        dtype_bytes = self._gather(codes["dtype"], lambda v: float(DTYPE_BYTES.get(v, math.nan)))
        cols.append(dtype_bytes)
        config = self._decode(codes["config_json"], self.config_keys_)
        problem = self._decode(codes["problem_json"], self.problem_keys_)
        cols += config
        cols += problem
        compiled = {}
        for c in COMPILED_COLUMNS:
            if c in frame.columns:
                compiled[c] = frame[c].cast(pl.Float64).fill_null(np.nan).to_numpy()
            else:
                compiled[c] = np.full(n, np.nan)
            cols.append(compiled[c])
        uniques, device_codes = codes["device"]
        device_table = np.array([_device_row(device_spec(d)) for d in uniques.to_list()],
                                dtype=np.float64).reshape(uniques.len(), len(DEVICE_FEATURES))
        device = {name: device_table[device_codes, i] for i, name in enumerate(DEVICE_FEATURES)}
        cols += list(device.values())
        knob = self._lookup("config", config, self.config_keys_)
        dim = self._lookup("problem", problem, self.problem_keys_)
        batch = _Batch(codes=codes, knob=knob, dim=dim, compiled=compiled, device=device, dtype_bytes=dtype_bytes)
        cols += self._derived(batch)
        cols += self._geometry(batch)
        cols += self._source(frame, codes["source_hash"])
        if len(cols) != len(self.feature_names_):  # pragma: no cover - internal consistency
            raise RuntimeError(f"featurizer produced {len(cols)} columns for {len(self.feature_names_)} names")
        X = np.empty((n, len(cols)), dtype=np.float64)
        for start in range(0, n, _FILL_ROWS):  # row blocks that stay in cache while their columns are written
            block = X[start:start + _FILL_ROWS]
            for j, col in enumerate(cols):
                block[:, j] = col[start:start + _FILL_ROWS]
        return X

    @staticmethod
    def _vocabulary_code(value: str, vocabulary: list[str]) -> float:
        try:
            return float(vocabulary.index(value))
        except ValueError:
            return math.nan

    @staticmethod
    def _gather(unique_codes: tuple[pl.Series, np.ndarray], fn: Callable[[str], float]) -> np.ndarray:
        """``fn`` of each distinct value, gathered to the rows, shape (n,)."""
        uniques, codes = unique_codes
        table = np.array([fn(u) for u in uniques.to_list()], dtype=np.float64)
        if table.size == 1:
            return np.full(codes.shape[0], table[0])
        return table[codes]

    @staticmethod
    def _codes(column: pl.Series, vocabulary: list[str]) -> np.ndarray:
        mapping = {v: float(i) for i, v in enumerate(vocabulary)}
        return column.cast(pl.String).replace_strict(mapping, default=None, return_dtype=pl.Float64).fill_null(
            np.nan
        ).to_numpy()

    def _decode(self, unique_codes: tuple[pl.Series, np.ndarray], keys: dict[str, dict[str, Any]]) -> list[np.ndarray]:
        """Decode JSON knobs into one float column per feature; each distinct string is decoded once."""
        if not keys:
            return []
        uniques, codes = unique_codes
        dtypes: dict[str, pl.DataType] = {}
        for key, spec in keys.items():
            dtypes[key] = {"numeric": pl.Float64(), "categorical": pl.String(), "list": pl.List(pl.Float64())}[
                spec["kind"]
            ]
        decoded = _decode_json_objects(uniques, dtypes)
        one = uniques.len() == 1
        n = codes.shape[0]

        def gather(values: np.ndarray) -> np.ndarray:
            return np.full(n, values[0], dtype=np.float64) if one else values[codes]

        out: list[np.ndarray] = []
        for key, spec in keys.items():
            if spec["kind"] == "list":
                for i in range(spec["length"]):
                    out.append(gather(decoded[key].list.get(i, null_on_oob=True).fill_null(np.nan).to_numpy()))
            elif spec["kind"] == "numeric":
                out.append(gather(decoded[key].fill_null(np.nan).to_numpy()))
            else:
                out.append(gather(self._codes(decoded[key], spec["values"])))
        return out

    def _block_pairs(self) -> list[tuple[str, str]]:
        """``(dim, knob)``: numeric problem dims with a numeric ``BLOCK_<dim>`` (or ``BLOCK_SIZE_<dim>``) knob."""
        pairs = []
        for key, spec in self.problem_keys_.items():
            if spec["kind"] != "numeric":
                continue
            for knob in (f"BLOCK_{key}", f"BLOCK_SIZE_{key}"):
                if self.config_keys_.get(knob, {}).get("kind") == "numeric":
                    pairs.append((key, knob))
                    break
        return pairs

    @staticmethod
    def _lookup(
        prefix: str, decoded: list[np.ndarray], keys: dict[str, dict[str, Any]]
    ) -> Callable[[str], np.ndarray | None]:
        """``name -> column`` of the decoded numeric knobs (or dims); None when absent or not numeric."""
        index: dict[str, int] = {}
        position = 0
        for key, spec in keys.items():
            if spec["kind"] == "list":
                position += spec["length"]
                continue
            if spec["kind"] == "numeric":
                index[key] = position
            position += 1
        return lambda name: decoded[index[name]] if name in index else None

    def _derived(self, batch: _Batch) -> list[np.ndarray]:
        codes, knob, dim, compiled, dev, dtype_bytes = (batch.codes, batch.knob, batch.dim, batch.compiled,
                                                        batch.device, batch.dtype_bytes)
        n = dtype_bytes.shape[0]
        tasks, task_of_row, _ = _combine(codes, ("family", "problem_json", "dtype"))
        work = np.array([_work(*t) for t in tasks], dtype=np.float64).reshape(len(tasks), 2)
        flops, min_bytes = (np.full(n, work[0, 0]), np.full(n, work[0, 1])) if len(tasks) == 1 else (
            work[task_of_row, 0], work[task_of_row, 1])
        with np.errstate(divide="ignore", invalid="ignore"):
            intensity = flops / min_bytes
            peak = np.where(dtype_bytes <= 2, dev["fp16_tensor_tflops"], dev["fp32_tflops"]) * 1e12
            roofline_ms = np.maximum(flops / peak, min_bytes / (dev["mem_bandwidth_gbs"] * 1e9)) * 1e3

            tiles = np.ones(n)
            any_tiled = np.zeros(n, dtype=bool)
            efficiency = np.ones(n)
            block_counts = []
            for key, knob_name in self._block_pairs():
                block, size = knob(knob_name), dim(key)
                pair = np.isfinite(size) & np.isfinite(block) & (block > 0)
                count = np.where(pair, np.ceil(size / np.where(pair, block, 1.0)), np.nan)
                block_counts.append(count)
                efficiency = np.where(pair, efficiency * size / (count * block), efficiency)
                if key not in REDUCTION_DIMS:
                    tiles = np.where(pair, tiles * count, tiles)
                    any_tiled |= pair
            tiles = np.where(any_tiled, tiles, np.nan)
            blocked = np.logical_or.reduce([np.isfinite(c) for c in block_counts]) if block_counts else np.zeros(
                n, dtype=bool)
            efficiency = np.where(blocked, efficiency, np.nan)

            threads = self._threads(knob, compiled)
            max_blocks = np.where(dev["compute_capability"] >= 9.0, MAX_BLOCKS_PER_SM_HOPPER,
                                  MAX_BLOCKS_PER_SM_PRE_HOPPER).astype(np.float64)
            by_threads = np.floor(dev["max_threads_per_sm"] / threads)
            regs = compiled["n_regs"]
            by_regs = np.where(regs > 0, np.floor(dev["regs_per_sm"] / (regs * threads)), np.inf)
            smem = compiled["shared_bytes"]
            by_smem = np.where(smem > 0, np.floor(dev["shared_kb_per_sm"] * 1024.0 / smem), np.inf)
            blocks_per_sm = np.minimum.reduce([max_blocks, by_threads, by_regs, by_smem])
            has_meta = np.isfinite(regs) & np.isfinite(threads) & np.isfinite(blocks_per_sm)
            blocks_per_sm = np.where(has_meta, blocks_per_sm, np.nan)
            occupancy = blocks_per_sm * threads / dev["max_threads_per_sm"]
            resident = dev["sm_count"] * np.where(np.isfinite(blocks_per_sm) & (blocks_per_sm > 0), blocks_per_sm, 1.0)
            waves = tiles / resident
            wave_efficiency = waves / np.ceil(waves)
        out = [flops, min_bytes, intensity, roofline_ms, tiles, waves, wave_efficiency, blocks_per_sm, occupancy,
               efficiency, *block_counts]
        for col in out:
            col[~np.isfinite(col)] = np.nan
        return out

    @staticmethod
    def _threads(knob: Callable[[str], np.ndarray | None], compiled: dict[str, np.ndarray]) -> np.ndarray:
        """Threads per program: 32 per warp, warps from the compiler report or the ``num_warps`` knob."""
        warps = compiled["num_warps"]
        cfg_warps = knob("num_warps")
        if cfg_warps is not None:
            warps = np.where(np.isfinite(warps), warps, cfg_warps)
        return 32.0 * warps

    def _geometry(self, batch: _Batch) -> list[np.ndarray]:
        """The launch-geometry columns, computed per (family, variant) on that kernel's rows."""
        codes, knob, dim, dev, dtype_bytes = batch.codes, batch.knob, batch.dim, batch.device, batch.dtype_bytes
        n = dtype_bytes.shape[0]
        out = np.full((len(GEOMETRY_FEATURES), n), np.nan)
        knobs = frozenset(k for k, s in self.config_keys_.items() if s["kind"] == "numeric")
        dims = frozenset(k for k, s in self.problem_keys_.items() if s["kind"] == "numeric")
        kernels, kernel_of_row, _ = _combine(codes, ("family", "variant"))
        threads = self._threads(knob, batch.compiled)
        for k, (family, variant) in enumerate(kernels):
            geometry = geometry_of(family, variant, knobs, dims)
            if geometry is None:
                continue
            rows: slice | np.ndarray = slice(None) if len(kernels) == 1 else np.flatnonzero(kernel_of_row == k)
            block = geometry_features(
                geometry, _subset(knob, rows), _subset(dim, rows), sm_count=dev["sm_count"][rows],
                max_threads_per_sm=dev["max_threads_per_sm"][rows], threads=threads[rows],
                dtype_bytes=dtype_bytes[rows],
            )
            out[:, rows] = block.T
        return list(out)

    def _source(self, frame: pl.DataFrame, unique_codes: tuple[pl.Series, np.ndarray]) -> list[np.ndarray]:
        width = len(SOURCE_FEATURES)
        if "source_text" in frame.columns:
            texts = dict(frame.select("source_hash", "source_text").drop_nulls().unique("source_hash").iter_rows())
        else:
            texts = {}

        def row(h: str) -> list[float]:
            if h in texts:
                return source_text_features(texts[h])
            return self.source_table_.get(h, [math.nan] * width)

        uniques, codes = unique_codes
        table = np.array([row(u) for u in uniques.to_list()], dtype=np.float64).reshape(uniques.len(), width)
        if table.shape[0] == 1:
            return [np.full(codes.shape[0], v) for v in table[0]]
        return list(table[codes].T)

    # -- persistence --------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """JSON-safe state, including :data:`FEATURE_SCHEMA_VERSION`."""
        self._check_fitted()
        return {
            "feature_schema_version": FEATURE_SCHEMA_VERSION,
            "families": self.families_,
            "variants": self.variants_,
            "dtypes": self.dtypes_,
            "config_keys": self.config_keys_,
            "problem_keys": self.problem_keys_,
            "source_table": {h: [None if math.isnan(v) else v for v in vals] for h, vals in self.source_table_.items()},
            "feature_names": self.feature_names_,
            "categorical_features": self.categorical_features_,
        }

    @classmethod
    def from_dict(cls, state: Mapping[str, Any], *, what: str = "The featurizer state") -> Featurizer:
        """Rebuild a fitted featurizer; raise :class:`SchemaVersionError` for another schema version."""
        check_feature_schema(state.get("feature_schema_version"), what)
        out = cls()
        out.families_ = list(state["families"])
        out.variants_ = list(state["variants"])
        out.dtypes_ = list(state["dtypes"])
        out.config_keys_ = {k: dict(v) for k, v in state["config_keys"].items()}
        out.problem_keys_ = {k: dict(v) for k, v in state["problem_keys"].items()}
        out.source_table_ = {k: [math.nan if v is None else float(v) for v in vals]
                             for k, vals in state["source_table"].items()}
        out.feature_names_ = list(state["feature_names"])
        out.categorical_features_ = list(state["categorical_features"])
        return out


class FeatureSchemaMismatchError(SchemaVersionError):
    """A model was saved with a feature schema version other than this code's."""

    def __init__(self, what: str, found: int | str, supported: int | str) -> None:
        self.what = what
        self.found = found
        self.supported = supported
        Exception.__init__(
            self,
            f"{what} was saved with feature schema version {found}, but this kernelcast builds features with "
            f"version {supported}. Retrain the model with this version (kernelcast train), or use the "
            f"kernelcast release that wrote it.",
        )


def check_feature_schema(found: Any, what: str) -> None:
    """Raise :class:`FeatureSchemaMismatchError` naming both versions unless ``found`` is this code's."""
    if found != FEATURE_SCHEMA_VERSION:
        raise FeatureSchemaMismatchError(what, found, FEATURE_SCHEMA_VERSION)
