"""Writing files so that a crash never leaves a half-written one in place.

    write_file(path, data, what)     atomic, and a failure raised as the project's error (the one to use)
    atomic_write_bytes(path, data)   atomic, OSError left to the caller
    append_text(path, text, what)    a log row, appended and synced
    read_log_rows(path)              a JSON-lines log, torn lines skipped

`atomic_write_bytes` writes a temporary file next to the target, flushes and
fsyncs it, then renames it over the target (os.replace is atomic on POSIX) and
fsyncs the folder so the rename itself survives a power cut. A reader sees the
old file or the new one, never a mix. Temporary files carry the suffix
TMP_SUFFIX so that a later run can find and remove orphans of a killed one.
"""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

TMP_SUFFIX = ".tmp"
# What a full disk's message advises by default: a run's files are rewritten whole, so the run resumes.
RESUME_WHEN_FULL = "nothing already written was lost: free some space and resume the run"


def atomic_write_bytes(path: str | Path, data: bytes, backup: str | Path | None = None) -> None:
    """Replace `path` with `data` atomically; with `backup`, the old file is kept under that name.

    The backup is renamed only once the new file is complete on disk, so at
    every moment at least one of the two names holds a complete file.
    """
    path = Path(path)
    tmp = path.with_name(f"{path.name}.{os.getpid()}{TMP_SUFFIX}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if backup is not None and path.exists():
            os.replace(path, backup)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def write_file(path: str | Path, data: str | bytes, what: str = "file", backup: str | Path | None = None, *,
               when_full: str = RESUME_WHEN_FULL) -> None:
    """Write `data` atomically; a failure is a DiskFullError (disk or size limit full) or a CheckpointError.

    The one way bpcli writes a file a user keeps (configs, summaries, logs
    rewritten whole, checkpoints, pictures, predictions), so every write both
    survives a crash and fails with a message instead of a traceback.
    `when_full` is the advice after a full disk, for files that are not a run's.
    """
    try:
        atomic_write_bytes(path, data.encode() if isinstance(data, str) else data, backup)
    except OSError as error:
        raise write_error(path, error, what, when_full) from None


def append_text(path: str | Path, text: str, what: str = "log") -> None:
    """Append to a log and sync it, so a row reported as written survives a crash."""
    try:
        with open(path, "a") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
    except OSError as error:
        raise write_error(path, error, what) from None


def write_error(path: str | Path, error: OSError, what: str = "file", when_full: str = RESUME_WHEN_FULL):
    """The project error for a failed write: DiskFullError when the disk (or a size limit) is full."""
    from bpcli.errors import CheckpointError, DiskFullError

    if error.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
        return DiskFullError(f"disk full while writing {what} {path} ({error.strerror}); {when_full}")
    return CheckpointError(f"cannot write {what} {path}: {error.strerror or error}")


def fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def remove_orphans(folder: str | Path, suffix: str = TMP_SUFFIX) -> list[Path]:
    """Delete temporary files a killed process left behind; returns what was removed."""
    removed = []
    for orphan in Path(folder).glob(f"*{suffix}"):
        orphan.unlink(missing_ok=True)
        removed.append(orphan)
    return removed


def read_log_rows(path: str | Path) -> list[dict]:
    """The rows of a JSON-lines log that parse as objects with an integer `epoch`; [] without the file.

    A line cut short by a crash (or still being written) is skipped, not an error:
    the callers rebuild or summarize a log, they do not judge it.
    """
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return []
    rows = []
    for line in text.splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return [r for r in rows if isinstance(r, dict) and isinstance(r.get("epoch"), int)]
