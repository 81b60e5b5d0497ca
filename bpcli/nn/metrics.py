"""Metrics: pure, vectorised functions of the network's output and the targets, and their registry.

`logits` is the network's raw output (n, outputs). The task names how to read
it, as in `bpcli.losses`:

- "multiclass": integer labels y (n,); the prediction is argmax of the logits.
- "binary": 0/1 targets y (n, k); the prediction is logits > 0, i.e.
  sigmoid > 0.5. Accuracy is the mean over all n * k outputs.
- "regression": real targets y (n, k).

A confusion matrix has true classes as rows and predicted classes as columns.
Ratios with a zero denominator (a class never predicted, never present) are 0,
as scikit-learn's zero_division=0, and raise no warning. Everything meant for
JSON is returned as plain Python floats, ints and lists.

METRICS, at the end, names the figures a set is scored by (loss, accuracy,
mse, mae, r2): each with its direction, the tasks it applies to, how it is
computed over a whole set and how the epoch line shows it. `evaluate` scores a
set by every metric of its task; `monitorable()` lists the history columns
(val_loss, train_accuracy, ...) that early stopping and reduce-on-plateau may
watch, and `resolve_mode` their direction.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from bpcli.nn.activations import sigmoid
from bpcli.nn.losses import Loss
from bpcli.nn.model import Model


def _ratio(num, den) -> np.ndarray:
    """num / den elementwise, 0 where den == 0 (no division warning)."""
    num, den = np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64)
    return np.divide(num, den, out=np.zeros(np.broadcast(num, den).shape), where=den != 0)


def predict_classes(logits, task: str) -> np.ndarray:
    """Multiclass: argmax per row (n,). Binary: 1 where logit > 0, i.e. sigmoid > 0.5 (n, k)."""
    logits = np.asarray(logits)
    if task == "multiclass":
        return np.argmax(logits, axis=1)
    if task == "binary":
        return (logits > 0).astype(np.int64)
    raise ValueError(f"class predictions need a multiclass or binary task, not {task!r}")


def probabilities(logits, task: str) -> np.ndarray:
    """Softmax rows (multiclass) or sigmoid per output (binary), without overflow.

    Softmax subtracts the row maximum first so exp sees only values <= 0;
    sigmoid only ever exponentiates -|z|.
    """
    z = np.asarray(logits)
    z = z if z.dtype.kind == "f" else z.astype(np.float64)
    if task == "multiclass":
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)
    if task == "binary":
        return sigmoid(z)
    raise ValueError(f"probabilities need a multiclass or binary task, not {task!r}")


def count_correct(logits, y, task: str) -> int:
    """Correct predictions: examples for multiclass, individual outputs for binary."""
    pred = predict_classes(logits, task)
    return int(np.count_nonzero(pred == np.asarray(y).reshape(pred.shape)))


def accuracy(logits, y, task: str) -> float:
    """count_correct over the number of predictions (n, or n * k for binary); 0 if empty."""
    total = predict_classes(logits, task).size
    return float(count_correct(logits, y, task) / total) if total else 0.0


def confusion_matrix(y_true, y_pred, n_classes: int) -> np.ndarray:
    """(C, C) int64 counts: entry [t, p] is how many of class t were predicted p.

    One bincount over the flat index t * C + p, so no loop over samples.
    """
    t, p = np.asarray(y_true, dtype=np.int64).ravel(), np.asarray(y_pred, dtype=np.int64).ravel()
    if t.shape != p.shape:
        raise ValueError(f"y_true has {t.size} labels but y_pred has {p.size}")
    if t.size and (min(t.min(), p.min()) < 0 or max(t.max(), p.max()) >= n_classes):
        raise ValueError(f"labels must lie in [0, {n_classes})")
    flat = np.bincount(t * n_classes + p, minlength=n_classes * n_classes)
    return flat.reshape(n_classes, n_classes).astype(np.int64)


def _averages(precision, recall, f1, support) -> tuple[dict, dict]:
    """Unweighted (macro) and support-weighted means of the per-class scores."""
    weights = _ratio(support, support.sum())
    scores = {"precision": precision, "recall": recall, "f1": f1}
    macro = {k: float(v.mean()) if v.size else 0.0 for k, v in scores.items()}
    weighted = {k: float(v @ weights) for k, v in scores.items()}
    return macro, weighted


def per_class_report(cm) -> dict:
    """Precision, recall, F1 and support per class from a confusion matrix.

    precision = TP / predicted (column sum), recall = TP / present (row sum),
    F1 = 2PR / (P + R); each is 0 where its denominator is 0.
    """
    cm = np.asarray(cm)
    tp = np.diag(cm).astype(np.float64)
    support = cm.sum(axis=1)
    precision, recall = _ratio(tp, cm.sum(axis=0)), _ratio(tp, support)
    f1 = _ratio(2 * precision * recall, precision + recall)
    macro, weighted = _averages(precision, recall, f1, support)
    return {"precision": precision, "recall": recall, "f1": f1, "support": support.astype(np.int64),
            "macro": macro, "weighted": weighted}


def _columns(pred, y) -> tuple[np.ndarray, np.ndarray]:
    """Predictions and targets as float64 (n, k) arrays of one shape."""
    pred = np.asarray(pred, dtype=np.float64)
    pred = pred.reshape(len(pred), -1)
    return pred, np.asarray(y, dtype=np.float64).reshape(pred.shape)


def mse(pred, y) -> float:
    pred, y = _columns(pred, y)
    return float(np.mean((pred - y) ** 2))


def mae(pred, y) -> float:
    pred, y = _columns(pred, y)
    return float(np.mean(np.abs(pred - y)))


def r2(pred, y) -> float:
    """R^2 = 1 - SS_res / SS_tot per output column, then averaged (scikit-learn's "uniform_average").

    A constant target column has SS_tot = 0: its R^2 is 1.0 if predicted
    exactly, else 0.0, as scikit-learn does, rather than -inf or nan.
    """
    pred, y = _columns(pred, y)
    ss_res = np.sum((pred - y) ** 2, axis=0)
    ss_tot = np.sum((y - y.mean(axis=0)) ** 2, axis=0)
    return float(np.where(ss_tot > 0, 1.0 - _ratio(ss_res, ss_tot), np.where(ss_res == 0, 1.0, 0.0)).mean())


def regression_metrics(pred, y) -> dict:
    """MSE and MAE over all elements; R^2 per output column, then averaged."""
    return {"mse": mse(pred, y), "mae": mae(pred, y), "r2": r2(pred, y)}


def classification_summary(y_true, y_pred, class_names) -> dict:
    """A JSON-able report: accuracy, confusion matrix, per-class and averaged scores."""
    names = [str(c) for c in class_names]
    cm = confusion_matrix(y_true, y_pred, len(names))
    report = per_class_report(cm)
    total = int(cm.sum())
    per_class = [
        {"class": name, "precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
        for name, p, r, f, s in zip(names, report["precision"], report["recall"], report["f1"],
                                    report["support"])
    ]
    return {"accuracy": float(np.trace(cm) / total) if total else 0.0,
            "confusion_matrix": cm.tolist(), "per_class": per_class,
            "macro": report["macro"], "weighted": report["weighted"]}


SPARK_BLOCKS = "▁▂▃▄▅▆▇█"


def sparkline(values, width: int = 60) -> str:
    """One block character per value, lowest ▁ to highest █, e.g. a loss per epoch: [3, 2, 1.5, 1] -> "█▅▃▁".

    More than `width` values are averaged in `width` near-equal consecutive buckets.
    A non-finite value (or a bucket holding one) is a space; a flat series is a row
    of ▄, since there is no range to scale by.
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    if v.size > width:
        with np.errstate(invalid="ignore"):  # inf - inf in a bucket: NaN, shown as a space
            v = np.array([bucket.mean() for bucket in np.array_split(v, width)])
    finite = np.isfinite(v)
    if not finite.any():
        return " " * v.size
    low, high = v[finite].min(), v[finite].max()
    if high == low:
        levels = np.full(v.size, 3)
    else:
        levels = np.floor((np.where(finite, v, low) - low) / (high - low) * 7 + 0.5).astype(int)
    return "".join(SPARK_BLOCKS[k] if ok else " " for k, ok in zip(levels, finite))


# -- the registry ----------------------------------------------------------------------------------

TASKS = ("multiclass", "binary", "regression")
SPLITS = ("val", "train")   # a history column is <split>_<metric>: val_loss, train_accuracy


@dataclass(frozen=True)
class Metric:
    """One figure a set is scored by.

    compute(logits, y, loss) -> float   over a whole set; `loss` is the run's Loss
                                        (loss.kind is the task)
    mode                                "min" or "max": which way is better
    tasks                               the tasks it applies to (TASKS)
    short, format                       how the epoch line shows it: "acc 95.00%"
    per_epoch                           logged every epoch, as train_<name> and
                                        val_<name>, so it can be monitored
    tally(logits, y, loss) -> (sum, n)  for train_<name>: one batch's share, the
                                        epoch's value being the ratio of the totals
                                        (None for the loss: the trainer sums the
                                        objective it already has, penalties included)
    """

    name: str
    mode: str
    tasks: tuple[str, ...]
    compute: Callable
    short: str
    format: str = "{:.4f}"
    per_epoch: bool = False
    tally: Callable | None = None

    def show(self, value: float) -> str:
        return self.format.format(value)


def _outputs(logits, task: str) -> int:
    """How many predictions accuracy counts: examples (multiclass) or every output (binary)."""
    return logits.size if task == "binary" else len(logits)


METRICS = {
    "loss": Metric("loss", "min", TASKS, lambda logits, y, loss: loss(logits, y)[0], "loss", per_epoch=True),
    "accuracy": Metric("accuracy", "max", ("multiclass", "binary"),
                       lambda logits, y, loss: count_correct(logits, y, loss.kind) / _outputs(logits, loss.kind),
                       "acc", "{:.2%}", per_epoch=True,
                       tally=lambda logits, y, loss: (count_correct(logits, y, loss.kind),
                                                      _outputs(logits, loss.kind))),
    "mse": Metric("mse", "min", ("regression",), lambda logits, y, loss: mse(logits, y), "mse"),
    "mae": Metric("mae", "min", ("regression",), lambda logits, y, loss: mae(logits, y), "mae"),
    "r2": Metric("r2", "max", ("regression",), lambda logits, y, loss: r2(logits, y), "r2"),
}


def metrics_for(task: str) -> list[Metric]:
    """The metrics that apply to a task, in registry order."""
    return [m for m in METRICS.values() if task in m.tasks]


def monitorable() -> tuple[str, ...]:
    """The history columns training.monitor may name: val_loss, val_accuracy, train_loss, train_accuracy, ..."""
    return tuple(f"{split}_{m.name}" for split in SPLITS for m in METRICS.values() if m.per_epoch)


def metric_for(column: str) -> Metric:
    """The metric a history column holds: val_accuracy and train_accuracy -> accuracy."""
    split, _, name = column.partition("_")
    if split not in SPLITS or name not in METRICS:
        raise ValueError(f"{column!r} is not a metric column; they are <split>_<metric> with split "
                         f"{' or '.join(SPLITS)} and metric one of {', '.join(METRICS)}")
    return METRICS[name]


def resolve_mode(monitor: str, mode: str = "auto") -> str:
    """"min" or "max": `mode`, where auto is the monitored metric's own direction (accuracy is maximized)."""
    return metric_for(monitor).mode if mode == "auto" else mode


def format_metric(column: str, value: float) -> str:
    """A history column as the epoch line shows it: "loss 0.1234", "acc 95.00%", "val_acc 94.10%"."""
    metric = metric_for(column)
    prefix = "" if column.startswith("train_") else column.split("_", 1)[0] + "_"
    return f"{prefix}{metric.short} {metric.show(value)}"


# -- scoring a whole set -----------------------------------------------------------------------------

def predict_logits(model: Model, x: np.ndarray, batch_size: int = 4096) -> np.ndarray:
    """The network's outputs for a whole set, in large batches at evaluation mode."""
    logits = np.empty((len(x), model.output_dim), dtype=model.dtype)
    for i in range(0, len(x), batch_size):
        logits[i:i + batch_size] = model.forward(x[i:i + batch_size], training=False)  # copied: buffers are reused
    return logits


def evaluate(model: Model, loss: Loss, x: np.ndarray, y: np.ndarray, batch_size: int = 4096) -> dict:
    """Every metric of the loss's task over a whole set: loss (without penalties) and accuracy, or mse, mae, r2."""
    logits = predict_logits(model, x, batch_size)
    return {m.name: m.compute(logits, y, loss) for m in metrics_for(loss.kind)}
