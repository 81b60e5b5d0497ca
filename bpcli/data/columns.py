"""From a table's named columns to the model's inputs: categories one-hot, missing cells filled.

    ColumnEncoder.of(dataset, missing) -> ColumnEncoder | None     None: not a table (images, arrays)
    encoder.fit(x_train, categories) -> encoder                    on the training split only
    encoder.transform(x, categories) -> array                      any split, or a file to predict for
    encoder.state_dict() / ColumnEncoder.from_state(state)         JSON, kept in the checkpoint's metadata

A table's x holds one column per feature (tables.py): numbers, NaN for a missing
cell, and for a categorical column a code into that file's sorted texts
(`categories`). Encoding is fitted on the training split alone, as the input
preprocessing is, so neither the validation nor the test split leaks into it:

* a categorical column becomes one 0/1 column per category the training split
  holds (sorted); a category it does not hold (in the validation or test split,
  or in a file to predict for), or a missing cell, gives a row of zeros: the
  model has learned nothing about it, and all-zero says exactly that;
* a missing number is filled with the training split's mean or median of its
  column (data.options.missing), 0 if the split has no value in it.

The checkpoint keeps the feature names too, so a file to predict for is read by
column name, in any order.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from bpcli.data.dataset import Dataset

FILLS = {"mean": np.mean, "median": np.median}


@dataclass
class ColumnEncoder:
    target: str
    features: list[str]
    categorical: list[str] = field(default_factory=list)
    missing: str = "error"
    categories: dict[str, list[str]] = field(default_factory=dict)   # fitted
    fill: dict[str, float] = field(default_factory=dict)             # fitted

    @classmethod
    def of(cls, dataset: Dataset, missing: str = "error") -> ColumnEncoder | None:
        """The encoder for a CSV's columns; None for data without named columns."""
        if dataset.columns is None:
            return None
        return cls(dataset.target_name or "", list(dataset.columns), list(dataset.categories or {}), missing)

    @property
    def changes_inputs(self) -> bool:
        """Whether transform does anything: one-hot columns, or gaps to fill (else x is used as read)."""
        return bool(self.categorical) or self.missing != "error"

    @property
    def width(self) -> int:
        return sum(len(self.categories.get(name, ())) if name in self.categorical else 1 for name in self.features)

    def fit(self, x: np.ndarray, categories: dict) -> ColumnEncoder:
        """Categories present in the training split, and the fill value of each numeric column."""
        for j, name in enumerate(self.features):
            column = x[:, j]
            known = column[np.isfinite(column)]
            if name in self.categorical:
                texts = np.asarray(categories[name], dtype=str)[known.astype(np.int64)]
                self.categories[name] = sorted(set(texts.tolist()))
            elif self.missing in FILLS:
                self.fill[name] = float(FILLS[self.missing](known)) if len(known) else 0.0
        return self

    def transform(self, x: np.ndarray, categories: dict | None = None) -> np.ndarray:
        """(n, width) floats: numbers with gaps filled, each categorical column one-hot (zeros if unseen)."""
        if not self.changes_inputs:
            return x
        parts = []
        for j, name in enumerate(self.features):
            column = x[:, j]
            if name in self.categorical:
                parts.append(self._one_hot(name, column, (categories or {}).get(name, ())))
            else:
                gaps = ~np.isfinite(column)
                parts.append(np.where(gaps, self.fill.get(name, 0.0), column)[:, None])
        return np.concatenate(parts, axis=1) if parts else np.zeros((len(x), 0))

    def _one_hot(self, name: str, codes: np.ndarray, texts) -> np.ndarray:
        fitted = {text: k for k, text in enumerate(self.categories[name])}
        out = np.zeros((len(codes), len(fitted)))
        known = np.flatnonzero(np.isfinite(codes))
        lookup = np.array([fitted.get(text, -1) for text in texts], dtype=np.int64)
        index = lookup[codes[known].astype(np.int64)] if len(texts) else np.full(len(known), -1)
        seen = index >= 0
        out[known[seen], index[seen]] = 1.0
        return out

    def input_names(self) -> list[str]:
        """The model's input columns: a feature's name, or `name=category` for each one-hot column."""
        return [item for name in self.features
                for item in ([f"{name}={c}" for c in self.categories[name]] if name in self.categorical else [name])]

    def state_dict(self) -> dict:
        return {"target": self.target, "features": list(self.features), "categorical": list(self.categorical),
                "missing": self.missing, "categories": self.categories, "fill": self.fill}

    @classmethod
    def from_state(cls, state: dict) -> ColumnEncoder:
        return cls(str(state["target"]), list(state["features"]), list(state.get("categorical", [])),
                   state.get("missing", "error"), dict(state.get("categories", {})), dict(state.get("fill", {})))
