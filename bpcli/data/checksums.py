"""Is this file the one that was published? SHA-256 of the file as published, or of its content.

    RemoteFile(name, sha256, content_sha256, size)   a published file and its checksums
    verify(path, remote) -> None or a reason          the check every cached and shipped file passes
    mismatch(path, remote) -> None or (got, expected)

A file matches when either checksum matches: of the file as published (the .gz)
or of its decompressed content. The second accepts re-compressed copies (Debian's
Fashion-MNIST, a raw IDX file imported by hand), since gzip bytes differ between
compressors while the content does not.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from bpcli.data.idx import IdxError, content_chunks
from bpcli.errors import DataError


@dataclass(frozen=True)
class RemoteFile:
    name: str                          # e.g. "train-images-idx3-ubyte.gz"
    sha256: str | None = None          # SHA-256 of the file as published (the .gz)
    content_sha256: str | None = None  # SHA-256 of its decompressed content
    size: int | None = None            # bytes, if known (progress total without Content-Length)


def verify(path: Path, remote: RemoteFile) -> str | None:
    """None if the file matches one of its checksums, else a short reason."""
    try:
        found = mismatch(path, remote)
    except IdxError as error:  # not decompressible, or beyond its declared size: idx.content_chunks says which
        return error.reason
    except OSError as error:
        return f"cannot read ({error.strerror or error})"
    if found is None:
        return None
    got, expected = found
    return f"checksum mismatch (got {got[:16]}…, expected {expected[:16]}…)"


def mismatch(path: Path, remote: RemoteFile) -> tuple[str, str] | None:
    """(got, expected) for the checksum that failed, or None when the file matches."""
    expected_file, expected_content = _lower(remote.sha256), _lower(remote.content_sha256)
    if not expected_file and not expected_content:
        return None  # nothing to check against
    gzipped = is_gzip(path)
    got_file = sha256_file(path)
    if expected_file and got_file == expected_file:
        return None
    if not expected_content:
        return got_file, expected_file
    try:
        got_content = sha256_chunks(content_chunks(path))  # in a stream: a gzip bomb is refused, not held
    except DataError:  # corrupt gzip: the published checksum, if known, says it best
        if expected_file:
            return got_file, expected_file
        raise
    if got_content == expected_content:
        return None
    # Report the checksum a user can reproduce with sha256sum on this very file.
    return (got_file, expected_file) if gzipped and expected_file else (got_content, expected_content)


def _lower(digest: str | None) -> str | None:
    return digest.strip().lower() if digest else None


def is_gzip(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == b"\x1f\x8b"


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_chunks(chunks) -> str:
    digest = hashlib.sha256()
    for chunk in chunks:
        digest.update(chunk)
    return digest.hexdigest()


def sha256_file(path: str | Path) -> str:
    """Read in 1 MiB blocks: a 26 MB download is hashed without holding it twice."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
