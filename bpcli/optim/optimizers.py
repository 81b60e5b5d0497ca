"""Optimizers: each one updates a FLAT parameter vector in place.

Contract. The model keeps every parameter as a view into one flat 1-D array
``params`` and every gradient in a flat array ``grads`` of the same shape and
dtype (float32 by default, float64 on request). ``step(params, grads, lr)``
therefore updates the whole model with a handful of whole-array NumPy
operations (``out=`` and in-place ufuncs, no Python loop over layers).

* The update equations are PyTorch's ``torch.optim`` ones (same algebraic form
  and order of operations), so a PyTorch run can be matched closely; the style
  is scikit-learn's ``_stochastic_optimizers.py``: small classes, explicit state.
* ``grads`` is scratch space: ``step`` overwrites it (weight decay is added
  into it, the scaled update is formed in it), so its contents after ``step``
  are unspecified; the backward pass refills it. No reference to it is kept.
* State arrays (momentum buffers, moment estimates) are allocated at the first
  step with the shape and dtype of ``params`` and never alias it. Python floats
  are cast to that dtype, so float32 stays float32.
* ``state_dict()`` returns copies of all state: named arrays plus the step
  count as the 0-d int64 array "step". ``load_state_dict`` restores them
  exactly, so a resumed run is bit-for-bit the run that never stopped.
* The learning rate is not a hyperparameter: the schedule gives it each step.
* Hyperparameters are trusted: the config schema has checked their ranges
  (config/schema.py OPTION_SPECS) and the rules between them, which a class
  states in ``option_problems`` (SGD: nesterov needs momentum), before any
  optimizer is built.
* ``update`` states the rule in plain text for ``bpcli explain``: (condition,
  line) pairs, where p is the flat parameter vector, g its gradient and t the
  step count from 1; a condition names attributes that must be truthy
  (``!name``: falsy; ``a & b``: both; ``""``: always). A test checks that
  every optimizer has one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from bpcli.errors import CheckpointError


# Updates run over chunks of this many elements: the few arrays an update touches
# (parameters, gradients, state, scratch) then stay in the L2 cache between its
# passes, which makes Adam ~20% and SGD with momentum ~23% faster (measured).
CHUNK = 1 << 16
# (Sharing the chunks among threads was measured too: slower here, since the update
# is bound by memory bandwidth, which the two cores share.)

class Optimizer:
    """Base class: lazy state, the step count and checkpointing; subclasses write `_update`."""

    state_names: tuple[str, ...] = ()
    update: tuple[tuple[str, str], ...] = ()

    def __init__(self, weight_decay: float = 0.0):
        self.weight_decay = float(weight_decay)
        self.t = 0                      # steps taken; Adam's bias correction uses it
        self.state: dict[str, np.ndarray] = {}
        self._tmp: np.ndarray | None = None  # scratch buffer, reused, not state

    @classmethod
    def option_problems(cls, options: dict) -> list[tuple[str, str]]:
        """(option, message) for each rule between options that a range cannot say; read by the config schema."""
        return []

    def step(self, params: np.ndarray, grads: np.ndarray, lr: float) -> float:
        """Update `params` in place from `grads` (which is overwritten: see module doc).

        Returns the L2 norm of the gradient as given, measured chunk by chunk while
        each chunk is in cache anyway, so logging it costs no extra pass over memory.
        """
        if grads.shape != params.shape or grads.dtype != params.dtype or params.dtype.kind != "f":
            raise ValueError(f"params ({params.shape} {params.dtype}) and grads ({grads.shape} "
                             f"{grads.dtype}) must be float arrays of one shape and dtype")
        if len(self.state) < len(self.state_names):
            self.state = self._fresh_state(params)
        for name, a in self.state.items():
            if a.shape != params.shape or a.dtype != params.dtype:
                raise CheckpointError(f"optimizer state {name!r} is {a.shape} {a.dtype} but the "
                                      f"parameters are {params.shape} {params.dtype}: wrong model?")
        self.t += 1
        tmp, c, square_sum = self._scratch(params), params.dtype.type, 0.0
        for start in range(0, params.size, CHUNK):
            part = slice(start, start + CHUNK)
            g = grads[part]
            square_sum += float(np.dot(g, g))
            state = {name: a[part] for name, a in self.state.items()}
            self._update(params[part], g, state, tmp[part], float(lr), c)
        return math.sqrt(square_sum)

    def _update(self, p, g, state, tmp, lr, c) -> None:
        """One update of p from g (views of one chunk, as are `state` and the scratch `tmp`).

        `c` casts Python floats to p's dtype. Every operation is element-wise, so
        updating chunk by chunk gives exactly the same numbers as whole arrays.
        """
        raise NotImplementedError

    def _fresh_state(self, p: np.ndarray) -> dict[str, np.ndarray]:
        return {name: np.zeros(p.shape, p.dtype) for name in self.state_names}

    def _scratch(self, p: np.ndarray) -> np.ndarray:
        """A reusable buffer like p, so the hot loop allocates nothing after step 1."""
        if self._tmp is None or self._tmp.shape != p.shape or self._tmp.dtype != p.dtype:
            self._tmp = np.empty_like(p)
        return self._tmp

    def _decay(self, p, g, tmp, c) -> None:
        """Coupled L2 weight decay, PyTorch's g = g + weight_decay * p."""
        if self.weight_decay:
            np.multiply(p, c(self.weight_decay), out=tmp)
            g += tmp

    def state_dict(self) -> dict[str, np.ndarray]:
        """Copies of all state, and the step count as a 0-d int64 array "step"."""
        out = {"step": np.array(self.t, dtype=np.int64)}
        out.update((name, a.copy()) for name, a in self.state.items())
        return out

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        """Restore a `state_dict()` exactly (by copy), after checking names and shapes."""
        who = type(self).__name__
        step = np.asarray(state.get("step") if isinstance(state, Mapping) else None)
        if step.shape != () or step.dtype.kind not in "iu" or step < 0:
            raise CheckpointError(f"{who} state needs 'step', a 0-d integer array >= 0")
        want, got = set(self.state_names) if step > 0 else set(), set(state) - {"step"}
        if got != want:
            raise CheckpointError(f"{who} state after {int(step)} steps must hold {sorted(want)}, "
                                  f"got {sorted(got)}: saved with another optimizer or options?")
        arrays = {name: np.asarray(state[name]) for name in self.state_names if name in got}
        ref = next(iter({**arrays, **self.state}.values()), None)  # current state wins
        for name, a in arrays.items():
            if a.ndim != 1 or a.dtype.kind != "f" or (a.shape, a.dtype) != (ref.shape, ref.dtype):
                raise CheckpointError(f"{who} state {name!r} has shape {a.shape} and dtype "
                                      f"{a.dtype}; expected a flat float array of shape "
                                      f"{ref.shape} and dtype {ref.dtype}")
        self.t = int(step)
        self.state = {name: a.copy() for name, a in arrays.items()}


