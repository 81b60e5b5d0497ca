"""Small synthetic datasets generated from a seed, for demos and for the losses MNIST does not exercise.

Each generator is `make(rng, n, **options) -> (x, y)` with x float64 (n, features):
    xor      binary       the four corners of the unit square, labelled x0 XOR x1
    spirals  multiclass   k interleaved spiral arms (CS231n's classic)
    moons    binary       two interleaving half circles
    circles  binary       a small circle inside a large one
    sine     regression   y = sin(x) on [-pi, pi]
Binary targets are (n, 1) floats in {0, 1}, multiclass labels (n,) ints and
regression targets (n, 1) floats, as the losses expect.
"""

from __future__ import annotations

import numpy as np


def xor(rng, n: int = 4, noise: float = 0.0):
    """The four corners repeated to n points; with noise 0 the training and test sets are the truth table."""
    corners = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    x = corners[np.arange(n) % 4] + noise * rng.normal(size=(n, 2))
    y = (corners[np.arange(n) % 4, 0] != corners[np.arange(n) % 4, 1]).astype(np.float64)
    return x, y[:, None]


def spirals(rng, n: int = 300, classes: int = 3, noise: float = 0.2):
    """k arms: radius grows along each arm while the angle turns by 4 radians, plus angular noise."""
    per_class = n // classes
    r = np.tile(np.linspace(0.0, 1.0, per_class), classes)
    label = np.repeat(np.arange(classes), per_class)
    t = np.linspace(0.0, 4.0, per_class)[None, :] + 4.0 * np.arange(classes)[:, None]
    t = t.ravel() + noise * rng.normal(size=per_class * classes)
    return np.column_stack([r * np.sin(t), r * np.cos(t)]), label


def moons(rng, n: int = 200, noise: float = 0.1):
    """Upper half circle (label 0) and a lower one shifted right and down (label 1)."""
    n_upper = n // 2
    t_upper, t_lower = np.linspace(0, np.pi, n_upper), np.linspace(0, np.pi, n - n_upper)
    upper = np.column_stack([np.cos(t_upper), np.sin(t_upper)])
    lower = np.column_stack([1 - np.cos(t_lower), 0.5 - np.sin(t_lower)])
    x = np.vstack([upper, lower]) + noise * rng.normal(size=(n, 2))
    return x, np.r_[np.zeros(n_upper), np.ones(n - n_upper)][:, None]


def circles(rng, n: int = 200, noise: float = 0.05, factor: float = 0.5):
    """Outer circle (label 0) of radius 1, inner circle (label 1) of radius `factor`."""
    n_outer = n // 2
    t_outer, t_inner = rng.uniform(0, 2 * np.pi, n_outer), rng.uniform(0, 2 * np.pi, n - n_outer)
    outer = np.column_stack([np.cos(t_outer), np.sin(t_outer)])
    inner = factor * np.column_stack([np.cos(t_inner), np.sin(t_inner)])
    x = np.vstack([outer, inner]) + noise * rng.normal(size=(n, 2))
    return x, np.r_[np.zeros(n_outer), np.ones(n - n_outer)][:, None]


def sine(rng, n: int = 256, noise: float = 0.05):
    x = rng.uniform(-np.pi, np.pi, size=(n, 1))
    return x, np.sin(x) + noise * rng.normal(size=(n, 1))


def options_of(name: str) -> list[str]:
    """The options a generator takes (besides rng), plus n_test for the test set's size."""
    import inspect

    return [p for p in inspect.signature(GENERATORS[name]).parameters if p != "rng"] + ["n_test"]


GENERATORS = {"xor": xor, "spirals": spirals, "moons": moons, "circles": circles, "sine": sine}
KINDS = {"xor": "binary", "spirals": "multiclass", "moons": "binary", "circles": "binary", "sine": "regression"}
