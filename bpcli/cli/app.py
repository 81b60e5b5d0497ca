"""The command line: the Typer app, assembled from one module per command in cli/.

Only the commands print and map errors to exit codes. Heavy modules (NumPy and
everything built on it) are imported inside the commands, so `bpcli --help`
and `bpcli --version` start fast.
"""

from __future__ import annotations

import typer

from bpcli import __version__
from bpcli.cli import (config, data, evaluate, explain, gradcheck, inspect_command, plot, sweep, time_command,
                       train)
from bpcli.cli.common import state

EXIT_CODES_HELP = (
    "Exit codes: 0 ok, 1 internal error or failed check, 2 usage or config error, "
    "3 training diverged, 4 data or download error, 5 checkpoint or I/O error, 6 disk full, "
    "130 interrupted (Ctrl-C), 143 terminated (SIGTERM)."
)

app = typer.Typer(
    name="bpcli",
    help="Train neural networks with backpropagation written by hand in NumPy.\n\n" + EXIT_CODES_HELP,
    add_completion=False,
    no_args_is_help=True,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
)
app.command()(train.train)
app.command("eval")(evaluate.eval_)
app.command()(evaluate.predict)
app.command()(gradcheck.gradcheck)
app.command("time")(time_command.time_)
app.command("plot")(plot.command)
app.command("inspect")(inspect_command.command)
app.command("explain")(explain.command)
app.command("sweep")(sweep.sweep)
app.add_typer(data.app, name="data")
app.add_typer(config.app, name="config")


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"bpcli {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: bool = typer.Option(False, "--version", callback=_version_callback, is_eager=True,
                                 help="Print the version and exit."),
    debug: bool = typer.Option(False, "--debug", help="Show a traceback for errors."),
) -> None:
    state["debug"] = debug


def main() -> None:
    app()


if __name__ == "__main__":
    main()
