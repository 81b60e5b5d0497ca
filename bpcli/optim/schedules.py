"""Learning-rate schedules: the lr as a function of the optimizer step count.

Contract. A schedule maps the 0-based optimizer step to a learning rate: the
first batch of training uses ``schedule(0)``. Users configure schedules in
epochs, so every schedule takes ``lr`` (the base rate), ``steps_per_epoch``
(int >= 1) and ``warmup_epochs`` (float >= 0). With warmup the lr is multiplied
by ``min(1, (step + 1) / warmup_steps)``, where
``warmup_steps = max(1, round(warmup_epochs * steps_per_epoch))``; with
``warmup_epochs=0`` there is no warmup factor.

StepDecay and Exponential are the closed forms of PyTorch's StepLR and
ExponentialLR stepped once per epoch, so their lr changes at epoch boundaries;
Cosine anneals per step. All are pure functions of the step (``state_dict()``
is ``{}``) except ReduceOnPlateau, which is fed a validation metric once per
epoch through ``observe`` and checkpoints its state.
"""

from __future__ import annotations

import inspect
import math
import numbers

import numpy as np

from bpcli.errors import CheckpointError, ConfigError, did_you_mean


def _fail(name: str, allowed: str, value) -> None:
    raise ConfigError(f"{name} must be {allowed}, got {value!r}", key=f"schedule.{name}")


def _real(name: str, value, ok, allowed: str) -> float:
    """`value` as a float if it is a finite number with ok(value), else ConfigError."""
    if (isinstance(value, bool) or not isinstance(value, numbers.Real)
            or not math.isfinite(value) or not ok(value)):
        _fail(name, allowed, value)
    return float(value)


