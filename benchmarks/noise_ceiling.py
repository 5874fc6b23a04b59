"""The noise ceiling of pairwise accuracy: how well a second measurement orders the candidates of the first.

``datasets/kernelcast_repeat`` holds candidates of ``datasets/kernelcast`` measured a second time on the same GPU.
Used as a "forecast" of the first measurement, the second one scores the pairwise accuracy that measurement
noise alone allows, under the evaluation suite's tie rule (pairs within ``TIE_Z`` combined standard errors of
the first measurement excluded), per problem. A surrogate cannot be expected to beat it.

Run from the repository root: ``.venv/bin/python benchmarks/noise_ceiling.py`` (seconds); writes
``benchmarks/results/noise_ceiling.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parents[1]
KEY = ["family", "variant", "source_hash", "config_json", "problem_json", "dtype", "device"]


def main() -> int:
    from kernelcast.datasets.store import Store
    from kernelcast.surrogate.evaluation import metrics
    from kernelcast.surrogate.tasks import TIE_Z, relative_noise, task_ids

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "noise_ceiling.json")
    args = parser.parse_args()
    first = Store(ROOT / "datasets" / "kernelcast").read().filter(pl.col("status") == "ok")
    second = Store(ROOT / "datasets" / "kernelcast_repeat").read().filter(pl.col("status") == "ok")
    both = first.join(second.select([*KEY, "time_ms"]), on=KEY, suffix="_repeat")
    rows = {}
    for (problem,), group in both.group_by(["problem_json"], maintain_order=True):
        tolerance = TIE_Z * relative_noise(group)
        rows[problem] = {
            "n_candidates": group.height,
            "pairwise_accuracy": metrics.pairwise_accuracy(
                group["time_ms"].to_numpy(), group["time_ms_repeat"].to_numpy(), task_ids(group),
                tie_tolerance=tolerance),
            "pairwise_accuracy_no_ties_excluded": metrics.pairwise_accuracy(
                group["time_ms"].to_numpy(), group["time_ms_repeat"].to_numpy(), task_ids(group)),
            "median_abs_relative_difference": float(np.median(np.abs(
                group["time_ms_repeat"].to_numpy() / group["time_ms"].to_numpy() - 1.0))),
        }
    args.json.write_text(json.dumps({
        "what": "pairwise accuracy of a repeated measurement against the first, per problem (the noise ceiling)",
        "tie_rule": f"pairs within {TIE_Z} combined relative standard errors of the first measurement excluded",
        "by_problem": rows,
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": "python benchmarks/noise_ceiling.py",
    }, indent=1) + "\n")
    for problem, row in rows.items():
        print(f"{problem}: {row['n_candidates']} candidates, pairwise accuracy {row['pairwise_accuracy']:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
