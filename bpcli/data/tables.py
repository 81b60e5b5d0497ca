"""The user's own data: a CSV with a header row, or an NPZ of arrays (never unpickled).

    load_csv(path, target, features, categorical, missing) -> Dataset   to train on: features and a target
    load_npz(path) -> Dataset                       to train on: X, y (and X_test, y_test)
    load_csv_inputs(path, drop) -> array            to predict for: every column but `drop`
    load_csv_columns(path, names, ...) -> array     to predict for: the named columns, in that order
    load_npz_inputs(path) -> array                  to predict for: X
    file_sha256(path) -> str                        recorded with a run, so a changed file is noticed

Categorical columns (data.options.categorical) are read as text and given codes
0..k-1 into the sorted texts of that file (Dataset.categories); preprocessing.py
one-hot encodes them with the categories of the training split. With
data.options.missing: mean or median, an empty cell (or NA, N/A, NaN, null, ?)
is read as NaN and filled from the training split; with `error` (the default)
it is refused, naming its line and column.

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
import hashlib
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

CSV_OPTIONS = ("target", "features", "categorical", "missing")
MISSING_POLICIES = ("error", "mean", "median")
MISSING_MARKERS = ("", "na", "n/a", "nan", "null", "none", "?")   # compared lower-case, stripped


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
    categorical = options.get("categorical")
    if "categorical" in options and not (isinstance(categorical, list)
                                         and all(isinstance(c, str) for c in categorical)):
        problems.append(("categorical", "a list of column names (text columns to one-hot encode)"))
    if "missing" in options and options["missing"] not in MISSING_POLICIES:
        problems.append(("missing", f"one of {', '.join(MISSING_POLICIES)} (how empty cells are filled)"))
    return problems


# -- CSV -----------------------------------------------------------------------------------------

def load_csv(path: str, target: str = "label", features: list[str] | None = None,
             categorical: list[str] | None = None, missing: str = "error", *, hint: str = "data.options.target"
             ) -> Dataset:
    """A CSV with a header row; the target column by name, the features all others or a list.

    `hint` says how to name another target column (eval says --target) in the error for a missing one.
    """
    header = read_csv_header(path)
    if target not in header:
        raise DataError(f"{path}: no target column {target!r}; columns: {', '.join(header)}."
                        f"{did_you_mean(target, header)} Set {hint} to the column to predict.")
    features = features or [c for c in header if c != target]
    absent = [c for c in features if c not in header]
    if absent:
        raise DataError(f"{path}: feature columns not found: {', '.join(absent)}; columns: {', '.join(header)}")
    categorical = list(categorical or [])
    stray = [c for c in categorical if c not in features]
    if stray:
        raise DataError(f"{path}: data.options.categorical names {', '.join(map(repr, stray))}, which "
                        f"{'is' if len(stray) == 1 else 'are'} not among the feature columns "
                        f"({', '.join(features)})")
    table = _read_csv(path, [header.index(c) for c in features], header.index(target), categorical, missing)
    y = _target_column(path, table, target)
    return Dataset(Path(path).name, table.x, y, source=str(path), lines=table.lines, columns=tuple(features),
                   target_name=target, categories=table.categories or None)


def attach_test(train: Dataset, test: Dataset, test_path: str) -> Dataset:
    """`train` with `test`'s rows as its test set (data.test): the same columns, categories coded as train's."""
    if train.x_test is not None:
        raise DataError(f"{train.source} has a test set of its own (X_test); data.test adds one to data that has none")
    if math.prod(test.x_train.shape[1:]) != math.prod(train.x_train.shape[1:]):
        raise DataError(f"{test_path}: {math.prod(test.x_train.shape[1:])} features per example, but "
                        f"{train.source} has {math.prod(train.x_train.shape[1:])}: the test file needs the same columns")
    x_test, categories = test.x_train.copy(), dict(train.categories or {})
    for name, texts in (test.categories or {}).items():   # the test file's codes, renumbered into the union
        j = train.columns.index(name)
        union = tuple(sorted(set(categories[name]) | set(texts)))
        train.x_train[:, j] = _recode(train.x_train[:, j], categories[name], union)
        x_test[:, j] = _recode(x_test[:, j], texts, union)
        categories[name] = union
    train.x_test, train.y_test, train.categories = x_test, test.y_train, categories or None
    return train


def _recode(codes: np.ndarray, texts, union) -> np.ndarray:
    """Codes into `texts` as codes into `union` (a sorted superset); NaN stays NaN."""
    mapping = np.searchsorted(np.array(union, dtype=str), np.array(texts, dtype=str)).astype(np.float64)
    out = codes.copy()
    known = np.isfinite(codes)
    out[known] = mapping[codes[known].astype(np.int64)] if len(texts) else np.nan
    return out


def load_csv_columns(path: str, names: list[str], categorical=(), missing: str = "error"
                     ) -> tuple[np.ndarray, dict[str, tuple[str, ...]]]:
    """The named columns of a CSV, in the order given (categorical ones as codes), and their categories.

    The header is matched by name: any order is fine, and columns not asked for are
    ignored; a missing one is an error naming it, with the columns the file has that
    were not asked for (a renamed column shows up there). A file whose first row is all
    numbers and not the names has no header: its columns are taken in order, by count.
    """
    header = read_csv_header(path)
    if not set(names) <= set(header) and _all_numbers(header):
        if len(header) != len(names):
            raise DataError(f"{path} has no header row and {len(header)} columns, but the model takes "
                            f"{len(names)} ({', '.join(names)}); add a header row naming them")
        table = _read_csv(path, list(range(len(names))), None, categorical, missing, header=list(names))
        return table.x, table.categories
    absent = [c for c in names if c not in header]
    if absent:
        unexpected = [c for c in header if c not in names]
        raise DataError(f"{path}: the model needs the column{'s' * (len(absent) > 1)} {', '.join(map(repr, absent))}, "
                        f"which the header lacks; columns it was not trained on: "
                        f"{', '.join(map(repr, unexpected)) or 'none'}. The model's columns: {', '.join(names)}")
    table = _read_csv(path, [header.index(c) for c in names], None, list(categorical), missing)
    return table.x, table.categories


def _all_numbers(cells: list[str]) -> bool:
    try:
        [float(cell) for cell in cells]
    except ValueError:
        return False
    return True


def file_sha256(path: str | Path) -> str:
    """The SHA-256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    try:
        f, _ = open_regular(str(path), "data file")
        with f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    except (OSError, ValueError) as error:
        raise DataError(f"{path}: cannot read ({_reason(error)})") from None
    return digest.hexdigest()


