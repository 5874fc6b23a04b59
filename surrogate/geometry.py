"""Launch geometry: how a configuration's blocks meet a problem shape, as shape-independent features.

A kernel's runtime on a new problem shape depends less on the raw block sizes than on what they do to that
shape: how many programs are launched and how full the last wave over the SMs is, how much of the last tile
is padding, how many loop trips a program makes, how much work and how many elements each thread holds.
:class:`LaunchGeometry` declares, per family and variant, which problem dims each knob tiles and whether
programs split the axis (parallel) or walk it (loop); :func:`geometry_features` turns a batch of
configurations into the :data:`GEOMETRY_FEATURES`, vectorised over candidates.

The table :data:`GEOMETRIES` covers kernelcast's built-in families (it mirrors their launchers' grids: see
``kernelcast.measurement.families``). A family not in it gets, where its knobs follow the ``BLOCK_<dim>``
convention, parallel axes for those dims (loop axes for :data:`LOOP_DIMS`) and no features otherwise.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

GEOMETRY_FEATURES: tuple[str, ...] = (
    "programs", "waves", "last_wave", "thread_waves", "tiles_per_program", "loop_trips", "parallel_waste",
    "loop_waste", "loop_block_ratio", "tile_elements", "elements_per_thread", "work_per_program",
    "bytes_per_program", "parallel_alignment", "loop_alignment",
)
"""Features of :func:`geometry_features`, in column order:

``programs``
    Programs launched (grid size).
``waves``
    ``programs / sm_count``.
``last_wave``
    How full the last wave of one program per SM is: ``waves / ceil(waves)``, in (0, 1].
``thread_waves``
    Programs over the programs the SMs hold at once when threads are the only limit.
``tiles_per_program``
    Output tiles (and splits) each program handles: above 1 for persistent kernels.
``loop_trips``
    Iterations of a program's loop over its loop axes (1 where the block covers the axis).
``parallel_waste``, ``loop_waste``
    Fraction of the padded extent that is padding (0: the blocks divide the shape exactly).
``loop_block_ratio``
    Loop block (times its split) over the loop extent: 1 or more where one block covers the whole row.
``tile_elements``
    Elements of one block over all axes (and the inner dims a program covers whole).
``elements_per_thread``
    ``tile_elements / threads``.
``work_per_program``
    Useful elements per program: the problem's elements over all axes divided by ``programs``.
``bytes_per_program``
    ``work_per_program`` times bytes per element.
``parallel_alignment``, ``loop_alignment``
    The largest power of two, at most :data:`ALIGNMENT`, dividing every problem dim of the parallel (loop)
    axes: Triton specialises integer arguments divisible by 16, and only aligned rows and strides get
    vectorised loads, so a shape like 1000 x 3000 runs differently from 1024 x 3072.
