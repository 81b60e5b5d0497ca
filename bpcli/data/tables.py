"""The user's own data: a CSV with a header row, or an NPZ of arrays (never unpickled).

    load_csv(path, target, features) -> Dataset     to train on: features and a target column
    load_npz(path) -> Dataset                       to train on: X, y (and X_test, y_test)
    load_csv_inputs(path, drop) -> array            to predict for: every column but `drop`
    load_npz_inputs(path) -> array                  to predict for: X

Every problem is a DataError naming the file, and for a CSV the line and column,
for an NPZ the array and the index. What is refused, and why:

* not a regular file (/dev/zero, a pipe): it has no size and may never end;
* more data than the machine's memory could hold, before it is allocated: an
  NPZ array's declared shape is read from its header first, and a CSV line
  longer than MAX_LINE is not a table row (a binary file, a sparse file);
* NaN or infinity anywhere in the features or a numeric target: it would train
  on (and log) NaN, or predict nan, so the first such cell is named instead;
* two CSV columns of the same name (the second would silently go unread).

A UTF-8 byte-order mark before the header (Excel writes one) is accepted.
"""

from __future__ import annotations

import csv
import io
import math
import zipfile
from pathlib import Path

import numpy as np

from bpcli.data.dataset import Dataset
from bpcli.errors import DataError, did_you_mean
from bpcli.fileio import memory_size, open_regular, physical_memory

MAX_LINE = 1 << 24     # 16 MiB: a row of a million features is about 10 MB
CHUNK_ROWS = 4096      # rows parsed into floats at a time, so Python's strings never hold the whole file


# -- options ---------------------------------------------------------------------------------------

CSV_OPTIONS = ("target", "features")


def option_problems(path: str, options: dict) -> list[tuple[str, str]]:
    """(option, what it must be) for each bad data.options key of a .csv (target, features) or .npz (none)."""
    if Path(path).suffix.lower() == ".npz":
        return [(key, "absent: an .npz takes no options (its arrays are X, y, X_test, y_test)") for key in options]
    problems = [(key, f"one of the options of a .csv file ({', '.join(CSV_OPTIONS)})"
                      + did_you_mean(key, CSV_OPTIONS).replace(" Did", "; did")) for key in options
                if key not in CSV_OPTIONS]
    if "target" in options and not isinstance(options["target"], str):
        problems.append(("target", "a column name (a string)"))
    features = options.get("features")
    if "features" in options and features is not None and not (
            isinstance(features, list) and features and all(isinstance(f, str) for f in features)):
        problems.append(("features", "a non-empty list of column names, or null for every column but the target"))
    return problems


# -- CSV -----------------------------------------------------------------------------------------

def load_csv(path: str, target: str = "label", features: list[str] | None = None) -> Dataset:
    """A CSV with a header row; the target column by name, the features all others or a list."""
    header = read_csv_header(path)
    if target not in header:
        raise DataError(f"{path}: no target column {target!r}; columns: {', '.join(header)}."
                        f"{did_you_mean(target, header)} Set data.options.target to the column to predict.")
    features = features or [c for c in header if c != target]
    missing = [c for c in features if c not in header]
    if missing:
        raise DataError(f"{path}: feature columns not found: {', '.join(missing)}; columns: {', '.join(header)}")
    table = _read_csv(path, [header.index(c) for c in features], header.index(target))
    y = _target_column(path, table, target)
    return Dataset(Path(path).name, table.x, y, source=str(path), lines=table.lines)


def load_csv_inputs(path: str, drop=()) -> np.ndarray:
    """Every column of a CSV except those in `drop`, as finite numbers: the inputs to predict for."""
    header = read_csv_header(path)
    return _read_csv(path, [i for i, column in enumerate(header) if column not in drop]).x


def read_csv_header(path: str) -> list[str]:
    """The column names of the header row (stripped), refused if a name appears twice."""
    with _CsvReader(path) as (reader, _):
        return _header(path, reader)


