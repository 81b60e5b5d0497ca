"""Optuna, the search engine: its samplers and pruners by name, the study, its storage.

    require_engines()                     Optuna and Dask, or a MissingExtraError naming the pip command
    quiet_optuna()                        no log lines, no experimental-feature warnings (nothing here prints)
    SAMPLERS, PRUNERS                     name -> builder; PRUNER_OPTIONS: name -> the sweep file's options
    open_study(sweep, storage, name, ...) a new study (its direction the metric's), or a resumed sweep's
    ask(study, sweep, number, seed, ...)  trial `number` and its params, from a sampler seeded for it
    journal_storage(path)                 Optuna's journal file (the default storage, in the sweep directory)

Optuna and Dask are imported inside the functions that use them: they are an
optional extra, and `bpcli --help` must not load them. The samplers are made
to be reproducible: the driver asks for every trial itself, in order
(driver.py), each from a sampler seeded from (sweep seed, trial number), so a
random or grid sweep gives trial n the same params however many workers run
the trials, and after a resume. TPE learns from finished trials, so with
several workers its choices depend on which trials finished first; it runs
with Optuna's constant liar then, so that trials running at once are not
sampled on top of each other.
"""

from __future__ import annotations

import importlib
import json
import os
import warnings
from pathlib import Path
from typing import Literal

from pydantic import Field

from bpcli.config.schema import Strict
from bpcli.errors import MissingExtraError
from bpcli.sweep.space import PARAMS

# Never `pip install bpcli` from the package index: that name belongs to another project.
INSTALL = 'pip install -e ".[sweep]" in a checkout of bpcli (or: pip install optuna distributed "optuna-integration[dask]")'


def require_engines() -> None:
    """Raise a MissingExtraError, in one line, unless Optuna, Dask distributed and optuna-integration import."""
    missing = []
    for module, package in (("optuna", "optuna"), ("distributed", "distributed"),
                            ("optuna_integration", "optuna-integration")):
        try:
            importlib.import_module(module)
        except ImportError:
            missing.append(package)
    if missing:
        raise MissingExtraError(f"bpcli sweep needs {', '.join(missing)}, not installed: {INSTALL}, then run the "
                                "command again")


def quiet_optuna() -> None:
    """Optuna logs each trial and warns that DaskStorage is experimental: the sweep reports trials itself."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


# -- samplers: each made afresh for every trial, seeded from (sweep seed, trial number) -----------

def _grid(sweep, seed: int, parallel: bool):
    import optuna

    class AskedGrid(optuna.samplers.GridSampler):
        """Trial n takes point n of the grid shuffled by the sweep's seed. The sweep asks for no more
        trials than the grid has points, so the grid's own ending (Study.stop, which only an objective
        function may call) is left out: after a tell it would raise."""

        def after_trial(self, study, trial, state, values) -> None:
            pass

    return AskedGrid(sweep.grid(), seed=sweep.seed)


def _random(sweep, seed: int, parallel: bool):
    import optuna

    return optuna.samplers.RandomSampler(seed=seed)


def _tpe(sweep, seed: int, parallel: bool):
    import optuna

    return optuna.samplers.TPESampler(seed=seed, constant_liar=parallel)


SAMPLERS = {"grid": _grid, "random": _random, "tpe": _tpe}


# -- pruners: each with the options the sweep file gives it ---------------------------------------

class MedianPruner(Strict):
    """Stop a trial whose best value so far is worse than the median of the finished trials at the same epoch."""

    name: Literal["median"] = Field("median")
    min_epochs: int = Field(1, ge=1, description="Epochs every trial trains before it may be pruned.")
    startup_trials: int = Field(5, ge=0, description="Trials that must finish before any is pruned.")

    def build(self, max_epochs: int):
        import optuna

        return optuna.pruners.MedianPruner(n_startup_trials=self.startup_trials, n_warmup_steps=self.min_epochs)


class HyperbandPruner(Strict):
    """Successive halving in brackets (Hyperband): at each rung, one trial in reduction_factor goes on."""

    name: Literal["hyperband"] = Field("hyperband")
    min_epochs: int = Field(1, ge=1, description="Epochs of the first rung: every trial trains at least this many.")
    reduction_factor: int = Field(3, ge=2, description="One trial in this many goes on at each rung.")

    def build(self, max_epochs: int):
        import optuna

        return optuna.pruners.HyperbandPruner(min_resource=self.min_epochs, reduction_factor=self.reduction_factor,
                                              max_resource=max(max_epochs, self.min_epochs))


class NoPruner(Strict):
    """Every trial trains to its end (its own early stopping aside)."""

    name: Literal["none"] = Field("none")

    def build(self, max_epochs: int):
        import optuna

        return optuna.pruners.NopPruner()


PRUNER_OPTIONS = {"median": MedianPruner, "hyperband": HyperbandPruner, "none": NoPruner}


def build_pruner(options: dict, max_epochs: int):
    """The Optuna pruner of the sweep file's `pruner` (resolved: name and every option)."""
    return PRUNER_OPTIONS[options["name"]](**options).build(max_epochs)


