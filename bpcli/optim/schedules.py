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

import numpy as np

from bpcli.errors import CheckpointError


class Schedule:
    """Base: the base lr, the epoch length and the warmup factor every schedule shares."""

    def __init__(self, lr: float, steps_per_epoch: int = 1, warmup_epochs: float = 0.0):
        self.lr, self.steps_per_epoch, self.warmup_epochs = float(lr), int(steps_per_epoch), float(warmup_epochs)
        self.warmup_steps = (max(1, round(self.warmup_epochs * self.steps_per_epoch))
                             if self.warmup_epochs > 0 else 0)

    @classmethod
    def option_problems(cls, options: dict, context: dict) -> list[tuple[str, str]]:
        """(option, message) for each rule that ties an option to another or to the rest of the config
        (`context`: lr, epochs); read by the config schema, so a schedule is only ever built from valid options."""
        return _min_lr_problems(options, context) if "min_lr" in options else []

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
        self.step_size, self.gamma = int(step_size), float(gamma)

    def _base(self, step):
        return self.lr * self.gamma ** (self.epoch(step) // self.step_size)


class Exponential(Schedule):
    """lr * gamma ** epoch: PyTorch's ExponentialLR stepped per epoch."""

    def __init__(self, lr: float, gamma: float, steps_per_epoch: int = 1,
                 warmup_epochs: float = 0.0):
        super().__init__(lr, steps_per_epoch, warmup_epochs)
        self.gamma = float(gamma)

    def _base(self, step):
        return self.lr * self.gamma ** self.epoch(step)


class Cosine(Schedule):
    """Warmup, then cosine annealing per step from lr to min_lr at step epochs*steps_per_epoch."""

    def __init__(self, lr: float, epochs: int, min_lr: float = 0.0, steps_per_epoch: int = 1,
                 warmup_epochs: float = 0.0):
        super().__init__(lr, steps_per_epoch, warmup_epochs)
        self.epochs, self.min_lr = int(epochs), float(min_lr)
        self.total_steps = self.epochs * self.steps_per_epoch

    @classmethod
    def option_problems(cls, options, context):
        problems = _min_lr_problems(options, context)
        if options.get("warmup_epochs", 0) > context["epochs"]:
            problems.append(("warmup_epochs", f"warmup_epochs must be at most epochs={context['epochs']}, "
                                              f"got {options['warmup_epochs']!r}"))
        return problems

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
        self.mode, self.factor, self.min_delta, self.min_lr = mode, float(factor), float(min_delta), float(min_lr)
        self.patience, self.cooldown = int(patience), int(cooldown)
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

def _min_lr_problems(options: dict, context: dict) -> list[tuple[str, str]]:
    if options.get("min_lr", 0.0) > context["lr"]:
        return [("min_lr", f"min_lr must be a number in [0, lr={context['lr']:g}], got {options['min_lr']!r}")]
    return []


SCHEDULES = {"constant": Constant, "step": StepDecay, "exponential": Exponential,
             "cosine": Cosine, "reduce_on_plateau": ReduceOnPlateau}
# What a schedule may take from elsewhere in the config, never from its own section.
CONTEXT = ("lr", "steps_per_epoch", "epochs", "mode")


def build_schedule(name: str, **kwargs) -> Schedule:
    """The schedule `name` (a key of SCHEDULES) with arguments the config schema has checked."""
    return SCHEDULES[name](**kwargs)


def takes_from_config(name: str) -> set[str]:
    """Which of CONTEXT the schedule `name` takes (its constructor's parameters): a cosine schedule's lr at
    every step depends on `epochs`, so a resumed run that changes training.epochs changes its lr."""
    cls = SCHEDULES.get(name)   # a name no longer registered (an old checkpoint's) takes nothing we know of
    return set(CONTEXT) & set(inspect.signature(cls.__init__).parameters) if cls else set()


def schedule_from_config(options: dict, *, lr: float, steps_per_epoch: int, epochs: int, mode: str) -> Schedule:
    """The schedule a config's `schedule` section names, with its own options (None: the default) and
    what it takes from elsewhere in the config: lr, the epoch length, epochs, the monitor's mode."""
    cls = SCHEDULES[options["name"]]
    context = {"lr": lr, "steps_per_epoch": steps_per_epoch, "epochs": epochs, "mode": mode}
    takes = takes_from_config(options["name"])
    own = {k: v for k, v in options.items() if k != "name" and v is not None}
    return cls(**own, **{k: v for k, v in context.items() if k in takes})
