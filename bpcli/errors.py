"""The project's own errors, each with the exit code the CLI maps it to.

Library modules raise these and never print; only the CLI turns them into a
one-paragraph message on stderr and an exit code. The message should name the
file, the key or line, and what is allowed, so a user can fix the input
without reading a traceback.

Exit codes (also shown in `bpcli --help` and README):

    0    success
    1    internal error (a bug: please report it)
    2    usage or config error
    3    training diverged (NaN or infinite loss)
    4    data or download error
    5    checkpoint or file I/O error
    6    disk full (or a file-size limit reached) while writing
    130  interrupted by SIGINT (Ctrl-C); 143 by SIGTERM
"""

from __future__ import annotations

import difflib

EXIT_INTERNAL = 1
EXIT_USAGE = 2
EXIT_DIVERGED = 3
EXIT_DATA = 4
EXIT_IO = 5
EXIT_DISK_FULL = 6
EXIT_SIGINT = 130
EXIT_SIGTERM = 143
INTERRUPTED = "interrupted (Ctrl-C)"   # the whole message of a Ctrl-C outside training (which says more)


class BpcliError(Exception):
    """Base class: a problem the user can act on, with its exit code."""

    exit_code = EXIT_INTERNAL

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class ConfigError(BpcliError):
    """A bad config value or model spec: names the file, key path and line."""

    exit_code = EXIT_USAGE

    def __init__(self, message: str, *, file: str | None = None,
                 key: str | None = None, line: int | None = None):
        self.file, self.key, self.line = file, key, line
        where = ""
        if file:
            where = f"{file}:{line}: " if line else f"{file}: "
        if key:
            where += f"{key}: "
        super().__init__(where + message)


class UsageError(BpcliError):
    """A command-line option given a value the command does not take: names the option and what is allowed."""

    exit_code = EXIT_USAGE


class DataError(BpcliError):
    """Missing, corrupt or undownloadable data."""

    exit_code = EXIT_DATA


class CheckpointError(BpcliError):
    """A checkpoint that cannot be read or written."""

    exit_code = EXIT_IO


class DiskFullError(CheckpointError):
    """No space left (ENOSPC, EFBIG, EDQUOT) while writing a checkpoint, log or cache file."""

    exit_code = EXIT_DISK_FULL


class DivergedError(BpcliError):
    """The loss became NaN or infinite."""

    exit_code = EXIT_DIVERGED


class MissingExtraError(BpcliError):
    """An optional dependency is not installed (e.g. matplotlib for the pictures): names the pip command."""

    exit_code = EXIT_USAGE


def did_you_mean(name, allowed) -> str:
    """' Did you mean 'relu'?' when `name` is close to one of `allowed`, else ''."""
    close = difflib.get_close_matches(str(name), [str(a) for a in allowed], n=1)
    return f" Did you mean {close[0]!r}?" if close else ""


class Interrupted(BpcliError):
    """SIGINT or SIGTERM stopped training at a batch boundary (after a resumable checkpoint)."""

    def __init__(self, signal_name: str, signum: int):
        self.signal_name, self.signum = signal_name, signum
        self.exit_code = 128 + signum  # 130 for SIGINT, 143 for SIGTERM
        self.run_dir = None  # set by the run that stopped
        super().__init__(f"training stopped by {signal_name}")