# -- the study -----------------------------------------------------------------------------------

def journal_storage(path: str | Path):
    """Optuna's append-only journal in a file: a crash loses at most the line being written.

    Each line is synced to disk as Optuna writes it, except an epoch's report to the
    pruner (an intermediate value): that sync was most of the cost of pruning (about
    10 ms an epoch here). Unsynced lines are with the operating system, so they outlive
    a killed process; a power cut can lose the latest reports, which the trials'
    metrics.jsonl hold too. Trials, their params and how they ended are synced as before.
    """
    from optuna.storages import JournalStorage

    return JournalStorage(_journal_backend(os.path.abspath(path)))   # its lock links to this path: never dangling


def _journal_backend(path: str):
    from optuna.storages.journal import JournalFileBackend

    class ReportsUnsynced(JournalFileBackend):
        def append_logs(self, logs: list[dict]) -> None:
            if not (_only_reports(logs) and hasattr(self, "_lock") and hasattr(self, "_file_path")):
                return super().append_logs(logs)   # (and Optuna's own way, should its internals change)
            from optuna.storages.journal._file import get_lock_file

            text = "".join(json.dumps(log, separators=(",", ":")) + "\n" for log in logs)
            with get_lock_file(self._lock), open(self._file_path, "ab") as f:
                f.write(text.encode("utf-8"))

    return ReportsUnsynced(path)


def _only_reports(logs: list[dict]) -> bool:
    from optuna.storages.journal._storage import JournalOperation

    return all(log.get("op_code") == JournalOperation.SET_TRIAL_INTERMEDIATE_VALUE for log in logs)


def open_study(sweep, storage, name: str, max_epochs: int, create: bool = True):
    """The sweep's study in `storage`: a new one, or (create=False) the one a resumed sweep started."""
    import optuna

    pruner = build_pruner(sweep.pruner, max_epochs)
    if not create:
        return optuna.load_study(study_name=name, storage=storage, pruner=pruner)
    return optuna.create_study(storage=storage, study_name=name, direction=sweep.direction, pruner=pruner)


def ask(study, sweep, number: int, seed: int, parallel: bool) -> tuple:
    """(Optuna trial, {key: value}): trial `number`, and the value its sampler picked for every dimension.

    The sampler is made afresh with `seed` (trials.sampler_seed: from the sweep's seed and the
    number): what it picks depends on the trial's number and, for TPE, on the finished trials it
    learns from, never on how many trials this process asked before (a resumed sweep picks what an
    uninterrupted one would).
    """
    study.sampler = SAMPLERS[sweep.sampler](sweep, seed, parallel)
    trial = study.ask()
    if trial.number != number:
        raise RuntimeError(f"asked for trial {number}, the study made trial {trial.number}: "
                           "another process is adding trials to this sweep's study")
    return trial, {key: PARAMS[kind].suggest(trial, key, values) for key, (kind, values) in sweep.space.items()}
