"""Callbacks: what happens around the training loop without being the loop.

Contract (Keras's hooks): on_train_begin(trainer), on_batch_end(trainer),
on_epoch_end(trainer, row), on_train_end(trainer, summary); state_dict() and
load_state_dict() hold whatever a resumed run needs. `row` is the epoch's
metrics: epoch, train_loss, train_accuracy, val_loss, val_accuracy, lr,
grad_norm, seconds. They run in list order: early stopping first (it decides
what "best" is), then checkpoints, logs and progress.

Early stopping semantics, in one place: an epoch improves on the best when the
monitored value is strictly below best - min_delta (mode min) or strictly above
best + min_delta (mode max); min_delta is absolute. Patience counts epochs:
training stops after `patience` consecutive epochs without improvement. With
restore_best the final model is the best epoch's, however the run ends.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import time
from pathlib import Path

import numpy as np

from bpcli.fileio import atomic_write_bytes, write_error
from bpcli.nn.metrics import resolve_mode


class Callback:
    def on_train_begin(self, trainer) -> None: ...

    def on_batch_end(self, trainer) -> None: ...

    def on_epoch_end(self, trainer, row: dict) -> None: ...

    def on_train_end(self, trainer, summary: dict) -> None: ...

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None: ...


class EarlyStopping(Callback):
    """Tracks the best epoch of the monitored metric; stops after `patience` epochs without improvement.

    With patience None it only tracks the best (for the best checkpoint and
    restore_best). The best weights (theta and buffers) are copied when they
    improve, so they can be restored however the run ends.
    """

    def __init__(self, monitor: str = "val_loss", mode: str = "auto", patience: int | None = None,
                 min_delta: float = 0.0, restore_best: bool = True):
        self.monitor, self.mode = monitor, resolve_mode(monitor, mode)
        self.patience, self.min_delta, self.restore_best = patience, min_delta, restore_best
        self.best, self.best_epoch, self.bad_epochs = None, 0, 0
        self.improved = False
        self.best_weights: dict[str, np.ndarray] | None = None

    def is_improvement(self, value: float) -> bool:
        if value is None or not np.isfinite(value):
            return False
        if self.best is None:
            return True
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta

    def update(self, value: float, epoch: int) -> bool:
        """Record one epoch's value; returns whether training should stop."""
        self.improved = self.is_improvement(value)
        if self.improved:
            self.best, self.best_epoch, self.bad_epochs = float(value), epoch, 0
        else:
            self.bad_epochs += 1
        return self.patience is not None and self.bad_epochs >= self.patience

    def on_epoch_end(self, trainer, row):
        if self.update(row.get(self.monitor), row["epoch"]):
            trainer.stop_reason = (f"early stopping: {self.monitor} did not improve for {self.patience} epochs "
                                   f"(best {self.best:.6g} at epoch {self.best_epoch})")
        if self.improved:
            self.best_weights = trainer.weights()

    def restore(self, trainer) -> bool:
        """Put the best weights back into the model; returns whether it did."""
        if not (self.restore_best and self.best_weights):
            return False
        trainer.set_weights(self.best_weights)
        return True

    def state_dict(self):
        return {"best": self.best, "best_epoch": self.best_epoch, "bad_epochs": self.bad_epochs}

    def load_state_dict(self, state):
        self.best, self.best_epoch, self.bad_epochs = state["best"], state["best_epoch"], state["bad_epochs"]


LAST, PREVIOUS = "last.safetensors", "last.prev.safetensors"


class CheckpointCallback(Callback):
    """Saves `last` and `best` as epochs end, and a checkpoint every N epochs (keeping K).

    The `last` it replaces is kept as `last.prev`, so a damaged `last` has a fallback.

    `last` (and a new `best`) is written at most once per `interval` seconds, and
    always after the final epoch, so a run of thousands of tiny epochs does not
    spend its time writing files. Nothing is lost by waiting: a run resumed from
    an older `last` redoes those epochs and ends bit for bit the same. `best`
    is written from the tracker's copy of the best weights, so it is never stale.
    """

    def __init__(self, folder: Path, tracker: EarlyStopping, every: int = 0, keep: int = 3, interval: float = 1.0):
        self.folder, self.tracker, self.every, self.keep, self.interval = Path(folder), tracker, every, keep, interval
        self.last_save, self.best_saved = -math.inf, None

    def on_epoch_end(self, trainer, row):
        final = trainer.epoch >= trainer.epochs or trainer.stop_reason is not None
        if final or time.monotonic() - self.last_save >= self.interval:
            trainer.save_checkpoint(self.folder / LAST, "last", backup=self.folder / PREVIOUS)
            self.last_save = time.monotonic()
            if self.tracker.best_weights is not None and self.best_saved != self.tracker.best_epoch:
                trainer.save_checkpoint(self.folder / "best.safetensors", "best", self.tracker.best_weights)
                self.best_saved = self.tracker.best_epoch
        if self.every and row["epoch"] % self.every == 0:
            trainer.save_checkpoint(self.folder / f"epoch-{row['epoch']:04d}.safetensors", "epoch")
            for old in sorted(self.folder.glob("epoch-*.safetensors"))[:-self.keep]:
                old.unlink(missing_ok=True)


