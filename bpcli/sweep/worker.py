"""What runs on a Dask worker: one trial, trained in a temporary folder, its run directory sent back.

    run_trial(task) -> outcome      the task the driver submits; `task` and `outcome` are plain data
    Pruning                         the Callback that reports each epoch's metric to Optuna and stops a pruned trial
    StopWhenAsked                   the Callback that interrupts training when the sweep is stopped (Ctrl-C)
    ShareProgress                   the Callback that copies the run directory to the scheduler now and then

A worker shares no folder with the driver: the trial trains in a folder of its
own under the worker's temporary directory, and its run directory (config,
metrics, layers, summary, checkpoints) travels back inside the outcome as
{relative path: bytes}, for the driver to write under trials/<n>/. The study
lives on the Dask scheduler (optuna-integration's DaskStorage): with a pruner,
the worker reports each epoch to it and asks the pruner there, by the trial's
id (without one, nothing: the epochs are in the run directory's metrics).

A worker can die mid-trial (killed, out of memory, its machine gone). Dask
then runs the task again on another worker; so that the trial goes on from
where it was rather than from epoch 1, the run directory (with its newest
`last` checkpoint) is copied to the scheduler's metadata store every
`share_every` seconds (plain bytes, msgpack: nothing pickled), and a task that
finds such a copy continues it. bpcli's
resume is exact, so the trial ends as it would have without the death.

The outcome says how the trial ended: complete (its value is the best epoch's
metric), pruned (its value is the last metric reported), fail (diverged, a
data or checkpoint error, a bug: the error's message, in one paragraph), or
interrupted (the sweep was stopped: the run directory holds a resumable
checkpoint, and a resumed sweep sends it back to a worker to continue).
"""

from __future__ import annotations

import math
import os
import shutil
import signal
import tempfile
import time
import warnings
from pathlib import Path

from bpcli.errors import BpcliError, Interrupted
from bpcli.fileio import TMP_SUFFIX
from bpcli.training.callbacks import Callback
from bpcli.training.interrupts import StopRequest
from bpcli.training.run import train_run
from bpcli.training.rundir import RunDir

LEFT_BEHIND = (".lock", "last.prev")   # a run directory's files that mean nothing on another machine


class Pruning(Callback):
    """Each epoch: report the metric to the trial, and stop training if the pruner says so.

    A pruned trial stops at the end of the epoch Optuna judged; its run
    directory is complete (best checkpoint, summary) like any early-stopped run.
    A trial trained again (its worker died, or it was interrupted before its
    first checkpoint) reports epochs the study already has: Optuna keeps the
    first value of a step, and its warning is not printed.
    """

    def __init__(self, trial, metric: str, min_epochs: int = 1):
        self.trial, self.metric, self.min_epochs = trial, metric, min_epochs
        self.pruned_at: int | None = None
        self.last: float | None = None

    def on_epoch_end(self, loop, row):
        value = row.get(self.metric)
        if value is None:
            return
        self.last = float(value)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.trial.report(self.last, row["epoch"])
        if row["epoch"] >= self.min_epochs and self.trial.should_prune():   # never pruned before (a round trip saved)
            self.pruned_at = row["epoch"]
            loop.request_stop(f"pruned by the sweep's pruner at epoch {row['epoch']} ({self.metric} "
                              f"{self.last:.6g})")


class StopWhenAsked(Callback):
    """Interrupt training, as Ctrl-C would, once the driver sets the sweep's stop event on the scheduler.

    The event is read at most every `every` seconds (it is a message to the scheduler);
    the trial then stops after its current batch with a resumable checkpoint.
    """

    def __init__(self, event_name: str, stop: StopRequest, every: float = 0.5):
        self.event_name, self.stop, self.every = event_name, stop, every
        self.checked = time.monotonic()
        self.event = None

    def on_batch_end(self, loop):
        now = time.monotonic()
        if now - self.checked < self.every:
            return
        self.checked = now
        if self.event is None:
            from distributed import Event

            self.event = Event(self.event_name)
        if self.event.is_set():
            self.stop.signum = signal.SIGINT


