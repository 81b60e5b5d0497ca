"""What runs on a Dask worker: one trial, trained in a temporary folder, its run directory sent back.

    run_trial(task) -> outcome      the task the driver submits; `task` and `outcome` are plain data
    Pruning                         the Callback that reports each epoch's metric to Optuna and stops a pruned trial

A worker shares no folder with the driver: the trial trains in a folder of its
own under the worker's temporary directory, and its run directory (config,
metrics, layers, summary, checkpoints) travels back inside the outcome as
{relative path: bytes}, for the driver to write under trials/<n>/. The study
lives on the Dask scheduler (optuna-integration's DaskStorage): the worker
reports to it and asks its pruner there, by the trial's id.

The outcome says how the trial ended: complete (its value is the best epoch's
metric), pruned (its value is the last metric reported), or fail (diverged,
a data or checkpoint error, a bug: the error's message, in one paragraph).
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
import time
from pathlib import Path

from bpcli.errors import BpcliError
from bpcli.fileio import TMP_SUFFIX
from bpcli.training.callbacks import Callback
from bpcli.training.run import train_run
from bpcli.training.rundir import RunDir

LEFT_BEHIND = (".lock", "last.prev")   # a run directory's files that mean nothing on another machine


class Pruning(Callback):
    """Each epoch: report the metric to the trial, and stop training if the pruner says so.

    A pruned trial stops at the end of the epoch Optuna judged; its run
    directory is complete (best checkpoint, summary) like any early-stopped run.
    """

    def __init__(self, trial, metric: str):
        self.trial, self.metric = trial, metric
        self.pruned_at: int | None = None
        self.last: float | None = None

    def on_epoch_end(self, loop, row):
        value = row.get(self.metric)
        if value is None:
            return
        self.last = float(value)
        self.trial.report(self.last, row["epoch"])
        if self.trial.should_prune():
            self.pruned_at = row["epoch"]
            loop.request_stop(f"pruned by the sweep's pruner at epoch {row['epoch']} ({self.metric} "
                              f"{self.last:.6g})")


def run_trial(task: dict) -> dict:
    """Train one trial on this worker and return its outcome, with its run directory's files.

    task: number, trial_id, config (resolved, validated by the driver), metric, study (name, storage, pruner).
    """
    started = time.perf_counter()
    folder = Path(tempfile.mkdtemp(prefix=f"bpcli-trial-{task['number']}-"))
    try:
        trial = _trial(task["study"], task["trial_id"])
        pruning = Pruning(trial, task["metric"])
        config = {**task["config"], "output": {"dir": str(folder), "name": "run"}}
        outcome = _train(config, pruning)
        run = RunDir(folder / "run")
        outcome["files"] = pack(run) if run.path.is_dir() else {}
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return {"number": task["number"], **outcome, "seconds": round(time.perf_counter() - started, 3),
            "worker": _worker_name()}


def _train(config: dict, pruning: Pruning) -> dict:
    """{state, value, summary, error}: train, and say how it ended."""
    try:
        summary = train_run(config, "trial", callbacks=[pruning])
    except BpcliError as error:   # diverged, data, checkpoint: the run's own message
        return {"state": "fail", "value": None, "error": str(error), "pruned_at": None}
    except Exception as error:   # a bug: recorded, and the sweep goes on
        return {"state": "fail", "value": None, "error": f"internal error: {type(error).__name__}: {error}",
                "pruned_at": None}
    if pruning.pruned_at is not None:
        return {"state": "pruned", "value": pruning.last, "error": None, "pruned_at": pruning.pruned_at}
    best = summary["monitor"]["best"]
    if best is None or not math.isfinite(best):
        return {"state": "fail", "value": None, "pruned_at": None,
                "error": f"no epoch gave a finite {summary['monitor']['metric']}"}
    return {"state": "complete", "value": best, "error": None, "pruned_at": None}


def pack(run: RunDir) -> dict[str, bytes]:
    """{path relative to the run directory: bytes} of every file a run keeps (not its lock, backups, partial files)."""
    files = {}
    for path in sorted(run.path.rglob("*")):
        if path.is_file() and not path.name.endswith(TMP_SUFFIX) and not path.name.startswith(LEFT_BEHIND):
            files[path.relative_to(run.path).as_posix()] = path.read_bytes()
    return files


def _trial(study: dict, trial_id: int):
    """The Optuna trial the driver asked for, reached through the study on the Dask scheduler."""
    import optuna
    from optuna_integration import DaskStorage

    from bpcli.sweep.engine import build_pruner, quiet_optuna

    quiet_optuna()
    storage = DaskStorage(None, study["storage"], None, register=False)   # the one the driver registered
    handle = optuna.load_study(study_name=study["name"], storage=storage,
                               pruner=build_pruner(study["pruner"], study["max_epochs"]))
    return optuna.trial.Trial(handle, trial_id)


def _worker_name() -> str:
    try:
        from distributed import get_worker

        return get_worker().address
    except (ImportError, ValueError):   # run outside a worker (a test calling it directly)
        return f"pid {os.getpid()}"
