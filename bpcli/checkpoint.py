"""Checkpoints: one safetensors file holding everything a run needs to continue or be evaluated.

safetensors is a header of JSON and raw little-endian arrays: loading one can
never execute code (unlike pickle, which PyTorch's .pt files use), and any
program with a safetensors reader (Python, Rust, JavaScript, C++) can read the
weights. Layout:

    tensors  layers.N.weight (fan_in, fan_out), layers.N.bias, layers.N.gamma/beta,
             layers.N.running_mean/running_var      the model, named as nn.Sequential
             best.<same names>                      the best weights so far (if kept)
             optimizer.<state>                      e.g. optimizer.exp_avg: flat, in parameter order
             preprocess.offset, preprocess.scale    x' = (x - offset) * scale
    metadata {"bpcli": JSON}: format, version, the resolved config, task, class
             names, epoch/step/batch, metric history, early-stopping, schedule
             and RNG state.

A PyTorch user loads the weights with safetensors.torch.load_file and
transposes each dense weight (PyTorch's nn.Linear stores (out, in)).

Files are written atomically (temporary file, fsync, rename), and a model with
a non-finite parameter is never written.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import CheckpointError
from .fileio import atomic_write_bytes, write_error

FORMAT = "bpcli-checkpoint"
VERSION = 1
SUFFIX = ".safetensors"
MAX_BYTES = 4 << 30  # refuse absurd files before reading them into memory


@dataclass
class Checkpoint:
    tensors: dict[str, np.ndarray]
    meta: dict
    path: Path | None = None
    extra: dict = field(default_factory=dict)

    def group(self, prefix: str) -> dict[str, np.ndarray]:
        """Tensors whose names start with `prefix.`, with the prefix removed."""
        return {k[len(prefix) + 1:]: v for k, v in self.tensors.items() if k.startswith(prefix + ".")}

    @property
    def model_tensors(self) -> dict[str, np.ndarray]:
        return {k: v for k, v in self.tensors.items() if k.startswith("layers.")}


def save_checkpoint(path: str | Path, tensors: dict[str, np.ndarray], meta: dict,
                    backup: str | Path | None = None) -> None:
    """Write atomically (keeping the old file as `backup` if given); refuse non-finite model weights."""
    from safetensors.numpy import save

    bad = [name for name, t in tensors.items()
           if name.startswith(("layers.", "best.")) and t.dtype.kind == "f" and not np.isfinite(t).all()]
    if bad:
        raise CheckpointError(f"refusing to write {path}: non-finite values in {', '.join(bad[:3])}")
    scalars = sorted(name for name, t in tensors.items() if np.ndim(t) == 0)  # safetensors stores them as (1,)
    header = {"bpcli": json.dumps({"format": FORMAT, "version": VERSION, **meta, "scalars": scalars})}
    arrays = {name: np.ascontiguousarray(t) for name, t in tensors.items()}
    try:
        atomic_write_bytes(path, save(arrays, metadata=header), backup)
    except OSError as error:
        raise write_error(path, error, "checkpoint") from None


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read and check a checkpoint; anything wrong is a CheckpointError naming the file."""
    path = Path(path)
    data = _read(path)
    _refuse_foreign(path, data)
    tensors = _parse_tensors(path, data)
    meta = _parse_meta(path, data)
    for name in meta.get("scalars", []):
        if name in tensors and tensors[name].size == 1:
            tensors[name] = tensors[name].reshape(())
    return Checkpoint(tensors, meta, path)


def _read(path: Path) -> bytes:
    try:
        if path.stat().st_size > MAX_BYTES:
            raise CheckpointError(f"{path}: {path.stat().st_size} bytes is too large for a bpcli checkpoint")
        return path.read_bytes()
    except IsADirectoryError:
        raise CheckpointError(f"{path} is a folder; give a checkpoint file or use --resume RUN_DIR") from None
    except OSError as error:
        raise CheckpointError(f"cannot read checkpoint {path}: {error.strerror or error}") from None


FOREIGN = ((b"\x80", "a Python pickle"), (b"PK", "a zip archive (.pt or .npz)"), (b"\x93NUMPY", "a .npy array"))


def _refuse_foreign(path: Path, data: bytes) -> None:
    """Name the formats people try by mistake; never unpickle anything.

    A safetensors file starts with its header length (8 bytes, little-endian)
    and then '{'; only a file that does not look like that is sniffed for the
    magic bytes of other formats (a header length can start with 0x80 too).
    """
    if not data:
        raise CheckpointError(f"{path} is empty (a run killed before its first checkpoint?)")
    if len(data) > 8 and data[8:9] == b"{" and int.from_bytes(data[:8], "little") <= len(data) - 8:
        return
    for magic, kind in FOREIGN:
        if data.startswith(magic):
            raise CheckpointError(f"{path} looks like {kind}, not a bpcli checkpoint; bpcli never loads "
                                  "pickles or other formats that can run code")


def _parse_tensors(path: Path, data: bytes) -> dict[str, np.ndarray]:
    from safetensors.numpy import load

    try:
        return load(data)
    except Exception as error:  # safetensors raises its own error type for every malformed input
        raise CheckpointError(f"{path} is not a valid checkpoint (truncated or corrupt safetensors: {error})") \
            from None


def _parse_meta(path: Path, data: bytes) -> dict:
    try:
        length = int.from_bytes(data[:8], "little")
        meta = json.loads(json.loads(data[8:8 + length])["__metadata__"]["bpcli"])
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        raise CheckpointError(f"{path} is a safetensors file but not a bpcli checkpoint (no bpcli metadata)") \
            from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a bpcli checkpoint (format {meta.get('format')!r})")
    if meta.get("version") != VERSION:
        raise CheckpointError(f"{path} has checkpoint format version {meta.get('version')}; "
                              f"this bpcli reads version {VERSION}")
    return meta