def load_csv_inputs(path: str, drop=()) -> np.ndarray:
    """Every column of a CSV except those in `drop`, as finite numbers: the inputs to predict for."""
    header = read_csv_header(path)
    return _read_csv(path, [i for i, column in enumerate(header) if column not in drop]).x


def read_csv_header(path: str) -> list[str]:
    """The column names of the header row (stripped), refused if a name appears twice."""
    with _CsvReader(path) as (reader, _):
        return _header(path, reader)


class _Table:
    """What _read_csv gathers: the feature columns as floats, the target's cells, each row's line.

    Categorical columns hold codes into `categories[name]` (the sorted texts of this file; NaN for a
    missing cell when missing values are allowed).
    """

    def __init__(self, names: list[str]):
        self.names = names
        self.x: np.ndarray = np.zeros((0, len(names)))
        self.target: list[str] = []
        self.lines: np.ndarray = np.zeros(0, dtype=np.int64)
        self.categories: dict[str, tuple[str, ...]] = {}


def _read_csv(path: str, columns: list[int], target: int | None = None, categorical=(), missing: str = "error",
              header: list[str] | None = None) -> _Table:
    """Read the whole table: the `columns` as finite floats (a chunk at a time), the `target` column as text.

    `categorical`: names of columns read as text. `header`: the names of a file without a header row.
    """
    with _CsvReader(path) as (reader, size):
        names = header or _header(path, reader)
        table = _Table([names[c] for c in columns])
        text = [i for i, name in enumerate(table.names) if name in categorical]
        numeric = [c for i, c in enumerate(columns) if i not in text]
        _check_csv_size(path, size, len(names), len(columns))
        chunks, chunk, lines, cells = [], [], [], [[] for _ in text]
        for row in reader:
            if not row:
                continue
            if len(row) != len(names):
                raise DataError(f"{path}:{reader.line_num}: {len(row)} values, but the header has {len(names)} "
                                "columns")
            chunk.append([row[c] for c in numeric])
            lines.append(reader.line_num)
            for kept, i in zip(cells, text):
                kept.append(row[columns[i]].strip())
            if target is not None:
                table.target.append(row[target].strip())
            if len(chunk) == CHUNK_ROWS:
                chunks.append(_floats(path, chunk, lines[-len(chunk):], [names[c] for c in numeric], missing))
                chunk = []
        if chunk:
            chunks.append(_floats(path, chunk, lines[-len(chunk):], [names[c] for c in numeric], missing))
    if not lines:
        raise DataError(f"{path}: a CSV needs a header row and at least one data row")
    table.lines = np.array(lines, dtype=np.int64)
    table.x = np.concatenate(chunks) if not text else _with_codes(path, table, np.concatenate(chunks), text,
                                                                   cells, missing)
    return table


