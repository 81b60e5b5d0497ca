"""The sweep's loop, on the machine that started it: ask Optuna for a trial, queue it on Dask, record it.

    run_sweep(sweep, workers=None, address=None, storage=None, stop=None, on_event=None) -> summary
    resume_sweep(sweep_dir, ...) -> summary          finished trials kept, interrupted ones continued
    preview(sweep, count) -> [sample]                the first trials' params and verdicts, nothing run

    while trials remain to run, and no stop was asked for:
        while a worker slot is free:   queue an interrupted trial again (a resumed sweep), or ask the
                                       sampler for the next one; a config the schema refuses fails
                                       the trial at once, else it is submitted to a worker
        wait for a trial to end:       write its run directory under trials/<n>/, rewrite trials.csv,
                                       .jsonl, best.yaml and summary.json, then tell Optuna how it ended

Only this loop asks and tells, one trial at a time and in order, each trial's
sampler seeded from its number, so a seeded random or grid sweep gives trial n
the same params whatever the number of workers, and after a resume; workers
only report epochs and ask whether to prune (worker.py). The study lives on the
Dask scheduler (DaskStorage, named after the sweep directory), on top of its
storage: the sweep directory's journal file when the cluster is local (its
scheduler runs in this process), a --storage URL, or else (a remote cluster)
the scheduler's memory, copied into the sweep directory's journal when the
sweep ends or stops.

A stop (`stop.signum` set by Ctrl-C or SIGTERM) ends the asking; the running
trials are told through a Dask event, stop after their batch with a resumable
checkpoint, and come back as interrupted; then Interrupted is raised. A trial's
row is written before Optuna is told, so a sweep killed in between finds the
row when it resumes and tells Optuna then.

`on_event(kind, data)` tells the command what happens (it prints; this does not):
"started" {sweep_dir, slots, address, local, resumed, done, trials}, "queued" {number, params} as a
trial goes to a worker, and "trial" {row, counts, best, trials, metric} as one ends.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from urllib.parse import urlsplit

from bpcli.config.sections import resolved_dict
from bpcli.config.yamlio import dump_yaml
from bpcli.errors import CheckpointError, ConfigError, DiskFullError, Interrupted
from bpcli.sweep.cluster import connect
from bpcli.sweep.engine import ask, journal_storage, open_study, quiet_optuna, require_engines
from bpcli.sweep.space import PARAMS
from bpcli.sweep.spec import Sweep, load_sweep, problem_lines
from bpcli.sweep.sweepdir import SweepDir
from bpcli.sweep.trials import sampler_seed, trial_config
from bpcli.sweep.worker import pack, run_trial
from bpcli.training.interrupts import StopRequest
from bpcli.training.rundir import RunDir

FINAL = ("complete", "pruned", "fail")
STATES = (*FINAL, "interrupted")
POLL = 0.5   # seconds between two looks at the stop request while trials run


def run_sweep(sweep: Sweep, *, workers: int | None = None, address: str | None = None, storage: str | None = None,
              stop: StopRequest | None = None, on_event=None) -> dict:
    """Run every trial of a validated sweep in a new sweep directory; return the summary (summary.json)."""
    require_engines()
    quiet_optuna()
    with connect(workers, address) as cluster:
        sweep_dir = SweepDir.create(sweep.output_dir, sweep.name, dump_yaml(sweep.resolved()), sweep.base_text)
        return Driver(sweep, sweep_dir, cluster, storage, stop, on_event).run(resumed=False)


def resume_sweep(path, *, workers: int | None = None, address: str | None = None, storage: str | None = None,
                 trials: int | None = None, stop: StopRequest | None = None, on_event=None) -> dict:
    """Continue a sweep directory: finished trials stay, interrupted ones continue, the rest are asked."""
    require_engines()
    quiet_optuna()
    sweep_dir = SweepDir(path)
    if not sweep_dir.is_sweep():
        raise ConfigError(f"{path} is not a sweep directory made by bpcli sweep (it has no sweep.yaml and "
                          "base.yaml)")
    sweep = load_sweep(sweep_dir.sweep_yaml, base=sweep_dir.base_yaml)
    if trials:
        sweep.set_trials(trials)
    recorded = sweep_dir.read_summary().get("storage") or {}
    if recorded.get("kind") == "url" and not storage:
        raise ConfigError(f"the study of {sweep_dir} is in the database {recorded['where']}: give its URL again "
                          "with --storage (URLs may hold passwords, so the sweep directory does not keep them)")
    with connect(workers, address) as cluster:
        return Driver(sweep, sweep_dir, cluster, storage, stop, on_event).run(resumed=True)


def preview(sweep: Sweep, count: int) -> list[dict]:
    """The first `count` trials as the sampler draws them, without running any: number, params, seed, and
    the config's verdict (error None, or the message that would fail the trial).

    A seeded random or grid sampler draws exactly these for trials 0, 1, ... of the real sweep;
    TPE too until it has finished trials to learn from (its first 10 are random).
    """
    require_engines()
    quiet_optuna()
    import optuna

    study = open_study(sweep, optuna.storages.InMemoryStorage(), "preview", max_epochs(sweep))
    samples = []
    for number in range(min(count, sweep.trials)):
        trial, params = ask(study, sweep, number, sampler_seed(sweep.seed, number), parallel=False)
        try:
            config, error = trial_config(sweep, params, number), None
        except ConfigError as refused:
            config, error = None, refusal(refused)
        samples.append({"number": number, "params": params, "error": error,
                        "seed": config.training.seed if config else None})
    return samples


def max_epochs(sweep: Sweep) -> int:
    """The most epochs a trial may train: the highest training.epochs the space holds, else the base's."""
    if "training.epochs" in sweep.space:
        kind, values = sweep.space["training.epochs"]
        return max(PARAMS[kind].candidates(values))
    return sweep.base_config.training.epochs


