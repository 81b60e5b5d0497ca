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
             names, epoch/step/batch, the latest and best metric rows, early-stopping,
             schedule and RNG state. The metric history lives in the run's metric
             files, so the header stays the same size however long a run is.
             A `best` checkpoint has no optimizer state: it is for evaluating and
             fine-tuning, never resuming.

A PyTorch user loads the weights with safetensors.torch.load_file and
transposes each dense weight (PyTorch's nn.Linear stores (out, in)).

Files are written atomically (temporary file, fsync, rename), and a model with
a non-finite parameter is never written.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bpcli.errors import CheckpointError
from bpcli.fileio import open_regular, physical_memory, write_file

FORMAT = "bpcli-checkpoint"
VERSION = 2
READS = (1, 2)   # 1 kept the whole metric history in state.history
SUFFIX = ".safetensors"
MAX_BYTES = 4 << 30  # refuse absurd files before reading them into memory


@dataclass
class Checkpoint:
    tensors: dict[str, np.ndarray]
    meta: dict
    path: Path | None = None

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
    write_file(path, save(arrays, metadata=header), "checkpoint", backup)


def monitor_state(meta: dict) -> dict:
    """The monitored best ({"best", "best_epoch"}) a checkpoint recorded.

    Format 1 before the regroup kept it in the EarlyStopping callback's state.
    """
    return meta["state"].get("monitor") or meta["callbacks"].get("EarlyStopping", {})


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read and check a checkpoint; anything wrong is a CheckpointError naming the file."""
    path = Path(path)
    data = _read(path)
    _refuse_foreign(path, data)
    tensors = _parse_tensors(path, data)
    meta = _parse_meta(path, data)
    _check_meta(path, meta)
    _refuse_non_finite(path, tensors)
    for name in meta["scalars"]:
        if name in tensors and tensors[name].size == 1:
            tensors[name] = tensors[name].reshape(())
    return Checkpoint(tensors, meta, path)


def _read(path: Path) -> bytes:
    """The file's bytes, read only if it is a regular file of a size this machine can load.

    A device (/dev/zero) or a pipe never ends, so it is refused unread. Only a file
    that starts like a safetensors file (a header length that fits, then '{') is read
    whole; anything else, such as a sparse file of zeros, is judged by its first bytes.
    """
    try:
        f, size = open_regular(path, "checkpoint")
        with f:
            limit = min(MAX_BYTES, physical_memory() // 3)   # the bytes, then the arrays parsed from them
            if size > limit:
                raise CheckpointError(f"{path}: {size} bytes is too large for a bpcli checkpoint (at most "
                                      f"{limit} bytes here)")
            head = f.read(9)
            length = int.from_bytes(head[:8], "little")
            if len(head) < 9 or head[8:9] != b"{" or length > size - 8:
                return head + f.read(256)
            return head + f.read(size - 9)
    except IsADirectoryError:
        raise CheckpointError(f"{path} is a folder; give a checkpoint file or use --resume RUN_DIR") from None
    except (OSError, ValueError) as error:   # ValueError: a NUL byte in the path
        raise CheckpointError(f"cannot read checkpoint {path}: {getattr(error, 'strerror', None) or error}") from None


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
    except BaseException as error:  # a Rust panic in safetensors: pyo3's PanicException is a BaseException
        if type(error).__name__ != "PanicException":
            raise
        raise CheckpointError(f"{path} is not a valid checkpoint (the safetensors reader failed on it: {error})") \
            from None


def _parse_meta(path: Path, data: bytes) -> dict:
    try:
        length = int.from_bytes(data[:8], "little")
        meta = json.loads(json.loads(data[8:8 + length])["__metadata__"]["bpcli"])
    except (ValueError, KeyError, TypeError, RecursionError):  # UnicodeDecodeError is a ValueError
        raise CheckpointError(f"{path} is a safetensors file but not a bpcli checkpoint (no bpcli metadata)") \
            from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path} is not a bpcli checkpoint (its bpcli metadata is not a mapping)")
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a bpcli checkpoint (format {meta.get('format')!r})")
    if meta.get("version") not in READS:
        raise CheckpointError(f"{path} has checkpoint format version {meta.get('version')}; "
                              f"this bpcli reads versions {', '.join(map(str, READS))}")
    return meta


# -- the metadata's shape ------------------------------------------------------------------------

TASKS = ("multiclass", "binary", "regression")
CONFIG_SECTIONS = ("model", "loss", "optimizer", "schedule", "data", "training", "checkpoint", "output")
BIT_GENERATORS = ("PCG64", "PCG64DXSM", "MT19937", "Philox", "SFC64")


def _count(value, low: int = 0) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _strings(value) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _mapping_of_mappings(value) -> bool:
    return isinstance(value, dict) and all(isinstance(v, dict) for v in value.values())


# key: (test, what it must be). The header is JSON anyone can edit and a disk can damage.
META_FIELDS = {
    "kind": (lambda v: isinstance(v, str), "a string"),
    "config": (lambda v: isinstance(v, dict), "a mapping"),
    "task": (lambda v: isinstance(v, str) and v in TASKS, f"one of {', '.join(TASKS)}"),
    "input_dim": (lambda v: _count(v, 1), "an integer >= 1"),
    "class_names": (lambda v: v is None or _strings(v), "a list of strings or null"),
    "val_hash": (lambda v: isinstance(v, str), "a string"),
    "state": (lambda v: isinstance(v, dict), "a mapping"),
    "schedule": (lambda v: isinstance(v, dict), "a mapping"),
    "callbacks": (_mapping_of_mappings, "a mapping of mappings"),
    "dropout_rng": (lambda v: isinstance(v, dict), "a mapping"),
    "scalars": (_strings, "a list of tensor names"),
}
STATE_FIELDS = {
    "epoch": (_count, "an integer >= 0"),
    "step": (_count, "an integer >= 0"),
    "batch": (_count, "an integer >= 0"),
    "partial": (lambda v: isinstance(v, dict) and all(_number(x) for x in v.values()), "a mapping of numbers"),
}
_row = (lambda v: v is None or isinstance(v, dict), "a mapping or null")
STATE_FIELDS_BY_VERSION = {
    1: {"history": (lambda v: isinstance(v, list) and all(isinstance(r, dict) for r in v), "a list of mappings")},
    2: {"seconds": (_number, "a number"), "last_row": _row, "best_row": _row},
}


def _check_meta(path: Path, meta: dict) -> None:
    """Check the metadata's shape once, here, so no caller meets a KeyError or TypeError later.

    Resuming and evaluating index deep into this JSON; a damaged or hand-edited
    header must be one CheckpointError naming the file and the field, not a
    crash in the middle of a resume. Keys bpcli does not know are allowed.
    """
    problem = (_fields_problem(meta, META_FIELDS, "")
               or _fields_problem(meta["state"], STATE_FIELDS, "state.")
               or _fields_problem(meta["state"], _version_state_fields(meta), "state.")
               or _config_problem(meta["config"])
               or _rng_problem(meta["dropout_rng"]))
    if problem:
        raise CheckpointError(f"{path}: damaged checkpoint metadata: {problem}")


def _version_state_fields(meta: dict) -> dict:
    """A best checkpoint (version 2) has no timings: its bytes depend on its epoch alone."""
    fields = dict(STATE_FIELDS_BY_VERSION[meta["version"]])
    if meta["version"] == 2 and meta["kind"] == "best":
        fields.pop("seconds")
    return fields


def _fields_problem(data: dict, fields: dict, prefix: str) -> str | None:
    for key, (test, what) in fields.items():
        if key not in data:
            return f"{prefix}{key} is missing"
        if not test(data[key]):
            return f"{prefix}{key} must be {what}, not {_show(data[key])}"
    return None


def _config_problem(config: dict) -> str | None:
    for section in CONFIG_SECTIONS:
        if not isinstance(config.get(section), dict):
            return f"config.{section} must be a mapping, not {_show(config.get(section))}"
    return None


def _rng_problem(state: dict) -> str | None:
    """The dropout generator's state must be one numpy accepts, or resuming would fail when it is set."""
    name = state.get("bit_generator")
    if name not in BIT_GENERATORS:
        return f"dropout_rng.bit_generator must be one of {', '.join(BIT_GENERATORS)}, not {_show(name)}"
    try:
        getattr(np.random, name)().state = state
    except (TypeError, ValueError, KeyError, OverflowError) as error:
        return f"dropout_rng is not a valid {name} state ({error})"
    return None


def _show(value) -> str:
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _refuse_non_finite(path: Path, tensors: dict[str, np.ndarray]) -> None:
    """bpcli never writes non-finite weights (or preprocessing), so such a file is damaged.

    Nor can a finite run produce a non-finite optimizer state (a NaN or infinite
    gradient stops training before the update), and one loaded would turn the
    weights non-finite at the first step of a resumed run.
    """
    bad = [name for name, t in tensors.items()
           if name.startswith(("layers.", "best.", "preprocess.")) and t.dtype.kind == "f" and not np.isfinite(t).all()]
    if bad:
        raise CheckpointError(f"{path}: non-finite values in {', '.join(sorted(bad)[:3])}: the weights are damaged "
                              "(bpcli never writes non-finite weights)")
    bad = [name for name, t in tensors.items()
           if name.startswith("optimizer.") and t.dtype.kind == "f" and not np.isfinite(t).all()]
    if bad:
        raise CheckpointError(f"{path}: non-finite values in {', '.join(sorted(bad)[:3])}: the optimizer state is "
                              "damaged (a resumed run would turn every weight it touches into NaN)")
