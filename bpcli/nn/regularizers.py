"""Weight penalties added to the loss and to its gradient.

Contract: `penalty(params) -> float` and `add_grad(params, grads)`, where both
are the model's {name: array} dicts. A penalty applies to dense weights (names
ending in ".weight") and, with include_bias, to dense biases too; batch-norm
parameters are never penalized (shrinking gamma only fights the normalization).

The penalty is added to the batch-mean loss as it is, not divided by the
dataset size:
    l2: (lam / 2) sum(w^2), so dw += lam w      (the same as SGD weight_decay = lam)
    l1: lam sum(|w|),        so dw += lam sign(w)

`equation` and `derivative` say the same in plain text for `bpcli explain`.
"""

from __future__ import annotations

import numpy as np


class Regularizer:
    equation = ""      # the penalty added to the loss, for one weight matrix W
    derivative = ""    # what it adds to dW

    def __init__(self, lam: float, include_bias: bool = False):
        self.lam = lam
        self.include_bias = include_bias

    def applies_to(self, name: str) -> bool:
        return name.endswith(".weight") or (self.include_bias and name.endswith(".bias"))

    def _targets(self, params):
        return [name for name in params if self.applies_to(name)]

    def penalty(self, params) -> float:
        return sum(self.term(params[name]) for name in self._targets(params))

    def add_grad(self, params, grads) -> None:
        for name in self._targets(params):
            self.add_term_grad(params[name], grads[name])

    def kink_state(self, params):
        return None


class L2(Regularizer):
    equation = "(lam / 2) * sum(W^2)"
    derivative = "dW += lam * W"

    def term(self, w):
        return 0.5 * self.lam * float(np.dot(w.ravel(), w.ravel()))

    def add_term_grad(self, w, dw):
        dw += w.dtype.type(self.lam) * w


class L1(Regularizer):
    equation = "lam * sum(|W|)"
    derivative = "dW += lam * sign(W)"

    def term(self, w):
        return self.lam * float(np.abs(w).sum())

    def add_term_grad(self, w, dw):
        dw += w.dtype.type(self.lam) * np.sign(w)

    def kink_state(self, params):
        return [params[name] > 0 for name in self._targets(params)]


REGULARIZERS = {"l1": L1, "l2": L2}


def build_regularizers(options: dict) -> list[Regularizer]:
    """The penalties a config's `loss` section switches on (l1, l2, regularize_bias).

    Only those that are on: a zero penalty would still cost a pass over the weights per batch.
    """
    bias = bool(options.get("regularize_bias"))
    return [cls(lam, include_bias=bias) for cls, lam in ((L1, options.get("l1")), (L2, options.get("l2"))) if lam]
