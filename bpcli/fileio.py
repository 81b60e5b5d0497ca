"""Writing files so that a crash never leaves a half-written one in place.

    write_file(path, data, what)     atomic, and a failure raised as the project's error (the one to use)
    atomic_write_bytes(path, data)   atomic, OSError left to the caller
    append_text(path, text, what)    a log row, appended (and synced unless durable=False)
    sync_file(path)                  make what was appended durable (if the file exists)
    read_log_rows(path)              a JSON-lines log, torn lines skipped
    open_regular(path, what)         (file, size) for reading, refused unless it is a regular file
    physical_memory()                bytes of RAM, for refusing what a machine cannot hold before allocating it

`atomic_write_bytes` writes a temporary file next to the target, flushes and
fsyncs it, then renames it over the target (os.replace is atomic on POSIX) and
fsyncs the folder so the rename itself survives a power cut. A reader sees the
old file or the new one, never a mix. Temporary files carry the suffix
TMP_SUFFIX so that a later run can find and remove orphans of a killed one.

Only regular files are replaced that way. A special file (a terminal, a pipe,
/dev/null, /dev/stdout) is written in place: renaming a regular file over it
would replace the device with a file. A symlink is followed, so the file it
points to is replaced and the link stays.

A file of unknown size is never read whole: readers open it with open_regular
(a device such as /dev/zero or a pipe never ends) and bound what they read.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import stat
import tempfile
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
    data = data.encode() if isinstance(data, str) else data
    try:
        if _write_in_place(path, data):
            return
        atomic_write_bytes(os.path.realpath(path) if os.path.islink(path) else path, data, backup)
    except OSError as error:
        raise write_error(path, error, what, when_full) from None
    except ValueError as error:   # a NUL byte in the path
        from bpcli.errors import CheckpointError

        raise CheckpointError(f"cannot write {what} {path!r}: {error}") from None


# /dev/stdout, /dev/fd/N, /proc/self/fd/N: this process's own open file N, written through that descriptor
# so that the shell's redirection (`>`, `>>`, a pipe) is honoured as it was opened.
_OWN_DESCRIPTOR = re.compile(r"/(?:dev/fd|proc/self/fd)/(\d+)")
_STANDARD = {"/dev/stdin": 0, "/dev/stdout": 1, "/dev/stderr": 2}


def _write_in_place(path: str | Path, data: bytes) -> bool:
    """Write a special file directly (True); False for a regular file or a new one (written atomically).

    Raises OSError (or ValueError for a NUL byte) as open and write do.
    """
    fd = _own_descriptor(path)
    if fd is not None:
        _write_all(fd, data)
        return True
    try:
        mode = os.stat(path).st_mode   # follows symlinks
    except FileNotFoundError:
        return False
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):   # a folder: the atomic write's rename names the problem
        return False
    with open(path, "wb", buffering=0) as f:
        _write_all(f.fileno(), data)
    return True


def _own_descriptor(path: str | Path) -> int | None:
    """N if `path`, or a symlink on the way from it, names this process's descriptor N (/dev/stdout is 1)."""
    name = os.path.abspath(path)
    for _ in range(40):   # the kernel's own limit on a chain of symlinks
        if name in _STANDARD:
            return _STANDARD[name]
        match = _OWN_DESCRIPTOR.fullmatch(name)
        if match:
            return int(match.group(1))
        try:
            name = os.path.normpath(os.path.join(os.path.dirname(name), os.readlink(name)))
        except OSError:   # not a symlink (or not there)
            return None
    return None


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def append_text(path: str | Path, text: str, what: str = "log", durable: bool = True) -> None:
    """Append to a log; synced unless `durable` is False.

    An unsynced row is with the operating system once this returns, so it
    survives the process being killed, though not a power cut; a caller that
    passes durable=False makes the file durable (sync_file) when it matters,
    e.g. before a checkpoint that vouches for the row. One os.write of the
    UTF-8 bytes: a text-mode open() cost 3x as much (~55 against ~17 us), and a
    run of many tiny epochs appends four rows an epoch.
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        try:
            _write_all(fd, text.encode("utf-8"))
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as error:
        raise write_error(path, error, what) from None


def sync_file(path: str | Path, what: str = "log") -> None:
    """fsync a file (any descriptor of it flushes all its written data); nothing if it does not exist."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return
    except OSError as error:
        raise write_error(path, error, what) from None
    try:
        os.fsync(fd)
    except OSError as error:
        raise write_error(path, error, what) from None
    finally:
        os.close(fd)


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


