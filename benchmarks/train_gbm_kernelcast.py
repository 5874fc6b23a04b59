"""Train the shipped ``models/gbm_kernelcast``: the GBM on every record of ``datasets/kernelcast``, with compiler metadata.

No record is held out: the model is for searching new shapes and GPUs, and its held-out accuracy is what the
evaluation suite measured on the same recipe (``benchmarks/results/surrogate_evaluation_summary.md``, the rows
"with compiler metadata"). It is cross-calibrated across (family, shape) groups, as ``kernelcast train
--split shapes`` does, so its intervals and SKIP thresholds come from forecasts of shapes it had not seen.
``use_compiled_metadata=True``: a search gets each candidate's metadata before screening it, from a CPU compile
(``kernelcast.measurement.offline``) with the GPU oracle, or from the stored records in a replay.

Run from the repository root (about 4 minutes on 2 cores)::

    .venv/bin/python benchmarks/train_gbm_kernelcast.py --out models/gbm_kernelcast
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path


def main() -> int:
    from kernelcast.datasets import load
    from kernelcast.surrogate.evaluation.splits import group_labels
    from kernelcast.surrogate.gbm import GBMSurrogate

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="datasets/kernelcast")
    parser.add_argument("--out", type=Path, default=Path("models/gbm_kernelcast"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-jobs", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()

    frame = load(args.data)
    start = time.perf_counter()
    model = GBMSurrogate(random_state=args.seed, n_jobs=args.n_jobs, use_compiled_metadata=True).fit(frame)
    fit_s = time.perf_counter() - start
    model.cross_calibrate(frame, group_labels(frame, "shapes"))
    seconds = time.perf_counter() - start
    model.set_params(n_jobs=None)  # the shipped default: LightGBM's own thread count
    model.save(args.out, extra={
        "split": {"kind": "none", "holdouts": [], "seed": args.seed, "calibration_mode": "cross",
                  "calibration_groups": "shapes (family, problem)", "n_train": frame.height},
        "command": " ".join([".venv/bin/python", "benchmarks/train_gbm_kernelcast.py", *sys.argv[1:]]),
        "fit_seconds": round(fit_s, 1), "fit_and_calibrate_seconds": round(seconds, 1),
    })
    print(f"wrote {args.out}: {frame.height} records, fit {fit_s:.0f} s, fit and calibration {seconds:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
