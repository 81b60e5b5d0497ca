"""The IDX file format of MNIST and Fashion-MNIST, read with every check.

An IDX file is a 4-byte magic number (two zero bytes, a type code, the number of
dimensions), one big-endian uint32 per dimension, then the values in row-major
order. MNIST ships them gzip-compressed. A file that is truncated, has extra
bytes, the wrong magic number or a bad gzip checksum raises a DataError that
names the file; nothing ever comes back as a silently short array.

The header declares the content's exact size, so content is read as a stream
(`content_chunks`) that stops as soon as it goes beyond that size: a gzip bomb
(a few hundred kB that inflate to gigabytes) is refused after the declared bytes,
in a few MiB of memory, instead of being decompressed whole.
"""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path
from typing import Iterator

import numpy as np

from bpcli.errors import DataError

TYPE_CODES = {0x08: np.dtype(np.uint8), 0x09: np.dtype(np.int8), 0x0B: np.dtype(">i2"),
              0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}
GZIP_MAGIC = b"\x1f\x8b"
BLOCK = 1 << 20  # 1 MiB read from the file, and at most 1 MiB decompressed at a time


class IdxError(DataError):
    """A file that cannot be read as IDX data: `reason` says why; the message also names the file."""

    def __init__(self, name: str, reason: str, advice: str = ""):
        self.reason = reason
        super().__init__(f"{name}: {reason}{advice}")


def read_bytes(path: str | Path) -> bytes:
    """The file's content, decompressed if it is gzip (by its magic bytes, whatever its name)."""
    return b"".join(content_chunks(path))


def content_chunks(path: str | Path) -> Iterator[bytes]:
    """The file's content block by block (gunzipped if gzip), never beyond the size its IDX header declares."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            gzipped = f.read(2) == GZIP_MAGIC
            f.seek(0)
            blocks = _gunzip(f, path) if gzipped else iter(lambda: f.read(BLOCK), b"")
            yield from _bounded(blocks, str(path), gzipped, os.fstat(f.fileno()).st_size)
    except OSError as error:
        raise IdxError(str(path), f"cannot read ({error.strerror or error})") from None


def _gunzip(f, path: Path) -> Iterator[bytes]:
    """Decompress a gzip stream of one or more members; CRC-32 and length are checked by zlib."""
    member = zlib.decompressobj(wbits=31)  # 31: gzip header and trailer
    try:
        for block in iter(lambda: f.read(BLOCK), b""):
            while block:
                if member.eof:  # another member, or the zero padding gzip allows, follows
                    block = block.lstrip(b"\0")
                    if not block:
                        break
                    member = zlib.decompressobj(wbits=31)
                yield member.decompress(block, BLOCK)
                block = member.unused_data if member.eof else member.unconsumed_tail
        if not member.eof:
            raise EOFError("compressed data ended before the end of the gzip stream")
    except (EOFError, zlib.error) as error:
        raise IdxError(str(path), "corrupt gzip data",
                       f" ({error}); delete the file and download or import it again") from None


def _bounded(blocks: Iterator[bytes], name: str, gzipped: bool, file_size: int) -> Iterator[bytes]:
    """Pass blocks on, refusing the first byte beyond the size the IDX header declares."""
    head, limit, done = b"", None, 0
    for block in blocks:
        if limit is None:
            head += block
            if len(head) >= 4:
                _check_magic(head, name)  # at once: what follows is not IDX
            if len(head) < 4 or len(head) < 4 + 4 * head[3]:
                continue  # the header is not complete yet
            limit = _header(head, name)[3]
            block, head = head, b""
        done += len(block)
        if done > limit:
            raise IdxError(name, _too_long(limit, gzipped, file_size))
        yield block
    if head:
        yield head  # shorter than its own header: parse_idx says how


def _too_long(limit: int, gzipped: bool, file_size: int) -> str:
    if gzipped:
        return (f"decompresses to more than the {limit:,} bytes its IDX header declares; refused "
                "without decompressing the rest (a gzip bomb?)")
    return f"IDX payload is longer than its header says: it declares {limit} bytes, the file has {file_size}"


def _header(data: bytes, name: str) -> tuple[np.dtype, tuple[int, ...], int, int]:
    """(dtype, shape, header length, total length the header declares), or an IdxError."""
    _check_magic(data, name)
    dtype, ndim = TYPE_CODES[data[2]], data[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(data) < header:
        raise IdxError(name, f"IDX header is truncated or declares {ndim} dimensions")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    return dtype, shape, header, header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize


def _check_magic(data: bytes, name: str) -> None:
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in TYPE_CODES:
        raise IdxError(name, f"not an IDX file (bad magic number {data[:4].hex() or 'empty'}; "
                             "expected 0000 followed by a type code such as 08 and the number of dimensions)")


def parse_idx(data: bytes, name: str = "<bytes>") -> np.ndarray:
    """Decode IDX bytes into an array, checking the magic number, dimensions and exact length."""
    dtype, shape, header, expected = _header(data, name)
    if len(data) != expected:
        problem = "truncated" if len(data) < expected else "longer than its header says"
        raise IdxError(name, f"IDX payload is {problem}: shape {shape} needs {expected} bytes, "
                             f"the file has {len(data)}")
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def read_idx(path: str | Path) -> np.ndarray:
    return parse_idx(read_bytes(path), str(path))
