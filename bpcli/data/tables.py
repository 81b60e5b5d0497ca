"""The user's own data: a CSV with a header row, or an NPZ of arrays (never unpickled).

    load_csv(path, target, features) -> Dataset     to train on: features and a target column
    load_npz(path) -> Dataset                       to train on: X, y (and X_test, y_test)
    load_csv_inputs(path, drop) -> array            to predict for: every column but `drop`
    load_npz_inputs(path) -> array                  to predict for: X

Every problem is a DataError naming the file, and for a CSV the line and column.
"""

from __future__ import annotations

import csv
import zipfile
from pathlib import Path

import numpy as np

from bpcli.data.dataset import Dataset
from bpcli.errors import DataError, did_you_mean


def load_csv(path: str, target: str = "label", features: list[str] | None = None) -> Dataset:
    """A CSV with a header row; the target column by name, the features all others or a list."""
    header, rows = _read_csv_rows(path)
    if target not in header:
        raise DataError(f"{path}: no target column {target!r}; columns: {', '.join(header)}."
                        f"{did_you_mean(target, header)} Set data.options.target to the column to predict.")
    features = features or [c for c in header if c != target]
    missing = [c for c in features if c not in header]
    if missing:
        raise DataError(f"{path}: feature columns not found: {', '.join(missing)}; columns: {', '.join(header)}")
    x = _numeric_columns(path, rows, [header.index(c) for c in features], features)
    y = _target_column(rows, header.index(target))
    return Dataset(Path(path).name, x, y, source=str(path))


def load_csv_inputs(path: str, drop=()) -> np.ndarray:
    """Every column of a CSV except those in `drop`, as numbers: the inputs to predict for."""
    header, rows = _read_csv_rows(path)
    keep = [i for i, column in enumerate(header) if column not in drop]
    return _numeric_columns(path, rows, keep, [header[i] for i in keep])


def _read_csv_rows(path: str) -> tuple[list[str], list[list[str]]]:
    try:
        with open(path, newline="") as f:
            reader = csv.reader(f)
            header = [h.strip() for h in next(reader, [])]
            rows = [row for row in reader if row]
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise DataError(f"{path}: cannot read as CSV ({error})") from None
    if not header or not rows:
        raise DataError(f"{path}: a CSV needs a header row and at least one data row")
    for line, row in enumerate(rows, start=2):
        if len(row) != len(header):
            raise DataError(f"{path}:{line}: {len(row)} values, but the header has {len(header)} columns")
    return header, rows


def _numeric_columns(path, rows, columns, names) -> np.ndarray:
    """The columns as floats; the first cell that is not a number is named by line and column."""
    try:
        return np.array([[float(row[c]) for c in columns] for row in rows])
    except ValueError:
        for line, row in enumerate(rows, start=2):
            for c, name in zip(columns, names):
                try:
                    float(row[c])
                except ValueError:
                    raise DataError(f"{path}:{line}: column {name!r} holds {row[c]!r}, not a number") from None
        raise


def _target_column(rows, column) -> np.ndarray:
    """Numbers stay numbers; text labels ("cat", "dog") become classes in sorted order."""
    values = [row[column].strip() for row in rows]
    try:
        return np.array([float(v) for v in values])
    except ValueError:
        return np.array(values)


def load_npz(path: str) -> Dataset:
    """Arrays X and y, and optionally X_test and y_test, from an .npz (never unpickled)."""
    arrays = _read_npz(path)
    if "X" not in arrays or "y" not in arrays:
        raise DataError(f"{path}: an .npz needs arrays 'X' and 'y' (optional 'X_test', 'y_test'); "
                        f"it has {', '.join(arrays) or 'none'}")
    for split in ("", "_test"):
        if ("X" + split in arrays) != ("y" + split in arrays) or (
                "X" + split in arrays and len(arrays["X" + split]) != len(arrays["y" + split])):
            raise DataError(f"{path}: X{split} and y{split} must both be present with one row per example")
    return Dataset(Path(path).name, arrays["X"], arrays["y"], arrays.get("X_test"), arrays.get("y_test"),
                   source=str(path))


def load_npz_inputs(path: str) -> np.ndarray:
    """The array X of an .npz (never unpickled): the inputs to predict for."""
    arrays = _read_npz(path)
    if "X" not in arrays:
        raise DataError(f"{path}: an .npz of inputs needs an array 'X'; it has {', '.join(arrays) or 'none'}")
    return arrays["X"]


def _read_npz(path: str) -> dict[str, np.ndarray]:
    """Every array of an .npz; object arrays (which would need pickle) are refused."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {k: archive[k] for k in archive.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise DataError(f"{path}: cannot read as .npz without pickle ({error})") from None
