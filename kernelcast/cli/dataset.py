"""``kernelcast dataset``: import external measurements, describe and compact a dataset folder."""

from __future__ import annotations

import collections
import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from kernelcast.cli._errors import user_errors

dataset_app = typer.Typer(
    name="dataset",
    help="Import external measurements into a dataset folder, describe it, compact it.",
    no_args_is_help=True,
)


def _report_import(console: Console, records: list, written: int, out: Path) -> None:
    by_status = collections.Counter(r.status.value for r in records)
    statuses = ", ".join(f"{status} {n}" for status, n in sorted(by_status.items()))
    console.print(
        f"read {len(records)} records ({statuses}); wrote {written} new to {out}"
        f" ({len(records) - written} already there or repeated)",
        highlight=False,
    )


@dataset_app.command("import-kernel-tuner")
def import_kernel_tuner_command(
    files: Annotated[list[Path], typer.Argument(help="Kernel Tuner caches (.json[.gz], even left open), KTT outputs.")],
    out: Annotated[Path, typer.Option("--out", help="Dataset folder to append to (created if absent).")],
    device: Annotated[
        str | None, typer.Option("--device", help="Device name to use instead of the file's device_name.")
    ] = None,
    time_unit: Annotated[
        str | None, typer.Option("--time-unit", help="Unit of the times in the files: s, ms or us.")
    ] = None,
) -> None:
    """Import Kernel Tuner cache files and KTT outputs (told apart by content).

    Import the caches of one kernel on several GPUs together, so that files holding seconds are found.
    """
    from kernelcast.datasets import open_store
    from kernelcast.datasets.importers import import_kernel_tuner

    with user_errors():
        records = import_kernel_tuner(files, device=device, time_unit=time_unit)
        written = open_store(out).append(records)
    _report_import(Console(), records, written, out)


@dataset_app.command("import-kernelbench")
def import_kernelbench_command(
    path: Annotated[Path, typer.Argument(help="KernelBench results/timing folder, one run folder, or one file.")],
    out: Annotated[Path, typer.Option("--out", help="Dataset folder to append to (created if absent).")],
    device: Annotated[str | None, typer.Option("--device", help="GPU name for entries that name none.")] = None,
    skip_unreadable: Annotated[
        bool, typer.Option("--skip-unreadable", help="Skip (and log) files that cannot be read.")
    ] = False,
) -> None:
    """Import KernelBench baseline timings (mean, std, min, max per problem and PyTorch mode)."""
    from kernelcast.datasets import open_store
    from kernelcast.datasets.importers import import_kernelbench

    with user_errors():
        records = import_kernelbench(path, device=device, skip_unreadable=skip_unreadable)
        written = open_store(out).append(records)
    _report_import(Console(), records, written, out)


@dataset_app.command("info")
def info_command(
    path: Annotated[Path, typer.Argument(help="Dataset folder.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
) -> None:
    """Describe a dataset: records per task and status, sources, and repeat noise."""
    from kernelcast.datasets import open_store
    from kernelcast.datasets.summary import summarize
    from kernelcast.measurement.records import Status

    with user_errors():
        summary = summarize(open_store(path, must_exist=True))
    console = Console(width=200)
    if as_json:
        console.print_json(json.dumps(summary))
        return
    statuses = [s.value for s in Status if s.value in summary["status_counts"]]
    table = Table(title=f"{summary['path']}: records per task and status")
    for column in ("family", "problem", "dtype", "device", "records", *statuses):
        table.add_column(column, justify="right" if column == "records" or column in statuses else "left")
    for group in summary["groups"]:
        table.add_row(
            group["family"],
            group["problem"],
            group["dtype"],
            group["device"],
            str(group["n_records"]),
            *(str(group["status_counts"].get(s, 0)) for s in statuses),
        )
    table.add_section()
    table.add_row("total", "", "", "", str(summary["n_records"]), *(str(summary["status_counts"][s]) for s in statuses))
    console.print(table)
    quantiles = ", ".join(
        f"{name} {value:.4f}" if value is not None else f"{name} -" for name, value in summary["cv_quantiles"].items()
    )
    console.print(
        f"ok records: {summary['n_ok']} of {summary['n_records']}\n"
        f"distinct sources: {summary['n_source_hashes']} source hashes, "
        f"{summary['n_source_texts']} source texts stored\n"
        f"repeat noise (coefficient of variation of {summary['n_cv']} ok records timed at least twice): {quantiles}",
        highlight=False,
    )


@dataset_app.command("compact")
def compact_command(path: Annotated[Path, typer.Argument(help="Dataset folder.")]) -> None:
    """Rewrite a dataset's part files into one records file and one sources file."""
    from kernelcast.datasets import open_store

    with user_errors():
        store = open_store(path, must_exist=True)
        n_parts = len(list(store.records_dir.glob("part-v*.parquet")))
        n_records = store.compact()
    Console().print(f"compacted {n_parts} record part files of {path} into one holding {n_records} records")


def register(app: typer.Typer) -> None:
    """Add the ``dataset`` command group to ``app``."""
    app.add_typer(dataset_app, name="dataset")
