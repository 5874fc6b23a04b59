"""The eight half-octave speedup bins of the GPU Forecasters benchmark.

A candidate's speedup over a reference is ``S = reference_ms / time_ms``. Its bin is
``clamp(floor(2 * log2(S)) + 4, 1, 8)``, numbered 1..8 (the paper's bin 0 is a failure, which kernelcast
keeps as a record status instead). The half-open bins, in speedup:

====  =====================  ======================
bin   speedup ``S``           log2(S)
====  =====================  ======================
1     ``S < 0.5``              ``< -1``
2     ``0.5 <= S < 0.707``     ``[-1, -0.5)``
3     ``0.707 <= S < 1``       ``[-0.5, 0)``
4     ``1 <= S < 1.414``       ``[0, 0.5)``
5     ``1.414 <= S < 2``       ``[0.5, 1)``
6     ``2 <= S < 2.828``       ``[1, 1.5)``
7     ``2.828 <= S < 4``       ``[1.5, 2)``
8     ``S >= 4``               ``>= 2``
====  =====================  ======================

Source: ``SpeedupBin.from_speedup`` in ``src/arid_badger/landscape_map/v1/domain.py`` of the public
repository codezakh/gpu-forecasters (commit a847e01), and ``speedup_band_for_bin`` in
``src/arid_badger/eval_dataset_builder/v1/domain.py`` (commit 6b6b6b0), which states the same intervals
``[2^((i-4)/2), 2^((i-3)/2))`` for bins 2..7. The inline comments on the ``SpeedupBin`` members in that
file (e.g. "0.707 < S <= 1.0" for bin 4) disagree with its own formula; kernelcast follows the formula.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

N_BINS = 8
"""Number of speedup bins."""

BIN_EDGES_LOG2: np.ndarray = np.array([-1.0, -0.5, 0.0, 0.5, 1.0, 1.5, 2.0])
"""The seven inner bin edges in log2 of the speedup; bin ``k`` (1-based) is ``[edge[k-2], edge[k-1])``."""

BIN_EDGES_SPEEDUP: np.ndarray = 2.0**BIN_EDGES_LOG2
"""The inner bin edges as speedups: 0.5, 0.707, 1, 1.414, 2, 2.828, 4."""

BIN_LABELS: tuple[str, ...] = (
    "<0.5x",
    "0.5-0.71x",
    "0.71-1x",
    "1-1.41x",
    "1.41-2x",
    "2-2.83x",
    "2.83-4x",
    ">=4x",
)
"""Short labels of bins 1..8."""


def speedup_bin(speedup: np.ndarray | float) -> np.ndarray:
    """Return the 1-based bin of each speedup, shape like ``speedup`` (ints 1..8)."""
    s = np.asarray(speedup, dtype=np.float64)
    # floor(2 log2 S) + 4 written through searchsorted, so edge values land in the upper bin exactly.
    return np.searchsorted(BIN_EDGES_LOG2, np.log2(s), side="right").astype(np.int64) + 1


def bin_probabilities(
    cdf_at_log_time: Callable[[np.ndarray], np.ndarray], log_reference_ms: np.ndarray
) -> np.ndarray:
    """Probabilities of the eight bins from a predictive distribution of the log runtime.

    Parameters
    ----------
    cdf_at_log_time : callable
        ``cdf(v)`` -> ``P(ln time_ms <= v)`` per candidate, for an array ``v`` of shape (n,).
    log_reference_ms : ndarray of shape (n,)
        Natural log of each candidate's reference runtime (ms).

    Returns
    -------
    ndarray of shape (n, 8)
        Rows sum to one.
    """
    # S >= 2^e  <=>  ln t <= ln ref - e ln 2, so P(bin >= k) is a CDF value at an edge.
    at_least = np.stack(
        [cdf_at_log_time(log_reference_ms - e * np.log(2.0)) for e in BIN_EDGES_LOG2], axis=1
    )  # (n, 7): P(S >= edge_j), non-increasing in j
    at_least = np.minimum.accumulate(np.clip(at_least, 0.0, 1.0), axis=1)
    upper = np.concatenate([np.ones((at_least.shape[0], 1)), at_least], axis=1)
    lower = np.concatenate([at_least, np.zeros((at_least.shape[0], 1))], axis=1)
    return upper - lower
