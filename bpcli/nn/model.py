"""The model: a stack of layers built from a spec, with all parameters in one flat buffer.

A spec is the list that a config's `model.layers` carries, for example

    [{"type": "dense", "units": 128, "activation": "relu"},
     {"type": "dropout", "rate": 0.2},
     {"type": "dense", "units": 10}]

A dense entry's `activation` adds an activation layer after it, so the layers,
and the parameter names, are those of PyTorch's nn.Sequential(Linear, ReLU,
Dropout, Linear): `layers.0.weight`, `layers.0.bias`, `layers.3.weight`, ...
An activation can also stand alone: `{"type": "relu"}` or
`{"type": "leaky_relu", "slope": 0.1}`.

Every parameter is a view into `theta`, one flat array, and every gradient a
view into `dtheta`; the optimizer updates the whole model with a few
whole-buffer operations. The same spec and seed always give the same weights.
"""

from __future__ import annotations

import inspect

import numpy as np

from bpcli.nn.activations import ACTIVATIONS
from bpcli.errors import CheckpointError, ConfigError, did_you_mean
from bpcli.nn.initializers import INITIALIZERS
from bpcli.nn.layers import ActivationLayer, BatchNorm, Dense, Dropout, Layer

DTYPES = ("float32", "float64")


class Model:
    def __init__(self, layers: list[Layer], input_dim: int, *, seed: int = 0,
                 dtype: str = "float32", spec: list | None = None):
        self.layers, self.input_dim, self.spec = layers, input_dim, spec
        self.dtype = np.dtype(dtype)
        self.output_dim = self._build_shapes(input_dim)
        self.rng = np.random.default_rng([seed, 1])  # dropout masks
        for before, layer in zip([None, *self.layers], self.layers):
            if isinstance(layer, Dropout):
                layer.rng = self.rng
            if isinstance(layer, ActivationLayer):
                layer.inplace = isinstance(before, Dense)  # its input is then the dense layer's own buffer
        self._allocate_parameters(np.random.default_rng([seed, 0]))

    def _build_shapes(self, dim: int) -> int:
        for layer in self.layers:
            dim = layer.build(dim)
        return dim

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
            for name, value in layer.buffers.items():
                layer.buffers[name] = value.astype(self.dtype)

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
        """The logits; each layer's `output` is kept (a reference, valid until its next forward) for diagnostics."""
        for layer in self.layers:
            x = layer.output = layer.forward(x, training)
        return x

    def backward(self, dlogits: np.ndarray, input_grad: bool = False) -> np.ndarray | None:
        """Fill every gradient; return dLoss/dx only if asked.

        Without input_grad the pass stops at the first layer with parameters and
        skips its dx (for a first dense layer, a whole matrix multiply per batch).
        """
        dy = dlogits
        first = 0 if input_grad else self._first_layer_with_params()
        for layer in reversed(self.layers[first + (0 if input_grad else 1):]):
            dy = layer.backward(dy)
        if input_grad:
            return dy
        if first < len(self.layers):
            self.layers[first].backward_params(dy)
        return None

    def _first_layer_with_params(self) -> int:
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

LAYER_OPTIONS = {
    "dense": {"units", "activation", "init", "bias_init"},
    "dropout": {"rate"},
    "batchnorm": {"momentum", "eps"},
}
ACTIVATION_OPTIONS = {"leaky_relu": {"slope"}, "elu": {"alpha"}}


def build_model(spec: list[dict], input_dim: int, *, seed: int = 0, dtype: str = "float32",
                key: str = "model.layers") -> Model:
    """Build a model from a list of layer specs; errors name the key path, e.g. model.layers.2.units."""
    if dtype not in DTYPES:
        raise ConfigError(f"dtype must be one of {', '.join(DTYPES)} (got {dtype!r})", key="model.dtype")
    if not isinstance(spec, list) or not spec:
        raise ConfigError("must be a non-empty list of layers", key=key)
    layers: list[Layer] = []
    for i, item in enumerate(spec):
        layers += _build_layer(item, spec[i + 1:], f"{key}.{i}")
    return Model(layers, input_dim, seed=seed, dtype=dtype, spec=spec)


