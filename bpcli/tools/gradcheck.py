"""Gradient checking: analytic backprop against central finite differences.

For a scalar loss L(theta), the central difference
    dL/dtheta_i ~ (L(theta + eps e_i) - L(theta - eps e_i)) / (2 eps)
has an error of order eps^2, so in float64 with eps = 1e-6 it agrees with a
correct analytic gradient to about 1e-9. Each parameter tensor (and the input)
is scored with the relative error of the whole tensor,
    ||analytic - numeric|| / max(||analytic|| + ||numeric||, 0.01),
which, unlike an entry-wise ratio, is not thrown off by entries that are
legitimately near zero. The floor matters when a gradient is exactly zero
(mae's signs can balance): the central difference then returns rounding noise
of about 1e-10, which is no error at all.

Two things would cause false failures and are handled:
  * kinks (relu at 0, |x| in mae and l1): a difference whose two sides fall on
    different sides of a kink measures no derivative, so that entry is skipped
    and counted;
  * dropout: the mask is held fixed by restarting the model's dropout generator
    before every forward pass.

`check_all` runs every registry entry (each layer, activation, loss and
regularizer alone, and in small networks), so a component registered anywhere
is checked with no change here; `check_model` checks any model.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from bpcli.config.sections import Config
from bpcli.nn.activations import ACTIVATIONS
from bpcli.nn.layers import LAYERS
from bpcli.nn.losses import LOSSES, Loss
from bpcli.nn.model import Model, build_model
from bpcli.nn.regularizers import REGULARIZERS


@dataclass
class CheckResult:
    component: str
    parameter: str
    rel_error: float
    checked: int
    skipped: int
    passed: bool

    def as_dict(self) -> dict:
        return asdict(self)


NOISE_FLOOR = 0.01


def relative_error(analytic: np.ndarray, numeric: np.ndarray) -> float:
    scale = max(np.linalg.norm(analytic) + np.linalg.norm(numeric), NOISE_FLOOR)
    return float(np.linalg.norm(analytic - numeric) / scale)


class ProjectionLoss(Loss):
    """L = sum(y * r) for a fixed random r: checks a layer alone against the upstream gradient r."""

    def __init__(self, r: np.ndarray):
        self.r = r

    def __call__(self, logits, y):
        return float(np.sum(logits * self.r)), self.r.copy()


def _same_side(a, b) -> bool:
    return all(np.array_equal(p, q) for p, q in zip(a, b))


def numeric_gradient(loss_at, x: np.ndarray, eps: float, entries=None) -> tuple[np.ndarray, np.ndarray]:
    """Central differences of loss_at() over the entries of x (perturbed in place, then restored).

    loss_at() returns (value, kink_state). `entries` (index tuples) limits the
    check to a sample of a large tensor; default: every entry. Returns the
    gradient (zero where not checked) and a mask of the entries whose two
    evaluations fell on different sides of a kink.
    """
    grad = np.zeros_like(x)
    straddles = np.zeros(x.shape, dtype=bool)
    for i in (np.ndindex(x.shape) if entries is None else entries):
        original = x[i]
        x[i] = original + eps
        plus, plus_side = loss_at()
        x[i] = original - eps
        minus, minus_side = loss_at()
        x[i] = original
        grad[i] = (plus - minus) / (2 * eps)
        straddles[i] = not _same_side(plus_side, minus_side)
    return grad, straddles


def check_model(model: Model, loss: Loss, x: np.ndarray, y, regularizers=(), *,
                component: str = "model", eps: float = 1e-6, tol: float = 1e-6,
                seed: int = 0, max_entries: int | None = None) -> list[CheckResult]:
    """Check dL/dparam for every parameter of a float64 model, and dL/dx, in training mode.

    With max_entries, each tensor is checked on that many entries drawn from the seed.
    """

    def loss_at():
        model.reseed_dropout(seed)
        logits = model.forward(x, training=True)
        value, _ = loss(logits, y)
        value += sum(r.penalty(model.params) for r in regularizers)
        kinks = model.kink_state() + [loss.kink_state(logits, y)]
        kinks += [k for r in regularizers for k in (r.kink_state(model.params) or [])]
        return value, [k for k in kinks if k is not None]

    analytic = _analytic_gradients(model, loss, x, y, regularizers, seed)
    targets = dict(model.params, input=x)
    results = []
    pick = np.random.default_rng([seed, 4])
    for name, tensor in targets.items():
        entries = _sample_entries(tensor.shape, max_entries, pick)
        numeric, straddles = numeric_gradient(loss_at, tensor, eps, entries)
        keep = ~straddles & _mask(tensor.shape, entries)
        err = relative_error(analytic[name][keep], numeric[keep])
        results.append(CheckResult(component, name, err, int(keep.sum()), int(straddles.sum()),
                                   bool(np.isfinite(err) and err <= tol)))
    return results


def _sample_entries(shape, max_entries, rng):
    size = int(np.prod(shape))
    if max_entries is None or size <= max_entries:
        return None
    return [np.unravel_index(i, shape) for i in rng.choice(size, max_entries, replace=False)]


def _mask(shape, entries) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    if entries is None:
        mask[...] = True
    for i in entries or ():
        mask[i] = True
    return mask


def _analytic_gradients(model, loss, x, y, regularizers, seed) -> dict[str, np.ndarray]:
    model.reseed_dropout(seed)
    logits = model.forward(x, training=True)
    _, dlogits = loss(logits, y)
    dx = model.backward(dlogits, input_grad=True)
    for r in regularizers:
        r.add_grad(model.params, model.grads)
    grads = {name: g.copy() for name, g in model.grads.items()}
    grads["input"] = np.array(dx, copy=True)
    return grads


# -- every component, alone and in small networks ---------------------------

IN, HIDDEN, OUT = 4, 5, 3
CHECK_OPTIONS = {"leaky_relu": {"slope": 0.1}, "elu": {"alpha": 1.5}}  # non-default: exercise the kink
LOSS_OPTIONS = {"huber": {"delta": 0.5}, "cross_entropy": {"label_smoothing": 0.1}}


def _targets(loss: Loss, rng, n: int):
    if loss.kind == "multiclass":
        return rng.integers(0, OUT, size=n)
    if loss.kind == "binary":
        return rng.integers(0, 2, size=(n, OUT)).astype(np.float64)
    return rng.normal(size=(n, OUT))


def _projection(model: Model, rng, n: int) -> ProjectionLoss:
    return ProjectionLoss(rng.normal(size=(n, model.output_dim)))


def check_all(*, eps: float = 1e-6, tol: float = 1e-6, seed: int = 0, samples: int = 4) -> list[CheckResult]:
    """Every layer, activation, loss and regularizer, alone and combined, in float64."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(samples, IN)) * 1.5
    kw = dict(eps=eps, tol=tol, seed=seed)
    results = []

    def run(component, spec, loss=None, regularizers=(), inputs=x):
        model = build_model(spec, inputs.shape[1], seed=seed, dtype="float64")
        loss = loss or _projection(model, rng, len(inputs))
        y = _targets(loss, rng, len(inputs))
        results.extend(check_model(model, loss, inputs, y, regularizers, component=component, **kw))

    for name, cls in LAYERS.items():   # each with the options it asks to be checked with (dense: units 3)
        run(f"layer {name}", [{"type": name, **cls.check_options}])
    for name in ACTIVATIONS:
        run(f"activation {name}", [{"type": name, **CHECK_OPTIONS.get(name, {})}])
        hidden = {"type": "dense", "units": HIDDEN, "activation": {"name": name, **CHECK_OPTIONS.get(name, {})}}
        run(f"network {name} + cross_entropy", [hidden, {"type": "dense", "units": OUT}], LOSSES["cross_entropy"]())
    for name, loss_class in LOSSES.items():
        loss = loss_class(**LOSS_OPTIONS.get(name, {}))
        run(f"loss {name}", [{"type": "identity"}], loss, inputs=rng.normal(size=(samples, OUT)) * 2)
        run(f"network tanh + {name}", [{"type": "dense", "units": HIDDEN, "activation": "tanh"},
                                       {"type": "dense", "units": OUT}], loss)
    for name, reg_class in REGULARIZERS.items():
        dense = {"type": "dense", "units": OUT, "bias_init": {"name": "normal", "std": 0.5}}  # not at l1's kink
        run(f"regularizer {name}", [dense], regularizers=[reg_class(0.1, include_bias=True)])
    run("network full", FULL_NETWORK, LOSSES["cross_entropy"](label_smoothing=0.05),
        [REGULARIZERS["l1"](0.01), REGULARIZERS["l2"](0.02, include_bias=True)])
    return results


