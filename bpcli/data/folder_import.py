"""Importing dataset files from a local folder into the cache: for machines that cannot download.

The files are checked exactly as a download is (checksums.py): a file enters the cache only
after its SHA-256 matched, is copied atomically, and a raw IDX file is gzipped (mtime 0) so the
cache holds only .gz files.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import shutil
from pathlib import Path

from bpcli.data.checksums import RemoteFile, is_gzip, mismatch
from bpcli.data.download import prepare_cache_folder
from bpcli.data.transfer import CHUNK
from bpcli.errors import DataError

def import_files(dataset: str, files: list[RemoteFile], source: Path, dest: Path) -> list[Path]:
    """Copy files the user downloaded by hand into the cache, all verified before any copy."""
    source, dest = Path(source), Path(dest)
    found = _find_sources(dataset, files, source)
    for remote, path in zip(files, found):
        _check_import(remote, path)
    prepare_cache_folder(dest)
    return [_install(path, dest / remote.name) for remote, path in zip(files, found)]


def _find_sources(dataset: str, files: list[RemoteFile], source: Path) -> list[Path]:
    found, missing = [], []
    for remote in files:
        candidates = [source / remote.name, source / remote.name.removesuffix(".gz")]
        path = next((c for c in candidates if c.is_file()), None)
        found.append(path)
        if path is None:
            missing.append(remote.name)
    if missing:
        where = "" if source.is_dir() else " (the folder does not exist)"
        raise DataError(f"Cannot import dataset {dataset!r} from {source}{where}: missing "
                        f"{', '.join(missing)}. Expected these files there (gzip, or raw IDX without "
                        f".gz): {', '.join(f.name for f in files)}.")
    return found


def _check_import(remote: RemoteFile, path: Path) -> None:
    if not is_gzip(path) and not remote.content_sha256 and remote.sha256:
        raise DataError(f"{path} is not gzip-compressed and only the checksum of the published "
                        f"{remote.name} is known, so it cannot be verified; import the .gz file instead.")
    try:
        found = mismatch(path, remote)
    except OSError as error:
        raise DataError(f"{path}: cannot read ({error.strerror or error}).") from None
    if found is not None:
        got, expected = found
        raise DataError(f"{path} is not the expected {remote.name}: its SHA-256 is {got}, expected "
                        f"{expected}. The file is corrupt or belongs to another dataset; download it again.")


def _install(path: Path, final: Path) -> Path:
    """Copy atomically; a raw IDX file is gzipped (mtime=0) so the cache holds only .gz files."""
    part = final.with_name(final.name + ".part")
    try:
        with open(path, "rb") as src, open(part, "wb") as out:
            if is_gzip(path):
                shutil.copyfileobj(src, out, CHUNK)
            else:
                out.write(gzip.compress(src.read(), compresslevel=6, mtime=0))
            out.flush()
            os.fsync(out.fileno())
        os.replace(part, final)
    except OSError as error:
        with contextlib.suppress(OSError):
            part.unlink()
        raise DataError(f"Cannot copy {path} into {final}: {error.strerror or error}.") from None
    return final
