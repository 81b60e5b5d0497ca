"""The dimensions of a search space: how each kind is written, checked, sampled and enumerated.

    {loguniform: [low, high]}   a float on a log scale, 0 < low < high (learning rate, weight decay)
    {uniform: [low, high]}      a float, low < high (dropout rate, momentum)
    {int: [low, high]}          an integer from low to high, both included (widths, epochs)
    {choice: [a, b, ...]}       one of the values listed (names, flags, numbers)

A kind is a class of static methods, registered in PARAMS:

    problems(values) -> [message]    what is wrong with how it is written (none: fine)
    candidates(values) -> [value]    the values checked against the config before anything runs,
                                     one per item of `values`: a range's two ends, every choice
    grid(values) -> [value] | None   every value, for the grid sampler; None for a continuous range
    suggest(trial, key, values)      the value Optuna's sampler picks for this trial
    describe(values) -> str          one line, for --dry-run

A choice holds plain values (strings, numbers, true/false, null): Optuna stores
params as such, and a trial's params must read back the same from its storage.
"""

from __future__ import annotations

import math

from bpcli.config.messages import show

SCALARS = (str, int, float, bool, type(None))


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _pair_problems(values, integers: bool = False) -> list[str]:
    """[low, high]: a list of two (integer) numbers, low below high."""
    what = "integers" if integers else "numbers"
    if not isinstance(values, list) or len(values) != 2:
        return [f"must be a list of two {what}, [low, high] (got {show(values)})"]
    low, high = values
    if not all(_is_number(v) and (not integers or isinstance(v, int)) for v in values):
        return [f"must be a list of two {'integers' if integers else 'finite numbers'}, [low, high] "
                f"(got {show(values)})"]
    if low > high:
        return [f"the range is inverted: low {low:g} is above high {high:g}; write [{high:g}, {low:g}]"]
    if low == high:
        return [f"the range [{low:g}, {high:g}] holds one value: to fix a key, put it under `set:` instead"]
    return []


class LogUniform:
    """A float between low and high, drawn uniformly on a log scale."""

    @staticmethod
    def problems(values) -> list[str]:
        problems = _pair_problems(values)
        if not problems and values[0] <= 0:
            return [f"a log scale needs 0 < low (got low {values[0]:g}); use uniform for a range from 0"]
        return problems

    @staticmethod
    def candidates(values) -> list:
        return [float(v) for v in values]

    @staticmethod
    def grid(values):
        return None

    @staticmethod
    def suggest(trial, key: str, values):
        return trial.suggest_float(key, float(values[0]), float(values[1]), log=True)

    @staticmethod
    def describe(values) -> str:
        return f"loguniform [{values[0]:g}, {values[1]:g}]"


class Uniform:
    """A float between low and high, drawn uniformly."""

    @staticmethod
    def problems(values) -> list[str]:
        return _pair_problems(values)

    @staticmethod
    def candidates(values) -> list:
        return [float(v) for v in values]

    @staticmethod
    def grid(values):
        return None

    @staticmethod
    def suggest(trial, key: str, values):
        return trial.suggest_float(key, float(values[0]), float(values[1]))

    @staticmethod
    def describe(values) -> str:
        return f"uniform [{values[0]:g}, {values[1]:g}]"


class IntRange:
    """An integer from low to high, both included."""

    @staticmethod
    def problems(values) -> list[str]:
        return _pair_problems(values, integers=True)

    @staticmethod
    def candidates(values) -> list:
        return list(values)

    @staticmethod
    def grid(values):
        return list(range(values[0], values[1] + 1))

    @staticmethod
    def suggest(trial, key: str, values):
        return trial.suggest_int(key, values[0], values[1])

    @staticmethod
    def describe(values) -> str:
        return f"int {values[0]}..{values[1]} ({values[1] - values[0] + 1} values)"


class Choice:
    """One of the listed values."""

    @staticmethod
    def problems(values) -> list[str]:
        if not isinstance(values, list):
            return [f"must be a list of values (got {show(values)})"]
        if not values:
            return ["the choice is empty: list at least one value (two, for a search)"]
        if not all(isinstance(v, SCALARS) for v in values):
            bad = next(v for v in values if not isinstance(v, SCALARS))
            return [f"a choice holds plain values (strings, numbers, true/false, null), not {show(bad)}"]
        repeated = [v for i, v in enumerate(values) if any(_same(v, w) for w in values[:i])]
        if repeated:
            return [f"{show(repeated[0])} is listed twice"]
        return []

    @staticmethod
    def candidates(values) -> list:
        return list(values)

    @staticmethod
    def grid(values):
        return list(values)

    @staticmethod
    def suggest(trial, key: str, values):
        return trial.suggest_categorical(key, values)

    @staticmethod
    def describe(values) -> str:
        return "choice " + ", ".join(show(v) for v in values)


def _same(a, b) -> bool:
    """Equal and of the same kind: 1 and true, 1 and 1.0 are different choices in YAML."""
    return type(a) is type(b) and a == b


PARAMS = {"loguniform": LogUniform, "uniform": Uniform, "int": IntRange, "choice": Choice}


def grid_size(space: dict[str, tuple[str, list]]) -> int | None:
    """How many points the grid of a space has; None if a dimension is continuous."""
    size = 1
    for kind, values in space.values():
        points = PARAMS[kind].grid(values)
        if points is None:
            return None
        size *= len(points)
    return size
