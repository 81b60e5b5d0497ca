"""One trial's config: the base, the sweep's `set`, the params the sampler picked, and a seed.

    trial_seed(sweep_seed, number) -> int          drawn from (sweep seed, trial number), the same on any machine
    sampler_seed(sweep_seed, number) -> int        the seed of the sampler that picks trial n's params
    trial_overrides(sweep, params, number) -> [--set texts]
    trial_config(sweep, params, number) -> Config  validated like `bpcli train BASE --set ...` would

The trial's training.seed is drawn from the sweep's seed and the trial's number
(unless the sweep fixes or searches training.seed itself), so a trial rerun
alone, `bpcli train trials/<n>/config.yaml`, trains the same network. The
config is validated in full (loading.py) before the trial is queued: a
combination the config refuses (sgd's momentum when the choice picked adam)
fails that trial, with the config's message, and the sweep goes on.
"""

from __future__ import annotations

import numpy as np

from bpcli.config.loading import parse_config_text
from bpcli.config.sections import Config
from bpcli.sweep.spec import Sweep, fixed_overrides, override

SEED_KEY = "training.seed"


def trial_seed(sweep_seed: int, number: int) -> int:
    """A training seed in [0, 2**31) for trial `number`, from NumPy's SeedSequence of (sweep seed, number)."""
    return derived_seed(sweep_seed, number)


def sampler_seed(sweep_seed: int, number: int) -> int:
    """The seed of the sampler that picks trial `number`'s params (independent of its training seed)."""
    return derived_seed(sweep_seed, number, 1)


def derived_seed(*entropy: int) -> int:
    return int(np.random.SeedSequence(list(entropy)).generate_state(1)[0] % 2**31)


def trial_overrides(sweep: Sweep, params: dict, number: int) -> list[str]:
    """The --set texts of a trial: the sweep's fixed ones, then its params, then its seed (if the sweep's to draw)."""
    texts = [*fixed_overrides(sweep), *(override(key, value) for key, value in params.items())]
    if SEED_KEY not in sweep.fixed and SEED_KEY not in sweep.space:
        texts.append(override(SEED_KEY, trial_seed(sweep.seed, number)))
    return texts


def trial_config(sweep: Sweep, params: dict, number: int) -> Config:
    """The trial's validated config (a ConfigError naming the base file and the --set that broke it)."""
    return parse_config_text(sweep.base_text, str(sweep.base), trial_overrides(sweep, params, number))
