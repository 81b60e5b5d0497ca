"""Losses: `loss(logits, y) -> (value, dlogits)`, both batch means.

`logits` is the network's raw output (batch, outputs). Reductions follow
PyTorch's defaults so a PyTorch run can be matched: cross_entropy averages over
the examples; every other loss averages over all elements. The gradient is of
that mean, so its scale does not change with the batch size.

cross_entropy and binary_cross_entropy take logits and fuse the softmax or
sigmoid into the loss: the gradient is then simply p - y, with no division by a
probability that may underflow to 0.

`kind` tells the trainer how to read targets and score predictions:
"multiclass" (integer labels), "binary" (0/1 targets per output) or
"regression" (real targets).

`equation` and `derivative` state the value and dlogits in plain text for
`bpcli explain`, with z the logits (B, k), y the targets, N = B * k the number
of elements, C the classes and options by name (";  " separates steps); every
loss must have both (a test goes over the registry).
"""

from __future__ import annotations

import inspect

import numpy as np

from bpcli.nn.activations import sigmoid


class Loss:
    kind = "regression"
    equation = ""      # the value, e.g. "L = sum((z - y)^2) / N"
    derivative = ""    # dlogits, e.g. "dz = 2 * (z - y) / N"

    def __call__(self, logits: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
        raise NotImplementedError

    def kink_state(self, logits, y):
        """Which side of each kink the inputs are on (None if the loss is smooth)."""
        return None


def _as_targets(logits, y):
    return np.asarray(y, dtype=logits.dtype).reshape(logits.shape)


class MSE(Loss):
    """mean((logits - y)^2); dlogits = 2 (logits - y) / n."""

    equation = "L = sum((z - y)^2) / N"
    derivative = "dz = 2 * (z - y) / N"

    def __call__(self, logits, y):
        diff = logits - _as_targets(logits, y)
        return float(np.mean(diff * diff)), diff * diff.dtype.type(2.0 / diff.size)


class MAE(Loss):
    """mean(|logits - y|); dlogits = sign(logits - y) / n (0 at the kink)."""

    equation = "L = sum(|z - y|) / N"
    derivative = "dz = sign(z - y) / N"

    def __call__(self, logits, y):
        diff = logits - _as_targets(logits, y)
        return float(np.mean(np.abs(diff))), np.sign(diff) * diff.dtype.type(1.0 / diff.size)

    def kink_state(self, logits, y):
        return logits > _as_targets(logits, y)


class Huber(Loss):
    """0.5 d^2 where |d| <= delta, delta (|d| - delta/2) beyond; dlogits = clip(d, -delta, delta) / n."""

    equation = "r = z - y;  L = sum(where(|r| <= delta, 0.5 * r^2, delta * (|r| - 0.5 * delta))) / N"
    derivative = "dz = clip(z - y, -delta, delta) / N"

    def __init__(self, delta: float = 1.0):
        self.delta = delta

    def __call__(self, logits, y):
        diff = logits - _as_targets(logits, y)
        abs_diff = np.abs(diff)
        value = np.where(abs_diff <= self.delta, 0.5 * diff * diff, self.delta * (abs_diff - 0.5 * self.delta))
        dlogits = np.clip(diff, -self.delta, self.delta) * diff.dtype.type(1.0 / diff.size)
        return float(np.mean(value)), dlogits


class CrossEntropy(Loss):
    """Softmax cross-entropy from logits and integer class labels.

    With label smoothing s over C classes the target distribution is
    q = (1 - s) one_hot(y) + s / C. value = -mean over examples of sum(q log p),
    with log p = z - logsumexp(z) (stable); dlogits = (p - q) / batch.
    """

    kind = "multiclass"
    equation = ("p = softmax(z) per row;  q = (1 - label_smoothing) * onehot(y) + label_smoothing / C;  "
                "L = -sum(q * log(p)) / B")
    derivative = "dz = (p - q) / B"

    def __init__(self, label_smoothing: float = 0.0):
        self.label_smoothing = label_smoothing

    def __call__(self, logits, y):
        n, classes = logits.shape
        labels, rows = np.asarray(y).reshape(-1), np.arange(n)
        shifted = logits - logits.max(axis=1, keepdims=True)    # exp sees only values <= 0
        p = np.exp(shifted)
        sums = p.sum(axis=1, keepdims=True)
        log_sums = np.log(sums[:, 0])                           # log p = shifted - log_sums, exactly
        s = self.label_smoothing
        value = -(1 - s) * (shifted[rows, labels] - log_sums).mean()
        if s:
            value -= s * (shifted.mean(axis=1) - log_sums).mean()
            p -= logits.dtype.type(s / classes) * sums          # folded into the division below
        p /= sums
        p[rows, labels] -= logits.dtype.type(1 - s)
        p *= logits.dtype.type(1.0 / n)
        return float(value), p                                  # dlogits = (softmax - q) / n


class BinaryCrossEntropy(Loss):
    """Sigmoid cross-entropy from logits, for one or several 0/1 outputs.

    value = mean(max(z, 0) - z y + log(1 + exp(-|z|))) (stable for any z);
    dlogits = (sigmoid(z) - y) / n.
    """

    kind = "binary"
    equation = "p = sigmoid(z);  L = -sum(y * log(p) + (1 - y) * log(1 - p)) / N"
    derivative = "dz = (p - y) / N"

    def __call__(self, logits, y):
        t = _as_targets(logits, y)
        value = np.maximum(logits, 0) - logits * t + np.log1p(np.exp(-np.abs(logits)))
        dlogits = (sigmoid(logits) - t) * logits.dtype.type(1.0 / logits.size)
        return float(np.mean(value)), dlogits


LOSSES = {
    "mse": MSE,
    "mae": MAE,
    "huber": Huber,
    "cross_entropy": CrossEntropy,
    "binary_cross_entropy": BinaryCrossEntropy,
    "log_loss": BinaryCrossEntropy,
}


def build_loss(options: dict) -> Loss:
    """The loss a config's `loss` section names, with the options its class takes (label_smoothing for
    cross_entropy, delta for huber); the section's penalties go to build_regularizers."""
    cls = LOSSES[options["name"]]
    takes = inspect.signature(cls.__init__).parameters
    return cls(**{k: v for k, v in options.items() if k in takes and k != "self" and v is not None})