def _with_codes(path: str, table: _Table, numbers: np.ndarray, text: list[int], cells: list[list[str]],
                missing: str) -> np.ndarray:
    """The numeric columns and each categorical column's codes, in the table's column order."""
    x = np.empty((len(numbers), len(table.names)))
    x[:, [i for i in range(len(table.names)) if i not in text]] = numbers
    for i, column in zip(text, cells):
        name = table.names[i]
        gaps = np.array([cell.lower() in MISSING_MARKERS for cell in column], dtype=bool)
        if gaps.any() and missing == "error":
            raise DataError(_missing_message(path, int(table.lines[np.flatnonzero(gaps)[0]]), name))
        values = np.array(column, dtype=str)
        table.categories[name] = tuple(np.unique(values[~gaps]).tolist())
        codes = np.searchsorted(np.array(table.categories[name], dtype=str), values).astype(np.float64)
        codes[gaps] = np.nan
        x[:, i] = codes
    return x


def _missing_message(path: str, line: int, name: str) -> str:
    return (f"{path}:{line}: column {name!r} is empty (a missing value); fill it in or drop that row, or set "
            "data.options.missing: mean or median to fill it from the training split")


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


def _floats(path: str, chunk: list[list[str]], lines: list[int], names: list[str], missing: str = "error"
            ) -> np.ndarray:
    """The cells as finite floats; the first cell that is not a number, or not finite, is named by line and column.

    With `missing` mean or median, missing cells (MISSING_MARKERS) become NaN, to be filled after the split.
    """
    gaps = None
    if missing != "error":
        gaps = np.array([[cell.strip().lower() in MISSING_MARKERS for cell in row] for row in chunk],
                        dtype=bool).reshape(len(chunk), len(names))
        chunk = [["nan" if gap else cell for cell, gap in zip(row, row_gaps)] for row, row_gaps in zip(chunk, gaps)]
    try:
        x = np.array(chunk, dtype=np.float64).reshape(len(chunk), len(names))
    except ValueError:
        for line, row in zip(lines, chunk):
            for cell, name in zip(row, names):
                try:
                    float(cell)
                except ValueError:
                    raise DataError(_not_a_number(path, line, name, cell)) from None
        raise
    finite = np.isfinite(x)
    bad = np.argwhere(~finite if gaps is None else ~finite & ~gaps)
    if len(bad):
        i, j = bad[0]
        raise DataError(f"{path}:{lines[i]}: column {names[j]!r} holds {chunk[i][j].strip()!r}, not a finite number; "
                        "NaN and infinity cannot be trained on or predicted from: fill in or drop that row")
    return x


def _not_a_number(path: str, line: int, name: str, cell: str) -> str:
    if not cell.strip():
        return _missing_message(path, line, name)
    return (f"{path}:{line}: column {name!r} holds {cell!r}, not a number; if the column holds categories, list it "
            "in data.options.categorical to one-hot encode it")


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
