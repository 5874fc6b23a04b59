"""GBM ablations: train and evaluate the GBM with the CLI under two settings, on the same splits.

For each split below and each arm of the chosen ablation, trains and evaluates the GBM, the only difference
between arms being their ``--param`` settings, and writes the headline metrics side by side to
``benchmarks/results/gbm_<ablation>.json`` (with the commands, the data commit, the machine and versions)::

    kernelcast train --data DATA --model gbm --out DIR --split SPLIT [--holdout H] --seed S --no-mlflow \\
        --param KEY=VALUE ...
    kernelcast evaluate --model DIR --data DATA --split SPLIT [--holdout H] --json OUT --no-mlflow

Ablations (:data:`ABLATIONS`):

- ``task_weighting``: ``task_weighting="equal"`` (the default) against ``"records"``;
- ``rank_loss``: the mean model with the within-task ranking loss and 600 rounds (the defaults) against
  squared error alone and 300 rounds (``rank_weight=0``, as before).

Splits: held-out shape groups drawn at random (seeds 0, 1, 2), the irregular held-out shapes
(``ODD_SHAPES`` of ``bench_surrogate_evaluations.py``), a random split within tasks, and the held-out
source variants of ``train_llm_surrogate.py --model gbm --split variants`` (group calibration).

Run from the repository root: ``.venv/bin/python benchmarks/gbm_ablation.py --ablation rank_loss`` (25 to 40
minutes on two busy cores). The dataset is snapshotted at HEAD first, as in ``bench_surrogate_evaluations.py``.
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
        "top1_score", "mape", "interval_coverage", "interval_width", "bin8_accuracy", "n_tasks")
ABLATIONS: dict[str, dict[str, object]] = {
    "task_weighting": {
        "what": "GBM task_weighting 'equal' against 'records' (every record weighs the same), same splits and seeds",
        "arms": {"records": ["task_weighting=records"], "equal": ["task_weighting=equal"]},
    },
    "rank_loss": {
        "what": "GBM mean model with the within-task ranking loss and 600 rounds (defaults) against squared error "
                "and 300 rounds, same splits and seeds",
        "arms": {"squared_error_300": ["rank_weight=0", "n_estimators=300"], "rank_loss_600": []},
    },
}
"""Ablation -> what it compares and its arms (arm -> ``--param`` settings; the last arm is the default)."""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ablation", choices=sorted(ABLATIONS), required=True)
    parser.add_argument("--scratch", type=Path, default=None, help="default: /tmp/kernelcast_gbm_<ablation>")
    parser.add_argument("--json", type=Path, default=None, help="default: benchmarks/results/gbm_<ablation>.json")
    args = parser.parse_args()
    ablation = ABLATIONS[args.ablation]
    arms: dict[str, list[str]] = ablation["arms"]  # type: ignore[assignment]
    args.scratch = args.scratch or Path(f"/tmp/kernelcast_gbm_{args.ablation}")
    args.json = args.json or RESULTS / f"gbm_{args.ablation}.json"
    data, commit = snapshot("datasets/kernelcast", args.scratch / "data")
    runs: dict[str, dict[str, object]] = {}
    for name, spec in SPLITS.items():
        holdouts = [a for h in spec["holdouts"] for a in ("--holdout", h)]
        common = ["--data", data, "--split", str(spec["split"]), *holdouts, "--no-mlflow"]
        runs[name] = {}
        for arm, settings in arms.items():
            model_dir = args.scratch / f"{name}_{arm}"
            out = args.scratch / f"{name}_{arm}.json"
            params = [a for kv in settings for a in ("--param", kv)]
            train = [KERNELCAST, "train", "--model", "gbm", "--out", str(model_dir), "--seed", str(spec["seed"]),
                     *common, *params]
            evaluate = [KERNELCAST, "evaluate", "--model", str(model_dir), "--json", str(out), *common]
            for cmd in (train, evaluate):
                subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
            result = json.loads(out.read_text())
            runs[name][arm] = {k: result.get(k) for k in KEYS}
        runs[name]["command"] = " ".join(["kernelcast train --model gbm --out DIR --seed", str(spec["seed"]),
                                          *common[2:], _arm_params(arms)])
    name = "variants_group_calibration"
    runs[name] = {}
    for arm, settings in arms.items():
        out_dir = args.scratch / f"{name}_{arm}"
        params = [a for kv in settings for a in ("--param", kv)]
        cmd = [sys.executable, "benchmarks/train_llm_surrogate.py", "--model", "gbm", "--split", "variants",
               "--data", data, "--out", str(out_dir), *params]
        subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
        result = json.loads((out_dir / "llm_surrogate_baseline_gbm_variants.json").read_text())
        runs[name][arm] = {k: result.get(k) for k in KEYS}
    runs[name]["command"] = f"python benchmarks/train_llm_surrogate.py --model gbm --split variants {_arm_params(arms)}"
    first, last = list(arms)[0], list(arms)[-1]
    for row in runs.values():
        row["pairwise_accuracy_gain"] = row[last]["pairwise_accuracy"] - row[first]["pairwise_accuracy"]
        row["kendall_tau_gain"] = row[last]["kendall_tau"] - row[first]["kendall_tau"]
    args.json.write_text(json.dumps({
        "what": ablation["what"],
        "arms": arms,
        "data": f"datasets/kernelcast at commit {commit}",
        "runs": runs,
        "machine": machine(),
        "versions": versions(),
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }, indent=1) + "\n")
    for name, row in runs.items():
        print(name + ": " + "  ".join(f"{arm} {row[arm]['pairwise_accuracy']:.4f}" for arm in arms))
    return 0


def _arm_params(arms: dict[str, list[str]]) -> str:
    """The arms' ``--param`` settings, for the command line recorded in the JSON."""
    return " | ".join(f"{arm}: " + (" ".join(f"--param {kv}" for kv in settings) or "(defaults)")
                      for arm, settings in arms.items())


if __name__ == "__main__":
    sys.exit(main())
