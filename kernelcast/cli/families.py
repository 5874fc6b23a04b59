"""``kernelcast families``: list kernel families with their spaces."""

from __future__ import annotations

import json

import typer
from rich.console import Console
from rich.table import Table

from kernelcast.cli._errors import user_errors


def families(
    name: str = typer.Argument(None, help="Show one family in full."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """List the registered kernel families, their variants and configuration spaces."""
    from kernelcast.measurement.families import family_names, get_family

    with user_errors():
        names = [name] if name else family_names()
        described = [get_family(n).describe() for n in names]
    console = Console()
    if as_json:
        console.print_json(json.dumps(described))
        return
    table = Table(title="kernelcast families")
    for col in ("family", "dims", "dtypes", "variant", "configs", "knobs"):
        table.add_column(col)
    for d in described:
        for variant, info in d["variants"].items():
            knobs = "; ".join(f"{k}: {','.join(map(str, v))}" for k, v in info["space"].items())
            table.add_row(d["name"], "x".join(d["dims"]), ",".join(d["dtypes"]), variant, str(info["size"]), knobs)
    console.print(table)


def register(app: typer.Typer) -> None:
    """Add the command to ``app``."""
    app.command("families")(families)
