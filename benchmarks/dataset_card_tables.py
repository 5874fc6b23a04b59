"""Print the Markdown tables of a dataset card from a store: tasks, statuses, repeat noise per family.

Usage::

    python benchmarks/dataset_card_tables.py datasets/kernelcast [--since 2026-11-22T04:24] > /tmp/tables.md

``--since`` adds a noise table of the records created at or after that UTC time (ISO 8601), next to the
records created before it, e.g. to compare two versions of the measurement protocol.
"""

from __future__ import annotations

import argparse
import sys

import polars as pl

from kernelcast.datasets import complete_tasks, load
from kernelcast.datasets.tasks import task_frame

QUANTILES = (0.5, 0.9, 0.99)


def noise_table(frame: pl.DataFrame, by: str = "family") -> str:
    """Markdown table of the coefficient of variation of ``ok`` records (timed at least twice) by ``by``."""
    ok = frame.filter((pl.col("status") == "ok") & (pl.col("n_samples") >= 2))
    rows = ok.group_by(by).agg(
        pl.len().alias("n"),
        *[pl.col("cv").quantile(q).alias(f"p{round(q * 100)}") for q in QUANTILES],
        (pl.col("max_ms") / pl.col("time_ms")).quantile(0.99).alias("max99"),
        pl.col("time_ms").median().alias("t50"),
    ).sort(by)
    lines = [f"| {by} | ok records | CV p50 | CV p90 | CV p99 | p99 of max/median | median time (ms) |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows.iter_rows(named=True):
        lines.append(f"| {r[by]} | {r['n']:,} | {r['p50']:.4f} | {r['p90']:.4f} | {r['p99']:.3f} | "
                     f"{r['max99']:.2f} | {r['t50']:.4f} |")
    return "\n".join(lines)


def task_table(frame: pl.DataFrame) -> str:
    """Markdown table of every task: records, ok, invalid_config, other failures, complete space."""
    complete = set(complete_tasks(frame))
    tasks = task_frame(frame).group_by("task_id", "family", "problem_json", "dtype").agg(
        pl.len().alias("n"),
        (pl.col("status") == "ok").sum().alias("ok"),
        (pl.col("status") == "invalid_config").sum().alias("invalid"),
    ).sort("family", "problem_json", "dtype")
    lines = ["| family | problem | dtype | records | ok | invalid_config | other failures | complete space |",
             "|---|---|---|---:|---:|---:|---:|:---:|"]
    for r in tasks.iter_rows(named=True):
        other = r["n"] - r["ok"] - r["invalid"]
        lines.append(f"| {r['family']} | `{r['problem_json']}` | {r['dtype']} | {r['n']:,} | {r['ok']:,} | "
                     f"{r['invalid']:,} | {other:,} | {'yes' if r['task_id'] in complete else 'no'} |")
    return "\n".join(lines)


def status_table(frame: pl.DataFrame) -> str:
    """Markdown table of records per family and status."""
    counts = frame.group_by("family", "status").len().pivot(on="status", index="family", values="len").fill_null(0)
    statuses = [c for c in counts.columns if c != "family"]
    lines = ["| family | " + " | ".join(statuses) + " |", "|---|" + "---:|" * len(statuses)]
    for r in counts.sort("family").iter_rows(named=True):
        lines.append(f"| {r['family']} | " + " | ".join(f"{r[s]:,}" for s in statuses) + " |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("store")
    parser.add_argument("--since", default=None, help="UTC ISO time: also compare noise before and after it")
    parser.add_argument("--no-tasks", action="store_true", help="leave out the per-task table")
    args = parser.parse_args()
    frame = load(args.store)
    out = [f"records {frame.height:,}, ok {int((frame['status'] == 'ok').sum()):,}, "
           f"distinct sources {frame['source_hash'].n_unique():,}, tasks "
           f"{task_frame(frame).select('task_id').n_unique():,}, complete {len(complete_tasks(frame))}", "",
           status_table(frame), "", noise_table(frame)]
    if args.since:
        for label, part in (("before", frame.filter(pl.col("created_at") < args.since)),
                            ("since", frame.filter(pl.col("created_at") >= args.since))):
            out += ["", f"{label} {args.since}:", "", noise_table(part)]
    if not args.no_tasks:
        out += ["", task_table(frame)]
    sys.stdout.write("\n".join(out) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
