"""From a Dataset's raw arrays to the float arrays a model trains on.

    prepare(dataset, task, val_fraction, seed, preprocess, dtype) -> Prepared

The task comes from the loss (multiclass, binary or regression) and decides
the form of the targets. The validation set is carved out of the training set
(shuffled from the seed, stratified by class) and the preprocessing statistics
come from what remains, so neither the validation nor the test set leaks into
training; the test set is never used for early stopping.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

from bpcli.data.dataset import Dataset
from bpcli.errors import DataError

TASKS = ("multiclass", "binary", "regression")


class Preprocessor:
    """x' = (x - offset) * scale per feature, fitted on the training split only; images are flattened.

    "scale": to [0, 1]; uint8 images divide by 255, other data uses the training
    set's min and max. "standardize": zero mean and unit variance from the
    training set. "none": unchanged. Constant features keep a scale of 1.
    """

    METHODS = ("scale", "standardize", "none")

    def __init__(self, method: str = "scale"):
        self.method = method
        self.offset = self.scale = None

    def fit(self, x: np.ndarray) -> "Preprocessor":
        flat = x.reshape(len(x), -1)
        ones = np.ones(flat.shape[1])
        if self.method == "scale" and x.dtype == np.uint8:
            self.offset, self.scale = 0 * ones, ones / 255
        elif self.method == "scale":
            lo, hi = flat.min(axis=0).astype(np.float64), flat.max(axis=0).astype(np.float64)
            self.offset, self.scale = lo, 1.0 / np.where(hi > lo, hi - lo, 1.0)
        elif self.method == "standardize":
            std = flat.std(axis=0, dtype=np.float64)
            self.offset, self.scale = flat.mean(axis=0, dtype=np.float64), 1.0 / np.where(std > 0, std, 1.0)
        else:
            self.offset, self.scale = 0 * ones, ones
        return self

    def transform(self, x: np.ndarray, dtype="float32") -> np.ndarray:
        flat = x.reshape(len(x), -1).astype(dtype)
        flat -= self.offset.astype(dtype)
        flat *= self.scale.astype(dtype)
        return flat

    def state_dict(self) -> dict[str, np.ndarray]:
        return {"offset": self.offset, "scale": self.scale}

    def load_state_dict(self, state) -> None:
        self.offset, self.scale = np.asarray(state["offset"]), np.asarray(state["scale"])


# -- targets -----------------------------------------------------------------

def class_labels(y, name: str, class_names=None) -> tuple[np.ndarray, tuple[str, ...]]:
    """Integer labels 0..C-1 and the class names; text labels ("cat", "dog") become classes in sorted order."""
    y = np.asarray(y).reshape(len(y), -1)
    if y.shape[1] != 1:
        raise DataError(f"{name}: cross_entropy needs one class label per example, got {y.shape[1]} columns")
    y = y[:, 0]
    if y.dtype.kind in "US":
        names = tuple(class_names or sorted(set(y.tolist())))
        unknown = sorted(set(y.tolist()) - set(names))
        if unknown:
            raise DataError(f"{name}: class {unknown[0]!r} is not one of {', '.join(names)}")
        return np.searchsorted(np.array(names), y).astype(np.int64), names
    if y.dtype.kind == "f" and not np.all(np.mod(y, 1) == 0):
        raise DataError(f"{name}: cross_entropy needs integer class labels; found {y[np.mod(y, 1) != 0][0]}")
    labels = y.astype(np.int64)
    if labels.size and labels.min() < 0:
        raise DataError(f"{name}: class labels must be 0 or more; found {labels.min()}")
    n_classes = max(len(class_names or ()), int(labels.max(initial=-1)) + 1)
    return labels, tuple(class_names or (str(c) for c in range(n_classes)))


def numeric_targets(y, task: str, name: str) -> np.ndarray:
    """Float target columns (n, outputs); binary targets must be 0 or 1."""
    values = np.asarray(y)
    if values.dtype.kind not in "biuf":
        raise DataError(f"{name}: the target holds text ({values.flat[0]!r}); a {task} loss needs numbers")
    values = values.astype(np.float64).reshape(len(values), -1)
    if task == "binary" and not np.isin(values, (0.0, 1.0)).all():
        raise DataError(f"{name}: binary_cross_entropy needs targets 0 or 1; found {np.unique(values)[:5]}")
    return values


def _targets(dataset: Dataset, task: str):
    """(y_train, y_test, class_names) in the loss's form."""
    if task == "multiclass":
        y_train, names = class_labels(dataset.y_train, dataset.name, dataset.class_names)
        y_test = None if dataset.y_test is None else class_labels(dataset.y_test, dataset.name, names)[0]
        return y_train, y_test, names
    y_test = None if dataset.y_test is None else numeric_targets(dataset.y_test, task, dataset.name)
    return numeric_targets(dataset.y_train, task, dataset.name), y_test, None


