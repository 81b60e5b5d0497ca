"""The model: a stack of layers built from a spec, with all parameters in one flat buffer.

A spec is the list that a config's `model.layers` carries, for example

    [{"type": "dense", "units": 128, "activation": "relu"},
     {"type": "dropout", "rate": 0.2},
     {"type": "dense", "units": 10}]

A dense entry's `activation` adds an activation layer after it, so the layers,
and the parameter names, are those of PyTorch's nn.Sequential(Linear, ReLU,
Dropout, Linear): `layers.0.weight`, `layers.0.bias`, `layers.3.weight`, ...
An activation can also stand alone: `{"type": "relu"}` or
`{"type": "leaky_relu", "slope": 0.1}`. Every type comes from a registry
(layers.LAYERS, activations.ACTIVATIONS), and the config schema has validated
each spec against them before build_model sees it: nothing is checked twice.

Every parameter is a view into `theta`, one flat array, and every gradient a
view into `dtheta`; the optimizer updates the whole model with a few
whole-buffer operations. The same spec and seed always give the same weights.
"""

from __future__ import annotations

import math

import numpy as np

from bpcli.errors import CheckpointError, ConfigError, did_you_mean
from bpcli.nn.activations import ACTIVATIONS
from bpcli.nn.layers import LAYERS, ActivationLayer, Layer

DTYPES = ("float32", "float64")


class Model:
    def __init__(self, layers: list[Layer], input_dim: int, *, seed: int = 0, dtype: str = "float32"):
        self.layers, self.input_dim = layers, input_dim
        self.dtype = np.dtype(dtype)
        self.widths = build_shapes(layers, input_dim)   # each layer's output width
        self.output_dim = self.widths[-1] if layers else input_dim
        self._outputs: list[np.ndarray | None] = [None] * len(layers)
        self.rng = np.random.default_rng([seed, 1])  # dropout masks
        for before, layer in zip([None, *self.layers], self.layers):
            layer.rng = self.rng
            if isinstance(layer, ActivationLayer):
                layer.inplace = before is not None and before.writable_output  # its input is then that layer's buffer
        self._allocate_parameters(np.random.default_rng([seed, 0]))

    def _allocate_parameters(self, init_rng: np.random.Generator) -> None:
        """Bind each layer's params and grads to views into the flat theta and dtheta."""
        shapes = {f"layers.{i}.{name}": shape
                  for i, layer in enumerate(self.layers) for name, shape in layer.param_shapes().items()}
        size = sum(int(np.prod(s)) for s in shapes.values())
        self.theta = np.zeros(size, dtype=self.dtype)
        self.dtheta = np.zeros(size, dtype=self.dtype)
        self.params, self.grads, offset = {}, {}, 0
        for i, layer in enumerate(self.layers):
            initial = layer.initial_params(init_rng)
            for name, shape in layer.param_shapes().items():
                n = int(np.prod(shape))
                layer.params[name] = self.theta[offset:offset + n].reshape(shape)
                layer.grads[name] = self.dtheta[offset:offset + n].reshape(shape)
                layer.params[name][...] = initial[name]
                self.params[f"layers.{i}.{name}"] = layer.params[name]
                self.grads[f"layers.{i}.{name}"] = layer.grads[name]
                offset += n
            layer.buffers = {name: value.astype(self.dtype) for name, value in layer.initial_buffers().items()}

    @property
    def buffers(self) -> dict[str, np.ndarray]:
        """Saved but untrained state (batch-norm running statistics), by parameter-style name."""
        return {f"layers.{i}.{name}": b for i, layer in enumerate(self.layers) for name, b in layer.buffers.items()}

    def state_dict(self) -> dict[str, np.ndarray]:
        """A copy of every parameter and buffer, by name (`layers.0.weight`, `layers.1.running_mean`, ...)."""
        return {name: a.copy() for name, a in {**self.params, **self.buffers}.items()}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        """Copy parameters and buffers in by name; a missing name or a wrong shape is a CheckpointError.

        All names are checked before any value is copied, so a refused state leaves the model as it was.
        """
        targets = {**self.params, **self.buffers}
        for name, target in targets.items():
            stored = state.get(name)
            if stored is None:
                raise CheckpointError(f"tensor {name} is missing; the model needs it with shape {target.shape}")
            if stored.shape != target.shape or stored.dtype.kind not in "fiu":
                raise CheckpointError(f"tensor {name} has shape {stored.shape} ({stored.dtype}), but the model "
                                      f"needs shape {target.shape}")
        for name, target in targets.items():
            target[...] = state[name]

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        """The logits; each layer's output is kept (a reference, valid until its next forward) for diagnostics."""
        for i, layer in enumerate(self.layers):
            x = self._outputs[i] = layer.forward(x, training)
        return x

    def layer_output(self, i: int) -> np.ndarray | None:
        """Layer i's output from the last forward pass (the layer's own buffer: copy it to keep it)."""
        return self._outputs[i]

    def active_units(self, i: int) -> np.ndarray:
        """Which of layer i's units were positive for some example of the last forward pass, (width,) bools."""
        return self.layers[i].active_units(self._outputs[i])

    def backward(self, dlogits: np.ndarray, input_grad: bool = False) -> np.ndarray | None:
        """Fill every gradient; return dLoss/dx only if asked.

        Without input_grad the pass stops at the first layer with parameters and
        skips its dx (for a first dense layer, a whole matrix multiply per batch).
        """
        dy = dlogits
        first = 0 if input_grad else self.first_with_params
        for layer in reversed(self.layers[first + (0 if input_grad else 1):]):
            dy = layer.backward(dy)
        if input_grad:
            return dy
        if first < len(self.layers):
            self.layers[first].backward_params(dy)
        return None

    @property
    def first_with_params(self) -> int:
        """The first layer with parameters (len(layers) if none): backward stops there, without its dx."""
        return next((i for i, layer in enumerate(self.layers) if layer.params), len(self.layers))

    def reseed_dropout(self, seed: int) -> None:
        """Restart the dropout generator in place (gradcheck uses it to hold masks fixed)."""
        self.rng.bit_generator.state = np.random.default_rng([seed, 1]).bit_generator.state

    def kink_state(self) -> list[np.ndarray]:
        """Which side of a kink each activation input is on, after the last forward pass."""
        return [layer.z > k for layer in self.layers
                if isinstance(layer, ActivationLayer) for k in layer.activation.kinks]

    @property
    def n_params(self) -> int:
        return self.theta.size


