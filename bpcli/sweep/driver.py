"""The sweep's loop, on the machine that started it: ask Optuna for a trial, queue it on Dask, record it.

    run_sweep(sweep, workers=None, address=None, storage=None, on_event=None) -> summary

    while trials remain to ask or run:
        while a worker slot is free:   ask the sampler for the next trial; build and validate its config;
                                       a config the schema refuses fails the trial at once, else it is queued
        wait for a trial to end:       write its run directory under trials/<n>/, tell Optuna how it
                                       ended, rewrite trials.csv/.jsonl, best.yaml and summary.json

Only this loop asks and tells, one trial at a time and in order, so trial n
gets the same params from a seeded random or grid sampler whatever the number
of workers; workers only report epochs and ask whether to prune (worker.py).
The study lives on the Dask scheduler (DaskStorage), on top of its storage: the
sweep directory's journal file when the cluster is local (its scheduler runs in
this process), the --storage URL if one is given, else (a remote cluster) the
scheduler's memory, copied into the sweep directory's journal when the sweep ends.

`on_event(kind, data)` tells the command what happens (it prints; this does not):
"started" {sweep_dir, slots, address, local} and "trial" {row, counts, best}.
"""

from __future__ import annotations

import json
import time

from bpcli.config.sections import resolved_dict
from bpcli.config.yamlio import dump_yaml
from bpcli.errors import ConfigError
from bpcli.sweep.cluster import connect
from bpcli.sweep.engine import ask, create_study, journal_storage, quiet_optuna, require_engines
from bpcli.sweep.space import PARAMS
from bpcli.sweep.spec import Sweep, problem_lines
from bpcli.sweep.sweepdir import SweepDir
from bpcli.sweep.trials import trial_config
from bpcli.sweep.worker import run_trial

STATES = ("complete", "pruned", "fail")


def run_sweep(sweep: Sweep, *, workers: int | None = None, address: str | None = None, storage: str | None = None,
              on_event=None) -> dict:
    """Run every trial of a validated sweep; return the summary also written to summary.json."""
    require_engines()
    quiet_optuna()
    from optuna_integration import DaskStorage

    started = time.perf_counter()
    sweep_dir = SweepDir.create(sweep.output_dir, sweep.name, dump_yaml(sweep.resolved()))
    with connect(workers, address) as cluster:
        base = storage or (journal_storage(sweep_dir.study) if cluster.local else None)
        shared = DaskStorage(base, client=cluster.client)
        study = create_study(sweep, shared, sweep_dir.name, parallel=cluster.slots() > 1,
                             max_epochs=max_epochs(sweep))
        loop = SweepLoop(sweep, sweep_dir, study, cluster, shared.name, on_event or (lambda kind, data: None))
        loop.emit("started", {"sweep_dir": str(sweep_dir), "slots": cluster.slots(), "address": cluster.address,
                              "local": cluster.local})
        loop.run()
        if base is None:   # the study lived in the remote scheduler's memory: keep a copy with the sweep
            _copy_study(shared, sweep_dir)
        summary = loop.summary(time.perf_counter() - started, storage or str(sweep_dir.study), finished=True)
    sweep_dir.write_summary(summary)
    return summary


def preview(sweep: Sweep, count: int) -> list[dict]:
    """The first `count` trials as the sampler draws them, without running any: number, params, seed, and
    the config's verdict (error None, or the message that would fail the trial).

    A seeded random or grid sampler draws exactly these for trials 0, 1, ... of the real sweep;
    TPE too until it has finished trials to learn from (its first 10 are random).
    """
    require_engines()
    quiet_optuna()
    import optuna

    study = create_study(sweep, optuna.storages.InMemoryStorage(), "preview", parallel=False,
                         max_epochs=max_epochs(sweep))
    samples = []
    for _ in range(min(count, sweep.trials)):
        trial, params = ask(study, sweep)
        try:
            config = trial_config(sweep, params, trial.number)
            error = None
        except ConfigError as refused:
            config, error = None, refusal(refused)
        samples.append({"number": trial.number, "params": params, "error": error,
                        "seed": config.training.seed if config else None})
    return samples


def max_epochs(sweep: Sweep) -> int:
    """The most epochs a trial may train: the highest training.epochs the space holds, else the base's."""
    if "training.epochs" in sweep.space:
        kind, values = sweep.space["training.epochs"]
        return max(PARAMS[kind].candidates(values))
    return sweep.base_config.training.epochs


def _copy_study(shared, sweep_dir: SweepDir) -> None:
    import optuna

    optuna.copy_study(from_study_name=sweep_dir.name, from_storage=shared,
                      to_storage=journal_storage(sweep_dir.study))


