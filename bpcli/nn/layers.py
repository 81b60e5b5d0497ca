"""Layers: the pieces a model stacks, each with a hand-written backward pass and its own equations.

The contract, and the base class with what every layer has in common, are in
layer.py. Each layer here states its forward and backward pass as code and as
text (`equations`, `backward_equations`, for `bpcli explain`), side by side.
LAYERS, at the end, is the registry of the types a config's model.layers may
name (besides the activations, which ActivationLayer wraps); batch norm, with
its running statistics, has a module of its own (batchnorm.py).

Speed: a dense layer writes its outputs into arrays it keeps per batch shape
(`scratch`), so the hot loop allocates nothing; an output is therefore only
valid until the layer's next forward pass with the same shape, and anything
that keeps it longer must copy it.
"""

from __future__ import annotations

import inspect
import re

import numpy as np

from bpcli.nn import initializers
from bpcli.nn.activations import ACTIVATIONS, Activation
from bpcli.nn.batchnorm import BatchNorm
from bpcli.nn.layer import Layer, Terms, constructor_options, named, substitute  # noqa: F401 (Terms: re-exported)


def _choice(value) -> tuple[str | None, dict]:
    """A name and its options from how a config spells a choice: "he_normal", {"name": "normal", "std": 0.1} or null."""
    if isinstance(value, dict):
        return value["name"], {k: v for k, v in value.items() if k != "name"}
    return value, {}


def _init_text(name: str, options: dict) -> str:
    """An initializer with the options that differ from its defaults (a resolved config spells out every one)."""
    defaults = {k: p.default for k, p in inspect.signature(initializers.INITIALIZERS[name]).parameters.items()}
    return named(name, {k: v for k, v in options.items() if defaults.get(k) != v})


class Dense(Layer):
    """A fully connected layer, z = x @ weight + bias, optionally followed by an activation.

    weight is shaped (fan_in, fan_out). Backward: dweight = x.T @ dz,
    dbias = sum of dz over the batch, dx = dz @ weight.T. An init of None is
    the default for the activation the layer feeds; build_model resolves it.
    """

    symbol, param_symbols = "z", {"weight": "W", "bias": "b"}
    init_from_activation = writable_output = True
    option_specs = {
        "units": (int, {"ge": 1}, "Number of outputs (required)."),
        "activation": ("activation", {}, "Activation added after the layer; null: none."),
        "init": ("initializer", {}, "Weight initializer; null: he_normal before a ReLU-family activation, else "
                                    "glorot_uniform."),
        "bias_init": ("initializer", {}, "Bias initializer."),
    }
    check_options = {"units": 3}

    def __init__(self, units: int, init: str | None = "glorot_uniform", init_options=None,
                 bias_init: str = "zeros", bias_init_options=None):
        super().__init__()
        self.units = units
        self.init, self.init_options = init, dict(init_options or {})
        self.bias_init, self.bias_init_options = bias_init, dict(bias_init_options or {})
        self.fan_in = 0

    @classmethod
    def from_config(cls, units: int, activation=None, init=None, bias_init="zeros") -> list[Layer]:
        """The dense layer, then its activation as a layer of its own (as PyTorch's Sequential(Linear, ReLU))."""
        dense = cls(units, *_choice(init), *_choice(bias_init))
        return [dense] if activation is None else [dense, ActivationLayer.from_choice(activation)]

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

    def equations(self, t):
        i, x, y = t.i, t.x, t.y
        return [(f"{y} = {x} @ W{i} + b{i}",
                 f"{x} {t.shape(t.n_in)} @ W{i} ({t.n_in}, {t.n_out}) + b{i} ({t.n_out},) -> {t.shape(t.n_out)}")]

    def backward_equations(self, t):
        i, x, y, penalty = t.i, t.x, t.y, t.penalties
        lines = [(f"dW{i} = {x}.T @ d{y}{penalty.get('weight', '')}",
                  f"{x}.T ({t.n_in}, {t.batch}) @ d{y} {t.shape(t.n_out)} -> ({t.n_in}, {t.n_out})"),
                 (f"db{i} = batch sum of d{y}{penalty.get('bias', '')}", f"({t.n_out},)")]
        if t.input_grad:
            lines.append((f"d{x} = d{y} @ W{i}.T",
                          f"d{y} {t.shape(t.n_out)} @ W{i}.T ({t.n_out}, {t.n_in}) -> {t.shape(t.n_in)}"))
        return lines

    def summary_row(self):
        """No options beside the type: the units are the output width, and the initializers have their column."""
        return {"type": "Dense", "options": {},
                "init": {"weight": _init_text(self.init, self.init_options),
                         "bias": _init_text(self.bias_init, self.bias_init_options)}}


