"""Metrics: pure, vectorised functions of the network's output and the targets.

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
"""

from __future__ import annotations

import numpy as np

from bpcli.nn.activations import sigmoid


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


def regression_metrics(pred, y) -> dict:
    """MSE and MAE over all elements; R^2 per output column, then averaged.

    R^2 = 1 - SS_res / SS_tot per column (scikit-learn's "uniform_average"). A
    constant target column has SS_tot = 0: its R^2 is 1.0 if predicted exactly,
    else 0.0, as scikit-learn does, rather than -inf or nan.
    """
    pred = np.asarray(pred, dtype=np.float64)
    pred = pred.reshape(len(pred), -1)
    y = np.asarray(y, dtype=np.float64).reshape(pred.shape)
    err = pred - y
    ss_res = np.sum(err ** 2, axis=0)
    ss_tot = np.sum((y - y.mean(axis=0)) ** 2, axis=0)
    r2 = np.where(ss_tot > 0, 1.0 - _ratio(ss_res, ss_tot), np.where(ss_res == 0, 1.0, 0.0))
    return {"mse": float(np.mean(err ** 2)), "mae": float(np.mean(np.abs(err))), "r2": float(r2.mean())}


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


def resolve_mode(monitor: str, mode: str = "auto") -> str:
    """Whether a monitored metric is better when smaller ("min") or larger ("max"); auto: accuracy is maximized."""
    return ("max" if monitor.endswith("accuracy") else "min") if mode == "auto" else mode


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