# -- the validation split ------------------------------------------------------

def split_validation(y: np.ndarray | None, n: int, fraction: float, seed: int):
    """(train_indices, val_indices), both sorted: shuffled from the seed, stratified by y's classes if given."""
    if fraction <= 0:
        return np.arange(n), np.arange(0)
    rng = np.random.default_rng([seed, 2])
    groups = [np.flatnonzero(y == c) for c in np.unique(y)] if y is not None else [np.arange(n)]
    val = [g[rng.permutation(len(g))[:int(round(fraction * len(g)))]] for g in groups]
    val_idx = np.sort(np.concatenate(val)).astype(np.int64)
    train_idx = np.setdiff1d(np.arange(n), val_idx)
    if len(train_idx) == 0 or len(val_idx) == 0:
        raise DataError(f"a validation fraction of {fraction} of {n} examples leaves an empty split")
    return train_idx, val_idx


def indices_hash(indices: np.ndarray) -> str:
    """A short fingerprint of a split, recorded with the run so that it can be reproduced and compared."""
    return hashlib.sha256(np.asarray(indices, dtype="<i8").tobytes()).hexdigest()[:16]


def _stratify_by(y: np.ndarray, task: str) -> np.ndarray | None:
    if task == "multiclass":
        return y
    return y[:, 0] if task == "binary" and y.shape[1] == 1 else None


@dataclass
class Splits:
    """Raw inputs and loss-ready targets of the train, validation and test splits."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray | None
    y_test: np.ndarray | None
    class_names: tuple[str, ...] | None
    val_hash: str


def split_dataset(dataset: Dataset, task: str, val_fraction: float, seed: int) -> Splits:
    """Targets in the loss's form, and the validation split carved out of the training set."""
    y_all, y_test, class_names = _targets(dataset, task)
    train_idx, val_idx = split_validation(_stratify_by(y_all, task), len(y_all), val_fraction, seed)
    return Splits(dataset.x_train[train_idx], y_all[train_idx], dataset.x_train[val_idx], y_all[val_idx],
                  dataset.x_test, y_test, class_names, indices_hash(val_idx))


@dataclass
class Prepared:
    """Float arrays ready for the model, and what produced them."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray | None
    y_val: np.ndarray | None
    x_test: np.ndarray | None
    y_test: np.ndarray | None
    task: str
    preprocessor: Preprocessor
    class_names: tuple[str, ...] | None = None
    val_hash: str = ""
    info: dict = field(default_factory=dict)

    @property
    def input_dim(self) -> int:
        return self.x_train.shape[1]


def prepare(dataset: Dataset, task: str, *, val_fraction: float = 0.1, seed: int = 0,
            preprocess: str = "scale", dtype: str = "float32") -> Prepared:
    """Split off validation data, fit preprocessing on the rest, and convert inputs and targets."""
    s = split_dataset(dataset, task, val_fraction, seed)
    pre = Preprocessor(preprocess).fit(s.x_train)
    x_of = lambda x: None if x is None or len(x) == 0 else pre.transform(x, dtype)  # noqa: E731
    y_of = lambda y: None if y is None or len(y) == 0 else loss_targets(y, task, dtype)  # noqa: E731
    info = {"n_train": len(s.x_train), "n_val": len(s.x_val), "n_test": 0 if s.x_test is None else len(s.x_test)}
    return Prepared(x_of(s.x_train), y_of(s.y_train), x_of(s.x_val), y_of(s.y_val), x_of(s.x_test), y_of(s.y_test),
                    task, pre, s.class_names, s.val_hash, info)


def loss_targets(y: np.ndarray, task: str, dtype: str = "float32") -> np.ndarray:
    """int64 class labels, or float columns in the model's dtype."""
    return y.astype(np.int64 if task == "multiclass" else dtype)