class ActivationLayer(Layer):
    """Applies an activation element-wise; keeps z and a for the backward pass.

    Right after a layer with a writable output (`inplace`, set by the model),
    z is that layer's private output buffer, so an activation whose backward
    needs only its output (ReLU: a > 0 exactly where z > 0) may overwrite z
    with a: one array and one pass fewer per batch. Anywhere else z may be the
    caller's array. Built from ACTIVATIONS, not LAYERS: a config names an
    activation as a dense layer's `activation`, or as a layer type of its own.
    """

    symbol = "a"

    def __init__(self, activation: Activation, name: str):
        super().__init__()
        self.activation, self.activation_name = activation, name
        self.inplace = False

    @classmethod
    def from_choice(cls, value) -> ActivationLayer:
        """From "relu" or {"name": "leaky_relu", "slope": 0.1}."""
        name, options = _choice(value)
        return cls(ACTIVATIONS[name](**options), name)

    def forward(self, z, training):
        self.z = z
        self.a = self.activation.forward_inplace(z) if self.inplace else self.activation.forward(z)
        return self.a

    def active_units(self, a):
        """Run in place, a ReLU kept its mask z > 0 (= a > 0): reducing those bytes costs a third of reducing a."""
        mask = self.activation.mask if self.inplace else None
        return mask.any(axis=0) if mask is not None else super().active_units(a)

    def backward(self, da):
        if self.inplace:  # da is then the gradient buffer of the layer above (or the loss's), never the caller's
            return self.activation.backward_inplace(self.z, self.a, da)
        return self.activation.backward(self.z, self.a, da)

    def equations(self, t):
        return [(substitute(self.activation.equation, {"z": t.x, "a": t.y}),
                 f"{t.y} {t.shape(t.n_out)}{self.option_text()}")]

    def backward_equations(self, t):
        names = {"z": t.x, "a": t.y, "dz": f"d{t.x}", "da": f"d{t.y}"}
        return [(substitute(self.activation.derivative, names), f"d{t.x} {t.shape(t.n_out)}{self.option_text()}")]

    def option_text(self) -> str:
        """', slope = 0.01' for the options its formulas name."""
        text = self.activation.equation + self.activation.derivative
        values = {k: v for k, v in vars(self.activation).items() if re.search(rf"\b{k}\b", text)}
        return "".join(f", {k} = {v:g}" for k, v in values.items())

    def options(self):
        return constructor_options(self.activation)

    def summary_row(self):
        return {"type": type(self.activation).__name__, "options": self.options(), "init": None}


class Dropout(Layer):
    """Inverted dropout: keep each unit with probability 1 - rate and scale it by 1 / (1 - rate).

    Scaling at training time keeps the expected activation unchanged, so evaluation
    is the identity. The mask comes from the model's generator (`rng`, bound by the
    model), so a run is reproducible from its seed and gradcheck can hold it fixed.
    Speed: the mask is drawn as 16-bit integers, four from each raw 64-bit draw
    (a quarter of the cost of float draws); the rate is thus rounded to a multiple
    of 1/65536, and the scale uses that exact rate, so the expectation stays exact.
    """

    option_specs = {"rate": (float, {"ge": 0, "lt": 1}, "Fraction of units zeroed in training (inverted dropout).")}
    check_options = {"rate": 0.5}
    training_noise = True

    def __init__(self, rate: float = 0.5):
        super().__init__()
        self.rate = rate
        self.threshold = round(rate * 65536)            # drop where a uniform 16-bit draw < threshold
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

    def equations(self, t):
        return [(f"{t.y} = {t.x} * m{t.i} / (1 - rate)",
                 f"m{t.i} {t.shape(t.n_out)} ~ Bernoulli(1 - rate), rate = {self.rate:g}"),
                (f"(evaluation: {t.y} = {t.x})", "")]

    def backward_equations(self, t):
        return [(f"d{t.x} = d{t.y} * m{t.i} / (1 - rate)", f"d{t.x} {t.shape(t.n_out)}, the forward pass's mask")]

    def forward_notes(self, t):
        drawn = self.threshold / 65536
        if not self.threshold or drawn == self.rate:
            return []
        return [f"layers.{t.i}: rate {self.rate:g} is drawn as {self.threshold}/65536 = {drawn:.8g} (16-bit mask "
                "draws), in the mask and the scale alike."]


LAYERS = {
    "dense": Dense,
    "dropout": Dropout,
    "batchnorm": BatchNorm,
}
