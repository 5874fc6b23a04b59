"""Register and shared-memory estimates for the row-wise and element-wise families.

These families keep whole ``BLOCK_M x BLOCK_N`` tiles live in registers (a row, an
accumulator, a running mean). When the tile alone needs more registers per thread than a thread can have,
the compiler spills it to local memory and the configuration is not worth measuring; the families report
that as a reason string from ``check_config``, as :func:`shared_memory_reason` does for shared memory.
"""

from __future__ import annotations

from kernelcast.measurement.space import DeviceLimits

MAX_REGISTERS_PER_THREAD = 255
"""Hardware cap on 32-bit registers per thread (every NVIDIA architecture since Kepler)."""

THREADS_PER_WARP = 32


def registers_available(num_warps: int, limits: DeviceLimits) -> int:
    """Registers one thread of a ``num_warps``-warp block may use: the per-thread cap or its share of an SM."""
    return min(MAX_REGISTERS_PER_THREAD, limits.regs_per_sm // (THREADS_PER_WARP * num_warps))


def register_reason(values_32bit: int, num_warps: int, limits: DeviceLimits) -> str | None:
    """Reason string when ``values_32bit`` live values spread over the block exceed its registers, else ``None``.

    Parameters
    ----------
    values_32bit : int
        32-bit values (fp32 elements, or pairs of 16-bit ones) a program keeps live at once: tile elements
        times live tiles.
    num_warps : int
        Warps per program.
    limits : DeviceLimits
        The target device.
    """
    threads = THREADS_PER_WARP * num_warps
    per_thread = -(-values_32bit // threads)
    available = registers_available(num_warps, limits)
    if per_thread > available:
        return (
            f"keeps {values_32bit} 32-bit values live, {per_thread} registers per thread with {num_warps} warps; "
            f"a thread of a {threads}-thread block on {limits.name} has at most {available}"
        )
    return None