class SGD(Optimizer):
    """Stochastic gradient descent with optional (Nesterov) momentum, as torch.optim.SGD."""

    update = (("weight_decay", "g = g + weight_decay * p"),
              ("momentum", "buf = g at step 1, then buf = momentum * buf + g   (buf = momentum_buffer)"),
              ("nesterov", "g = g + momentum * buf"),
              ("momentum & !nesterov", "g = buf"),
              ("", "p = p - lr * g"))

    def __init__(self, momentum: float = 0.0, nesterov: bool = False, weight_decay: float = 0.0):
        super().__init__(weight_decay)
        self.momentum, self.nesterov = float(momentum), bool(nesterov)
        self.state_names = ("momentum_buffer",) if self.momentum else ()

    @classmethod
    def option_problems(cls, options):
        if options.get("nesterov") and not options.get("momentum"):
            return [("nesterov", "nesterov requires momentum > 0")]
        return []

    def _update(self, p, g, state, tmp, lr, c):
        self._decay(p, g, tmp, c)
        d = g                                   # the descent direction
        if self.momentum:
            mu, buf = c(self.momentum), state["momentum_buffer"]
            if self.t == 1:
                np.copyto(buf, g)               # PyTorch clones g on the first step
            else:
                buf *= mu
                buf += g                        # buf = mu*buf + g
            if self.nesterov:
                np.multiply(buf, mu, out=tmp)
                g += tmp                        # g = g + mu*buf
            else:
                d = buf
        np.multiply(d, c(lr), out=g)
        p -= g                                  # p -= lr*d


class Adagrad(Optimizer):
    """Adagrad as torch.optim.Adagrad (lr_decay 0): per-coordinate lr / sqrt(sum of g^2)."""

    state_names = ("sum",)
    update = (("weight_decay", "g = g + weight_decay * p"),
              ("", "sum = sum + g^2   (sum starts at initial_accumulator_value)"),
              ("", "p = p - lr * g / (sqrt(sum) + eps)"))

    def __init__(self, eps: float = 1e-10, weight_decay: float = 0.0,
                 initial_accumulator_value: float = 0.0):
        super().__init__(weight_decay)
        self.eps, self.initial_accumulator_value = float(eps), float(initial_accumulator_value)

    def _fresh_state(self, p):
        return {"sum": np.full(p.shape, self.initial_accumulator_value, dtype=p.dtype)}

    def _update(self, p, g, state, tmp, lr, c):
        self._decay(p, g, tmp, c)
        s = state["sum"]
        np.multiply(g, g, out=tmp)
        s += tmp                                # sum += g*g
        np.sqrt(s, out=tmp)
        tmp += c(self.eps)                      # std = sqrt(sum) + eps
        g *= c(lr)
        g /= tmp
        p -= g                                  # p -= lr*g / std


