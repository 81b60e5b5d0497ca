"""The command line: the Typer app, assembled from one module per command in cli/.

Only the commands print and map errors to exit codes. Heavy modules (NumPy and
everything built on it) are imported inside the commands, so `bpcli --help`
and `bpcli --version` start fast.

Importing this module imports nothing heavy (only the errors' names): `main`
(the console entry point, and `python -m bpcli`) first makes Ctrl-C a one-line exit 130, then imports
Typer and the commands, which take most of a start-up; until a command starts
there is nothing to clean up, so it exits at once. `app` is built on first use.
"""

from __future__ import annotations

import os
import signal

from bpcli.errors import EXIT_SIGINT, INTERRUPTED

EXIT_CODES_HELP = (
    "Exit codes: 0 ok, 1 internal error or failed check, 2 usage or config error, "
    "3 training diverged, 4 data or download error, 5 checkpoint or I/O error, 6 disk full, "
    "130 interrupted (Ctrl-C), 143 terminated (SIGTERM)."
)


def main() -> None:
    """`bpcli`: Ctrl-C is handled from here on, then the app is built and run."""
    signal.signal(signal.SIGINT, exit_at_once)   # before the imports below: no traceback from the middle of one
    from bpcli.cli.common import PlainHelp, state

    state["outside_commands"] = exit_at_once   # user_errors hands Ctrl-C to a command while it runs, then back
    build_app()()


def exit_at_once(signum, frame) -> None:
    """SIGINT before a command runs (or after it returned): one line and exit 130, no traceback."""
    os.write(2, f"{INTERRUPTED}\n".encode())
    os._exit(EXIT_SIGINT)


_built = []


def build_app():
    """The Typer app with every command (built once)."""
    if _built:
        return _built[0]
    import typer

    from bpcli.version import __version__
    from bpcli.cli import (config, data, evaluate, explain, export, gradcheck, inspect_command, plot, sweep,
                           time_command, train)
    from bpcli.cli import compare
    from bpcli.cli.common import PlainHelp, state

    app = typer.Typer(
        name="bpcli",
        help="Train neural networks with backpropagation written by hand in NumPy.\n\n" + EXIT_CODES_HELP,
        add_completion=True,
        no_args_is_help=True,
        rich_markup_mode=None,
        pretty_exceptions_enable=False,
    )
    app.command(cls=PlainHelp)(train.train)
    app.command("eval", cls=PlainHelp)(evaluate.eval_)
    app.command(cls=PlainHelp)(evaluate.predict)
    app.command("export", cls=PlainHelp)(export.export)
    app.command(cls=PlainHelp)(gradcheck.gradcheck)
    app.command("time", cls=PlainHelp)(time_command.time_)
    app.command("plot", cls=PlainHelp)(plot.command)
    app.command("compare", cls=PlainHelp)(compare.command)
    app.command("inspect", cls=PlainHelp)(inspect_command.command)
    app.command("explain", cls=PlainHelp)(explain.command)
    app.command("sweep", cls=PlainHelp)(sweep.sweep)
    app.add_typer(data.app, name="data")
    app.add_typer(config.app, name="config")

    def print_version(value: bool) -> None:
        if value:
            typer.echo(f"bpcli {__version__}")
            raise typer.Exit()

    @app.callback()
    def main_options(
        version: bool = typer.Option(False, "--version", callback=print_version, is_eager=True,
                                     help="Print the version and exit."),
        debug: bool = typer.Option(False, "--debug", help="Show a traceback for errors."),
    ) -> None:
        state["debug"] = debug

    _built.append(app)
    return app


def __getattr__(name: str):
    """`from bpcli.cli.app import app` builds the app on first use."""
    if name == "app":
        return build_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if __name__ == "__main__":
    main()
