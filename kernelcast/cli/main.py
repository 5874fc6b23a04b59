"""The ``kernelcast`` console command: parses arguments and calls the library, nothing more."""

from __future__ import annotations

import importlib
import logging

import typer

app = typer.Typer(
    name="kernelcast",
    help="Surrogate-screened GPU kernel tuning: measure, learn, search.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)

# Each module defines `register(app)`; heavy imports stay inside the command functions.
COMMAND_MODULES: tuple[str, ...] = (
    "kernelcast.cli.families",
    "kernelcast.cli.measure",
    "kernelcast.cli.dataset",
    "kernelcast.cli.search",
    "kernelcast.cli.train",
    "kernelcast.cli.evaluate",
)

for _name in COMMAND_MODULES:
    importlib.import_module(_name).register(app)


@app.callback()
def _root(verbose: bool = typer.Option(False, "--verbose", "-v", help="Log debug messages.")) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")


def main() -> None:
    """Entry point of the console script."""
    app()


if __name__ == "__main__":
    main()