def check_config(config: Config | dict, *, eps: float = 1e-6, tol: float = 1e-6, seed: int = 0, samples: int = 4,
                 max_entries: int = 64, data_dir: str | None = None) -> list[CheckResult]:
    """A config's own network, loss and penalties, built as a run builds them but in float64, on a few of its
    training examples."""
    from bpcli.training.run import as_config, prepare_data
    from bpcli.training.step import build_parts

    config = as_config(config)
    config = config.model_copy(update={"model": config.model.model_copy(update={"dtype": "float64"})})
    data = prepare_data(config, data_dir)
    n = len(data.x_train)
    rows = np.random.default_rng([seed, 5]).choice(n, min(samples, n), replace=False)
    parts = build_parts(config, data.input_dim, config.data.steps_per_epoch(n))
    return check_model(parts.model, parts.loss, data.x_train[rows], data.y_train[rows], parts.regularizers,
                       component="config", eps=eps, tol=tol, seed=seed, max_entries=max_entries)


FULL_NETWORK = [
    {"type": "dense", "units": HIDDEN, "activation": "relu"},
    {"type": "batchnorm"},
    {"type": "dropout", "rate": 0.3},
    {"type": "dense", "units": HIDDEN, "activation": "tanh"},
    {"type": "dense", "units": OUT},
]
