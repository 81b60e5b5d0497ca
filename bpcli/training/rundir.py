"""The run directory: the one place that knows the name of every file a run writes.

    runs/quickstart-20261202-120000/
        .lock                         held by the bpcli process writing the run (an OS lock)
        config.yaml                   the resolved config (every default filled in)
        metrics.csv, metrics.jsonl    one row per epoch
        layers.csv, layers.jsonl      one row per layer per epoch (diagnostics)
        summary.json                  how the run ended, best epoch, test metrics
        run.json                      how it was made: command, versions, host, times, git commit (per session)
        tb/                           TensorBoard event files, if asked (output.tensorboard)
        checkpoints/
            last.safetensors          the latest state, to resume from
            last.prev.safetensors     the one before it, in case `last` is damaged
            best.safetensors          the best epoch's weights
            epoch-0010.safetensors    every N epochs, if asked (the newest K kept)

Everyone else asks a RunDir for paths; nothing else spells these names.

A run directory appears whole: it is made under a hidden temporary name, its
config.yaml written, then renamed into place, so a crash never leaves a
folder that neither resumes nor lets a new run start. One process at a time
writes it: `lock()` takes an OS lock that dies with the process.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from bpcli.errors import CheckpointError
from bpcli.fileio import create_folder, lock_folder, remove_orphans, sync_file, write_file
from bpcli.training.checkpoint import SUFFIX
from bpcli.training.rowlog import RowLog


class RunDir:
    """Paths inside one run directory (which need not exist yet)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.open_logs: list[RowLog] = []   # those the loggers of a run in this process append to

    def __str__(self) -> str:
        return str(self.path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def __eq__(self, other) -> bool:
        return isinstance(other, RunDir) and self.path == other.path

    # -- files ---------------------------------------------------------------------------------------

    @property
    def config(self) -> Path:
        return self.path / "config.yaml"

    @property
    def metrics_csv(self) -> Path:
        return self.path / "metrics.csv"

    @property
    def metrics_jsonl(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def layers_csv(self) -> Path:
        return self.path / "layers.csv"

    @property
    def layers_jsonl(self) -> Path:
        return self.path / "layers.jsonl"

    @property
    def summary(self) -> Path:
        return self.path / "summary.json"

    @property
    def record(self) -> Path:
        """run.json: the reproducibility record, a session per `bpcli train` that wrote the run."""
        return self.path / "run.json"

    @property
    def tensorboard(self) -> Path:
        """The folder of TensorBoard event files (`tensorboard --logdir runs` finds it)."""
        return self.path / "tb"

    def logs(self) -> tuple[Path, ...]:
        """The files a run appends to as it trains."""
        return self.metrics_csv, self.metrics_jsonl, self.layers_csv, self.layers_jsonl

    def row_log(self, csv_path: Path, jsonl_path: Path, columns: list[str], key=("epoch",)) -> RowLog:
        """A pair of logs the run appends rows to (rowlog.py), reached by write_logs and sync_logs."""
        log = RowLog(csv_path, jsonl_path, columns, key)
        self.open_logs.append(log)
        return log

    def write_logs(self) -> None:
        """Write the rows the loggers hold back (they write in batches; rowlog.py says when)."""
        for log in self.open_logs:
            log.write()

    def sync_logs(self) -> None:
        """Make every row logged so far durable: written, then synced (rows are not synced one by one)."""
        self.write_logs()
        for log in self.logs():
            sync_file(log)

    # -- checkpoints ---------------------------------------------------------------------------------

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def last(self) -> Path:
        return self.checkpoints / f"last{SUFFIX}"

    @property
    def last_prev(self) -> Path:
        """The `last` before the newest one: the fallback when `last` is damaged."""
        return self.checkpoints / f"last.prev{SUFFIX}"

    @property
    def best(self) -> Path:
        return self.checkpoints / f"best{SUFFIX}"

    def epoch_checkpoint(self, epoch: int) -> Path:
        return self.checkpoints / f"epoch-{epoch:04d}{SUFFIX}"

    def epoch_checkpoints(self) -> list[Path]:
        """The periodic checkpoints on disk, oldest first."""
        return sorted(self.checkpoints.glob(f"epoch-*{SUFFIX}"))

    def has_last(self) -> bool:
        return any(self.checkpoints.glob(f"last*{SUFFIX}"))

    # -- what a folder or a checkpoint is ------------------------------------------------------------

    def is_run(self) -> bool:
        """Made by bpcli train: it has the resolved config."""
        return self.config.is_file()

    @classmethod
    def of_checkpoint(cls, checkpoint: str | Path) -> RunDir | None:
        """The run directory a checkpoint sits in (RUN/checkpoints/NAME.safetensors), or None for a loose one.

        Only a real run directory counts: a checkpoint kept elsewhere (models/m.safetensors)
        has no run around it whose files bpcli may write or clean, and neither has one whose
        checkpoints/ folder is a link into another place.
        """
        path = Path(checkpoint)
        run = cls(path.parent.parent)
        inside = path.parent.name == "checkpoints" and path.resolve().parent == run.checkpoints.resolve()
        return run if inside and run.is_run() and run.checkpoints_are_its_own() else None

    def checkpoints_are_its_own(self) -> bool:
        """checkpoints/ is a folder of this run, not a link that resolves into another run's."""
        return self.checkpoints.resolve().parent == self.path.resolve()

    def lock(self) -> int:
        """Take the run's OS lock (release it with `unlock`); refuse if another process holds it.

        flock dies with its process however it ends (SIGKILL too), so a stale lock never blocks a resume.
        """
        fd = lock_folder(self.path)
        if fd is None:
            raise CheckpointError(f"run directory {self} is in use by another bpcli process: two processes "
                                  "writing one run would corrupt it; wait for the other to finish (or stop it), "
                                  "then resume")
        return fd

    @staticmethod
    def unlock(fd: int) -> None:
        os.close(fd)   # closing the descriptor releases the flock

    def remove_orphans(self) -> list[Path]:
        """Temporary files a killed run left behind, in the folder and its checkpoints/, now deleted."""
        return remove_orphans(self.path) + remove_orphans(self.checkpoints)

    # -- making one ----------------------------------------------------------------------------------

    @classmethod
    def create(cls, parent: str | Path, name: str | None, config_stem: str, config_text: str) -> RunDir:
        """parent/<name>, or parent/<config stem>-<timestamp> (with -2, -3, ... if taken), holding config.yaml.

        Built under a hidden temporary name and renamed into place once config.yaml is in.
        """
        def fill(staging: Path) -> None:
            write_file(staging / "config.yaml", config_text, "config")
            (staging / "checkpoints").mkdir()

        base = name or f"{config_stem}-{time.strftime('%Y%m%d-%H%M%S')}"
        try:
            return cls(create_folder(parent, base, fill, "run directory", numbered=name is None))
        except FileExistsError:
            run = cls(Path(parent) / base)
            raise CheckpointError(f"run directory {run} already exists; continue it with --resume {run}, or "
                                  "choose another output.name") from None

