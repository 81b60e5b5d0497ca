"""Small synthetic datasets generated from a seed, for demos and for the losses MNIST does not exercise.

Each generator is `make(rng, n, **options) -> (x, y)` with x float64 (n, features):
    xor      binary       the four corners of the unit square, labelled x0 XOR x1
    spirals  multiclass   k interleaved spiral arms (CS231n's classic)
    moons    binary       two interleaving half circles
    circles  binary       a small circle inside a large one
    sine     regression   y = sin(x) on [-pi, pi]
Binary targets are (n, 1) floats in {0, 1}, multiclass labels (n,) ints and
regression targets (n, 1) floats, as the losses expect.

    option_problems(name, options) -> [(option, message)]   what is wrong with data.options, before anything is made

The config checks data.options with option_problems (each problem at its line);
each generator checks its own arguments too (a ValueError), so a bad size is
never a crash or an allocation the machine cannot hold.
"""

from __future__ import annotations

import inspect
import math

import numpy as np

from bpcli.errors import did_you_mean
from bpcli.fileio import memory_size, physical_memory


def xor(rng, n: int = 4, noise: float = 0.0):
    """The four corners repeated to n points; with noise 0 the training and test sets are the truth table."""
    _check("xor", n=n, noise=noise)
    corners = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    x = corners[np.arange(n) % 4] + noise * rng.normal(size=(n, 2))
    y = (corners[np.arange(n) % 4, 0] != corners[np.arange(n) % 4, 1]).astype(np.float64)
    return x, y[:, None]


def spirals(rng, n: int = 300, classes: int = 3, noise: float = 0.2):
    """k arms: radius grows along each arm while the angle turns by 4 radians, plus angular noise."""
    _check("spirals", n=n, classes=classes, noise=noise)
    per_class = n // classes
    r = np.tile(np.linspace(0.0, 1.0, per_class), classes)
    label = np.repeat(np.arange(classes), per_class)
    t = np.linspace(0.0, 4.0, per_class)[None, :] + 4.0 * np.arange(classes)[:, None]
    t = t.ravel() + noise * rng.normal(size=per_class * classes)
    return np.column_stack([r * np.sin(t), r * np.cos(t)]), label


def moons(rng, n: int = 200, noise: float = 0.1):
    """Upper half circle (label 0) and a lower one shifted right and down (label 1)."""
    _check("moons", n=n, noise=noise)
    n_upper = n // 2
    t_upper, t_lower = np.linspace(0, np.pi, n_upper), np.linspace(0, np.pi, n - n_upper)
    upper = np.column_stack([np.cos(t_upper), np.sin(t_upper)])
    lower = np.column_stack([1 - np.cos(t_lower), 0.5 - np.sin(t_lower)])
    x = np.vstack([upper, lower]) + noise * rng.normal(size=(n, 2))
    return x, np.r_[np.zeros(n_upper), np.ones(n - n_upper)][:, None]


def circles(rng, n: int = 200, noise: float = 0.05, factor: float = 0.5):
    """Outer circle (label 0) of radius 1, inner circle (label 1) of radius `factor`."""
    _check("circles", n=n, noise=noise, factor=factor)
    n_outer = n // 2
    t_outer, t_inner = rng.uniform(0, 2 * np.pi, n_outer), rng.uniform(0, 2 * np.pi, n - n_outer)
    outer = np.column_stack([np.cos(t_outer), np.sin(t_outer)])
    inner = factor * np.column_stack([np.cos(t_inner), np.sin(t_inner)])
    x = np.vstack([outer, inner]) + noise * rng.normal(size=(n, 2))
    return x, np.r_[np.zeros(n_outer), np.ones(n - n_outer)][:, None]


def sine(rng, n: int = 256, noise: float = 0.05):
    """x uniform on [-pi, pi], y = sin(x) + noise."""
    _check("sine", n=n, noise=noise)
    x = rng.uniform(-np.pi, np.pi, size=(n, 1))
    return x, np.sin(x) + noise * rng.normal(size=(n, 1))