class ShareProgress(Callback):
    """At an epoch's end, at most every `every` seconds: the run directory, with its newest `last`
    checkpoint, to the scheduler's metadata under `name` (where a rerun of the task finds it)."""

    def __init__(self, run: RunDir, name: str, every: float):
        self.run, self.name, self.every = run, name, every
        self.shared_at, self.shared_checkpoint = time.monotonic(), None

    def on_epoch_end(self, loop, row):
        if time.monotonic() - self.shared_at < self.every or not self.run.last.is_file():
            return
        stamp = self.run.last.stat().st_mtime_ns
        if stamp == self.shared_checkpoint:   # no newer checkpoint than the copy already there
            return
        from distributed import get_client

        get_client().set_metadata(self.name, pack(self.run))
        self.shared_at, self.shared_checkpoint = time.monotonic(), stamp


def shared_progress(name: str) -> dict[str, bytes]:
    """The run directory an earlier attempt at this trial shared, or {} (none, or not on a Dask worker)."""
    try:
        from distributed import get_client

        return get_client().get_metadata(name, default=None) or {}
    except ValueError:   # no Dask client here (run_trial called directly)
        return {}


def run_trial(task: dict) -> dict:
    """Train one trial on this worker and return its outcome, with its run directory's files.

    task: number, trial_id, config (resolved, validated by the driver), metric, study (name, storage,
    pruner, max_epochs, stop event), resume_files: an interrupted run directory to continue, or {},
    and share: {name, every}: where on the scheduler the trial keeps its progress while it runs.
    """
    started = time.perf_counter()
    folder = Path(tempfile.mkdtemp(prefix=f"bpcli-trial-{task['number']}-"))
    try:
        stop = StopRequest()
        run = RunDir(folder / "run")
        pruning = Pruning(_trial(task["study"], task["trial_id"]), task["metric"],
                          task["study"]["pruner"].get("min_epochs", 1)) \
            if task["study"]["pruner"]["name"] != "none" else None   # without a pruner, no epoch is reported
        callbacks = [*([pruning] if pruning else []), StopWhenAsked(task["study"]["stop_event"], stop),
                     ShareProgress(run, task["share"]["name"], task["share"]["every"])]
        resume = unpack(run, shared_progress(task["share"]["name"]) or task.get("resume_files") or {})
        continued_from = _epoch_of(run) if resume else None
        config = {**task["config"], "output": {**task["config"]["output"], "dir": str(folder), "name": "run"}}
        outcome = _train(config, callbacks, stop, resume, pruning)
        outcome["files"] = pack(run) if run.path.is_dir() else {}
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return {"number": task["number"], **outcome, "continued_from_epoch": continued_from,
            "seconds": round(time.perf_counter() - started, 3), "worker": _worker_name()}


def _epoch_of(run: RunDir) -> int | None:
    """The epochs done in the checkpoint a trial continues from."""
    from bpcli.training.checkpoint import load_checkpoint

    try:
        return load_checkpoint(run.last).meta["state"]["epoch"]
    except BpcliError:   # damaged: the resume finds last.prev or starts afresh, and says so
        return None


def _train(config: dict, callbacks: list, stop: StopRequest, resume: str | None, pruning: Pruning | None) -> dict:
    """{state, value, error}: train (or continue an interrupted run), and say how it ended."""
    try:
        summary = train_run(config, "trial", callbacks=callbacks, stop=stop, resume=resume)
    except Interrupted:   # the sweep is stopping: the run directory holds a resumable checkpoint
        return {"state": "interrupted", "value": None, "error": None}
    except BpcliError as error:   # diverged, data, checkpoint: the run's own message
        return {"state": "fail", "value": None, "error": str(error)}
    except Exception as error:   # a bug: recorded, and the sweep goes on
        return {"state": "fail", "value": None, "error": f"internal error: {type(error).__name__}: {error}"}
    if pruning and pruning.pruned_at is not None:
        return {"state": "pruned", "value": pruning.last, "error": None}
    best = summary["monitor"]["best"]
    if best is None or not math.isfinite(best):
        return {"state": "fail", "value": None, "error": f"no epoch gave a finite {summary['monitor']['metric']}"}
    return {"state": "complete", "value": best, "error": None}


def unpack(run: RunDir, files: dict[str, bytes]) -> str | None:
    """Write an interrupted trial's run directory here, to resume it; its path, or None if there is none."""
    if not files:
        return None
    for relative, data in files.items():
        path = run.path / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    run.checkpoints.mkdir(exist_ok=True)
    return str(run.path)


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
