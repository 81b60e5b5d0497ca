"""The sweep directory: the one place that knows the name of every file a sweep writes.

    sweeps/spirals-lr-20261202-120000/
        .lock                  held by the bpcli process driving the sweep (an OS lock)
        sweep.yaml             the sweep file, resolved (every default filled in, the base's path absolute)
        base.yaml              the base config's text as the sweep read it (a resumed sweep builds trials from it)
        study.journal          the Optuna study (a JournalStorage file), unless --storage names another
        trials/<n>/            trial n's run directory, as `bpcli train` makes one: eval, inspect, plot take it
        trials.csv, .jsonl     a row per trial: number, state, value, best epoch, epochs, seconds, worker,
                               the epoch it continued from (its worker died, or the sweep was resumed),
                               error, and its params
        best.yaml              the best trial's config, fully resolved: `bpcli train best.yaml` trains it again
        summary.json           the sweep's outcome: counts, the best trial, times, the cluster

Every file is written whole and atomically (fileio.write_file) each time it
changes, so a sweep killed at any moment leaves files that read.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import time
from pathlib import Path

from bpcli.config.yamlio import dump_yaml
from bpcli.errors import CheckpointError
from bpcli.fileio import create_folder, lock_folder, read_log_rows, write_file

def ranked(rows: list[dict], direction: str) -> list[dict]:
    """The trials with a value, best first: complete ones, then pruned ones (their value is an early epoch's)."""
    sign = -1 if direction == "maximize" else 1
    scored = [row for row in rows if row["state"] in ("complete", "pruned") and row["value"] is not None]
    return sorted(scored, key=lambda row: (row["state"] != "complete", sign * row["value"], row["number"]))


COLUMNS = ("number", "state", "value", "best_epoch", "epochs_run", "seconds", "training_seconds", "worker",
           "continued_from_epoch", "error")


class SweepDir:
    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __str__(self) -> str:
        return str(self.path)

    @property
    def name(self) -> str:
        return self.path.name

    sweep_yaml = property(lambda self: self.path / "sweep.yaml")
    base_yaml = property(lambda self: self.path / "base.yaml")
    study = property(lambda self: self.path / "study.journal")
    trials_dir = property(lambda self: self.path / "trials")
    trials_csv = property(lambda self: self.path / "trials.csv")
    trials_jsonl = property(lambda self: self.path / "trials.jsonl")
    best_yaml = property(lambda self: self.path / "best.yaml")
    summary = property(lambda self: self.path / "summary.json")

    def trial(self, number: int) -> Path:
        return self.trials_dir / str(number)

    # -- making one ----------------------------------------------------------------------------------

    @classmethod
    def create(cls, parent: str | Path, base: str, sweep_text: str, base_text: str) -> SweepDir:
        """parent/<base>-<YYYYmmdd-HHMMSS> (-2, -3, ...) holding sweep.yaml and base.yaml, made whole under a
        hidden name."""
        def fill(staging: Path) -> None:
            write_file(staging / "sweep.yaml", sweep_text, "sweep file")
            write_file(staging / "base.yaml", base_text, "config")
            (staging / "trials").mkdir()

        return cls(create_folder(parent, f"{base}-{time.strftime('%Y%m%d-%H%M%S')}", fill, "sweep directory"))

    def is_sweep(self) -> bool:
        return self.sweep_yaml.is_file() and self.base_yaml.is_file()

    def lock(self) -> int:
        """Take the sweep's OS lock (it dies with the process); refuse if another process drives the sweep."""
        fd = lock_folder(self.path)
        if fd is None:
            raise CheckpointError(f"sweep directory {self} is in use by another bpcli process; wait for it to "
                                  "finish (or stop it), then resume")
        return fd

    @staticmethod
    def unlock(fd: int) -> None:
        os.close(fd)

    def remove_stale_study_locks(self) -> list[Path]:
        """Remove the journal locks (Optuna's `study.journal.lock` and a copy's) a killed driver left behind.

        Call it holding the sweep's OS lock: only the process driving the sweep writes
        its journal (the local scheduler runs there), so a journal lock found then is
        stale. Left in place, Optuna would wait for it: 30 s at best, forever when the
        lock is a symlink to a relative path (Optuna's lock is a symlink to the journal
        file, and its grace period only runs while os.stat can follow the link).
        """
        stale = [p for p in self.path.glob(f"*{self.study.name}*.lock") if p.is_symlink() or p.is_file()]
        for lock in stale:
            lock.unlink(missing_ok=True)
        return stale

    # -- writing -------------------------------------------------------------------------------------

    def write_trial(self, number: int, files: dict[str, bytes], config_text: str) -> Path:
        """Trial n's run directory from the files a worker sent, its config.yaml the one this machine resolved.

        The worker trained under a temporary folder of its own; the config written here names the
        base config's output folder instead, so `bpcli train trials/<n>/config.yaml` runs anywhere.
        """
        target = self.trial(number)
        strays = [name for name in files if Path(name).is_absolute() or ".." in Path(name).parts]
        if strays:
            raise CheckpointError(f"trial {number}'s files came back with paths outside its run directory "
                                  f"({', '.join(strays[:3])}); nothing of it was written")
        staging = self.trials_dir / f".{number}.arriving"
        shutil.rmtree(staging, ignore_errors=True)
        try:
            for relative, data in files.items():
                path = staging / relative
                path.parent.mkdir(parents=True, exist_ok=True)
                write_file(path, data, "trial file")
            staging.mkdir(exist_ok=True)
            (staging / "checkpoints").mkdir(exist_ok=True)
            write_file(staging / "config.yaml", config_text, "config")
            if target.exists():
                shutil.rmtree(target)
            os.rename(staging, target)
        except OSError as error:
            raise CheckpointError(f"cannot write trial {number}'s run directory {target}: "
                                  f"{error.strerror or error}") from None
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return target

    def write_rows(self, rows: list[dict]) -> None:
        """trials.csv and trials.jsonl, a row per trial by number, rewritten whole."""
        rows = sorted(rows, key=lambda row: row["number"])
        params = list(dict.fromkeys(key for row in rows for key in row["params"]))
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, [*COLUMNS, *params], lineterminator="\n")
        writer.writeheader()
        writer.writerows({**{k: row.get(k) for k in COLUMNS}, **row["params"]} for row in rows)
        write_file(self.trials_csv, buffer.getvalue(), "log")
        write_file(self.trials_jsonl, "".join(json.dumps(row) + "\n" for row in rows), "log")

    def write_best(self, config: dict, note: str) -> None:
        write_file(self.best_yaml, f"# {note}\n# Train it again: bpcli train {self.best_yaml}\n" + dump_yaml(config),
                   "config")

    def write_summary(self, summary: dict) -> None:
        write_file(self.summary, json.dumps(summary, indent=2) + "\n", "summary")

    # -- reading -------------------------------------------------------------------------------------

    def read_rows(self) -> list[dict]:
        """trials.jsonl's rows ([] without the file); it is written whole, so a line that does not parse is
        not expected, and is skipped (the study holds every finished trial's row too)."""
        return read_log_rows(self.trials_jsonl, key="number")

    def search(self, curves: int = 5) -> dict:
        """What `bpcli plot SWEEP_DIR` draws (plots/sweep.py): every trial's row, and the metric per epoch of
        the `curves` best trials, from their run directories' metrics.jsonl."""
        summary, rows = self.read_summary(), self.read_rows()
        metric, direction = summary.get("metric", "value"), summary.get("direction", "minimize")
        best = ranked(rows, direction)[:curves]
        per_epoch = {row["number"]: [(r["epoch"], r[metric]) for r in read_log_rows(self.trial(row["number"])
                                                                                   / "metrics.jsonl")
                                     if isinstance(r.get(metric), (int, float))]
                     for row in best}
        return {"title": f"sweep {self.name}: {len(rows)} trials, {metric} ({direction})", "metric": metric,
                "direction": direction, "trials": rows, "curves": per_epoch}

    def read_summary(self) -> dict:
        try:
            return json.loads(self.summary.read_text())
        except (OSError, ValueError):
            return {}