class RMSprop(Optimizer):
    """RMSprop as torch.optim.RMSprop (not centered), with optional momentum."""

    update = (("weight_decay", "g = g + weight_decay * p"),
              ("", "v = alpha * v + (1 - alpha) * g^2   (v = square_avg, starts at 0)"),
              ("momentum", "buf = momentum * buf + g / (sqrt(v) + eps)   (buf = momentum_buffer, starts at 0)"),
              ("momentum", "p = p - lr * buf"),
              ("!momentum", "p = p - lr * g / (sqrt(v) + eps)"))

    def __init__(self, alpha: float = 0.99, eps: float = 1e-8, momentum: float = 0.0,
                 weight_decay: float = 0.0):
        super().__init__(weight_decay)
        self.alpha, self.eps, self.momentum = float(alpha), float(eps), float(momentum)
        self.state_names = ("square_avg", "momentum_buffer") if self.momentum else ("square_avg",)

    def _update(self, p, g, state, tmp, lr, c):
        self._decay(p, g, tmp, c)
        v = state["square_avg"]
        np.multiply(g, c(1 - self.alpha), out=tmp)
        tmp *= g
        v *= c(self.alpha)
        v += tmp                                # v = alpha*v + (1-alpha)*g*g
        np.sqrt(v, out=tmp)
        tmp += c(self.eps)                      # avg = sqrt(v) + eps
        if self.momentum:
            buf = state["momentum_buffer"]
            g /= tmp
            buf *= c(self.momentum)
            buf += g                            # buf = momentum*buf + g/avg
            np.multiply(buf, c(lr), out=g)
        else:
            g *= c(lr)
            g /= tmp                            # lr*g / avg
        p -= g


class Adam(Optimizer):
    """Adam as torch.optim.Adam (no amsgrad); weight_decay is the coupled L2 term."""

    state_names = ("exp_avg", "exp_avg_sq")
    decoupled = False
    update = (("weight_decay & !decoupled", "g = g + weight_decay * p"),
              ("weight_decay & decoupled", "p = p * (1 - lr * weight_decay)"),
              ("", "m = beta1 * m + (1 - beta1) * g   (m = exp_avg, starts at 0)"),
              ("", "v = beta2 * v + (1 - beta2) * g^2   (v = exp_avg_sq, starts at 0)"),
              ("", "p = p - (lr / (1 - beta1^t)) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)"))

    def __init__(self, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8,
                 weight_decay: float = 0.0):
        super().__init__(weight_decay)
        self.beta1, self.beta2, self.eps = float(beta1), float(beta2), float(eps)

    def _update(self, p, g, state, tmp, lr, c):
        b1, b2 = self.beta1, self.beta2
        if not self.decoupled:
            self._decay(p, g, tmp, c)
        elif self.weight_decay:
            p *= c(1 - lr * self.weight_decay)  # AdamW: decay p first, apart from g
        m, v = state["exp_avg"], state["exp_avg_sq"]
        # Four arrays only (p, g, m, v): g serves as the scratch once it is used up.
        m -= g
        m *= c(b1)
        m += g                                  # m = b1*(m - g) + g = b1*m + (1-b1)*g
        np.multiply(g, g, out=g)
        v -= g
        v *= c(b2)
        v += g                                  # v = b2*v + (1-b2)*g*g
        if lr == 0:
            return                              # the moments move on; the parameters do not
        bc1, bc2 = 1 - b1 ** self.t, 1 - b2 ** self.t
        np.sqrt(v, out=g)
        g *= c(bc1 / (lr * math.sqrt(bc2)))
        g += c(self.eps * bc1 / lr)             # denom * bc1/lr, with denom = sqrt(v)/sqrt(bc2) + eps
        np.divide(m, g, out=g)
        p -= g                                  # p -= (lr/bc1) * m / denom


class AdamW(Adam):
    """AdamW as torch.optim.AdamW: p *= 1 - lr*weight_decay, then Adam without L2."""

    decoupled = True

    def __init__(self, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8,
                 weight_decay: float = 0.01):
        super().__init__(beta1, beta2, eps, weight_decay)


OPTIMIZERS = {"sgd": SGD, "adagrad": Adagrad, "rmsprop": RMSprop, "adam": Adam, "adamw": AdamW}



def build_optimizer(name: str, **hyperparams) -> Optimizer:
    """The optimizer `name` (a key of OPTIMIZERS) with hyperparameters the config schema has checked."""
    return OPTIMIZERS[name](**hyperparams)