class MetricsLogger(Callback):
    """metrics.csv and metrics.jsonl, one row per epoch, appended and synced as each epoch ends.

    At the start (and on resume) both files are rewritten from the history the
    checkpoint carries, so a resumed run never shows a duplicated or lost row,
    whatever state a crash left the files in.
    """

    def __init__(self, folder: Path):
        self.csv_path, self.jsonl_path = Path(folder) / "metrics.csv", Path(folder) / "metrics.jsonl"
        self.columns: list[str] = []

    def on_train_begin(self, trainer):
        self.columns = trainer.metric_columns()
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, self.columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(trainer.history)
        write_log(self.csv_path, buffer.getvalue(), atomic=True)
        write_log(self.jsonl_path, "".join(json.dumps(r) + "\n" for r in trainer.history), atomic=True)

    def on_epoch_end(self, trainer, row):
        buffer = io.StringIO()
        csv.DictWriter(buffer, self.columns, lineterminator="\n").writerow(row)
        write_log(self.csv_path, buffer.getvalue())
        write_log(self.jsonl_path, json.dumps(row) + "\n")


def write_log(path: Path, text: str, atomic: bool = False) -> None:
    """Append to a log and sync it; or (atomic) replace it whole, so a crash leaves the old or the new file."""
    try:
        if atomic:
            atomic_write_bytes(path, text.encode())
            return
        with open(path, "a") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
    except OSError as error:
        raise write_error(path, error, "log") from None


SHORT_NAMES = {"train_loss": "loss", "train_accuracy": "acc", "val_loss": "val_loss", "val_accuracy": "val_acc"}


def format_row(row: dict, epochs: int) -> str:
    """One line per epoch, short enough for an 100-column terminal: the figures of metrics.csv."""
    parts = [f"epoch {row['epoch']}/{epochs}"]
    for key, short in SHORT_NAMES.items():
        if row.get(key) is not None:
            parts.append(f"{short} {row[key]:.2%}" if "accuracy" in key else f"{short} {row[key]:.4f}")
    parts.append(f"lr {row['lr']:.3g}  grad {row['grad_norm']:.3g}  {row['seconds']:.1f}s")
    return "  ".join(parts)


class PlainProgress(Callback):
    """One line per epoch on stderr: for logs, pipes and CI (no cursor or colour codes)."""

    def __init__(self, stream):
        self.stream = stream

    def on_epoch_end(self, trainer, row):
        print(format_row(row, trainer.epochs), file=self.stream, flush=True)


class RichProgress(Callback):
    """An epoch bar and a batch bar with live loss, accuracy and learning rate, plus a line per epoch.

    The batch bar is refreshed at most ten times a second, so a fast epoch of
    thousands of small batches does not pay for drawing.
    """

    def __init__(self, console):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeRemainingColumn(), TextColumn("{task.fields[stats]}"), console=console,
                                 transient=True)
        self.last_draw = 0.0

    def on_train_begin(self, trainer):
        self.progress.start()
        self.epoch_task = self.progress.add_task("epochs", total=trainer.epochs, completed=trainer.epoch, stats="")
        self.batch_task = self.progress.add_task("batches", total=trainer.batches_per_epoch, stats="")

    def on_batch_end(self, trainer):
        now = time.monotonic()
        if now - self.last_draw < 0.1:
            return
        self.last_draw = now
        live = trainer.live_stats()
        stats = f"loss {live['loss']:.4f}" + (f"  acc {live['accuracy']:.2%}" if "accuracy" in live else "")
        self.progress.update(self.batch_task, completed=trainer.batch, stats=f"{stats}  lr {live['lr']:.3g}")

    def on_epoch_end(self, trainer, row):
        self.progress.update(self.epoch_task, completed=row["epoch"])
        self.progress.reset(self.batch_task, total=trainer.batches_per_epoch, stats="")
        self.progress.console.print(format_row(row, trainer.epochs), soft_wrap=True)

    def on_train_end(self, trainer, summary):
        self.progress.stop()
