"""Sanity checks before a long run (CS231n's), on the model, loss and data a config would train.

    sanity_check(config, data_dir) -> [Check, ...]

1. initial loss: a freshly initialized network knows nothing, so its loss is
   about that of an all-zero output: ln C for softmax cross-entropy over C
   outputs (with label smoothing too: uniform predictions cost ln C whatever
   the targets), ln 2 for binary cross-entropy, mean(y^2) for MSE, mean|y|
   for MAE, mean huber(y) for Huber.
2. l2 reaches the loss: the first batch's total loss rises strictly with l2.
3. overfit a tiny subset: 100 training examples, regularization off, fit to a
   loss near zero within a bounded number of epochs.

Nothing is written to disk. Each Check carries its measured and expected
values as text (for the table) and as numbers in `values` (for programs).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from itertools import pairwise

import numpy as np

from bpcli.nn.losses import MAE, MSE, BinaryCrossEntropy, CrossEntropy, Huber, Loss
from bpcli.nn.metrics import evaluate, predict_logits
from bpcli.data.preprocessing import Prepared
from bpcli.config.sections import Config
from bpcli.training.run import as_config, prepare_data
from bpcli.training.step import Clipping, Parts, build_parts, epoch_order, train_step

INITIAL_EXAMPLES = 2048         # the initial loss is a mean over this many: its sampling error is ~0.01 nats
L2_VALUES = (0.0, 1e-2, 1e-1)
OVERFIT_EXAMPLES = 100
OVERFIT_EPOCHS = 500
OVERFIT_LOSS = 0.05             # classification: mean probability of the right class about 0.95
STALL_EPOCHS, STALL_DROP = 50, 1e-3


@dataclass
class Check:
    """One check's outcome: text for the table (measured, expected, note) and its numbers in `values`."""

    name: str
    passed: bool
    measured: str
    expected: str
    note: str
    values: dict = field(default_factory=dict)


def sanity_check(config: Config | dict, data_dir: str | None = None, on_progress=None) -> list[Check]:
    """Load the data the run would train on (failing as `bpcli train` would) and run every check."""
    config = as_config(config)
    return run_checks(config, prepare_data(config, data_dir, on_progress))


def run_checks(config: Config | dict, data: Prepared) -> list[Check]:
    """Every check, on data already prepared for this config."""
    config = as_config(config)
    with np.errstate(over="ignore", invalid="ignore"):  # a broken setup must fail its check, not warn
        return [check_initial_loss(config, data), check_l2_penalty(config, data), check_overfit(config, data)]


# -- 1. initial loss ---------------------------------------------------------------------------

def zero_output_loss(loss: Loss, outputs: int, y) -> tuple[float, str]:
    """(value, formula) of the loss for an all-zero output, from its closed form, not from losses.py.

    Taken independently of the loss code, so a loss summed instead of averaged fails the check.
    """
    if isinstance(loss, CrossEntropy):
        return math.log(outputs), f"ln {outputs}"
    if isinstance(loss, BinaryCrossEntropy):
        return math.log(2), "ln 2"
    a = np.abs(np.asarray(y, dtype=np.float64))
    if isinstance(loss, MSE):
        return float(np.mean(a * a)), "mean(y²)"
    if isinstance(loss, MAE):
        return float(np.mean(a)), "mean|y|"
    if isinstance(loss, Huber):
        d = loss.delta
        return float(np.mean(np.where(a <= d, 0.5 * a * a, d * (a - 0.5 * d)))), "mean huber(y)"
    raise TypeError(f"no zero-output loss known for {type(loss).__name__}: add it to bpcli/sanity.py")


def initial_band(loss: Loss) -> tuple[float, float]:
    """The measured initial loss passes within (low, high) times the zero-output loss.

    The initial outputs z are small but not zero. For logits of standard deviation
    s, uncorrelated with the labels, cross-entropy is about ln C + (1 - 1/C) s^2 / 2
    and binary cross-entropy ln 2 + s^2 / 8; a default init on scaled inputs gives
    s = 0.4-0.65 on the shipped configs (+3% to +9%). +-20% admits s up to about 1
    and fails what the check is for: an init or inputs several times too large
    (raw 0-255 pixels give logits in the hundreds) or a loss summed over the batch.

    Regression outputs may correlate with the targets by chance (a random tanh net
    on sine is close to +-a x), so their loss can fall below mean(y^2) as well as
    above it. By the triangle inequality the RMS error is within rms(z) of rms(y):
    0.25x-2.25x for MSE (and Huber, quadratic near 0) and 0.5x-1.5x for MAE both
    mean "the outputs are at most half the size of the targets".
    """
    if loss.kind != "regression":
        return 0.8, 1.2
    return (0.5, 1.5) if isinstance(loss, MAE) else (0.25, 2.25)