def refusal(error: ConfigError) -> str:
    """A trial's refused config in one paragraph: 'config refused: optimizer.nesterov=true: ...; ...'."""
    return "config refused: " + "; ".join(line.removeprefix("--set ") for line in problem_lines(error))


# -- the driver: the study, its storage and the sweep directory's lock around the loop ------------------

class Driver:
    def __init__(self, sweep: Sweep, sweep_dir: SweepDir, cluster, storage: str | None, stop, on_event):
        self.sweep, self.sweep_dir, self.cluster, self.url = sweep, sweep_dir, cluster, storage
        self.stop = stop or StopRequest()
        self.emit = on_event or (lambda kind, data: None)

    def run(self, resumed: bool) -> dict:
        from optuna_integration import DaskStorage

        started = time.perf_counter()
        lock = self.sweep_dir.lock()
        try:
            self.sweep_dir.remove_stale_study_locks()   # left by a driver killed while writing the journal
            base = self.url or (journal_storage(self.sweep_dir.study) if self.cluster.local else None)
            shared = DaskStorage(base, name=f"bpcli-{self.sweep_dir.name}", client=self.cluster.client)
            study = self.study(shared, base, resumed)
            loop = SweepLoop(self.sweep, self.sweep_dir, study, self.cluster, shared.name, self.stop, self.emit,
                             self.storage_record())
            if resumed:
                loop.restore()
            self.sweep_dir.write_summary(loop.summary(None, finished=False))
            self.emit("started", {"sweep_dir": str(self.sweep_dir), "slots": self.cluster.slots(),
                                  "address": self.cluster.address, "local": self.cluster.local, "resumed": resumed,
                                  "done": len(loop.rows), "trials": self.sweep.trials})
            try:
                loop.run()
            finally:   # also when stopped: the sweep directory holds everything a resume needs
                if base is None:
                    _copy_study(shared, self.sweep_dir)
                summary = loop.summary(time.perf_counter() - started, finished=loop.completed)
                self.sweep_dir.write_summary(summary)
            return summary
        finally:
            SweepDir.unlock(lock)

    def study(self, shared, base, resumed: bool):
        """The sweep's study: new, or the one a resumed sweep left (in the remote scheduler's memory, else
        copied back there from the sweep directory's journal)."""
        import optuna

        name, epochs = self.sweep_dir.name, max_epochs(self.sweep)
        if not resumed:
            return open_study(self.sweep, shared, name, epochs)
        try:
            return open_study(self.sweep, shared, name, epochs, create=False)
        except KeyError:
            if base is not None or not self.sweep_dir.study.is_file():
                raise ConfigError(f"the study of {self.sweep_dir} is not in {self.storage_record()['where']}"
                                  + ("" if base is not None else ", and the sweep directory has no copy of it")) \
                    from None
        optuna.copy_study(from_study_name=name, from_storage=journal_storage(self.sweep_dir.study),
                          to_storage=shared)
        return open_study(self.sweep, shared, name, epochs, create=False)

    def storage_record(self) -> dict:
        """Where the study is, for summary.json: never a password."""
        if self.url:
            parts = urlsplit(self.url)
            host = parts.hostname or ""
            where = f"{parts.scheme}://{host}{f':{parts.port}' if parts.port else ''}{parts.path}"
            return {"kind": "url", "where": where}
        if self.cluster.local:
            return {"kind": "journal", "where": str(self.sweep_dir.study)}
        return {"kind": "scheduler", "where": f"the memory of the Dask scheduler at {self.cluster.address} "
                                              f"(copied to {self.sweep_dir.study} when the sweep ends or stops)"}


