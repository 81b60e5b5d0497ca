"""Activation functions, forward and backward side by side.

Contract: `forward(z) -> a` and `backward(z, a, da) -> dz`, where `da` is
dLoss/da and `dz` is dLoss/dz. Backward gets both the input and the output so
that each derivative can use whichever is cheaper (sigmoid' = a (1 - a)).

Every form is numerically stable: no overflow warning for z = +-1000.
`kinks` lists the points where the derivative jumps; gradcheck skips a finite
difference that straddles one, because there the numeric slope is meaningless.
`default_init` is the initializer that keeps the signal's variance for this
activation (He for the ReLU family, Glorot otherwise).

`equation` and `derivative` state forward and backward in plain text, in the
names of the contract (z, a, da, dz; options by name), for `bpcli explain`;
every activation must have both (a test goes over the registry).
"""

from __future__ import annotations

import math

import numpy as np


class Activation:
    kinks: tuple[float, ...] = ()
    default_init = "glorot_uniform"
    equation = ""      # a = f(z), e.g. "a = max(z, 0)"
    derivative = ""    # dz from da, e.g. "dz = da * (z > 0)"
    mask: np.ndarray | None = None   # z > 0 of the last forward_inplace, where it keeps it (ReLU)

    def forward(self, z):
        raise NotImplementedError

    def backward(self, z, a, da):
        raise NotImplementedError

    def forward_inplace(self, z):
        """forward, free to overwrite z (the layers use this; it is the same function unless overridden)."""
        return self.forward(z)

    def backward_inplace(self, z, a, da):
        """backward, free to overwrite da."""
        return self.backward(z, a, da)


def sigmoid(z):
    """1 / (1 + exp(-z)) without overflow: exp only ever sees -|z|."""
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e)).astype(z.dtype, copy=False)


class Identity(Activation):
    equation = "a = z"
    derivative = "dz = da"

    def forward(self, z):
        return z

    def backward(self, z, a, da):
        return da


class Sigmoid(Activation):
    equation = "a = 1 / (1 + exp(-z))"
    derivative = "dz = da * a * (1 - a)"

    def forward(self, z):
        return sigmoid(z)

    def backward(self, z, a, da):
        return da * a * (1 - a)


class Tanh(Activation):
    equation = "a = tanh(z)"
    derivative = "dz = da * (1 - a^2)"

    def forward(self, z):
        return np.tanh(z)

    def backward(self, z, a, da):
        return da * (1 - a * a)


class ReLU(Activation):
    equation = "a = max(z, 0)"
    derivative = "dz = da * (z > 0)"
    kinks = (0.0,)
    default_init = "he_normal"

    def forward(self, z):
        return np.maximum(z, 0)

    def backward(self, z, a, da):
        return da * (z > 0)

    def forward_inplace(self, z):
        """z becomes a, and the mask z > 0 is kept for backward_inplace (one pass fewer there)."""
        self.mask = z > 0
        return np.multiply(z, self.mask, out=z)

    def backward_inplace(self, z, a, da):
        mask = self.mask if self.mask is not None and self.mask.shape == da.shape else a > 0
        return np.multiply(da, mask, out=da)


class LeakyReLU(Activation):
    """a = z for z > 0, slope * z otherwise."""

    equation = "a = where(z > 0, z, slope * z)"
    derivative = "dz = da * where(z > 0, 1, slope)"
    kinks = (0.0,)
    default_init = "he_normal"

    def __init__(self, slope: float = 0.01):
        self.slope = slope

    def forward(self, z):
        return np.where(z > 0, z, z * z.dtype.type(self.slope))

    def backward(self, z, a, da):
        return da * np.where(z > 0, 1, self.slope).astype(z.dtype, copy=False)


class ELU(Activation):
    """a = z for z > 0, alpha * (exp(z) - 1) otherwise; da/dz = a + alpha there."""

    equation = "a = where(z > 0, z, alpha * (exp(z) - 1))"
    derivative = "dz = da * where(z > 0, 1, a + alpha)"
    kinks = (0.0,)  # the slope jumps from alpha to 1 unless alpha == 1
    default_init = "he_normal"

    def __init__(self, alpha: float = 1.0):
        self.alpha = alpha

    def forward(self, z):
        negative = z.dtype.type(self.alpha) * np.expm1(np.minimum(z, 0))
        return np.where(z > 0, z, negative)

    def backward(self, z, a, da):
        return da * np.where(z > 0, 1, a + z.dtype.type(self.alpha))


class GELU(Activation):
    """Gaussian error linear unit, tanh approximation (PyTorch approximate="tanh").

    a = z/2 (1 + tanh(u)), u = sqrt(2/pi) (z + 0.044715 z^3). NumPy has no erf,
    and the approximation differs from the exact form by under 1e-3.
    """

    equation = "a = 0.5 * z * (1 + t),  t = tanh(sqrt(2/pi) * (z + 0.044715 * z^3))"
    derivative = "dz = da * (0.5 * (1 + t) + 0.5 * z * (1 - t^2) * sqrt(2/pi) * (1 + 3 * 0.044715 * z^2))"
    default_init = "he_normal"
    c = math.sqrt(2.0 / math.pi)
    k = 0.044715

    def forward(self, z):
        t = np.tanh(self.c * (z + self.k * z ** 3))
        return 0.5 * z * (1 + t)

    def backward(self, z, a, da):
        t = np.tanh(self.c * (z + self.k * z ** 3))
        du_dz = self.c * (1 + 3 * self.k * z * z)
        return da * (0.5 * (1 + t) + 0.5 * z * (1 - t * t) * du_dz)


class Softplus(Activation):
    """a = log(1 + exp(z)) = max(z, 0) + log1p(exp(-|z|)); da/dz = sigmoid(z)."""

    equation = "a = log(1 + exp(z))"
    derivative = "dz = da * sigmoid(z)"

    def forward(self, z):
        return np.maximum(z, 0) + np.log1p(np.exp(-np.abs(z)))

    def backward(self, z, a, da):
        return da * sigmoid(z)


class Softmax(Activation):
    """Row-wise softmax. dz = a * (da - sum(da * a)) per row (the Jacobian-vector product).

    For classification, prefer an identity output with the cross_entropy loss:
    it fuses softmax into the loss, whose gradient is then simply p - y.
    """

    equation = "a = exp(z) / rowsum(exp(z))"
    derivative = "dz = a * (da - rowsum(da * a))"

    def forward(self, z):
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    def backward(self, z, a, da):
        return a * (da - (da * a).sum(axis=1, keepdims=True))


ACTIVATIONS = {
    "identity": Identity,
    "sigmoid": Sigmoid,
    "tanh": Tanh,
    "relu": ReLU,
    "leaky_relu": LeakyReLU,
    "elu": ELU,
    "gelu": GELU,
    "softplus": Softplus,
    "softmax": Softmax,
}
