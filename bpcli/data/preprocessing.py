"""From a Dataset's raw arrays to the float arrays a model trains on.

    prepare(dataset, task, val_fraction, seed, preprocess, dtype, outputs,
            test_fraction, target_preprocess, missing) -> Prepared

The task comes from the loss (multiclass, binary or regression) and decides
the form of the targets. A test set is carved out first when the data has none
of its own (test_fraction), then the validation set out of the rest (both
shuffled from the seed, stratified by class, each recorded by a hash of its
indices). A table's columns are encoded (columns.py), and the preprocessing
statistics come from what remains, so neither the validation nor the test set
leaks into training; the test set is never used for early stopping.

Regression targets are standardized by default (target_preprocess auto or
standardize): y' = (y - target_offset) * target_scale, fitted on the training
split, so a target of about 152 +- 77 trains with the same learning rates as
one of about 0 +- 1. The statistics are kept beside the input preprocessing in
the checkpoint, and predictions and reported metrics are turned back into the
target's own units (unscale_outputs).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

from bpcli.data.batches import ScaledRows
from bpcli.data.columns import ColumnEncoder
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
        self.target_offset = self.target_scale = None   # regression targets, when standardized

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
        """x' as float rows; uint8 images stay bytes, scaled as batches are read (batches.ScaledRows)."""
        if x.dtype == np.uint8:
            return ScaledRows(x.reshape(len(x), -1), self.offset.astype(dtype), self.scale.astype(dtype))
        flat = x.reshape(len(x), -1).astype(dtype)
        flat -= self.offset.astype(dtype)
        flat *= self.scale.astype(dtype)
        return flat

    def fit_target(self, y: np.ndarray) -> "Preprocessor":
        """Standardize regression targets (n, outputs) from the training split: y' = (y - offset) * scale."""
        std = y.std(axis=0, dtype=np.float64)
        self.target_offset, self.target_scale = y.mean(axis=0, dtype=np.float64), 1.0 / np.where(std > 0, std, 1.0)
        return self

    def transform_target(self, y: np.ndarray) -> np.ndarray:
        return y if self.target_offset is None else (y - self.target_offset) * self.target_scale

    def unscale_outputs(self, outputs: np.ndarray) -> np.ndarray:
        """A regression model's outputs in the target's own units (unchanged without target standardization)."""
        if self.target_offset is None:
            return outputs
        return (outputs.astype(np.float64) / self.target_scale + self.target_offset).astype(outputs.dtype)

    def state_dict(self) -> dict[str, np.ndarray]:
        state = {"offset": self.offset, "scale": self.scale}
        if self.target_offset is not None:
            state.update(target_offset=self.target_offset, target_scale=self.target_scale)
        return state

    def load_state_dict(self, state) -> None:
        self.offset, self.scale = np.asarray(state["offset"]), np.asarray(state["scale"])
        if "target_offset" in state:   # absent in checkpoints of classifiers and of bpcli before 0.x (issue 15)
            self.target_offset = np.asarray(state["target_offset"], dtype=np.float64)
            self.target_scale = np.asarray(state["target_scale"], dtype=np.float64)


# -- targets -----------------------------------------------------------------

# Beyond this a label is a mistake (a regression target, an ID column), and the confusion matrix alone
# (classes x classes counts) would take gigabytes: 10000 classes make an 800 MB one.
MAX_CLASSES = 10_000


def class_labels(y, name: str, class_names=None, where=None) -> tuple[np.ndarray, tuple[str, ...]]:
    """Integer labels 0..C-1 and the class names; text labels ("cat", "dog") become classes in sorted order.

    With `class_names` (a named dataset's, or a trained model's) every label must be one of them;
    without, numeric labels are class indices below MAX_CLASSES. `where(i)` names example i in a
    message ('d.csv:12'); by default 'NAME: y[i]'.
    """
    where = where or (lambda i: f"{name}: y[{i}]")
    y = np.asarray(y).reshape(len(y), -1)
    if y.shape[1] != 1:
        raise DataError(f"{name}: cross_entropy needs one class label per example, got {y.shape[1]} columns")
    y = y[:, 0]
    if y.dtype.kind in "US":
        return _text_labels(y, name, class_names)
    if y.dtype.kind not in "biuf":
        raise DataError(f"{name}: cross_entropy needs class labels, not values of type {y.dtype}")
    first = lambda mask: int(np.flatnonzero(mask)[0])  # noqa: E731
    if y.dtype.kind == "f" and not np.all(np.mod(y, 1) == 0):
        i = first(np.mod(y, 1) != 0)
        raise DataError(f"{where(i)}: cross_entropy needs integer class labels; found {y[i]}")
    if y.size and y.min() < 0:
        i = first(y < 0)
        raise DataError(f"{where(i)}: class labels must be 0 or more; found {y[i]:g}")
    limit = len(class_names) if class_names else MAX_CLASSES
    if y.size and y.max() >= limit:
        i = first(y >= limit)
        if class_names:
            raise DataError(f"{where(i)}: class label {y[i]:g} is not one of the {limit} classes (0 to {limit - 1})")
        raise DataError(f"{where(i)}: class label {y[i]:g} is too large: labels are class indices 0 to C-1, and "
                        f"bpcli takes at most {MAX_CLASSES} classes (is this column a regression target?)")
    labels = y.astype(np.int64)
    n_classes = max(len(class_names or ()), int(labels.max(initial=-1)) + 1)
    return labels, tuple(class_names or (str(c) for c in range(n_classes)))


