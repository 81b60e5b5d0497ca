"""Writing IDX files, for tests only: bpcli reads IDX files (bpcli.data.idx), it never writes them.

The tests build small MNIST-like datasets with these; the shipped mnist-mini
files were made the same way (gzip level 9, no timestamp, so the bytes and
their SHA-256 are reproducible).
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

from bpcli.data.idx import TYPE_CODES


def encode_idx(array: np.ndarray) -> bytes:
    """The IDX bytes of `array`: magic number, one big-endian uint32 per dimension, values big-endian."""
    codes = {dtype: code for code, dtype in TYPE_CODES.items()}
    dtype = array.dtype.newbyteorder(">") if array.dtype.itemsize > 1 else array.dtype
    header = bytes([0, 0, codes[dtype], array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + np.ascontiguousarray(array, dtype=dtype).tobytes()


def write_idx_gz(path: str | Path, array: np.ndarray) -> None:
    """Write a gzip IDX file reproducibly (no timestamp in the gzip header)."""
    Path(path).write_bytes(gzip.compress(encode_idx(array), compresslevel=9, mtime=0))
