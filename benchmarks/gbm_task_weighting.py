"""GBM task weighting: ``task_weighting="equal"`` (the default) against ``"records"``, on the same splits.

For each split below, trains and evaluates the GBM twice with the CLI, the only difference being
``--param task_weighting=...``, and writes the headline metrics of both side by side to
``benchmarks/results/gbm_task_weighting.json`` (with the commands, the data commit, the machine and versions)::

    kernelcast train --data DATA --model gbm --out DIR --split SPLIT [--holdout H] --seed S --no-mlflow \\
        --param task_weighting=W
    kernelcast evaluate --model DIR --data DATA --split SPLIT [--holdout H] --json OUT --no-mlflow

Splits: held-out shape groups drawn at random (seeds 0, 1, 2), the irregular held-out shapes
(``ODD_SHAPES`` of ``bench_surrogate_evaluations.py``), a random split within tasks, and the held-out
source variants of ``train_llm_surrogate.py --model gbm --split variants`` (group calibration).

Run from the repository root: ``.venv/bin/python benchmarks/gbm_task_weighting.py`` (about 25 minutes on
two busy cores). The dataset is snapshotted at HEAD first, as in ``bench_surrogate_evaluations.py``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_surrogate_evaluations import KERNELCAST, ODD_SHAPES, RESULTS, ROOT, machine, snapshot, versions  # noqa: E402

SPLITS: dict[str, dict[str, object]] = {
    "shapes_random_groups_seed0": {"split": "shapes", "seed": 0, "holdouts": []},
    "shapes_random_groups_seed1": {"split": "shapes", "seed": 1, "holdouts": []},
    "shapes_random_groups_seed2": {"split": "shapes", "seed": 2, "holdouts": []},
    "shapes_irregular": {"split": "shapes", "seed": 0, "holdouts": ODD_SHAPES},
    "random": {"split": "random", "seed": 0, "holdouts": []},
}
KEYS = ("pairwise_accuracy", "kendall_tau", "ece", "selective_accuracy_60", "skip_error", "skip_error_target",
        "top1_score", "interval_coverage", "n_tasks")
WEIGHTINGS = ("records", "equal")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scratch", type=Path, default=Path("/tmp/kernelcast_task_weighting"))
    parser.add_argument("--json", type=Path, default=RESULTS / "gbm_task_weighting.json")
    args = parser.parse_args()
    data, commit = snapshot("datasets/kernelcast", args.scratch / "data")
    runs: dict[str, dict[str, object]] = {}
    for name, spec in SPLITS.items():
        holdouts = [a for h in spec["holdouts"] for a in ("--holdout", h)]
        common = ["--data", data, "--split", str(spec["split"]), *holdouts, "--no-mlflow"]
        runs[name] = {}
        for weighting in WEIGHTINGS:
            model_dir = args.scratch / f"{name}_{weighting}"
            out = args.scratch / f"{name}_{weighting}.json"
            train = [KERNELCAST, "train", "--model", "gbm", "--out", str(model_dir), "--seed", str(spec["seed"]),
                     *common, "--param", f"task_weighting={weighting}"]
            evaluate = [KERNELCAST, "evaluate", "--model", str(model_dir), "--json", str(out), *common]
            for cmd in (train, evaluate):
                subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
            result = json.loads(out.read_text())
            runs[name][weighting] = {k: result.get(k) for k in KEYS}
        runs[name]["command"] = " ".join(["kernelcast train --model gbm --out DIR --seed", str(spec["seed"]),
                                          *common[2:], "--param task_weighting={records,equal}"])
    name = "variants_group_calibration"
    runs[name] = {}
    for weighting in WEIGHTINGS:
        out_dir = args.scratch / f"{name}_{weighting}"
        cmd = [sys.executable, "benchmarks/train_llm_surrogate.py", "--model", "gbm", "--split", "variants",
               "--data", data, "--out", str(out_dir), "--param", f"task_weighting={weighting}"]
        subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
        result = json.loads((out_dir / "llm_surrogate_baseline_gbm_variants.json").read_text())
        runs[name][weighting] = {k: result.get(k) for k in KEYS}
    runs[name]["command"] = ("python benchmarks/train_llm_surrogate.py --model gbm --split variants "
                             "--param task_weighting={records,equal}")
    for row in runs.values():
        row["pairwise_accuracy_gain"] = row["equal"]["pairwise_accuracy"] - row["records"]["pairwise_accuracy"]
    args.json.write_text(json.dumps({
        "what": "GBM task_weighting 'equal' against 'records' (every record weighs the same), same splits and seeds",
        "data": f"datasets/kernelcast at commit {commit}",
        "runs": runs,
        "machine": machine(),
        "versions": versions(),
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }, indent=1) + "\n")
    for name, row in runs.items():
        print(f"{name}: records {row['records']['pairwise_accuracy']:.4f} equal {row['equal']['pairwise_accuracy']:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