class SweepLoop:
    """The trials of one sweep: queued while workers are free, recorded as they end."""

    def __init__(self, sweep: Sweep, sweep_dir: SweepDir, study, cluster, storage_name: str, emit):
        self.sweep, self.sweep_dir, self.study, self.cluster, self.emit = sweep, sweep_dir, study, cluster, emit
        self.study_ref = {"name": sweep_dir.name, "storage": storage_name, "pruner": sweep.pruner,
                          "max_epochs": max_epochs(sweep)}
        self.rows: dict[int, dict] = {}
        self.best: dict | None = None
        self.asked = 0

    def run(self) -> None:
        from distributed import wait

        running: dict = {}
        while self.asked < self.sweep.trials or running:
            while self.asked < self.sweep.trials and len(running) < self.cluster.slots():
                self.queue_next(running)
            if running:
                done, _ = wait(list(running), return_when="FIRST_COMPLETED")
                for future in done:
                    self.finish(future, *running.pop(future))

    def queue_next(self, running: dict) -> None:
        """Ask for the next trial; fail it at once if its config is refused, else submit it to a worker."""
        trial, params = ask(self.study, self.sweep)
        self.asked += 1
        try:
            config = resolved_dict(trial_config(self.sweep, params, trial.number))
        except ConfigError as error:
            self.record(trial, params, None, {"state": "fail", "value": None, "error": refusal(error),
                                              "seconds": 0.0, "worker": None, "files": {}})
            return
        task = {"number": trial.number, "trial_id": trial._trial_id, "config": config, "metric": self.sweep.metric,
                "study": self.study_ref}
        future = self.cluster.client.submit(run_trial, task, key=f"bpcli-trial-{self.sweep_dir.name}-{trial.number}",
                                            pure=False)
        running[future] = (trial, params, config)

    def finish(self, future, trial, params: dict, config: dict) -> None:
        try:
            outcome = future.result()
        except Exception as error:   # the worker died more often than Dask retries, or the task was lost
            outcome = {"state": "fail", "value": None, "error": f"the trial's worker was lost: "
                       f"{type(error).__name__}: {error}", "seconds": None, "worker": None, "files": {}}
        finally:
            future.release()
        self.record(trial, params, config, outcome)

    def record(self, trial, params: dict, config: dict | None, outcome: dict) -> None:
        """Write the trial's run directory, tell Optuna, and rewrite the sweep's files."""
        import optuna

        number, files = trial.number, outcome.get("files") or {}
        summary = _json_file(files.get("summary.json"))
        if files and config is not None:
            self.sweep_dir.write_trial(number, files, dump_yaml(config))
        state = {"complete": optuna.trial.TrialState.COMPLETE, "pruned": optuna.trial.TrialState.PRUNED,
                 "fail": optuna.trial.TrialState.FAIL}[outcome["state"]]
        if state == optuna.trial.TrialState.COMPLETE:
            self.study.tell(trial, outcome["value"])
        else:
            self.study.tell(trial, state=state)
        row = {"number": number, "state": outcome["state"], "value": outcome["value"],
               "best_epoch": summary.get("best_epoch"), "epochs_run": summary.get("epochs_run"),
               "seconds": outcome.get("seconds"), "training_seconds": summary.get("seconds"),
               "worker": outcome.get("worker"), "error": outcome.get("error"), "params": params}
        self.rows[number] = row
        if outcome["state"] == "complete" and self.is_better(row["value"]):
            self.best = row
            self.sweep_dir.write_best(config, f"best trial {number} of sweep {self.sweep_dir.name}: "
                                              f"{self.sweep.metric} {row['value']:.6g} (epoch {row['best_epoch']})")
        self.sweep_dir.write_rows(list(self.rows.values()))
        self.sweep_dir.write_summary(self.summary(None, None, finished=False))
        self.emit("trial", {"row": row, "counts": self.counts(), "best": self.best, "trials": self.sweep.trials})

    def is_better(self, value: float) -> bool:
        if self.best is None:
            return True
        return value > self.best["value"] if self.sweep.direction == "maximize" else value < self.best["value"]

    def counts(self) -> dict:
        counts = {state: 0 for state in STATES}
        for row in self.rows.values():
            counts[row["state"]] += 1
        return counts

    def summary(self, seconds: float | None, storage: str | None, finished: bool) -> dict:
        rows = self.rows.values()
        trial_seconds = sum(row["seconds"] or 0.0 for row in rows)
        training_seconds = sum(row["training_seconds"] or 0.0 for row in rows)
        best = None
        if self.best:
            best = {key: self.best[key] for key in ("number", "value", "best_epoch", "params")}
            best.update(run_dir=str(self.sweep_dir.trial(self.best["number"])), config=str(self.sweep_dir.best_yaml))
        return {"sweep_dir": str(self.sweep_dir), "finished": finished, "metric": self.sweep.metric,
                "direction": self.sweep.direction, "sampler": self.sweep.sampler, "seed": self.sweep.seed,
                "pruner": self.sweep.pruner, "trials": {"requested": self.sweep.trials, **self.counts()},
                "best": best, "seconds": round(seconds, 3) if seconds is not None else None,
                "trial_seconds": round(trial_seconds, 3), "training_seconds": round(training_seconds, 3),
                "slots": self.cluster.slots(), "cluster": "local" if self.cluster.local else self.cluster.address,
                "storage": storage}


def refusal(error: ConfigError) -> str:
    """A trial's refused config in one paragraph: 'config refused: optimizer.nesterov=true: ...; ...'."""
    return "config refused: " + "; ".join(line.removeprefix("--set ") for line in problem_lines(error))


def _json_file(data: bytes | None) -> dict:
    if not data:
        return {}
    try:
        return json.loads(data)
    except ValueError:
        return {}
