"""What every command shares: turning errors into messages and exit codes, and the consoles."""

from __future__ import annotations

import functools
import json
import os
import signal

import typer

from bpcli.errors import EXIT_INTERNAL, EXIT_SIGINT, INTERRUPTED, BpcliError

# outside_commands: when run as `bpcli` (app.main), the SIGINT handler for the time no command runs
state = {"debug": False, "outside_commands": None}


def user_errors(command):
    """Turn a BpcliError into a one-paragraph message on stderr and its exit code (traceback only with --debug).

    Ctrl-C while the command runs is a KeyboardInterrupt, so that the command's own
    cleanup runs (a partial download is removed, an atomic write leaves no temporary
    file), then one line and exit 130. Before and after it, app.main's handler exits at once.
    """

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        outside = state["outside_commands"]
        if outside:
            signal.signal(signal.SIGINT, signal.default_int_handler)
        try:
            return command(*args, **kwargs)
        except BpcliError as error:
            if state["debug"]:
                raise
            typer.echo(f"error: {error}", err=True)
            raise typer.Exit(error.exit_code)
        except KeyboardInterrupt:
            if state["debug"]:
                raise
            typer.echo(INTERRUPTED, err=True)
            raise typer.Exit(EXIT_SIGINT)
        except (typer.Exit, typer.Abort):
            raise
        except BrokenPipeError:   # the reader went away (bpcli config list | head): nothing left to say to it
            _silence_stdout()
            raise typer.Exit(0)
        except Exception as error:  # a bug: say so plainly
            if state["debug"]:
                raise
            typer.echo(f"internal error: {type(error).__name__}: {error} "
                       "(run again with --debug for the traceback, and please report it)", err=True)
            raise typer.Exit(EXIT_INTERNAL)
        finally:
            if outside:
                signal.signal(signal.SIGINT, outside)

    return wrapper


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so Python's flush at exit does not fail on the closed pipe a second time."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.close(devnull)


def no_color() -> bool:
    """NO_COLOR set to anything but the empty string (https://no-color.org): the user wants plain text."""
    return os.environ.get("NO_COLOR", "") != ""


def console(stderr: bool = False):
    """A Rich console: live bars on a terminal, colour and styles only on one without NO_COLOR.

    NO_COLOR takes the colour away, not the redrawing: no colour system, so no
    style codes at all (Rich's own no_color keeps bold and italics), but still a
    terminal, so progress bars stay live. Into a pipe or a file it is plain text,
    not a terminal (no cursor codes, no live redrawing), and PIPE_WIDTH wide:
    Rich would assume 80 columns there and cut table cells (`layers.0.wei…`),
    where nothing needs to wrap.
    """
    from rich.console import Console

    fancy = Console(stderr=stderr, highlight=False)
    if not fancy.is_terminal:
        return Console(stderr=stderr, highlight=False, color_system=None, no_color=True, force_terminal=False,
                       width=max(fancy.width, PIPE_WIDTH))
    if no_color():
        return Console(stderr=stderr, highlight=False, color_system=None, no_color=True)
    return fancy


PIPE_WIDTH = 1000   # columns of a console writing into a pipe or a file: every table at its full width


def print_json(data) -> None:
    """Pure JSON on stdout (messages go to stderr)."""
    typer.echo(json.dumps(data, indent=2))


# The value an option takes, by its parameter's name, for every command that does not name it itself.
METAVARS = {"overrides": "KEY=VALUE", "resume": "RUN_DIR", "init_from": "CHECKPOINT", "data_dir": "DIR",
            "output": "FILE", "mirror": "URL", "workers": "N", "trials": "N", "top": "N", "repeats": "N",
            "samples": "N", "max_entries": "N", "seed": "N", "eps": "FLOAT", "tol": "FLOAT"}


class PlainHelp(typer.core.TyperCommand):
    """--help in the words of the docs (`bpcli eval [OPTIONS] CHECKPOINT_OR_RUN_DIR`), not Python's types.

    Typer shows every argument as `NAME <str>` and a required one as `{NAME}` in the
    usage line, and an option without a metavar as `--eps <float>`. Here an argument
    is its metavar (upper case; `[NAME]` when optional, `NAME...` when repeated) and
    an option without one is named by METAVARS or after itself (`--target TARGET`), so a new
    parameter cannot bring the Python types back (tests/test_help.py reads every command's help).
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for param in self.params:
            flag = getattr(param, "is_flag", False) or getattr(param, "count", False)
            if param.metavar is None and param.name and not flag:
                param.metavar = METAVARS.get(param.name, param.name.upper())

    def collect_usage_pieces(self, ctx) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if param.param_type_name == "argument":
                name = param.metavar if param.required else f"[{param.metavar}]"
                pieces.append(name + ("..." if param.nargs != 1 else ""))
        return pieces

    def format_options(self, ctx, formatter) -> None:
        arguments, options = [], []
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is None:
                continue
            if param.param_type_name == "argument":
                arguments.append((param.metavar, record[1]))
            else:
                options.append(record)
        for title, rows in (("Arguments", arguments), ("Options", options)):
            if rows:
                with formatter.section(title):
                    formatter.write_dl(rows)