def _text_labels(y: np.ndarray, name: str, class_names) -> tuple[np.ndarray, tuple[str, ...]]:
    found = set(y.tolist())
    if not class_names and len(found) > MAX_CLASSES:
        raise DataError(f"{name}: the target holds {len(found)} different texts, but bpcli takes at most "
                        f"{MAX_CLASSES} classes (is this column a regression target or an ID?)")
    names = tuple(class_names or sorted(found))
    unknown = sorted(found - set(names))
    if unknown:
        raise DataError(f"{name}: class {unknown[0]!r} is not one of {', '.join(names)}")
    return np.searchsorted(np.array(names), y).astype(np.int64), names


def numeric_targets(y, task: str, name: str) -> np.ndarray:
    """Float target columns (n, outputs); binary targets must be 0 or 1."""
    values = np.asarray(y)
    if values.dtype.kind not in "biuf":
        raise DataError(f"{name}: the target holds text ({values.flat[0]!r}); a {task} loss needs numbers")
    values = values.astype(np.float64).reshape(len(values), -1)
    if task == "binary" and not np.isin(values, (0.0, 1.0)).all():
        raise DataError(f"{name}: binary_cross_entropy needs targets 0 or 1; found {np.unique(values)[:5]}")
    return values


def _targets(dataset: Dataset, task: str, outputs: int | None = None, class_names=None):
    """(y_train, y_test, class_names) in the loss's form; with `outputs`, checked against the model's width.

    `class_names`: a trained model's classes, for data that does not name its own (a CSV, an NPZ):
    every label must be one of them, and text labels are numbered as the model numbered them.
    """
    name = dataset.source if dataset.kind is None and dataset.source else dataset.name
    if task != "multiclass":
        y_train = numeric_targets(dataset.y_train, task, name)
        y_test = None if dataset.y_test is None else numeric_targets(dataset.y_test, task, name)
        _check_columns(name, y_train, outputs)
        return y_train, y_test, None
    known = dataset.class_names or (tuple(class_names) if class_names else None)
    y_train, names = class_labels(dataset.y_train, name, known, dataset.where)
    y_test = None
    if dataset.y_test is not None:
        numeric = known is None and np.asarray(dataset.y_train).dtype.kind not in "US"
        test_where = lambda i: dataset.where(i, test=True)  # noqa: E731
        y_test, test_names = class_labels(dataset.y_test, name, None if numeric else names, test_where)
        names = test_names if len(test_names) > len(names) else names   # numeric: the classes of both sets
    if outputs is not None:
        names = _fit_outputs(dataset, names, known, y_train, y_test, outputs)
    return y_train, y_test, names


def _check_columns(name: str, y: np.ndarray, outputs: int | None) -> None:
    if outputs is not None and y.shape[1] != outputs:
        raise DataError(f"{name}: the target has {y.shape[1]} value{'s' * (y.shape[1] != 1)} per example, but "
                        f"the model has {outputs} output{'s' * (outputs != 1)}: give the last dense layer "
                        f"units: {y.shape[1]}")


def _fit_outputs(dataset: Dataset, names: tuple[str, ...], known, y_train, y_test, outputs: int) -> tuple[str, ...]:
    """Every class must have an output; numeric classes the data does not show are named up to the outputs."""
    numeric = known is None and names == tuple(str(c) for c in range(len(names)))
    for labels, test in ((y_train, False), (y_test, True)):
        if labels is not None and labels.size and labels.max() >= outputs:
            i = int(np.flatnonzero(labels >= outputs)[0])
            label = labels[i] if numeric else repr(names[labels[i]])
            shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
            raise DataError(f"{dataset.where(i, test)}: class {label} is beyond the model's {outputs} outputs "
                            f"(classes 0 to {outputs - 1}); the data has {len(names)} classes ({shown}), so the "
                            f"last dense layer needs units: {len(names)}")
    return tuple(str(c) for c in range(outputs)) if numeric and len(names) < outputs else names


# -- the validation split ------------------------------------------------------

