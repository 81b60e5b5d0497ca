"""What every command shares: turning errors into messages and exit codes, and the consoles."""

from __future__ import annotations

import functools
import json
import os

import typer

from ..errors import EXIT_INTERNAL, BpcliError

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


def console(stderr: bool = False):
    """A Rich console; no colour or cursor codes when NO_COLOR is set or the stream is not a terminal."""
    from rich.console import Console

    return Console(stderr=stderr, no_color="NO_COLOR" in os.environ or None, highlight=False)


def print_json(data) -> None:
    """Pure JSON on stdout (messages go to stderr)."""
    typer.echo(json.dumps(data, indent=2))
