"""Progress while training: Rich bars on a terminal, or one plain line per epoch (logs, pipes, CI, NO_COLOR).

These are ordinary training callbacks (bpcli.training.callbacks), kept here
because only the command line prints.
"""

from __future__ import annotations

import time

from bpcli.nn.metrics import format_metric
from bpcli.training.callbacks import Callback

def format_row(row: dict, epochs: int) -> str:
    """One line per epoch, short enough for an 100-column terminal: the figures of metrics.csv."""
    parts = [f"epoch {row['epoch']}/{epochs}"]
    parts += [format_metric(key, value) for key, value in row.items()
              if key.startswith(("train_", "val_")) and value is not None]
    parts.append(f"lr {row['lr']:.3g}  grad {row['grad_norm']:.3g}  {row['seconds']:.1f}s")
    return "  ".join(parts)


class PlainProgress(Callback):
    """One line per epoch on stderr: for logs, pipes and CI (no cursor or colour codes)."""

    def __init__(self, stream):
        self.stream = stream

    def on_epoch_end(self, loop, row):
        print(format_row(row, loop.epochs), file=self.stream, flush=True)


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

    def on_train_begin(self, loop):
        self.progress.start()
        self.epoch_task = self.progress.add_task("epochs", total=loop.epochs, completed=loop.epoch, stats="")
        self.batch_task = self.progress.add_task("batches", total=loop.batches_per_epoch, stats="")

    def on_batch_end(self, loop):
        now = time.monotonic()
        if now - self.last_draw < 0.1:
            return
        self.last_draw = now
        live = loop.live_stats()
        stats = "  ".join(format_metric(key, value) for key, value in live.items() if key != "lr")
        self.progress.update(self.batch_task, completed=loop.batch, stats=f"{stats}  lr {live['lr']:.3g}")

    def on_epoch_end(self, loop, row):
        self.progress.update(self.epoch_task, completed=row["epoch"])
        self.progress.reset(self.batch_task, total=loop.batches_per_epoch, stats="")
        self.progress.console.print(format_row(row, loop.epochs), soft_wrap=True)

    def on_train_end(self, loop, summary):
        self.progress.stop()