def split_validation(y: np.ndarray | None, n: int, fraction: float, seed: int, stream: int = 2,
                     what: str = "validation"):
    """(train_indices, val_indices), both sorted: shuffled from the seed, stratified by y's classes if given.

    `stream` keeps the test split's draws (3) apart from the validation split's (2)."""
    if fraction <= 0:
        return np.arange(n), np.arange(0)
    rng = np.random.default_rng([seed, stream])
    groups = [np.flatnonzero(y == c) for c in np.unique(y)] if y is not None else [np.arange(n)]
    val = [g[rng.permutation(len(g))[:int(round(fraction * len(g)))]] for g in groups]
    val_idx = np.sort(np.concatenate(val)).astype(np.int64)
    train_idx = np.setdiff1d(np.arange(n), val_idx)
    if len(train_idx) == 0 or len(val_idx) == 0:
        raise DataError(f"a {what} fraction of {fraction} of {n} examples leaves an empty split")
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
    test_hash: str = ""   # when the test set was carved out of the file (test_fraction)


def split_dataset(dataset: Dataset, task: str, val_fraction: float, seed: int, outputs: int | None = None,
                  class_names=None, test_fraction: float = 0.0) -> Splits:
    """Targets in the loss's form; the test split (test_fraction), then the validation split, carved out.

    With `outputs` (the model's output width) the targets are checked against it
    before anything trains: a class label the model has no output for, or a target
    of another width, is a DataError naming the example. With `class_names` (a
    trained model's), labels must be among them (evaluating on other data).
    """
    y_all, y_test, class_names = _targets(dataset, task, outputs, class_names)
    x_all, x_test, test_hash = dataset.x_train, dataset.x_test, ""
    if test_fraction > 0:
        if x_test is not None:
            raise DataError(f"{dataset.source or dataset.name} has a test set of its own; data.test_fraction "
                            "carves one out of data that has none: set it to 0")
        rest, test_idx = split_validation(_stratify_by(y_all, task), len(y_all), test_fraction, seed, 3, "test")
        x_test, y_test, test_hash = x_all[test_idx], y_all[test_idx], indices_hash(test_idx)
        x_all, y_all = x_all[rest], y_all[rest]
    train_idx, val_idx = split_validation(_stratify_by(y_all, task), len(y_all), val_fraction, seed)
    return Splits(x_all[train_idx], y_all[train_idx], x_all[val_idx], y_all[val_idx],
                  x_test, y_test, class_names, indices_hash(val_idx), test_hash)


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
    encoder: ColumnEncoder | None = None
    y_test_units: np.ndarray | None = None   # standardized regression: the test targets in their own units
    image_shape: tuple[int, int] | None = None   # (rows, cols) of image data, whose rows are flattened images

    @property
    def input_dim(self) -> int:
        return self.x_train.shape[1]


TARGET_METHODS = ("auto", "standardize", "none")


def scales_targets(task: str, target_preprocess: str) -> bool:
    """Whether targets are standardized: `auto` means for regression; class labels never are."""
    return task == "regression" and target_preprocess in ("auto", "standardize")


def prepare(dataset: Dataset, task: str, *, val_fraction: float = 0.1, seed: int = 0,
            preprocess: str = "scale", dtype: str = "float32", outputs: int | None = None,
            test_fraction: float = 0.0, target_preprocess: str = "none", missing: str = "error") -> Prepared:
    """Split off test and validation data, fit the encoding and preprocessing on the rest, convert everything.

    `outputs`: the model's output width, to check the targets against before training (split_dataset).
    """
    s = split_dataset(dataset, task, val_fraction, seed, outputs, test_fraction=test_fraction)
    encoder = ColumnEncoder.of(dataset, missing)
    if encoder:
        encoder.fit(s.x_train, dataset.categories or {})
    encode = (lambda x: x) if encoder is None else (lambda x: encoder.transform(x, dataset.categories))  # noqa
    pre = Preprocessor(preprocess).fit(encode(s.x_train))
    if scales_targets(task, target_preprocess):
        pre.fit_target(s.y_train)
    x_of = lambda x: None if x is None or len(x) == 0 else pre.transform(encode(x), dtype)  # noqa: E731
    y_of = lambda y: None if y is None or len(y) == 0 else loss_targets(pre.transform_target(y), task, dtype)  # noqa
    info = {"n_train": len(s.x_train), "n_val": len(s.x_val), "n_test": 0 if s.x_test is None else len(s.x_test)}
    if s.test_hash:
        info["test_hash"] = s.test_hash
    if encoder:
        info["columns"] = encoder.state_dict()
    units = s.y_test if pre.target_offset is not None and s.y_test is not None and len(s.y_test) else None
    image = tuple(dataset.x_train.shape[1:]) if dataset.x_train.ndim == 3 else None
    return Prepared(x_of(s.x_train), y_of(s.y_train), x_of(s.x_val), y_of(s.y_val), x_of(s.x_test), y_of(s.y_test),
                    task, pre, s.class_names, s.val_hash, info, encoder, units, image)


def loss_targets(y: np.ndarray, task: str, dtype: str = "float32") -> np.ndarray:
    """int64 class labels, or float columns in the model's dtype."""
    return y.astype(np.int64 if task == "multiclass" else dtype)