def check_initial_loss(config: Config, data: Prepared) -> Check:
    """The loss of the config's freshly built model, in evaluation mode, against the zero-output loss.

    Evaluation mode, because dropout's 1/(1-rate) scaling adds noise to the logits
    (+25% on quickstart's first batch) that says nothing about the initialization.
    """
    parts = fresh_parts(config, len(data.x_train), data.input_dim)
    x, y = first_examples(config, data, INITIAL_EXAMPLES)
    outputs = predict_logits(parts.model, x)
    measured = parts.loss(outputs, y)[0]
    expected, formula = zero_output_loss(parts.loss, parts.model.output_dim, y)
    low, high = initial_band(parts.loss)
    band = f"±{high - 1:.0%}" if 1 - low == high - 1 else f"×{low:g}-{high:g}"
    penalty = sum(r.penalty(parts.model.params) for r in parts.regularizers)
    allows = "about 1" if parts.loss.kind != "regression" else f"half the targets' RMS, {rms(y) / 2:.3g}"
    note = (f"{len(x)} training examples in evaluation mode (no dropout); outputs' RMS {rms(outputs):.3g} "
            f"({band} allows {allows}); "
            + (f"the penalty ({penalty:.4g}) is not included" if parts.regularizers else "no penalty configured"))
    return Check("initial loss", bool(low * expected <= measured <= high * expected), f"{measured:.4g}",
                 f"{formula} = {expected:.4g} {band}", note,
                 {"loss": measured, "expected": expected, "low": low * expected, "high": high * expected,
                  "penalty": penalty})


# -- 2. l2 reaches the loss ----------------------------------------------------------------------

def check_l2_penalty(config: Config, data: Prepared) -> Check:
    """The first batch's total loss, as train_step computes it, must rise strictly with l2.

    Each value comes from a freshly built model (same seed: the same weights and
    dropout masks), so only the penalty differs between them; this follows loss.l2
    from the config through build_parts into the loss the optimizer descends.
    """
    x, y = first_examples(config, data, config.data.batch_size_for(len(data.x_train)))
    totals = [train_step(fresh_parts(with_section(config, "loss", l2=lam), len(x), data.input_dim), x, y, 0.0)[0]
              for lam in L2_VALUES]
    rising = all(math.isfinite(a) and a < b for a, b in pairwise(totals))
    return Check("l2 in the loss", rising, " → ".join(f"{total:.4g}" for total in totals),
                 f"rising (l2 {', '.join(f'{lam:g}' for lam in L2_VALUES)})",
                 f"the total loss (data + penalty) of the first batch ({len(x)} examples) in training mode",
                 {"l2": list(L2_VALUES), "loss": totals})


# -- 3. overfit a tiny subset ----------------------------------------------------------------------

def without_regularization(config: Config) -> tuple[Config, list[str]]:
    """The config with l1, l2, weight decay, label smoothing and dropout off, and which of them were on.

    CS231n overfits with regularization off: each of these keeps the training loss
    above zero on purpose (label smoothing by design: its minimum is the targets' entropy).
    """
    plain, was_on = config, []
    for section, key in (("loss", "l1"), ("loss", "l2"), ("loss", "label_smoothing"), ("optimizer", "weight_decay")):
        value = getattr(getattr(config, section), key, None)   # not every loss or optimizer has every key
        if value:
            was_on.append(f"{key} {value:g}")
            plain = with_section(plain, section, **{key: 0.0})
    dropouts = {i for i, layer in enumerate(config.model.layers) if layer.type == "dropout" and layer.rate}
    layers = [layer.model_copy(update={"rate": 0.0}) if i in dropouts else layer
              for i, layer in enumerate(config.model.layers)]
    return with_section(plain, "model", layers=layers), was_on + (["dropout"] if dropouts else [])


def overfit_target(loss: Loss, y) -> tuple[float, str]:
    """(threshold, why): 0.05 for classification; for regression a share of the loss of predicting the mean.

    The mean, not the initial loss: the initial loss depends on how the init
    happens to correlate with the targets. 1% for MSE (R^2 >= 0.99) and Huber,
    10% for MAE, whose errors count at the first power.
    """
    if loss.kind != "regression":
        return OVERFIT_LOSS, f"loss < {OVERFIT_LOSS:g}"
    y = np.asarray(y, dtype=np.float64)
    share = 0.1 if isinstance(loss, MAE) else 0.01
    baseline = zero_output_loss(loss, y.shape[-1], y - y.mean(axis=0))[0]
    return share * baseline, f"{share:.0%} of the loss of predicting the mean ({baseline:.4g})"