def _build_layer(item: dict, following: list, key: str) -> list[Layer]:
    if not isinstance(item, dict) or "type" not in item:
        raise ConfigError("each layer must be a mapping with a 'type'", key=key)
    item = {k: v for k, v in item.items() if v is not None}  # a resolved config spells unset options as null
    kind = item["type"]
    if kind in ACTIVATIONS:
        return [_activation_layer(item, key, name_key="type")]
    _check_choice(kind, LAYER_OPTIONS, f"{key}.type")
    options = {k: v for k, v in item.items() if k != "type"}
    _check_keys(options, LAYER_OPTIONS[kind], key)
    if kind == "dropout":
        return [Dropout(**_checked_rate(options, key))]
    if kind == "batchnorm":
        return [BatchNorm(**options)]
    return _dense_layers(options, following, key)


def _dense_layers(options: dict, following: list, key: str) -> list[Layer]:
    units = options.get("units")
    if not isinstance(units, int) or isinstance(units, bool) or units < 1:
        raise ConfigError(f"units must be a positive integer (got {units!r})", key=f"{key}.units")
    activation = options.get("activation")
    act_layer = _activation_layer(activation, f"{key}.activation") if activation is not None else None
    default_init = (act_layer.activation if act_layer else _next_activation(following)).default_init
    init, init_options = _init_choice(options.get("init", default_init), f"{key}.init")
    bias_init, bias_options = _init_choice(options.get("bias_init", "zeros"), f"{key}.bias_init")
    dense = Dense(units, init, init_options, bias_init, bias_options)
    return [dense, act_layer] if act_layer else [dense]


def _next_activation(following: list):
    """The activation this dense layer feeds, looking past dropout and batch norm (identity if none)."""
    for item in following:
        kind = item.get("type") if isinstance(item, dict) else None
        if kind in ACTIVATIONS:
            return ACTIVATIONS[kind]
        if kind == "dense":
            break
    return ACTIVATIONS["identity"]


def _activation_layer(value, key: str, name_key: str = "name") -> ActivationLayer:
    """An activation from "relu" or {"name": "leaky_relu", "slope": 0.1}."""
    name, options = (value, {}) if isinstance(value, str) else _split_named(value, key, name_key)
    _check_choice(name, ACTIVATIONS, key if isinstance(value, str) else f"{key}.{name_key}")
    _check_keys(options, ACTIVATION_OPTIONS.get(name, set()), key)
    return ActivationLayer(ACTIVATIONS[name](**options), name)


def _init_choice(value, key: str) -> tuple[str, dict]:
    """An initializer from "he_normal" or {"name": "normal", "std": 0.1}."""
    name, options = (value, {}) if isinstance(value, str) else _split_named(value, key, "name")
    _check_choice(name, INITIALIZERS, key if isinstance(value, str) else f"{key}.name")
    allowed = set(list(inspect.signature(INITIALIZERS[name]).parameters)[4:])  # after rng, shape, fans
    _check_keys(options, allowed, key)
    return name, options


def _split_named(value, key: str, name_key: str) -> tuple[str, dict]:
    if not isinstance(value, dict) or name_key not in value:
        raise ConfigError(f"expected a name or a mapping with '{name_key}' (got {value!r})", key=key)
    return value[name_key], {k: v for k, v in value.items() if k != name_key}


def _checked_rate(options: dict, key: str) -> dict:
    rate = options.get("rate", 0.5)
    if not isinstance(rate, (int, float)) or not 0 <= rate < 1:
        raise ConfigError(f"rate must be a number in [0, 1) (got {rate!r})", key=f"{key}.rate")
    return {"rate": float(rate)}


def _check_choice(name, allowed, key: str) -> None:
    if name not in allowed:
        raise ConfigError(f"unknown value {name!r}; allowed: {', '.join(sorted(allowed))}."
                          f"{did_you_mean(name, allowed)}", key=key)


def _check_keys(options: dict, allowed: set, key: str) -> None:
    for option in options:
        if option not in allowed:
            allowed_text = ", ".join(sorted(allowed)) or "none"
            raise ConfigError(f"unknown option; allowed: {allowed_text}.{did_you_mean(option, allowed)}",
                              key=f"{key}.{option}")
