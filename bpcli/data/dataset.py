"""The Dataset record every loader returns, and its summary for `bpcli data info`.

    Dataset(name, x_train, y_train, x_test, y_test, kind, class_names, source, lines,
            columns, target_name, categories)
    dataset.where(i, test) -> str                where example i is, for messages ('d.csv:12')
    describe_dataset(dataset) -> dict            shapes, value range, class counts

It sits below the loaders (catalog.py for the named sets, tables.py for the
user's CSV and NPZ files) and preprocessing.py, which all speak it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Dataset:
    """Arrays as published: images stay uint8 (n, 28, 28) until preprocessing."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray | None = None
    y_test: np.ndarray | None = None
    kind: str | None = None            # None: the user's data, whose task follows the loss
    class_names: tuple[str, ...] | None = None
    source: str = ""
    lines: np.ndarray | None = None    # a CSV's line number of each training example
    columns: tuple[str, ...] | None = None   # a CSV's feature columns, in the order of x's columns
    target_name: str | None = None           # a CSV's target column
    categories: dict[str, tuple[str, ...]] | None = None   # categorical columns: code -> text, as in x

    def where(self, i: int, test: bool = False) -> str:
        """Example i of the training (or test) set, as a message names it: 'd.csv:12', 'd.npz: y[5]', 'xor: y[5]'."""
        if self.lines is not None and not test:
            return f"{self.source}:{self.lines[i]}"
        name = self.source if self.kind is None and self.source else self.name
        return f"{name}: {'y_test' if test else 'y'}[{i}]"


def describe_dataset(dataset: Dataset) -> dict:
    """Shapes, value range and class counts, as plain data for `bpcli data info`."""
    info = {"name": dataset.name, "source": dataset.source, "kind": dataset.kind or "follows the loss"}
    for split, x, y in (("train", dataset.x_train, dataset.y_train), ("test", dataset.x_test, dataset.y_test)):
        if x is None:
            continue
        info[split] = {"x_shape": list(x.shape), "y_shape": list(np.shape(y)), "x_dtype": str(x.dtype),
                       "x_min": float(x.min()), "x_max": float(x.max())}
        if dataset.kind in ("multiclass", "binary") or np.asarray(y).dtype.kind in "US":
            info[split]["class_counts"] = _class_counts(dataset, y)
    return info


def _class_counts(dataset: Dataset, y) -> dict[str, int]:
    """{class: examples}; a named multiclass set counts by class name, anything else by label value."""
    values, counts = np.unique(np.asarray(y).ravel(), return_counts=True)
    names = dataset.class_names
    return {(names[int(v)] if names and dataset.kind == "multiclass" else str(v.item() if hasattr(v, "item") else v)):
            int(c) for v, c in zip(values, counts)}
