"""The command line: thin commands that call library functions and print their results.

Only this module prints and maps errors to exit codes. Heavy modules (NumPy and
everything built on it) are imported inside the commands, so `bpcli --help`
and `bpcli --version` start fast.
"""

from __future__ import annotations

import functools
import json
import sys
from typing import Optional

import typer

from . import __version__
from .errors import EXIT_INTERNAL, BpcliError

EXIT_CODES_HELP = (
    "Exit codes: 0 ok, 1 internal error or failed check, 2 usage or config error, "
    "3 training diverged, 4 data or download error, 5 checkpoint or I/O error, "
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

_state = {"debug": False}


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
    _state["debug"] = debug


def user_errors(command):
    """Turn a BpcliError into a one-paragraph message on stderr and its exit code (traceback only with --debug)."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except BpcliError as error:
            if _state["debug"]:
                raise
            typer.echo(f"error: {error}", err=True)
            raise typer.Exit(error.exit_code)
        except (typer.Exit, typer.Abort, KeyboardInterrupt):
            raise
        except Exception as error:  # a bug: say so plainly
            if _state["debug"]:
                raise
            typer.echo(f"internal error: {type(error).__name__}: {error} "
                       "(run again with --debug for the traceback, and please report it)", err=True)
            raise typer.Exit(EXIT_INTERNAL)

    return wrapper


@app.command()
@user_errors
def gradcheck(
    eps: float = typer.Option(1e-6, help="Finite-difference step."),
    tol: float = typer.Option(1e-6, help="Largest relative error that passes."),
    seed: int = typer.Option(0, help="Seed for the random networks and data."),
    samples: int = typer.Option(4, min=1, help="Examples in each checked batch."),
    as_json: bool = typer.Option(False, "--json", help="Print the results as JSON."),
) -> None:
    """Check every analytic gradient against central finite differences in float64.

    Checks each layer, activation, loss and regularizer alone and in small
    networks, for every parameter and for the input. Exits 1 if any check fails.

    Example: bpcli gradcheck --tol 1e-7 --json
    """
    from .gradcheck import check_all

    results = check_all(eps=eps, tol=tol, seed=seed, samples=samples)
    failed = [r for r in results if not r.passed]
    if as_json:
        summary = {"passed": not failed, "checks": len(results), "failed": len(failed), "eps": eps, "tol": tol}
        typer.echo(json.dumps({**summary, "results": [r.as_dict() for r in results]}, indent=2))
    else:
        _print_gradcheck_table(results, tol)
    if failed:
        raise typer.Exit(1)


def _print_gradcheck_table(results, tol: float) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="Gradient check (float64, central differences)")
    for column in ("component", "parameter", "rel. error", "checked", "kinks skipped", "result"):
        table.add_column(column, justify="right" if column in ("rel. error", "checked", "kinks skipped") else "left")
    for r in results:
        verdict = "[green]pass[/]" if r.passed else "[bold red]FAIL[/]"
        table.add_row(r.component, r.parameter, f"{r.rel_error:.2e}", str(r.checked), str(r.skipped), verdict)
    console = Console()
    console.print(table)
    failed = sum(not r.passed for r in results)
    worst = max((r.rel_error for r in results), default=0.0)
    console.print(f"{len(results) - failed}/{len(results)} checks passed; "
                  f"largest relative error {worst:.2e} (tolerance {tol:.0e}).")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
