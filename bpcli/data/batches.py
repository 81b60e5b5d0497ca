"""Image rows kept as bytes in memory and scaled as they are read, one batch at a time.

    ScaledRows(raw, offset, scale)[idx] -> float rows, (raw[idx] - offset) * scale

Why: the training loop only ever reads a batch (or an evaluation slice) of
the inputs, so uint8 images need not live in memory as float32, four times
their size (Fashion-MNIST's 60k images: 47 MB instead of 188 MB). Each read
is one pass of NumPy's own casting loop from the gathered bytes into a fresh
float array, and it gives the numbers Preprocessor.transform gives, bit for
bit: float(x) - offset, then * scale, each rounded in the output dtype (with
an offset of 0, the subtraction changes nothing and is skipped).
"""

from __future__ import annotations

import numpy as np


class ScaledRows:
    """A read-only (n, features) float array, computed on access from (n, features) uint8 rows.

    Supports what the library asks of its input arrays: len, shape, dtype,
    indexing by a slice, an integer array or an integer, and np.asarray (the
    whole array, scaled).
    """

    ndim = 2

    def __init__(self, raw: np.ndarray, offset: np.ndarray, scale: np.ndarray):
        self.raw, self.offset, self.scale = raw, offset, scale
        self.dtype, self.shape = scale.dtype, raw.shape
        self.zero_offset = not offset.any()

    def __len__(self) -> int:
        return len(self.raw)

    @property
    def nbytes(self) -> int:
        return self.raw.nbytes

    def __getitem__(self, key) -> np.ndarray:
        rows = self.raw[key]
        out = np.empty(rows.shape, self.dtype)
        if self.zero_offset:
            return np.multiply(rows, self.scale, out=out)      # cast and scale, one pass
        np.subtract(rows, self.offset, out=out)
        out *= self.scale
        return out

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        whole = self[:]
        return whole if dtype is None else whole.astype(dtype, copy=False)