class _Table:
    """What _read_csv gathers: the feature columns as floats, the target's cells, each row's line."""

    def __init__(self, names: list[str]):
        self.names = names
        self.x: np.ndarray = np.zeros((0, len(names)))
        self.target: list[str] = []
        self.lines: np.ndarray = np.zeros(0, dtype=np.int64)


def _read_csv(path: str, columns: list[int], target: int | None = None) -> _Table:
    """Read the whole table: the `columns` as finite floats (a chunk at a time), the `target` column as text."""
    with _CsvReader(path) as (reader, size):
        header = _header(path, reader)
        table = _Table([header[c] for c in columns])
        _check_csv_size(path, size, len(header), len(columns))
        chunks, chunk, lines = [], [], []
        for row in reader:
            if not row:
                continue
            if len(row) != len(header):
                raise DataError(f"{path}:{reader.line_num}: {len(row)} values, but the header has {len(header)} "
                                "columns")
            chunk.append([row[c] for c in columns])
            lines.append(reader.line_num)
            if target is not None:
                table.target.append(row[target].strip())
            if len(chunk) == CHUNK_ROWS:
                chunks.append(_floats(path, chunk, lines[-len(chunk):], table.names))
                chunk = []
        if chunk:
            chunks.append(_floats(path, chunk, lines[-len(chunk):], table.names))
    if not lines:
        raise DataError(f"{path}: a CSV needs a header row and at least one data row")
    table.x, table.lines = np.concatenate(chunks), np.array(lines, dtype=np.int64)
    return table


class _CsvReader:
    """`with _CsvReader(path) as (reader, size)`: a csv.reader over a regular file, lines bounded by MAX_LINE."""

    def __init__(self, path: str):
        self.path = path

    def __enter__(self):
        try:
            self.file, size = open_regular(self.path, "CSV file")
        except (OSError, ValueError) as error:   # ValueError: a NUL byte in the path
            raise DataError(f"{self.path}: cannot read as CSV ({_reason(error)})") from None
        text = io.TextIOWrapper(self.file, encoding="utf-8-sig", newline="")   # -sig: skip a byte-order mark
        return csv.reader(_bounded_lines(self.path, text)), size

    def __exit__(self, kind, error, trace):
        self.file.close()
        if isinstance(error, (OSError, UnicodeDecodeError, csv.Error)):
            raise DataError(f"{self.path}: cannot read as CSV ({_reason(error)})") from None


def _bounded_lines(path: str, text):
    """The file's lines, each read with a bound: a 2 GiB line of NUL bytes is refused, not read whole."""
    number = 0
    while True:
        line = text.readline(MAX_LINE + 1)
        number += 1
        if not line:
            return
        if len(line) > MAX_LINE:
            raise DataError(f"{path}:{number}: a line longer than {MAX_LINE >> 20} MiB; this is not a CSV table "
                            "(a binary or sparse file?)")
        yield line


def _reason(error: Exception) -> str:
    return getattr(error, "strerror", None) or str(error)


def _header(path: str, reader) -> list[str]:
    header = [h.strip() for h in next(reader, [])]
    if not header:
        raise DataError(f"{path}: a CSV needs a header row and at least one data row")
    seen: dict[str, int] = {}
    for i, name in enumerate(header, start=1):
        if name in seen:
            raise DataError(f"{path}:1: column {name!r} appears twice in the header (columns {seen[name]} and {i}); "
                            "each column needs a name of its own")
        seen[name] = i
    return header


def _check_csv_size(path: str, size: int, n_columns: int, n_kept: int) -> None:
    """Refuse a file whose values could not fit in memory as floats: each value takes at least 2 bytes of text."""
    rows = size // (2 * n_columns) + 1
    need = rows * n_kept * 8
    if need > physical_memory() // 2:
        raise DataError(f"{path}: {size} bytes could hold up to {rows} rows of {n_kept} values ({memory_size(need)} as "
                        f"floats), more than half of this machine's memory ({memory_size(physical_memory())})")


