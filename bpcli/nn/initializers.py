"""Weight initializers.

Contract: `init(rng, shape, fan_in, fan_out, **options) -> float64 array`.
Values are always drawn in float64 and cast by the model, so the same seed gives
the same weights (up to rounding) whatever dtype the model trains in.

An initializer whose options must agree with each other states it in
`option_limits(options) -> [(option, what it must be)]`, which the config
checks before anything is built (uniform: low at most high).

Why the scale matters: with `fan_in` inputs of unit variance, `z = x @ W` has
variance `fan_in * var(W)`. Glorot keeps the variance of both the forward signal
and the backward gradient near 1 for symmetric activations (tanh, sigmoid);
He doubles it to make up for ReLU zeroing half of its inputs.
"""

from __future__ import annotations

import math
import sys

import numpy as np


def zeros(rng, shape, fan_in, fan_out):
    return np.zeros(shape)


def constant(rng, shape, fan_in, fan_out, value: float = 0.0):
    return np.full(shape, float(value))


def normal(rng, shape, fan_in, fan_out, mean: float = 0.0, std: float = 0.01):
    return rng.normal(mean, std, size=shape)


def uniform(rng, shape, fan_in, fan_out, low: float = -0.05, high: float = 0.05):
    return rng.uniform(low, high, size=shape)


def _uniform_limits(options: dict) -> list[tuple[str, str]]:
    """U(low, high) needs low <= high, and a width high - low that is a finite float."""
    low, high = options["low"], options["high"]
    if low > high:
        return [("low", f"at most high ({high:g})")]
    if not math.isfinite(high - low):
        return [("high", f"within {sys.float_info.max:.3g} of low ({low:g})")]
    return []


uniform.option_limits = _uniform_limits


def glorot_uniform(rng, shape, fan_in, fan_out):
    """U(-a, a) with a = sqrt(6 / (fan_in + fan_out)): var = 2 / (fan_in + fan_out)."""
    a = math.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-a, a, size=shape)


def glorot_normal(rng, shape, fan_in, fan_out):
    """N(0, std) with std = sqrt(2 / (fan_in + fan_out)) (plain, not truncated)."""
    return rng.normal(0.0, math.sqrt(2.0 / (fan_in + fan_out)), size=shape)


def he_uniform(rng, shape, fan_in, fan_out):
    """U(-a, a) with a = sqrt(6 / fan_in): var = 2 / fan_in."""
    a = math.sqrt(6.0 / fan_in)
    return rng.uniform(-a, a, size=shape)


def he_normal(rng, shape, fan_in, fan_out):
    """N(0, std) with std = sqrt(2 / fan_in)."""
    return rng.normal(0.0, math.sqrt(2.0 / fan_in), size=shape)


def lecun_normal(rng, shape, fan_in, fan_out):
    """N(0, std) with std = sqrt(1 / fan_in)."""
    return rng.normal(0.0, math.sqrt(1.0 / fan_in), size=shape)


INITIALIZERS = {
    "zeros": zeros,
    "constant": constant,
    "normal": normal,
    "uniform": uniform,
    "glorot_uniform": glorot_uniform,
    "glorot_normal": glorot_normal,
    "xavier_uniform": glorot_uniform,
    "xavier_normal": glorot_normal,
    "he_uniform": he_uniform,
    "he_normal": he_normal,
    "kaiming_uniform": he_uniform,
    "kaiming_normal": he_normal,
    "lecun_normal": lecun_normal,
}
