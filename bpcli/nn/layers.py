"""Layers: the pieces a model stacks, each with a hand-written backward pass.

Contract (rows are examples: x is (batch, features)):

    build(input_dim) -> output_dim      fixes the shapes once the input size is known
    param_shapes() -> {name: shape}     what the model must allocate for this layer
    initial_params(rng) -> {name: a}    float64 starting values drawn from `rng`
    forward(x, training) -> y           keeps what backward needs
    backward(dy) -> dx                  fills grads[name] for each params[name]
    backward_params(dy)                 the same without dx, for the first layer that has parameters

`params` and `grads` are bound by the model to views into two flat buffers, so
a layer writes its gradients in place (`out=`) and the optimizer can update all
parameters with a few whole-buffer operations. `buffers` holds state that is
saved but not trained (batch norm's running statistics). `dname` always means
dLoss/dname.

Speed: a dense layer writes its outputs into arrays it keeps per batch shape
(`scratch`), so the hot loop allocates nothing; an output is therefore only
valid until the layer's next forward pass with the same shape, and anything
that keeps it longer must copy it.
"""

from __future__ import annotations

import numpy as np

from bpcli.nn import initializers
from bpcli.nn.activations import Activation


class Layer:
    def __init__(self):
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}
        self.buffers: dict[str, np.ndarray] = {}

    def build(self, input_dim: int) -> int:
        return input_dim

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        return {}

    def initial_params(self, rng: np.random.Generator) -> dict[str, np.ndarray]:
        return {}

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        raise NotImplementedError

    def backward(self, dy: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def backward_params(self, dy: np.ndarray) -> None:
        """Fill the gradients only: below the first layer with parameters, dx is never used."""
        self.backward(dy)

    def scratch(self, name: str, shape: tuple[int, ...], dtype) -> np.ndarray:
        """An array reused for every batch of this shape (training and evaluation batches differ)."""
        cache = self.__dict__.setdefault("_scratch", {})
        key = (name, shape)
        if key not in cache:
            cache[key] = np.empty(shape, dtype=dtype)
        return cache[key]


class Dense(Layer):
    """z = x @ weight + bias, with weight shaped (fan_in, fan_out).

    Backward: dweight = x.T @ dz, dbias = sum of dz over the batch, dx = dz @ weight.T.
    """

    def __init__(self, units: int, init: str = "glorot_uniform", init_options=None,
                 bias_init: str = "zeros", bias_init_options=None):
        super().__init__()
        self.units = units
        self.init, self.init_options = init, dict(init_options or {})
        self.bias_init, self.bias_init_options = bias_init, dict(bias_init_options or {})
        self.fan_in = 0

    def build(self, input_dim):
        self.fan_in = input_dim
        return self.units

    def param_shapes(self):
        return {"weight": (self.fan_in, self.units), "bias": (self.units,)}

    def initial_params(self, rng):
        shapes, fans = self.param_shapes(), (self.fan_in, self.units)
        weight = initializers.INITIALIZERS[self.init](rng, shapes["weight"], *fans, **self.init_options)
        bias = initializers.INITIALIZERS[self.bias_init](rng, shapes["bias"], *fans, **self.bias_init_options)
        return {"weight": weight, "bias": bias}

    def forward(self, x, training):
        self.x = x
        z = np.matmul(x, self.params["weight"], out=self.scratch("z", (len(x), self.units), x.dtype))
        z += self.params["bias"]
        return z

    def backward(self, dz):
        self.backward_params(dz)
        return np.matmul(dz, self.params["weight"].T, out=self.scratch("dx", self.x.shape, dz.dtype))

    def backward_params(self, dz):
        np.matmul(self.x.T, dz, out=self.grads["weight"])
        np.matmul(self.ones(len(dz), dz.dtype), dz, out=self.grads["bias"])  # the sum over the batch, via BLAS

    def ones(self, n: int, dtype) -> np.ndarray:
        ones = self.scratch("ones", (n,), dtype)
        ones.fill(1)
        return ones


class ActivationLayer(Layer):
    """Applies an activation element-wise; keeps z and a for the backward pass.

    Right after a dense layer (`inplace`, set by the model), z is that layer's
    private output buffer, so an activation whose backward needs only its
    output (ReLU: a > 0 exactly where z > 0) may overwrite z with a: one array
    and one pass fewer per batch. Anywhere else z may be the caller's array.
    """

    def __init__(self, activation: Activation, name: str):
        super().__init__()
        self.activation, self.name = activation, name
        self.inplace = False

    def forward(self, z, training):
        self.z = z
        self.a = self.activation.forward_inplace(z) if self.inplace else self.activation.forward(z)
        return self.a

    def backward(self, da):
        if self.inplace:  # da is then the gradient buffer of the layer above (or the loss's), never the caller's
            return self.activation.backward_inplace(self.z, self.a, da)
        return self.activation.backward(self.z, self.a, da)


class Dropout(Layer):
    """Inverted dropout: keep each unit with probability 1 - rate and scale it by 1 / (1 - rate).

    Scaling at training time keeps the expected activation unchanged, so evaluation
    is the identity. The mask comes from the model's generator (`rng`, bound by the
    model), so a run is reproducible from its seed and gradcheck can hold it fixed.
    Speed: the mask is drawn as 16-bit integers, four from each raw 64-bit draw
    (a quarter of the cost of float draws); the rate is thus rounded to a multiple
    of 1/65536, and the scale uses that exact rate, so the expectation stays exact.
    """

    def __init__(self, rate: float = 0.5):
        super().__init__()
        self.rate = rate
        self.threshold = round(rate * 65536)            # drop where a uniform 16-bit draw < threshold
        self.rng: np.random.Generator | None = None
        self.keep = None

    def forward(self, x, training):
        if not training or self.threshold == 0:
            self.keep = None
            return x
        draws = self.rng.bit_generator.random_raw(-(-x.size // 4)).view(np.uint16)[:x.size].reshape(x.shape)
        self.keep = draws >= self.threshold
        self.scale = x.dtype.type(65536 / (65536 - self.threshold))
        y = np.multiply(x, self.keep, out=self.scratch("y", x.shape, x.dtype))
        y *= self.scale
        return y

    def backward(self, dy):
        if self.keep is None:
            return dy
        dx = np.multiply(dy, self.keep, out=self.scratch("dx", dy.shape, dy.dtype))
        dx *= self.scale
        return dx


class BatchNorm(Layer):
    """Batch normalization over the batch axis of 1-D features (PyTorch's BatchNorm1d).

    Training: xhat = (x - mean) / sqrt(var + eps) with the batch's own statistics,
    y = gamma * xhat + beta, and running statistics updated as
    running = (1 - momentum) * running + momentum * batch (unbiased variance).
    Evaluation uses the running statistics, so a prediction does not depend on
    the other examples in its batch.

    Backward (training), per feature with N examples and dxhat = dy * gamma:
    dx = (N dxhat - sum(dxhat) - xhat sum(dxhat xhat)) / (N sqrt(var + eps)).
    """

    def __init__(self, momentum: float = 0.1, eps: float = 1e-5):
        super().__init__()
        self.momentum, self.eps = momentum, eps
        self.dim = 0

    def build(self, input_dim):
        self.dim = input_dim
        self.buffers = {"running_mean": np.zeros(input_dim), "running_var": np.ones(input_dim)}
        return input_dim

    def param_shapes(self):
        return {"gamma": (self.dim,), "beta": (self.dim,)}

    def initial_params(self, rng):
        return {"gamma": np.ones(self.dim), "beta": np.zeros(self.dim)}

    def forward(self, x, training):
        if training:
            mean, var = x.mean(axis=0), x.var(axis=0)
            self._update_running_stats(mean, var, len(x))
        else:
            mean, var = self.buffers["running_mean"], self.buffers["running_var"]
        self.inv_std = 1.0 / np.sqrt(var + self.eps)
        self.xhat = (x - mean) * self.inv_std
        return self.xhat * self.params["gamma"] + self.params["beta"]

    def _update_running_stats(self, mean, var, n):
        unbiased = var * (n / max(n - 1, 1))
        for name, batch_value in (("running_mean", mean), ("running_var", unbiased)):
            running = self.buffers[name]
            running *= 1 - self.momentum
            running += self.momentum * batch_value

    def backward(self, dy):
        xhat, n = self.xhat, len(dy)
        np.sum(dy * xhat, axis=0, out=self.grads["gamma"])
        np.sum(dy, axis=0, out=self.grads["beta"])
        dxhat = dy * self.params["gamma"]
        return (n * dxhat - dxhat.sum(axis=0) - xhat * (dxhat * xhat).sum(axis=0)) * (self.inv_std / n)


LAYERS = {
    "dense": Dense,
    "dropout": Dropout,
    "batchnorm": BatchNorm,
    "activation": ActivationLayer,
}