def _floats(path: str, chunk: list[list[str]], lines: list[int], names: list[str]) -> np.ndarray:
    """The cells as finite floats; the first cell that is not a number, or not finite, is named by line and column."""
    try:
        x = np.array(chunk, dtype=np.float64).reshape(len(chunk), len(names))
    except ValueError:
        for line, row in zip(lines, chunk):
            for cell, name in zip(row, names):
                try:
                    float(cell)
                except ValueError:
                    raise DataError(f"{path}:{line}: column {name!r} holds {cell!r}, not a number") from None
        raise
    bad = np.argwhere(~np.isfinite(x))
    if len(bad):
        i, j = bad[0]
        raise DataError(f"{path}:{lines[i]}: column {names[j]!r} holds {chunk[i][j].strip()!r}, not a finite number; "
                        "NaN and infinity cannot be trained on or predicted from: fill in or drop that row")
    return x


def _target_column(path: str, table: _Table, name: str) -> np.ndarray:
    """Numbers stay numbers (and must be finite); text labels ("cat", "dog") become classes in sorted order."""
    try:
        values = np.array(table.target, dtype=np.float64)
    except ValueError:
        return np.array(table.target)
    bad = np.flatnonzero(~np.isfinite(values))
    if len(bad):
        raise DataError(f"{path}:{table.lines[bad[0]]}: target column {name!r} holds {table.target[bad[0]]!r}, not a "
                        "finite number; fill in or drop that row")
    return values


# -- NPZ -----------------------------------------------------------------------------------------

NPZ_ARRAYS = ("X", "y", "X_test", "y_test")


def load_npz(path: str) -> Dataset:
    """Arrays X and y, and optionally X_test and y_test, from an .npz (never unpickled)."""
    arrays = _read_npz(path, NPZ_ARRAYS)
    if "X" not in arrays or "y" not in arrays:
        raise DataError(f"{path}: an .npz needs arrays 'X' and 'y' (optional 'X_test', 'y_test'); "
                        f"it has {', '.join(_members(path)) or 'none'}")
    for split in ("", "_test"):
        if ("X" + split in arrays) != ("y" + split in arrays) or (
                "X" + split in arrays and len(arrays["X" + split]) != len(arrays["y" + split])):
            raise DataError(f"{path}: X{split} and y{split} must both be present with one row per example")
    if "X_test" in arrays:
        _check_like(path, arrays, "X_test", "X", "features per example")
        _check_like(path, arrays, "y_test", "y", "target values per example")
    return Dataset(Path(path).name, arrays["X"], arrays["y"], arrays.get("X_test"), arrays.get("y_test"),
                   source=str(path))


def load_npz_inputs(path: str) -> np.ndarray:
    """The array X of an .npz (never unpickled): the inputs to predict for."""
    arrays = _read_npz(path, ("X",))
    if "X" not in arrays:
        raise DataError(f"{path}: an .npz of inputs needs an array 'X'; it has {', '.join(_members(path)) or 'none'}")
    return arrays["X"]


def _check_like(path: str, arrays: dict, name: str, like: str, what: str) -> None:
    """The test arrays must have the training arrays' shape per example, or they fail only after training."""
    a, b = arrays[name], arrays[like]
    if math.prod(a.shape[1:]) != math.prod(b.shape[1:]):
        raise DataError(f"{path}: {name} has shape {a.shape}, but {like} has shape {b.shape}: the test set needs the "
                        f"same {what} as the training set")


