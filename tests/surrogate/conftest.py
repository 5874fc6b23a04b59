"""Fixtures of the surrogate tests: small record frames from a known analytic runtime model.

The analytic model below exists only to give the surrogates something learnable in tests; no shipped
result comes from it.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import numpy as np
import polars as pl
import pytest

from kernelcast.datasets.store import records_frame
from kernelcast.measurement.records import CompiledInfo, Record, Status

DEVICES = {
    # name: (peak fp16 TFLOP/s, bandwidth GB/s, SMs)
    "NVIDIA H100 80GB HBM3": (989.4, 3350.0, 132),
    "NVIDIA GeForce RTX 3090": (142.0, 936.0, 82),
    "NVIDIA TITAN RTX": (130.5, 672.0, 72),
}
SHAPES = [(1024, 1024, 1024), (2048, 2048, 512), (4096, 1024, 2048), (512, 4096, 4096), (3000, 2000, 1000),
          (8192, 512, 1024), (1536, 1536, 1536), (2560, 5120, 256)]
SPACE = {
    "BLOCK_M": (32, 64, 128, 256),
    "BLOCK_N": (32, 64, 128, 256),
    "BLOCK_K": (32, 64),
    "GROUP_M": (1, 8),
    "num_warps": (2, 4, 8),
    "num_stages": (2, 3, 4),
}


def _time_ms(cfg: dict, shape: tuple[int, int, int], device: str, rng: np.random.Generator) -> float | None:
    m, n, k = shape
    peak, bw, sms = DEVICES[device]
    bm, bn, bk = cfg["BLOCK_M"], cfg["BLOCK_N"], cfg["BLOCK_K"]
    warps, stages = cfg["num_warps"], cfg["num_stages"]
    smem = stages * (bm * bk + bk * bn) * 2
    if smem > 160_000 or bm * bn // (32 * warps) > 256:
        return None  # out of resources
    tiles = math.ceil(m / bm) * math.ceil(n / bn)
    waves = tiles / sms
    wave_eff = waves / math.ceil(waves)
    tile_eff = (min(bm, 128) * min(bn, 128) / (128 * 128)) ** 0.35
    warp_eff = {2: 0.7, 4: 1.0, 8: 0.9}[warps] * (1.0 if bm * bn >= 128 * 64 or warps <= 4 else 0.8)
    stage_eff = {2: 0.85, 3: 1.0, 4: 0.97}[stages]
    group_eff = 1.0 if cfg["GROUP_M"] == 8 or tiles < 64 else 0.9
    eff = 0.75 * wave_eff * tile_eff * warp_eff * stage_eff * group_eff
    compute_ms = 2.0 * m * n * k / (peak * 1e12 * eff) * 1e3
    traffic = 2.0 * (m * n * k / bn + m * n * k / bm + m * n)
    memory_ms = traffic / (bw * 1e9 * 0.8) * 1e3
    return (max(compute_ms, memory_ms) + 0.004) * math.exp(0.04 * rng.standard_normal())


def make_records(
    *, shapes: list[tuple[int, int, int]] | None = None, devices: list[str] | None = None, configs_per_task: int = 120,
    seed: int = 0,
) -> pl.DataFrame:
    """Record frame of a synthetic matmul on synthetic timings (failures included)."""
    rng = np.random.default_rng(seed)
    keys = list(SPACE)
    all_configs = [dict(zip(keys, values)) for values in itertools.product(*SPACE.values())]
    records = []
    for device in devices or list(DEVICES):
        for shape in shapes or SHAPES:
            picks = rng.choice(len(all_configs), size=min(configs_per_task, len(all_configs)), replace=False)
            for idx in picks:
                cfg = all_configs[int(idx)]
                t = _time_ms(cfg, shape, device, rng)
                common = dict(family="matmul", variant="blocked", source_hash="synthetic0000000", config=cfg,
                              problem={"M": shape[0], "N": shape[1], "K": shape[2]}, dtype="float16", device=device)
                if t is None:
                    records.append(Record(**common, status=Status.OUT_OF_RESOURCES, error="out of resources"))
                    continue
                samples = tuple(t * (1.0 + 0.005 * rng.standard_normal(10)))
                records.append(Record(**common, status=Status.OK, samples_ms=samples,
                                      compiled=CompiledInfo(n_regs=int(min(255, 32 + cfg["BLOCK_M"] * cfg["BLOCK_N"]
                                                                              // (32 * cfg["num_warps"]))),
                                                            num_warps=cfg["num_warps"], num_stages=cfg["num_stages"],
                                                            shared_bytes=cfg["num_stages"] * (cfg["BLOCK_M"] +
                                                                                               cfg["BLOCK_N"]) *
                                                            cfg["BLOCK_K"] * 2)))
    return records_frame(records)


@pytest.fixture(scope="session")
def record_factory() -> Callable[..., pl.DataFrame]:
    """``make_records(**kwargs)``: a synthetic record frame."""
    return make_records


@pytest.fixture(scope="session")
def splits() -> dict[str, pl.DataFrame]:
    """Train / calibration / test record frames of the synthetic matmul: 50/25/25% of each task (seeded)."""
    from kernelcast.surrogate.evaluation.splits import make_split

    split = make_split(make_records(configs_per_task=200, seed=1), "random", seed=7, test_fraction=0.25,
                       calibration_fraction=0.25)
    return {"train": split.train, "calib": split.calibration, "test": split.test}


@pytest.fixture(scope="session")
def fitted_gbm(splits: dict[str, pl.DataFrame]):
    """A small GBM surrogate fitted and calibrated on the synthetic splits."""
    from kernelcast.surrogate.gbm import GBMSurrogate

    model = GBMSurrogate(n_estimators=150, quantile_estimators=80, fail_estimators=40, num_leaves=31, n_jobs=1)
    return model.fit(splits["train"]).calibrate(splits["calib"])
