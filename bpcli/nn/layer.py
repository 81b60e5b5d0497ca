"""The layer contract and the base class every layer extends (the layers themselves are in layers.py).

Contract (rows are examples: x is (batch, features)):

    build(input_dim) -> output_dim      fixes the shapes once the input size is known (allocates nothing)
    param_shapes() -> {name: shape}     what the model must allocate for this layer
    initial_params(rng) -> {name: a}    float64 starting values drawn from `rng`
    initial_buffers() -> {name: a}      float64 starting values of its untrained state
    forward(x, training) -> y           keeps what backward needs
    backward(dy) -> dx                  fills grads[name] for each params[name]
    backward_params(dy)                 the same without dx, for the first layer that has parameters

`params` and `grads` are bound by the model to views into two flat buffers, so
a layer writes its gradients in place (`out=`) and the optimizer can update all
parameters with a few whole-buffer operations. `buffers` holds state that is
saved but not trained (batch norm's running statistics). `dname` always means
dLoss/dname. Why build() allocates nothing: a model's size can then be counted
from a config before any memory is spent on it (model.count_params).

A layer also describes itself, so that adding one touches its own module and
tests only: the config schema, `bpcli explain`, `bpcli inspect` and gradcheck
read it through the registry layers.LAYERS.

    from_config(**options) -> [layers]  what one entry of model.layers builds; the
                                        options are the parameters of its
                                        option_source() (the constructor, or
                                        from_config's own: see Dense), and
                                        option_specs gives their (type, range,
                                        description) for the schema
    equations(terms), backward_equations(terms) -> [(math, shapes)]   for explain
    summary_row() -> {type, options, init}                            for inspect
    check_options                       the options gradcheck builds it with
    activation_name                     the activation it applies (ActivationLayer), else None
    training_noise                      True if training only drops random units (dropout)
    active_units(y) -> (width,) bools   the units its output y shows positive for some example
                                        (these three are what the layer diagnostics read)

A layer keeps each constructor option as an attribute of the same name, so what
it was built with can be read back (inspect shows it). Options arrive validated
by the schema: a layer checks nothing twice.
"""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Terms:
    """How `bpcli explain` names layer i's terms: it maps x, shaped (B, n_in), to y, shaped (B, n_out).

    x and y are names such as "a1" and "z2"; `penalties` maps a parameter name to
    what the weight penalties add to its gradient (" + l2 * W2"); `input_grad`
    is False for the lowest layer model.backward runs, whose dx is never computed.
    """

    i: int
    x: str
    y: str
    batch: int
    n_in: int
    n_out: int
    input_grad: bool = True
    penalties: dict[str, str] = field(default_factory=dict)

    def shape(self, n: int) -> str:
        return f"({self.batch}, {n})"


def substitute(text: str, names: dict[str, str]) -> str:
    """Rename whole words: substitute("dz = da * (z > 0)", {"z": "z1", "a": "a2", ...})."""
    return re.sub(r"\b\w+\b", lambda m: names.get(m.group(0), m.group(0)), text)


def named(name: str, options: dict) -> str:
    """normal(std=0.1), or the bare name without options."""
    return f"{name}({', '.join(f'{k}={v}' for k, v in options.items())})" if options else name


def constructor_options(obj) -> dict:
    """The keyword parameters of obj's constructor, read back from its attributes of the same names."""
    params = inspect.signature(type(obj)).parameters.values()
    return {p.name: getattr(obj, p.name) for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


class Layer:
    symbol = "h"                       # explain names layer i's output <symbol><i>: z3, a4, h5
    param_symbols: dict[str, str] = {}  # and its parameters so: {"weight": "W"} gives W3; default: the name
    init_from_activation = False       # its weight initializer defaults by the activation it feeds (dense)
    writable_output = False            # its output is its own buffer, which the layer above may overwrite
    activation_name: str | None = None  # the activation it applies, if that is what it does (ActivationLayer)
    training_noise = False             # training only drops random units (dropout): diagnostics look below it
    option_specs: dict[str, tuple] = {}  # option -> (type, range, description) for the schema
    check_options: dict = {}           # the options gradcheck builds it with

    def __init__(self):
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}
        self.buffers: dict[str, np.ndarray] = {}
        self.rng: np.random.Generator | None = None   # the model's generator (dropout draws its masks from it)

    @classmethod
    def from_config(cls, **options) -> list[Layer]:
        """The layers one entry of model.layers builds: this layer alone, by default."""
        return [cls(**options)]

    @classmethod
    def option_source(cls):
        """Whose parameters a config's options are: from_config's where a class defines it, else the constructor's."""
        return cls.from_config if cls.from_config.__func__ is not Layer.from_config.__func__ else cls

    def build(self, input_dim: int) -> int:
        return input_dim

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        return {}

    def initial_params(self, rng: np.random.Generator) -> dict[str, np.ndarray]:
        return {}

    def initial_buffers(self) -> dict[str, np.ndarray]:
        return {}

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        raise NotImplementedError

    def backward(self, dy: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def backward_params(self, dy: np.ndarray) -> None:
        """Fill the gradients only: below the first layer with parameters, dx is never used."""
        self.backward(dy)

    def active_units(self, y: np.ndarray) -> np.ndarray:
        """Which units its output y (from the last forward pass) shows positive for some example."""
        return y.max(axis=0) > 0

    def scratch(self, name: str, shape: tuple[int, ...], dtype) -> np.ndarray:
        """An array reused for every batch of this shape (training and evaluation batches differ)."""
        cache = self.__dict__.setdefault("_scratch", {})
        key = (name, shape)
        if key not in cache:
            cache[key] = np.empty(shape, dtype=dtype)
        return cache[key]

    # -- describing itself ----------------------------------------------------------------------

    def equations(self, t: Terms) -> list[tuple[str, str]]:
        """The forward pass as (math, shapes) lines, in the names of `t`."""
        raise NotImplementedError(f"{type(self).__name__} states no forward equations")

    def backward_equations(self, t: Terms) -> list[tuple[str, str]]:
        """The backward pass as (math, shapes) lines: parameter gradients, then dx only if t.input_grad."""
        raise NotImplementedError(f"{type(self).__name__} states no backward equations")

    def forward_notes(self, t: Terms) -> list[str]:
        """Remarks below the forward equations (none by default)."""
        return []

    def param_symbol(self, name: str) -> str:
        return self.param_symbols.get(name, name)

    def options(self) -> dict:
        """The options it was built with (its constructor's)."""
        return constructor_options(self)

    def summary_row(self) -> dict:
        """Its row in `bpcli inspect`: a PyTorch-like type name, its options, its initializers (if it has any)."""
        return {"type": type(self).__name__, "options": self.options(), "init": None}
