"""Layer diagnostics: how the gradient flows through each layer, measured while training.

For each layer with parameters, at the end of each epoch (`layers.csv`, `layers.jsonl`):

    weight_norm         ||theta_l||, the layer's weight and bias together, at the end of the epoch
    grad_norm           ||dLoss/dtheta_l|| (penalties included, before clipping)
    update_ratio        ||theta_l after a step - theta_l before|| / ||theta_l before||
    act_mean, act_std   of the layer's output after its activation (before dropout)
    dead_fraction       ReLU family: the fraction of units no example of the epoch made positive
    saturated_fraction  sigmoid, tanh: the fraction of outputs within 1% of an asymptote

Why sampled: each figure costs a pass over the layer's parameters or outputs,
so they are taken on `samples` evenly spread batches of each epoch and
averaged (8 of the 422 batches of a Fashion-MNIST epoch). Dead units need
every batch, since a unit is dead only if no example activates it: that costs
one reduction over the batch axis per batch (of the ReLU's own mask when it
has one). README.md ("Layer diagnostics") gives the measured cost.

The warnings (advice.py) turn these figures into plain advice, each kind at
most once per run. Nothing here changes training: no random draws, no
writes to the model, so a run gives the same weights with diagnostics on or off.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from bpcli.optim.clipping import global_norm
from bpcli.training.advice import warnings_for
from bpcli.training.callbacks import Callback
from bpcli.training.rundir import RunDir

COLUMNS = ["epoch", "layer", "type", "activation", "units", "weight_norm", "grad_norm", "update_ratio",
           "act_mean", "act_std", "dead_fraction", "saturated_fraction"]
# Activations whose units can die: the output is positive exactly where z > 0.
CAN_DIE = ("relu", "leaky_relu", "elu")
# Activations that saturate, and the outputs counted as saturated (within 1% of the asymptotes' span).
SATURATION = {"sigmoid": (0.01, 0.99), "tanh": (-0.98, 0.98)}
# The rest: never exactly flat over a whole unit (gelu, softplus), or an output layer's (identity, softmax).
NEVER_DEAD_OR_SATURATED = ("identity", "gelu", "softplus", "softmax")


@dataclass
class Tap:
    """One layer with parameters: where its parameters sit in theta, and whose output tells its activations."""

    name: str
    type: str
    activation: str | None
    units: int
    start: int
    stop: int
    output: int  # index of the layer whose output is measured (its activation, if it has one)


def taps_of(model) -> list[Tap]:
    """A tap per layer with parameters; its output is the last layer before the next one's, dropout aside."""
    taps, offset, layers = [], 0, model.layers
    with_params = [i for i, layer in enumerate(layers) if layer.params]
    for i, end in zip(with_params, [*with_params[1:], len(layers)]):
        size = sum(p.size for p in layers[i].params.values())
        output = max(j for j in range(i, end) if not layers[j].training_noise)
        activations = [layers[j].activation_name for j in range(i + 1, end) if layers[j].activation_name]
        taps.append(Tap(f"layers.{i}", type(layers[i]).__name__.lower(), activations[-1] if activations else None,
                        model.widths[i], offset, offset + size, output))
        offset += size
    return taps


