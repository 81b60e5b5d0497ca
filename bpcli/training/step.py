"""One batch, start to finish: the algorithm every epoch repeats.

    logits         = model.forward(x, training=True)
    loss, dlogits  = loss(logits, y)                     both batch means
    model.backward(dlogits)                              fills model.dtheta
    loss   += penalties;  dtheta += their gradients      l1, l2
    (callbacks see dtheta here: layer diagnostics)
    clip dtheta                                          to a global norm, or coordinate-wise
    optimizer.step(model.theta, model.dtheta, lr)        lr = schedule(step)

`Parts` holds what a batch passes through, built once from the config by
`build_parts`. An epoch visits the examples in an order drawn from (seed,
epoch) alone (`epoch_order`), so a run resumed at any batch sees exactly the
batches it would have seen.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from bpcli.config.sections import Config, optimizer_kwargs, resolved_dict
from bpcli.nn.losses import Loss, build_loss
from bpcli.nn.model import Model, build_model
from bpcli.nn.regularizers import Regularizer, build_regularizers
from bpcli.optim.clipping import clip_grad_norm, clip_grad_value, global_norm
from bpcli.optim.optimizers import Optimizer, build_optimizer
from bpcli.optim.schedules import Schedule, schedule_from_config


@dataclass
class Parts:
    """Everything one batch passes through, built from the config."""

    model: Model
    loss: Loss
    regularizers: list[Regularizer]
    optimizer: Optimizer
    schedule: Schedule


@dataclass(frozen=True)
class Clipping:
    """training.clip_grad_norm and training.clip_grad_value; None: off."""

    norm: float | None = None
    value: float | None = None

    @classmethod
    def of(cls, config: Config) -> Clipping:
        return cls(config.training.clip_grad_norm, config.training.clip_grad_value)


def build_parts(config: Config, input_dim: int, steps_per_epoch: int) -> Parts:
    """Model, loss, penalties, optimizer and schedule exactly as a run of this config starts them."""
    loss_options = config.loss.model_dump()
    layers = resolved_dict(config)["model"]["layers"]   # dense inits resolved, as the run's config.yaml pins them
    model = build_model(layers, input_dim, seed=config.training.seed, dtype=config.model.dtype)
    optimizer = build_optimizer(config.optimizer.name, **optimizer_kwargs(config))
    schedule = schedule_from_config(config.schedule.model_dump(), lr=config.optimizer.lr,
                                    steps_per_epoch=steps_per_epoch, epochs=config.training.epochs,
                                    mode=config.training.monitor_mode)
    return Parts(model, build_loss(loss_options), build_regularizers(loss_options), optimizer, schedule)


def train_step(parts: Parts, x: np.ndarray, y: np.ndarray, lr: float, clip: Clipping = Clipping(),
               on_gradients=None) -> tuple[float, np.ndarray, float]:
    """One mini-batch: forward, loss, backward, update. Returns (loss, logits, gradient norm before clipping).

    on_gradients(dtheta), if given, sees the gradients before clipping and the update (diagnostics).
    A non-finite loss or gradient norm skips the update: the caller reports the divergence.
    """
    model = parts.model
    logits = model.forward(x, training=True)
    value, dlogits = parts.loss(logits, y)
    model.backward(dlogits)
    for r in parts.regularizers:
        value += r.penalty(model.params)
        r.add_grad(model.params, model.grads)
    if on_gradients is not None:
        on_gradients(model.dtheta)
    if not math.isfinite(value):
        return value, logits, math.nan
    if not (clip.norm or clip.value):  # the optimizer measures the norm on its way, for free
        return value, logits, parts.optimizer.step(model.theta, model.dtheta, lr)
    norm = clip_grad_norm(model.dtheta, clip.norm) if clip.norm else global_norm(model.dtheta)
    if clip.value:
        clip_grad_value(model.dtheta, clip.value)
    if math.isfinite(norm):
        parts.optimizer.step(model.theta, model.dtheta, lr)
    return value, logits, norm


def epoch_order(seed: int, epoch: int, n: int) -> np.ndarray:
    """The order of the training examples in an epoch: a function of (seed, epoch) only."""
    return np.random.default_rng([seed, 3, epoch]).permutation(n)