# -- building from a spec ----------------------------------------------------

def build_model(layer_specs: list[dict], input_dim: int, *, seed: int = 0, dtype: str = "float32") -> Model:
    """The model a list of layer specs describes, as resolved_dict(config)["model"]["layers"] gives it.

    The specs come validated by the config schema, so nothing is checked twice
    here; an option spelled null takes its default. A dense layer's null init
    becomes the default for the activation it feeds (default_init).
    """
    layers = [layer for i, spec in enumerate(layer_specs) for layer in layers_of(spec, f"model.layers.{i}")]
    for i, layer in enumerate(layers):
        if layer.init_from_activation and layer.init is None:
            layer.init = _initializer_for(next_activation(layers, i))
    return Model(layers, input_dim, seed=seed, dtype=dtype)


def build_shapes(layers: list[Layer], input_dim: int) -> list[int]:
    """Build each layer for the width below it; each layer's output width, in order."""
    widths, dim = [], input_dim
    for layer in layers:
        dim = layer.build(dim)
        widths.append(dim)
    return widths


def count_params(layer_specs: list[dict], input_dim: int) -> int:
    """How many parameters build_model would allocate, counted without allocating any (build() allocates nothing)."""
    layers = [layer for spec in layer_specs for layer in layers_of(spec)]
    build_shapes(layers, input_dim)
    return sum(math.prod(shape) for layer in layers for shape in layer.param_shapes().values())


def layers_of(spec: dict, key: str = "model.layers") -> list[Layer]:
    """The layers one spec builds: a registered layer (LAYERS; dense also adds its activation) or an activation."""
    kind = spec["type"]
    options = {k: v for k, v in spec.items() if k != "type" and v is not None}  # null: the default
    if kind in LAYERS:
        return LAYERS[kind].from_config(**options)
    if kind in ACTIVATIONS:
        return [ActivationLayer.from_choice({"name": kind, **options})]
    allowed = {*LAYERS, *ACTIVATIONS}
    raise ConfigError(f"unknown value {kind!r}; allowed: {', '.join(sorted(allowed))}.{did_you_mean(kind, allowed)}",
                      key=f"{key}.type")


def next_activation(layers: list[Layer], i: int) -> ActivationLayer | None:
    """The activation layer i's output goes through next, or None.

    It looks past dropout, batch norm and any other layer, up to the next one
    whose initializer follows its own activation (a dense layer): the rule
    behind a dense layer's default init, and inspect's "activation" column.
    """
    for layer in layers[i + 1:]:
        if isinstance(layer, ActivationLayer):
            return layer
        if layer.init_from_activation:
            return None
    return None


def default_init(layer_specs: list[dict], i: int) -> str | None:
    """What a null init means for layer_specs[i]: he_normal before a ReLU-family activation, else glorot_uniform.

    The activation is the layer's own, or the next one (next_activation); None
    for a layer without such an init (anything but dense). resolved_dict uses
    this to pin the initializer in a saved config.
    """
    layers = [layer for spec in layer_specs[i:] for layer in layers_of(spec)]
    return _initializer_for(next_activation(layers, 0)) if layers[0].init_from_activation else None


def _initializer_for(activation: ActivationLayer | None) -> str:
    """The initializer that keeps the signal's variance through this activation (identity if none)."""
    return (activation.activation if activation else ACTIVATIONS["identity"]()).default_init