def options_of(name: str) -> list[str]:
    """The options a generator takes (besides rng), plus n_test for the test set's size."""
    return [p for p in inspect.signature(GENERATORS[name]).parameters if p != "rng"] + ["n_test"]


# -- the options' limits ---------------------------------------------------------------------------

# Bytes a generated example costs on its way to training (float64 inputs and their temporaries, the
# split, the float32 copies): about 200 measured for two features; a generous round figure.
BYTES_PER_EXAMPLE = 256
FEATURES = {"sine": 1}   # the input width; every other set has 2


def option_problems(name: str, options: dict) -> list[tuple[str, str]]:
    """(option, what it must be) for each bad option of the generator `name`: '(classes, an integer >= 2)'.

    The config reports each as 'data.options.classes: must be an integer >= 2 (got 0)'.
    """
    allowed = options_of(name)
    problems = [(key, f"one of the options of {name} ({', '.join(allowed)})"
                      + did_you_mean(key, allowed).replace(" Did", "; did")) for key in options if key not in allowed]
    given = {k: v for k, v in options.items() if k in allowed}
    problems += [(key, problem) for key, value in given.items() if (problem := _value_problem(key, value, name))]
    if problems:
        return problems
    defaults = {p.name: p.default for p in inspect.signature(GENERATORS[name]).parameters.values() if p.name != "rng"}
    values = {**defaults, "n_test": None, **given}
    return _class_problems(values, given) + _size_problems(values)


def _value_problem(key: str, value, name: str) -> str | None:
    """What one option's value must be, if it is not that, or None."""
    if key == "n_test" and value is None:
        return None
    if key in ("n", "n_test", "classes"):
        least = 2 if key == "classes" or KINDS[name] != "regression" else 1
        return None if _is_count(value, least) else f"an integer >= {least}"
    if not _is_number(value):
        return "a finite number"
    if key == "noise" and value < 0:
        return "a number >= 0"
    if key == "factor" and not 0 < value < 1:
        return "a number in (0, 1), the inner circle's radius"
    return None


def _class_problems(values: dict, given: dict) -> list[tuple[str, str]]:
    """Spirals: every class needs examples in the training set and in the test set (n_test, or a quarter of n)."""
    classes = values.get("classes")
    if classes is None:
        return []
    n, n_test = values["n"], values["n_test"]
    if n < classes:
        return [("classes", f"at most n ({n}): each class needs examples")] if "classes" in given else \
            [("n", f"at least classes ({classes}): each class needs examples")]
    if n_test is None and max(n // 4, 1) < classes:
        return [("n", f"at least 4 x classes ({4 * classes}): the test set is a quarter of n (or set n_test)")]
    if n_test is not None and n_test < classes:
        return [("n_test", f"at least classes ({classes}): each class needs examples")]
    return []


def _size_problems(values: dict) -> list[tuple[str, str]]:
    """A training or test set larger than half this machine's memory could hold, refused before it is made."""
    memory = physical_memory()
    most = memory // 2 // BYTES_PER_EXAMPLE
    return [(key, f"at most {most} on this machine: {BYTES_PER_EXAMPLE} bytes per example would take "
                  f"{memory_size(values[key] * BYTES_PER_EXAMPLE)}, more than half its memory ({memory_size(memory)})")
            for key in ("n", "n_test") if values[key] is not None and values[key] > most]


def _is_count(value, least: int) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= least


def _is_number(value) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool) \
        and math.isfinite(value)


def _check(name: str, **arguments) -> None:
    """A generator's own arguments: the first problem as a ValueError (load_synthetic names the dataset).

    The set it makes may be a test set, so the rule that a quarter of n makes the test set does not apply.
    """
    problems = option_problems(name, {**arguments, "n_test": arguments["n"]})
    if problems:
        key, must_be = problems[0]
        raise ValueError(f"{key} must be {must_be} (got {arguments[key]!r})")


GENERATORS = {"xor": xor, "spirals": spirals, "moons": moons, "circles": circles, "sine": sine}
KINDS = {"xor": "binary", "spirals": "multiclass", "moons": "binary", "circles": "binary", "sine": "regression"}