def train_epochs(parts: Parts, x, y, config: Config):
    """Yield (epoch, steps, evaluation on (x, y)) after each epoch, batches ordered as the Trainer orders them.

    A constant lr (optimizer.lr), because the schedule is shaped for the full
    run's length; a non-finite loss yields a NaN evaluation and ends training.
    """
    seed, lr, clip = config.training.seed, config.optimizer.lr, Clipping.of(config)
    batch, steps = config.data.batch_size_for(len(x)), 0
    for epoch in range(1, OVERFIT_EPOCHS + 1):
        order = epoch_order(seed, epoch - 1, len(x))
        for start in range(0, len(x), batch):
            idx = order[start:start + batch]
            value, _, norm = train_step(parts, x[idx], y[idx], lr, clip)
            steps += 1
            if not (math.isfinite(value) and math.isfinite(norm)):
                yield epoch, steps, {"loss": math.nan}
                return
        yield epoch, steps, evaluate(parts.model, parts.loss, x, y)


def fit_subset(parts: Parts, x, y, config: Config, target: float) -> tuple[dict, int, int, str]:
    """Train until the loss is below target, diverges, stalls or the epochs run out: (result, epochs, steps, why).

    Stalled: the best loss fell by less than 0.1% in 50 epochs (slow plateaus, as
    XOR's near ln 2, still fall faster), so a learning rate of 1e-9 fails in 50
    epochs rather than 500.
    """
    best = []
    for epoch, steps, result in train_epochs(parts, x, y, config):
        loss = result["loss"]
        best.append(min(loss, best[-1]) if best else loss)
        if not math.isfinite(loss):
            return result, epoch, steps, f"the loss became infinite or NaN at step {steps}"
        if loss < target:
            return result, epoch, steps, "reached"
        if len(best) > STALL_EPOCHS and best[-1] > (1 - STALL_DROP) * best[-1 - STALL_EPOCHS]:
            return result, epoch, steps, f"the loss fell by less than {STALL_DROP:.1%} in {STALL_EPOCHS} epochs"
    return result, epoch, steps, f"not reached in {OVERFIT_EPOCHS} epochs"


def check_overfit(config: Config, data: Prepared) -> Check:
    """The config's model and optimizer must drive the loss on 100 training examples to near zero."""
    started = time.perf_counter()
    plain, turned_off = without_regularization(config)
    x, y = first_examples(config, data, OVERFIT_EXAMPLES)
    parts = fresh_parts(plain, len(x), data.input_dim)
    target, goal = overfit_target(parts.loss, y)
    result, epochs, steps, why = fit_subset(parts, x, y, config, target)
    score = f"R² {result['r2']:.3f}" if "r2" in result else f"accuracy {result.get('accuracy', math.nan):.0%}"
    batch = config.data.batch_size_for(len(x))
    note = (f"{'stopped: ' + why + '. ' if why != 'reached' else ''}{len(x)} training examples, {epochs} epochs "
            f"({steps} steps of batch {batch}) at a constant lr {config.optimizer.lr:g}; goal: {goal}; "
            f"turned off: {', '.join(turned_off) or 'nothing (none was on)'}")
    values = {"loss": result["loss"], "accuracy": result.get("accuracy"), "epochs": epochs, "steps": steps,
              "target": target, "stopped": why, "seconds": time.perf_counter() - started}
    return Check("overfit subset", why == "reached", f"{result['loss']:.4g}, {score}",
                 f"< {target:.3g} by epoch {OVERFIT_EPOCHS}", note, values)


# -- shared ------------------------------------------------------------------------------------------

def fresh_parts(config: Config, n_train: int, input_dim: int) -> Parts:
    """Model, loss, penalties and optimizer exactly as a run of this config starts them."""
    return build_parts(config, input_dim, config.data.steps_per_epoch(n_train))


def with_section(config: Config, section: str, **changes) -> Config:
    """A copy of the config with some keys of one section changed (not validated again: the values are in range)."""
    return config.model_copy(update={section: getattr(config, section).model_copy(update=changes)})


def rms(a) -> float:
    return float(np.sqrt(np.mean(np.square(a, dtype=np.float64))))


def first_examples(config: Config, data: Prepared, n: int):
    """The first n examples training would visit: epoch 0's order, drawn from the seed (a mix of classes)."""
    idx = epoch_order(config.training.seed, 0, len(data.x_train))[:n]
    return data.x_train[idx], data.y_train[idx]