def create_folder(parent: str | Path, base: str, fill, what: str, numbered: bool = True) -> Path:
    """parent/base (base-2, base-3, ... if taken and `numbered`), made whole: `fill(staging)` writes its first
    files into a hidden temporary folder, which is then renamed into place.

    So a crash never leaves a half-made folder (a run directory without its config.yaml,
    which neither resumes nor lets a new run start). A taken `base` that is not
    `numbered` is a FileExistsError for the caller to explain; anything else that fails
    is a CheckpointError naming `what`.
    """
    from bpcli.errors import CheckpointError

    parent = Path(parent)
    try:
        parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{base}.", suffix=".creating", dir=parent))
    except OSError as error:
        raise CheckpointError(f"cannot create the {what} under {parent}: {error.strerror or error}") from None
    try:
        fill(staging)
        return _rename_into_place(staging, parent, base, what, numbered)
    except FileExistsError:
        raise
    except OSError as error:
        raise CheckpointError(f"cannot create the {what} under {parent}: {error.strerror or error}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)   # only if it was never renamed: ours, nothing of the user's


def _rename_into_place(staging: Path, parent: Path, base: str, what: str, numbered: bool) -> Path:
    from bpcli.errors import CheckpointError

    for attempt in range(1, 1000):
        target = parent / (base if attempt == 1 else f"{base}-{attempt}")
        if target.exists() or target.is_symlink():
            if not numbered:
                raise FileExistsError(errno.EEXIST, "already exists", str(target))
            continue
        try:
            os.rename(staging, target)
        except OSError as error:
            raise CheckpointError(f"cannot create the {what} {target}: {error.strerror or error}") from None
        return target
    raise CheckpointError(f"cannot find a free {what} name for {base} in {parent}")


def lock_folder(folder: str | Path) -> int | None:
    """Take `folder`/.lock's OS lock (flock) and return its descriptor (os.close releases it), or None if
    another process holds it. The lock dies with its process however it ends (SIGKILL too), so a stale
    lock never blocks a resume."""
    import fcntl

    fd = os.open(Path(folder) / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def remove_orphans(folder: str | Path, suffix: str = TMP_SUFFIX) -> list[Path]:
    """Delete temporary files a killed process left behind; returns what was removed."""
    removed = []
    for orphan in Path(folder).glob(f"*{suffix}"):
        orphan.unlink(missing_ok=True)
        removed.append(orphan)
    return removed


def read_log_rows(path: str | Path, key: str = "epoch") -> list[dict]:
    """The rows of a JSON-lines log that parse as objects with an integer `key` (epoch, a trial's number); [] without the file.

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
    return [r for r in rows if isinstance(r, dict) and isinstance(r.get(key), int)]


def open_regular(path: str | Path, what: str = "file"):
    """(binary file opened for reading, its size), if `path` is a regular file; else OSError with a plain reason.

    A device (/dev/zero), a pipe or a socket has no size and may never end, so
    no reader may take it for a file: each opens it here, then bounds its reads
    by the size.
    """
    f = open(path, "rb")
    try:
        mode = os.fstat(f.fileno())
        if stat.S_ISDIR(mode.st_mode):
            raise IsADirectoryError(errno.EISDIR, "Is a directory")
        if not stat.S_ISREG(mode.st_mode):
            kind = ("a character device" if stat.S_ISCHR(mode.st_mode) else "a block device" if stat.S_ISBLK(
                mode.st_mode) else "a pipe" if stat.S_ISFIFO(mode.st_mode) else "a socket")
            raise OSError(errno.EINVAL, f"{kind}, not a regular file: it cannot be a {what}")
    except BaseException:
        f.close()
        raise
    return f, mode.st_size


def physical_memory() -> int:
    """Bytes of physical memory (SC_PHYS_PAGES * SC_PAGE_SIZE); 2**63 where the system does not say.

    Used to refuse, with a message, an allocation that could never succeed
    (a model of 10**9 units, an array declared 10**6 x 10**6) before it is tried:
    an attempt would end in a MemoryError, or in the kernel's OOM killer.
    """
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 1 << 63


def memory_size(n: int | float) -> str:
    """'40.0 GB', '808.0 kB' (powers of 1000), for messages about memory."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n:.0f} bytes"