def spread(batches: int, samples: int) -> frozenset[int]:
    """`samples` batches of an epoch of `batches`, evenly spread: the middle one of each of `samples` equal
    stretches (all of them if there are no more). Exactly `samples`: a small epoch (15 batches, 8 samples) is
    not measured whole, as it was when every stride-th batch was taken and the stride rounded down to 1."""
    if samples >= batches:
        return frozenset(range(batches))
    return frozenset((2 * j + 1) * batches // (2 * samples) for j in range(samples))


def fresh_sums(taps: list[Tap]) -> dict:
    """Running sums over the sampled batches of an epoch (kept in checkpoints for a mid-epoch resume)."""
    zeros = [0.0] * len(taps)
    return {"samples": 0, "grad_norm": list(zeros), "update_ratio": list(zeros), "act_mean": list(zeros),
            "act_std": list(zeros), "saturated_fraction": list(zeros)}


class LayerDiagnostics(Callback):
    """Measures each layer while training (batch hooks) and logs a row per layer as each epoch ends.

    `on_rows`, if given, is handed each epoch's rows as they are logged (TensorBoard writes them too).
    """

    def __init__(self, run: RunDir, options: dict, on_warning=None, on_rows=None):
        self.run, self.log = run, None
        self.options, self.on_warning, self.on_rows = options, on_warning, on_rows
        self.warnings: list[dict] = []
        self.taps: list[Tap] = []
        self.sums: dict = {}
        self.alive: list[np.ndarray | None] = []  # per tap that can die: units active in some batch so far
        self.measured, self.sampled = frozenset(), False

    def on_train_begin(self, loop):
        model = loop.model
        self.model, self.taps, self.base_lr = model, taps_of(model), loop.base_lr
        self.before = np.empty_like(model.theta)
        self.measured = spread(loop.batches_per_epoch, self.options["samples"])
        if self.sums:  # a resumed run: the unfinished epoch's sums and active units came with its checkpoint
            self.alive = [None if a is None else np.asarray(a, dtype=bool) for a in self.saved_alive]
            self._bind_mortal()
        else:
            self.start_epoch()
        self.log = self.run.row_log(self.run.layers_csv, self.run.layers_jsonl, COLUMNS, key=("epoch", "layer"))
        self.log.start(loop.epoch)

    # -- around each batch ----------------------------------------------------------------------------

    def on_batch_begin(self, loop):
        self.sampled = self.samples_batch(loop.batch)
        if self.sampled:
            self.before_step()

    def on_gradients(self, loop, dtheta):
        if self.sampled:
            self.record_gradients(dtheta)

    def on_batch_end(self, loop):
        self.after_batch(self.sampled)
        self.log.write_if_due()

    def start_epoch(self) -> None:
        self.sums = fresh_sums(self.taps)
        self.alive = [np.zeros(t.units, dtype=bool) if t.activation in CAN_DIE else None for t in self.taps]
        self._bind_mortal()

    def _bind_mortal(self) -> None:
        """(alive, output layer) per tap whose units can die: the per-batch loop does nothing else.

        model.active_units reduces an in-place ReLU's own mask z > 0 (a third of
        the bytes of its outputs); otherwise a > 0 exactly where z > 0 for every
        activation in CAN_DIE.
        """
        self.mortal = [(alive, t.output) for alive, t in zip(self.alive, self.taps) if alive is not None]

    def samples_batch(self, batch: int) -> bool:
        """Whether this batch of the epoch is one of the measured ones (evenly spread, the same on resume)."""
        return batch in self.measured

    def before_step(self) -> None:
        """Keep the weights and their norms as they are before the step (for the update ratio)."""
        np.copyto(self.before, self.model.theta)
        self.norms_before = [global_norm(self.before[t.start:t.stop]) for t in self.taps]

    def record_gradients(self, dtheta: np.ndarray) -> None:
        """Called between backward and the optimizer step: the gradients as backprop made them."""
        for k, tap in enumerate(self.taps):
            self.sums["grad_norm"][k] += global_norm(dtheta[tap.start:tap.stop])

    def after_batch(self, sampled: bool) -> None:
        """Every batch: which units were active. Sampled batches: update ratios and activation statistics."""
        for alive, output in self.mortal:
            alive |= self.model.active_units(output)
        if sampled:
            self._record_update()
            self._record_activations()
            self.sums["samples"] += 1

    def _record_update(self) -> None:
        delta = np.subtract(self.model.theta, self.before, out=self.before)  # `before` is not needed after this
        for k, (tap, weight) in enumerate(zip(self.taps, self.norms_before)):
            self.sums["update_ratio"][k] += global_norm(delta[tap.start:tap.stop]) / weight if weight > 0 else math.inf

    def _record_activations(self) -> None:
        for k, tap in enumerate(self.taps):
            a = self.model.layer_output(tap.output)
            mean, mean_square = moments(a)
            self.sums["act_mean"][k] += mean
            self.sums["act_std"][k] += math.sqrt(max(mean_square - mean * mean, 0.0))
            if tap.activation in SATURATION:
                low, high = SATURATION[tap.activation]
                self.sums["saturated_fraction"][k] += float(np.count_nonzero((a <= low) | (a >= high))) / a.size

    # -- epoch end: rows, logs, warnings ------------------------------------------------------------

    def on_epoch_end(self, loop, row):
        rows = self.epoch_rows(row["epoch"])
        self.log.append(rows)
        if self.on_rows:
            self.on_rows(rows)
        for warning in warnings_for(rows, self.options, lr_is_full=row["lr"] >= 0.5 * self.base_lr):
            if warning["kind"] not in {w["kind"] for w in self.warnings}:
                self.warnings.append(warning)
                if self.on_warning:
                    self.on_warning(warning["message"])
        self.start_epoch()

    def on_train_end(self, loop, summary):
        summary["warnings"] = list(self.warnings)

    def epoch_rows(self, epoch: int) -> list[dict]:
        n = max(self.sums["samples"], 1)
        rows = []
        for k, tap in enumerate(self.taps):
            mean = {key: self.sums[key][k] / n for key in ("grad_norm", "update_ratio", "act_mean", "act_std")}
            rows.append({"epoch": epoch, "layer": tap.name, "type": tap.type, "activation": tap.activation,
                         "units": tap.units, "weight_norm": global_norm(self.model.theta[tap.start:tap.stop]), **mean,
                         "dead_fraction": (1.0 - float(np.mean(self.alive[k]))
                                           if self.alive[k] is not None else None),
                         "saturated_fraction": (self.sums["saturated_fraction"][k] / n
                                                if tap.activation in SATURATION else None)})
        return rows

    # -- resume -------------------------------------------------------------------------------------

    def state_dict(self):
        return {"sums": self.sums, "alive": [None if a is None else a.tolist() for a in self.alive],
                "warnings": self.warnings}

    def load_state_dict(self, state):
        if state:  # a checkpoint saved without diagnostics has none: measuring starts afresh
            self.sums, self.saved_alive, self.warnings = state["sums"], state["alive"], state["warnings"]


def moments(a: np.ndarray) -> tuple[float, float]:
    """mean(a) and mean(a^2) in two passes without temporaries (a.std() makes several): float64 results."""
    flat = a.reshape(-1)
    return float(flat.sum()) / flat.size, float(np.dot(flat, flat)) / flat.size  # sum is pairwise: accurate
