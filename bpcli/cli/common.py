"""What every command shares: turning errors into messages and exit codes, and the consoles."""

from __future__ import annotations

import functools
import json
import os

import typer

from bpcli.errors import EXIT_INTERNAL, BpcliError

state = {"debug": False}


def user_errors(command):
    """Turn a BpcliError into a one-paragraph message on stderr and its exit code (traceback only with --debug)."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except BpcliError as error:
            if state["debug"]:
                raise
            typer.echo(f"error: {error}", err=True)
            raise typer.Exit(error.exit_code)
        except (typer.Exit, typer.Abort, KeyboardInterrupt):
            raise
        except Exception as error:  # a bug: say so plainly
            if state["debug"]:
                raise
            typer.echo(f"internal error: {type(error).__name__}: {error} "
                       "(run again with --debug for the traceback, and please report it)", err=True)
            raise typer.Exit(EXIT_INTERNAL)

    return wrapper


def no_color() -> bool:
    """NO_COLOR set to anything but the empty string (https://no-color.org): the user wants plain text."""
    return os.environ.get("NO_COLOR", "") != ""


def console(stderr: bool = False):
    """A Rich console that draws (colour, styles, live bars) only on a terminal, and never with NO_COLOR.

    Otherwise it is plain: no colour system, so no style codes at all (Rich's
    own no_color keeps bold and italics), and not a terminal, so no cursor
    codes and no live redrawing; logs, pipes and screen readers get text.
    """
    from rich.console import Console

    fancy = Console(stderr=stderr, highlight=False)
    if fancy.is_terminal and not no_color():
        return fancy
    return Console(stderr=stderr, highlight=False, color_system=None, no_color=True, force_terminal=False)


def print_json(data) -> None:
    """Pure JSON on stdout (messages go to stderr)."""
    typer.echo(json.dumps(data, indent=2))