def _read_npz(path: str, names: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The arrays of `names` that the .npz holds, each checked from its header before it is read."""
    try:
        f, size = open_regular(path, ".npz file")
    except (OSError, ValueError) as error:
        raise DataError(f"{path}: cannot read as .npz ({_reason(error)})") from None
    try:
        with f, zipfile.ZipFile(f) as archive:
            members = {info.filename[:-4]: info for info in archive.infolist() if info.filename.endswith(".npy")}
            wanted = {name: members[name] for name in names if name in members}
            headers = {name: _npy_header(path, archive, info) for name, info in wanted.items()}
            _check_memory(path, headers)
            arrays = {name: _npy_array(path, archive, info) for name, info in wanted.items()}
    except (OSError, EOFError, zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError) as error:
        raise DataError(f"{path}: cannot read as .npz ({_reason(error)})") from None
    for name, array in arrays.items():
        _check_array(path, name, array)
    return arrays


def _members(path: str) -> list[str]:
    try:
        with zipfile.ZipFile(path) as archive:
            return [n[:-4] if n.endswith(".npy") else n for n in archive.namelist()]
    except (OSError, zipfile.BadZipFile):
        return []


def _npy_header(path: str, archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> tuple[tuple, np.dtype]:
    """(shape, dtype) from an array's header, checked against the bytes the archive says it holds."""
    name = info.filename[:-4]
    try:
        with archive.open(info) as member:
            version = np.lib.format.read_magic(member)
            if version not in ((1, 0), (2, 0)):
                raise ValueError(f"unsupported .npy format version {version}")
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, _, dtype = read(member)
            header_bytes = member.tell()
    except ValueError as error:
        raise DataError(f"{path}: array {name!r} is not a readable .npy array ({error})") from None
    if dtype.hasobject:
        raise DataError(f"{path}: array {name!r} holds Python objects, which only pickle can read; bpcli reads .npz "
                        "without pickle: save numbers (or text labels) instead")
    declared = math.prod(shape) * dtype.itemsize
    if declared > info.file_size - header_bytes:
        raise DataError(f"{path}: array {name!r} declares shape {shape} of {dtype} ({memory_size(declared)}), but "
                        f"the file holds {info.file_size - header_bytes} bytes for it: the file is damaged")
    return shape, dtype


def _check_memory(path: str, headers: dict[str, tuple[tuple, np.dtype]]) -> None:
    """Refuse arrays that need more than half the machine's memory, before any is allocated."""
    sizes = {name: math.prod(shape) * dtype.itemsize for name, (shape, dtype) in headers.items()}
    total, memory = sum(sizes.values()), physical_memory()
    if total > memory // 2:
        shapes = ", ".join(f"{name} {headers[name][0]} {headers[name][1]}" for name in sizes)
        raise DataError(f"{path}: its arrays ({shapes}) need {memory_size(total)}, more than half of this machine's "
                        f"memory ({memory_size(memory)}); use a smaller dataset")


def _npy_array(path: str, archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> np.ndarray:
    try:
        with archive.open(info) as member:
            return np.lib.format.read_array(member, allow_pickle=False)
    except ValueError as error:
        raise DataError(f"{path}: array {info.filename[:-4]!r} cannot be read ({error})") from None


def _check_array(path: str, name: str, array: np.ndarray) -> None:
    """One row per example, numbers (text only for labels), and every number finite."""
    if array.ndim == 0:
        raise DataError(f"{path}: array {name!r} is a single value (shape ()); it needs one row per example")
    if len(array) == 0:
        raise DataError(f"{path}: array {name!r} has no rows (shape {array.shape})")
    text_allowed = name.startswith("y")
    if array.dtype.kind not in ("biuf" + ("US" if text_allowed else "")):
        allowed = "numbers or text labels" if text_allowed else "numbers (integers, floats or booleans)"
        raise DataError(f"{path}: array {name!r} has dtype {array.dtype}; it must hold {allowed}")
    if array.dtype.kind == "f":
        bad = np.argwhere(~np.isfinite(array))
        if len(bad):
            index = ", ".join(str(i) for i in bad[0])
            raise DataError(f"{path}: {name}[{index}] is {array[tuple(bad[0])]}; NaN and infinity cannot be trained "
                            f"on or predicted from: fix or drop that example ({len(bad)} non-finite "
                            f"value{'s' * (len(bad) > 1)} in {name})")