def _copy_study(shared, sweep_dir: SweepDir) -> None:
    """The study, from the scheduler's memory into the sweep directory's journal (replacing an older copy)."""
    import optuna

    copy = sweep_dir.study.with_name(f".{sweep_dir.study.name}.{os.getpid()}.copy")
    copy.unlink(missing_ok=True)
    optuna.copy_study(from_study_name=sweep_dir.name, from_storage=shared, to_storage=journal_storage(copy))
    os.replace(copy, sweep_dir.study)


# -- the loop ------------------------------------------------------------------------------------

class SweepLoop:
    """The trials of one sweep: queued while workers are free, recorded as they end."""

    def __init__(self, sweep: Sweep, sweep_dir: SweepDir, study, cluster, storage_name: str, stop: StopRequest,
                 emit, storage: dict):
        self.sweep, self.sweep_dir, self.study, self.cluster = sweep, sweep_dir, study, cluster
        self.stop, self.emit, self.storage = stop, emit, storage
        self.stop_event = f"bpcli-stop-{sweep_dir.name}"
        self.study_ref = {"name": sweep_dir.name, "storage": storage_name, "pruner": sweep.pruner,
                          "max_epochs": max_epochs(sweep), "stop_event": self.stop_event}
        self.rows: dict[int, dict] = {}
        self.best: dict | None = None
        self.pending: list = []   # a resumed sweep's unfinished trials (Optuna's FrozenTrials), to queue first
        self.asked = 0
        self.stopped = False     # a stop was asked for: running trials were told, no new ones start
        self.completed = False   # every trial ran

    def restore(self) -> None:
        """Take up a sweep directory: its rows, and the study's trials (asked, finished or not)."""
        import optuna

        self.rows = {row["number"]: row for row in self.sweep_dir.read_rows()}
        trials = self.study.get_trials(deepcopy=False)
        self.asked = len(trials)
        for frozen in trials:
            row = self.rows.get(frozen.number)
            if frozen.state == optuna.trial.TrialState.RUNNING:
                if row and row["state"] in FINAL:   # recorded, then the driver died before telling Optuna
                    self.tell(frozen.number, row)
                else:
                    self.pending.append(frozen)
            elif row is None or row["state"] not in FINAL:   # told, but its row was not written
                self.rows[frozen.number] = _row_of(frozen)
        complete = [row for row in self.rows.values() if row["state"] == "complete"]
        for row in sorted(complete, key=lambda row: row["number"]):
            if self.is_better(row["value"]):
                self.best = row

    def run(self) -> None:
        from distributed import Event, wait

        stop_event = Event(self.stop_event, client=self.cluster.client)
        stop_event.clear()   # a remote scheduler may still hold the one an earlier stop set
        running: dict = {}
        while True:
            if self.stop.signum is not None and not self.stopped:
                self.stopped = True
                stop_event.set()
            if not self.stopped:
                self.fill(running)
            if not running and not self.stopped and self.remaining():
                self.wait_for_workers()   # every worker left a cluster: wait for one, or say so
                continue
            if not running:
                break
            try:
                done, _ = wait(list(running), timeout=POLL, return_when="FIRST_COMPLETED")
            except TimeoutError:   # none ended within POLL: look at the stop request again
                continue
            for future in done:
                self.finish(future, *running.pop(future))
        if self.stopped:
            error = Interrupted(self.stop.signal_name, self.stop.signum)
            error.run_dir = self.sweep_dir.path
            raise error
        self.completed = True

    def remaining(self) -> bool:
        return bool(self.pending) or self.asked < self.sweep.trials

    def wait_for_workers(self, timeout: float = 60.0) -> None:
        """Until the cluster has a worker thread to give a trial (polled: never a busy loop), or say so."""
        deadline = time.monotonic() + timeout
        while self.cluster.slots() == 0 and time.monotonic() < deadline:
            time.sleep(POLL)
        if self.cluster.slots() == 0:
            raise ConfigError(f"the Dask cluster at {self.cluster.address} has had no workers for {timeout:g} s; "
                              f"start some (dask worker {self.cluster.address}), then continue with bpcli sweep "
                              f"--resume {self.sweep_dir}")

    def fill(self, running: dict) -> None:
        """Queue trials while a worker is free: the interrupted ones first, then new ones."""
        slots = self.cluster.slots()
        while len(running) < slots:
            if self.pending:
                frozen = self.pending.pop(0)
                self.submit(running, frozen.number, frozen._trial_id, frozen.params)
            elif self.asked < self.sweep.trials:
                number = self.asked
                trial, params = ask(self.study, self.sweep, number, sampler_seed(self.sweep.seed, number),
                                    parallel=slots > 1)
                self.asked += 1
                self.submit(running, number, trial._trial_id, params)
            else:
                return

    def submit(self, running: dict, number: int, trial_id: int, params: dict) -> None:
        """Validate the trial's config; refused, the trial fails at once; else a worker trains it (continuing
        its interrupted run directory, if it has one)."""
        try:
            config = resolved_dict(trial_config(self.sweep, params, number))
        except ConfigError as error:
            self.record(number, params, None, {"state": "fail", "value": None, "error": refusal(error),
                                               "seconds": 0.0, "worker": None, "files": {}})
            return
        run = RunDir(self.sweep_dir.trial(number))
        resume_files = pack(run) if run.is_run() and run.has_last() else {}
        task = {"number": number, "trial_id": trial_id, "config": config, "metric": self.sweep.metric,
                "study": self.study_ref, "resume_files": resume_files}
        share = {"name": f"bpcli-progress-{self.sweep_dir.name}-{number}", "every": self.sweep.share_every}
        task["share"] = share
        key = f"bpcli-trial-{self.sweep_dir.name}-{number}-{uuid.uuid4().hex[:8]}"
        future = self.cluster.client.submit(run_trial, task, key=key, pure=False)
        running[future] = (number, params, config)
        self.emit("queued", {"number": number, "params": params})

    def finish(self, future, number: int, params: dict, config: dict) -> None:
        try:
            outcome = future.result()
        except Exception as error:   # the worker died more often than Dask retries, or the task was lost
            outcome = {"state": "fail", "value": None, "error": f"the trial's worker was lost: "
                       f"{type(error).__name__}: {error}", "seconds": None, "worker": None, "files": {}}
        finally:
            future.release()
            self.forget_progress(number)
        self.record(number, params, config, outcome)

    def forget_progress(self, number: int) -> None:
        """Drop the copy of the trial's run directory its worker kept on the scheduler: it has ended."""
        self.cluster.client.set_metadata(f"bpcli-progress-{self.sweep_dir.name}-{number}", None)

    def record(self, number: int, params: dict, config: dict | None, outcome: dict) -> None:
        """Write the trial's run directory and the sweep's files, then tell Optuna (unless interrupted)."""
        files = outcome.get("files") or {}
        summary = _json_file(files.get("summary.json"))
        if files and config is not None:
            try:
                self.sweep_dir.write_trial(number, files, dump_yaml(config))
            except CheckpointError as error:
                if isinstance(error, DiskFullError):   # nothing more can be written: stop, resumably
                    raise
                outcome = {**outcome, "state": "fail", "value": None, "error": str(error)}
        row = {"number": number, "state": outcome["state"], "value": outcome["value"],
               "best_epoch": summary.get("best_epoch"), "epochs_run": summary.get("epochs_run"),
               "seconds": outcome.get("seconds"), "training_seconds": summary.get("seconds"),
               "worker": outcome.get("worker"), "continued_from_epoch": outcome.get("continued_from_epoch"),
               "error": outcome.get("error"), "params": params}
        self.rows[number] = row
        if row["state"] == "complete" and self.is_better(row["value"]):
            self.best = row
            self.sweep_dir.write_best(config, f"best trial {number} of sweep {self.sweep_dir.name}: "
                                              f"{self.sweep.metric} {row['value']:.6g} (epoch {row['best_epoch']})")
        self.sweep_dir.write_rows(list(self.rows.values()))
        self.sweep_dir.write_summary(self.summary(None, finished=False))
        if row["state"] in FINAL:
            self.tell(number, row)
        self.emit("trial", {"row": row, "counts": self.counts(), "best": self.best, "trials": self.sweep.trials,
                            "metric": self.sweep.metric})

    def tell(self, number: int, row: dict) -> None:
        import optuna

        state = {"complete": optuna.trial.TrialState.COMPLETE, "pruned": optuna.trial.TrialState.PRUNED,
                 "fail": optuna.trial.TrialState.FAIL}[row["state"]]
        if state == optuna.trial.TrialState.COMPLETE:
            self.study.tell(number, row["value"])
        else:
            self.study.tell(number, state=state)

    def is_better(self, value: float) -> bool:
        if self.best is None:
            return True
        return value > self.best["value"] if self.sweep.direction == "maximize" else value < self.best["value"]

    def counts(self) -> dict:
        counts = {state: 0 for state in STATES}
        for row in self.rows.values():
            counts[row["state"]] += 1
        return counts

    def summary(self, seconds: float | None, finished: bool) -> dict:
        rows = self.rows.values()
        best = None
        if self.best:
            best = {key: self.best[key] for key in ("number", "value", "best_epoch", "params")}
            best.update(run_dir=str(self.sweep_dir.trial(self.best["number"])), config=str(self.sweep_dir.best_yaml))
        return {"sweep_dir": str(self.sweep_dir), "finished": finished, "metric": self.sweep.metric,
                "direction": self.sweep.direction, "sampler": self.sweep.sampler, "seed": self.sweep.seed,
                "pruner": self.sweep.pruner, "trials": {"requested": self.sweep.trials, **self.counts()},
                "best": best, "seconds": round(seconds, 3) if seconds is not None else None,
                "trial_seconds": round(sum(row["seconds"] or 0.0 for row in rows), 3),
                "training_seconds": round(sum(row["training_seconds"] or 0.0 for row in rows), 3),
                "slots": self.cluster.slots(), "cluster": "local" if self.cluster.local else self.cluster.address,
                "storage": self.storage}


def _row_of(frozen) -> dict:
    """A row from the study alone (its trials.jsonl line was lost): state, value and params."""
    state = {"COMPLETE": "complete", "PRUNED": "pruned", "FAIL": "fail"}.get(frozen.state.name, "fail")
    return {"number": frozen.number, "state": state, "value": frozen.value, "best_epoch": None, "epochs_run": None,
            "seconds": None, "training_seconds": None, "worker": None, "continued_from_epoch": None,
            "params": dict(frozen.params),
            "error": "its row was rebuilt from the study" if state != "fail" else "failed (row rebuilt from the study)"}


def _json_file(data: bytes | None) -> dict:
    if not data:
        return {}
    try:
        return json.loads(data)
    except ValueError:
        return {}
