"""Writing files so that a crash never leaves a half-written one in place.

`atomic_write_bytes` writes a temporary file next to the target, flushes and
fsyncs it, then renames it over the target (os.replace is atomic on POSIX) and
fsyncs the folder so the rename itself survives a power cut. A reader sees the
old file or the new one, never a mix. Temporary files carry the suffix
TMP_SUFFIX so that a later run can find and remove orphans of a killed one.
"""

from __future__ import annotations

import os
from pathlib import Path

TMP_SUFFIX = ".tmp"


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    path = Path(path)
    tmp = path.with_name(f"{path.name}.{os.getpid()}{TMP_SUFFIX}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


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
