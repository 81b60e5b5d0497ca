"""The IDX file format of MNIST and Fashion-MNIST, read with every check.

An IDX file is a 4-byte magic number (two zero bytes, a type code, the number of
dimensions), one big-endian uint32 per dimension, then the values in row-major
order. MNIST ships them gzip-compressed. A file that is truncated, has extra
bytes, the wrong magic number or a bad gzip checksum raises a DataError that
names the file; nothing ever comes back as a silently short array.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np

from bpcli.errors import DataError

TYPE_CODES = {0x08: np.dtype(np.uint8), 0x09: np.dtype(np.int8), 0x0B: np.dtype(">i2"),
              0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def read_bytes(path: str | Path) -> bytes:
    """The file's content, decompressed if it is gzip (by its magic bytes, whatever its name)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise DataError(f"{path}: cannot read ({error.strerror or error})") from None
    if raw[:2] != b"\x1f\x8b":
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as error:
        raise DataError(f"{path}: corrupt gzip data ({error}); delete the file and download or import it again") \
            from None


def parse_idx(data: bytes, name: str = "<bytes>") -> np.ndarray:
    """Decode IDX bytes into an array, checking the magic number, dimensions and exact length."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in TYPE_CODES:
        raise DataError(f"{name}: not an IDX file (bad magic number {data[:4].hex() or 'empty'}; "
                        "expected 0000 followed by a type code such as 08 and the number of dimensions)")
    dtype, ndim = TYPE_CODES[data[2]], data[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(data) < header:
        raise DataError(f"{name}: IDX header is truncated or declares {ndim} dimensions")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected:
        problem = "truncated" if len(data) < expected else "longer than its header says"
        raise DataError(f"{name}: IDX payload is {problem}: shape {shape} needs {expected} bytes, "
                        f"the file has {len(data)}")
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def read_idx(path: str | Path) -> np.ndarray:
    return parse_idx(read_bytes(path), str(path))