def _count(name: str, value, least: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < least:
        _fail(name, f"an integer >= {least}", value)
    return int(value)



class Schedule:
    """Base: the base lr, the epoch length and the warmup factor every schedule shares."""

    def __init__(self, lr: float, steps_per_epoch: int = 1, warmup_epochs: float = 0.0):
        self.lr = _real("lr", lr, lambda x: x > 0, "a number > 0")
        self.steps_per_epoch = _count("steps_per_epoch", steps_per_epoch, 1)
        self.warmup_epochs = _real("warmup_epochs", warmup_epochs, lambda x: x >= 0,
                                   "a number of epochs >= 0")
        self.warmup_steps = (max(1, round(self.warmup_epochs * self.steps_per_epoch))
                             if self.warmup_epochs > 0 else 0)

    def __call__(self, step: int) -> float:
        lr = self._base(step)
        if step < self.warmup_steps:          # the factor is 1 from then on
            lr *= (step + 1) / self.warmup_steps
        return lr

    def _base(self, step: int) -> float:
        """The lr before the warmup factor."""
        return self.lr

    def epoch(self, step: int) -> int:
        return step // self.steps_per_epoch

    def state_dict(self) -> dict[str, float | int]:
        return {}

    def load_state_dict(self, state) -> None:
        if state:
            raise CheckpointError(f"{type(self).__name__} schedule has no state, but the "
                                  f"checkpoint holds {sorted(state)}: saved with another schedule?")


class Constant(Schedule):
    """The base lr at every step (after warmup)."""


class StepDecay(Schedule):
    """lr * gamma ** (epoch // step_size): PyTorch's StepLR stepped per epoch."""

    def __init__(self, lr: float, step_size: int, gamma: float = 0.1,
                 steps_per_epoch: int = 1, warmup_epochs: float = 0.0):
        super().__init__(lr, steps_per_epoch, warmup_epochs)
        self.step_size = _count("step_size", step_size, 1)
        self.gamma = _real("gamma", gamma, lambda x: 0 < x <= 1, "a number in (0, 1]")

    def _base(self, step):
        return self.lr * self.gamma ** (self.epoch(step) // self.step_size)


class Exponential(Schedule):
    """lr * gamma ** epoch: PyTorch's ExponentialLR stepped per epoch."""

    def __init__(self, lr: float, gamma: float, steps_per_epoch: int = 1,
                 warmup_epochs: float = 0.0):
        super().__init__(lr, steps_per_epoch, warmup_epochs)
        self.gamma = _real("gamma", gamma, lambda x: 0 < x <= 1, "a number in (0, 1]")

    def _base(self, step):
        return self.lr * self.gamma ** self.epoch(step)


class Cosine(Schedule):
    """Warmup, then cosine annealing per step from lr to min_lr at step epochs*steps_per_epoch."""

    def __init__(self, lr: float, epochs: int, min_lr: float = 0.0, steps_per_epoch: int = 1,
                 warmup_epochs: float = 0.0):
        super().__init__(lr, steps_per_epoch, warmup_epochs)
        self.epochs = _count("epochs", epochs, 1)
        self.min_lr = _real("min_lr", min_lr, lambda x: 0 <= x <= self.lr,
                            f"a number in [0, lr={self.lr:g}]")
        if self.warmup_epochs > self.epochs:
            _fail("warmup_epochs", f"at most epochs={self.epochs}", warmup_epochs)
        self.total_steps = self.epochs * self.steps_per_epoch

    def _base(self, step):
        w = self.warmup_steps
        progress = min(1.0, (step - w) / max(1, self.total_steps - w))
        if progress <= 0:                     # during warmup, and exactly lr at its end
            return self.lr
        return self.min_lr + (self.lr - self.min_lr) * (1 + math.cos(math.pi * progress)) / 2


class ReduceOnPlateau(Schedule):
    """Cut the lr by `factor` when a validation metric stops improving (PyTorch's
    ReduceLROnPlateau with threshold_mode="abs"); the one schedule with state."""

    _STATE = ("best", "num_bad_epochs", "cooldown_counter", "current_lr")

    def __init__(self, lr: float, mode: str = "min", factor: float = 0.1, patience: int = 10,
                 min_delta: float = 0.0, cooldown: int = 0, min_lr: float = 0.0,
                 steps_per_epoch: int = 1, warmup_epochs: float = 0.0):
        super().__init__(lr, steps_per_epoch, warmup_epochs)
        if mode not in ("min", "max"):
            raise ConfigError(f"mode must be 'min' or 'max', got {mode!r}.{did_you_mean(mode, ('min', 'max'))}",
                              key="schedule.mode")
        self.mode = mode
        self.factor = _real("factor", factor, lambda x: 0 < x < 1, "a number in (0, 1)")
        self.patience = _count("patience", patience, 0)
        self.min_delta = _real("min_delta", min_delta, lambda x: x >= 0, "a number >= 0")
        self.cooldown = _count("cooldown", cooldown, 0)
        self.min_lr = _real("min_lr", min_lr, lambda x: 0 <= x <= self.lr,
                            f"a number in [0, lr={self.lr:g}]")
        self.best = math.inf if mode == "min" else -math.inf
        self.num_bad_epochs = 0
        self.cooldown_counter = 0
        self.current_lr = self.lr

    def _base(self, step):
        return self.current_lr

    def _improved(self, metric: float) -> bool:
        """False for NaN: a NaN metric is never an improvement."""
        if self.mode == "min":
            return metric < self.best - self.min_delta
        return metric > self.best + self.min_delta

    def observe(self, metric: float) -> bool:
        """Feed one epoch's validation metric; True if this call reduced the lr."""
        metric = float(metric)
        if self._improved(metric):
            self.best, self.num_bad_epochs = metric, 0
        else:
            self.num_bad_epochs += 1
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0           # bad epochs in cooldown do not count
        if self.num_bad_epochs <= self.patience:
            return False
        old = self.current_lr
        self.current_lr = max(old * self.factor, self.min_lr)
        self.cooldown_counter, self.num_bad_epochs = self.cooldown, 0
        return self.current_lr < old

    def state_dict(self):
        return {"best": self.best, "num_bad_epochs": self.num_bad_epochs,
                "cooldown_counter": self.cooldown_counter, "current_lr": self.current_lr}

    def load_state_dict(self, state):
        if set(state) != set(self._STATE):
            raise CheckpointError(f"ReduceOnPlateau state must hold {sorted(self._STATE)}, "
                                  f"got {sorted(state)}")
        restored = {}
        for k in self._STATE:                 # check all before changing anything
            v, count = np.asarray(state[k]), k in ("num_bad_epochs", "cooldown_counter")
            if (v.shape != () or v.dtype.kind not in ("iu" if count else "fiu") or np.isnan(v)
                    or (k != "best" and (v < 0 or np.isinf(v)))):
                what = ("an integer" if count else "a number") + ("" if k == "best" else " >= 0")
                raise CheckpointError(f"ReduceOnPlateau state {k!r} must be {what}, "
                                      f"got {state[k]!r}")
            restored[k] = int(v) if count else float(v)
        for k, v in restored.items():
            setattr(self, k, v)

SCHEDULES = {"constant": Constant, "step": StepDecay, "exponential": Exponential,
             "cosine": Cosine, "reduce_on_plateau": ReduceOnPlateau}


def build_schedule(name: str, **kwargs) -> Schedule:
    """The schedule `name` (a key of SCHEDULES) with the given arguments, from config."""
    cls = SCHEDULES.get(str(name).lower())
    if cls is None:
        raise ConfigError(f"unknown schedule {name!r}; allowed: {', '.join(SCHEDULES)}."
                          f"{did_you_mean(name, SCHEDULES)}", key="schedule.name")
    params = {k: p for k, p in inspect.signature(cls.__init__).parameters.items() if k != "self"}
    for key in kwargs:
        if key not in params:
            raise ConfigError(f"unknown argument {key!r} for the {name} schedule; allowed: {', '.join(params)}."
                              f"{did_you_mean(key, params)}", key=f"schedule.{key}")
    for key, p in params.items():
        if p.default is p.empty and key not in kwargs:
            raise ConfigError(f"the {name} schedule needs {key!r}; its arguments: "
                              f"{', '.join(params)}", key=f"schedule.{key}")
    return cls(**kwargs)