"""

ALIGNMENT = 16
"""Cap of the alignment features: the divisibility Triton specialises kernels on."""

LOOP_DIMS: frozenset[str] = frozenset({"K"})
"""Problem dims that programs loop over, for families without an entry in :data:`GEOMETRIES`."""


@dataclasses.dataclass(frozen=True)
class Axis:
    """One axis of a launch.

    Attributes
    ----------
    extent : tuple of str
        Problem dims whose product is the axis length (e.g. ``("M", "N")`` for a flat kernel).
    block : str
        Knob giving the block size along the axis.
    split : str or None
        Knob giving how many programs share a loop axis (split-K, split-KV); they each walk
        ``ceil(ceil(extent / block) / split)`` blocks.
    """

    extent: tuple[str, ...]
    block: str
    split: str | None = None


@dataclasses.dataclass(frozen=True)
class LaunchGeometry:
    """How a kernel variant's programs cover its problem.

    Attributes
    ----------
    parallel : tuple of Axis
        Axes cut into blocks, one program per block combination.
    loop : tuple of Axis
        Axes a program walks block by block.
    batch : tuple of str
        Problem dims with one program each (attention's batch and heads).
    inner : tuple of str
        Problem dims a program holds whole at each step (attention's head dim).
    programs_per_sm : str or None
        Knob capping the grid at ``knob * sm_count`` programs (persistent kernels).
    """

    parallel: tuple[Axis, ...]
    loop: tuple[Axis, ...] = ()
    batch: tuple[str, ...] = ()
    inner: tuple[str, ...] = ()
    programs_per_sm: str | None = None


_ROWS = Axis(("M",), "BLOCK_M")
_ROW = Axis(("N",), "BLOCK_N")
_ROWWISE = LaunchGeometry(parallel=(_ROWS,), loop=(_ROW,))
_MATMUL = LaunchGeometry(parallel=(_ROWS, Axis(("N",), "BLOCK_N")), loop=(Axis(("K",), "BLOCK_K"),))
_QUERIES = Axis(("S",), "BLOCK_M")
_ATTENTION = LaunchGeometry(parallel=(_QUERIES,), loop=(Axis(("S",), "BLOCK_N"),), batch=("B", "H"), inner=("D",))
_TILED_2D = LaunchGeometry(parallel=(_ROWS, Axis(("N",), "BLOCK_N")))
_FLAT = LaunchGeometry(parallel=(Axis(("M", "N"), "BLOCK"),))

GEOMETRIES: dict[str, dict[str, LaunchGeometry]] = {
    "matmul": {
        "blocked": _MATMUL,
        "splitk": dataclasses.replace(_MATMUL, loop=(Axis(("K",), "BLOCK_K", split="SPLIT_K"),)),
        "persistent": dataclasses.replace(_MATMUL, programs_per_sm="PROGRAMS_PER_SM"),
    },
    "attention": {
        "fa2": _ATTENTION,
        "two_pass": _ATTENTION,
        "split_kv": dataclasses.replace(_ATTENTION, loop=(Axis(("S",), "BLOCK_N", split="NUM_SPLITS"),)),
    },
    "bias_gelu": {"tiled": _TILED_2D, "flat": _FLAT},
    "transpose": {"tiled": _TILED_2D, "naive": _FLAT},
    "softmax": {"*": _ROWWISE},
    "layernorm": {"*": _ROWWISE},
    "rmsnorm": {"*": _ROWWISE},
    "rowsum": {"*": _ROWWISE, "split": LaunchGeometry(parallel=(_ROWS,), loop=(Axis(("N",), "BLOCK_N", "SPLIT_N"),))},
}
"""Family -> variant (``"*"``: any other variant) -> geometry, for kernelcast's built-in families."""


def geometry_of(family: str, variant: str, knobs: frozenset[str], dims: frozenset[str]) -> LaunchGeometry | None:
    """The geometry of a variant: from :data:`GEOMETRIES`, else by the ``BLOCK_<dim>`` convention, else None.

    Parameters
    ----------
    family, variant : str
        The kernel.
    knobs, dims : frozenset of str
        Numeric knob names of the configurations and numeric problem dims known to the featurizer.
    """
    table = GEOMETRIES.get(family)
    if table is not None:
        geometry = table.get(variant, table.get("*"))
        if geometry is not None:
            return geometry
    parallel, loop = [], []
    for dim in sorted(dims):
        for knob in (f"BLOCK_{dim}", f"BLOCK_SIZE_{dim}"):
            if knob in knobs:
                (loop if dim in LOOP_DIMS else parallel).append(Axis((dim,), knob))
                break
    if not parallel:
        return None
    return LaunchGeometry(parallel=tuple(parallel), loop=tuple(loop))


Column = Callable[[str], "np.ndarray | None"]
"""``name -> values`` of a knob or a problem dim for the rows at hand (None where absent)."""


def geometry_features(
    geometry: LaunchGeometry,
    knob: Column,
    dim: Column,
    *,
    sm_count: np.ndarray,
    max_threads_per_sm: np.ndarray,
    threads: np.ndarray,
    dtype_bytes: np.ndarray,
) -> np.ndarray:
    """The :data:`GEOMETRY_FEATURES` of ``n`` configurations of one geometry, shape (n, 15), NaN where unknown.

    Parameters
    ----------
    geometry : LaunchGeometry
        The variant's geometry.
    knob, dim : callable
        Knob values and problem dims by name, each shape (n,) (NaN where missing).
    sm_count, max_threads_per_sm : ndarray of shape (n,)
        Device properties (NaN for an unknown device).
    threads : ndarray of shape (n,)
        Threads per program (``32 * num_warps`` for Triton).
    dtype_bytes : ndarray of shape (n,)
        Bytes per element.
    """
    n = threads.shape[0]
    nan = np.full(n, np.nan)

    def product(names: tuple[str, ...]) -> np.ndarray:
        out = np.ones(n)
        for name in names:
            value = dim(name)
            out = out * (value if value is not None else nan)
        return out

    def alignment(axes: tuple[Axis, ...]) -> np.ndarray:
        out = np.full(n, float(ALIGNMENT))
        for name in {d for axis in axes for d in axis.extent}:
            value = dim(name)
            if value is None:
                return nan
            whole = np.where(np.isfinite(value), value, 0).astype(np.int64)
            divisor = np.where(whole > 0, whole & -whole, ALIGNMENT)  # lowest set bit: largest power-of-two divisor
            out = np.where(np.isfinite(value), np.minimum(out, divisor), np.nan)
        return out

    def block_of(axis: Axis) -> np.ndarray:
        value = knob(axis.block)
        return np.where(value > 0, value, np.nan) if value is not None else nan

    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        tiles = np.ones(n)
        padded = np.ones(n)
        useful = np.ones(n)
        block_elems = np.ones(n)
        for axis in geometry.parallel:
            extent, block = product(axis.extent), block_of(axis)
            count = np.ceil(extent / block)
            tiles, padded, useful = tiles * count, padded * count * block, useful * extent
            block_elems = block_elems * block
        parallel_waste = 1.0 - useful / padded
        trips = np.ones(n)
        splits = np.ones(n)
        loop_padded = np.ones(n)
        loop_useful = np.ones(n)
        covered = np.ones(n)
        for axis in geometry.loop:
            extent, block = product(axis.extent), block_of(axis)
            split = knob(axis.split) if axis.split is not None else np.ones(n)
            split = split if split is not None else nan
            walk = np.ceil(np.ceil(extent / block) / split)
            trips, splits = trips * walk, splits * split
            loop_padded, loop_useful = loop_padded * walk * split * block, loop_useful * extent
            covered = covered * block * split / extent
            block_elems = block_elems * block
        loop_waste = 1.0 - loop_useful / loop_padded if geometry.loop else np.zeros(n)
        loop_ratio = covered if geometry.loop else nan
        batch = product(geometry.batch)
        inner = product(geometry.inner)
        work_units = tiles * splits * batch
        programs = work_units
        if geometry.programs_per_sm is not None:
            cap = knob(geometry.programs_per_sm)
            programs = np.minimum(programs, (cap if cap is not None else nan) * sm_count)
        waves = programs / sm_count
        resident = np.maximum(np.floor(max_threads_per_sm / threads), 1.0)
        tile_elements = block_elems * inner
        work = useful * loop_useful * batch * inner / programs
        out = np.column_stack([
            programs, waves, waves / np.ceil(waves), programs / (sm_count * resident), work_units / programs,
            trips, parallel_waste, loop_waste, loop_ratio, tile_elements, tile_elements / threads, work,
            work * dtype_bytes, alignment(geometry.parallel), alignment(geometry.loop) if geometry.loop else nan,
        ])
    out[~np.isfinite(out)] = np.nan
    return out
