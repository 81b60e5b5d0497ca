"""Batch normalization, the one built-in layer that keeps state besides its parameters.

Its running mean and variance are `buffers` (layer.py): saved in checkpoints
and used in evaluation, but not trained. Registered in layers.LAYERS as
"batchnorm"; the layer contract is layer.py's.
"""

from __future__ import annotations

import numpy as np

from bpcli.nn.layer import Layer


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

    option_specs = {
        "momentum": (float, {"ge": 0, "le": 1}, "Weight of each batch in the running mean and variance."),
        "eps": (float, {"gt": 0}, "Added to the variance for numerical stability."),
    }

    def __init__(self, momentum: float = 0.1, eps: float = 1e-5):
        super().__init__()
        self.momentum, self.eps = momentum, eps
        self.dim = 0

    def build(self, input_dim):
        self.dim = input_dim
        return input_dim

    def param_shapes(self):
        return {"gamma": (self.dim,), "beta": (self.dim,)}

    def initial_params(self, rng):
        return {"gamma": np.ones(self.dim), "beta": np.zeros(self.dim)}

    def initial_buffers(self):
        return {"running_mean": np.zeros(self.dim), "running_var": np.ones(self.dim)}

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

    def equations(self, t):
        i, x, y, n, shape = t.i, t.x, t.y, t.n_out, t.shape(t.n_out)
        return [(f"mu{i} = batch mean of {x}", f"({n},)"),
                (f"var{i} = batch mean of ({x} - mu{i})^2", f"({n},)"),
                (f"xhat{i} = ({x} - mu{i}) / sqrt(var{i} + eps)", f"{shape}; eps = {self.eps:g}"),
                (f"{y} = gamma{i} * xhat{i} + beta{i}", f"gamma{i}, beta{i} ({n},) -> {shape}"),
                (f"running_mean{i} = (1 - momentum) * running_mean{i} + momentum * mu{i}",
                 f"momentum = {self.momentum:g}"),
                (f"running_var{i} = (1 - momentum) * running_var{i} + momentum * var{i} * B / (B - 1)", ""),
                (f"(evaluation: running_mean{i}, running_var{i} in place of mu{i}, var{i})", "")]

    def backward_equations(self, t):
        i, x, y, n, shape = t.i, t.x, t.y, t.n_out, t.shape(t.n_out)
        lines = [(f"dgamma{i} = batch sum of d{y} * xhat{i}", f"({n},)"), (f"dbeta{i} = batch sum of d{y}", f"({n},)")]
        if t.input_grad:
            lines += [(f"dxhat{i} = d{y} * gamma{i}", shape),
                      (f"d{x} = (B * dxhat{i} - sum(dxhat{i}) - xhat{i} * sum(dxhat{i} * xhat{i})) "
                       f"/ (B * sqrt(var{i} + eps))", f"batch sums; d{x} {shape}")]
        return lines
