"""Progress while training: a live bar on a terminal, or plain lines (logs, pipes, CI).

A terminal gets the live bars whether or not NO_COLOR is set (console() drops the colour,
not the redrawing). Either way a long run does not print a line per epoch: like Keras's
verbose=2 but thinned, about LINES epoch lines spread over the run (the first, every
ceil(epochs / LINES)-th, the last) and each new best of the monitored metric, marked.
Every epoch is in metrics.csv.

These are ordinary training callbacks (bpcli.training.callbacks), kept here
because only the command line prints.
"""

from __future__ import annotations

import math
import time

from bpcli.nn.metrics import format_metric
from bpcli.training.callbacks import Callback

LINES = 50          # epoch lines a run prints, about, besides its new bests
BEST = "  * best"   # the mark of an epoch that set a new best


def format_row(row: dict, epochs: int, best: str | None = None) -> str:
    """One line per epoch, short enough for an 100-column terminal: the figures of metrics.csv; `best` names the
    monitored metric when this epoch set a new best of it."""
    parts = [f"epoch {row['epoch']}/{epochs}"]
    parts += [format_metric(key, value) for key, value in row.items()
              if key.startswith(("train_", "val_")) and value is not None]
    parts.append(f"lr {row['lr']:.3g}  grad {row['grad_norm']:.3g}  {row['seconds']:.1f}s")
    return "  ".join(parts) + (f"{BEST} {best}" if best else "")


def line_every(epochs: int) -> int:
    return max(1, math.ceil(epochs / LINES))


def ordinal(n: int) -> str:
    return f"{n}{'th' if 10 <= n % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th')}"


class EpochLines:
    """Which epochs get a line: the first, every line_every(epochs)-th, the last, and new bests.

    A metric that improves epoch after epoch (a training loss) would make every epoch a new
    best, so of a streak of new bests only the one that ends it gets its own line, printed
    as the next epoch ends (or as training ends); the streak's earlier epochs are in
    metrics.csv, and a streak's epoch that falls on a regular line is marked there.
    """

    def __init__(self):
        self.pending: str | None = None   # the latest new best's line, held until the streak ends

    def header(self, loop) -> str | None:
        """What the thinning leaves out, said once; None when every epoch gets a line."""
        every = line_every(loop.epochs)
        if every == 1:
            return None
        return (f"epoch lines: the first, every {ordinal(every)}, the last and each new best {loop.monitor.metric} "
                f"(marked *); every epoch is in metrics.csv")

    def lines(self, loop, row: dict) -> list[str]:
        """The lines to print now that `row`'s epoch has ended."""
        epoch, improved, metric = row["epoch"], loop.monitor.improved, loop.monitor.metric
        out = [self.pending] if self.pending and not improved else []
        self.pending = None
        last = epoch >= loop.epochs or loop.stop_reason is not None
        if epoch == 1 or last or epoch % line_every(loop.epochs) == 0:
            out.append(format_row(row, loop.epochs, metric if improved else None))
        elif improved:
            self.pending = format_row(row, loop.epochs, metric)
        return out

    def flush(self) -> list[str]:
        """The held new best, when training ends before the next epoch does (Ctrl-C, divergence)."""
        out, self.pending = [self.pending] if self.pending else [], None
        return out


class PlainProgress(Callback):
    """Epoch lines on stderr: for logs, pipes and CI (no cursor or colour codes)."""

    def __init__(self, stream):
        self.stream, self.epoch_lines = stream, EpochLines()

    def on_train_begin(self, loop):
        self.write([self.epoch_lines.header(loop)])

    def on_epoch_end(self, loop, row):
        self.write(self.epoch_lines.lines(loop, row))

    def on_train_end(self, loop, summary):
        self.write(self.epoch_lines.flush())

    def write(self, lines) -> None:
        for line in filter(None, lines):
            print(line, file=self.stream, flush=True)


class RichProgress(Callback):
    """An epoch bar (elapsed, ETA, the best so far) and a batch bar (samples/s, live loss, accuracy and
    learning rate), with the epoch lines printed above them.

    The batch bar is refreshed at most ten times a second, so a fast epoch of
    thousands of small batches does not pay for drawing.
    """

    def __init__(self, console):
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                   TimeRemainingColumn)

        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("eta"),
                                 TimeRemainingColumn(), TextColumn("{task.fields[stats]}"), console=console,
                                 transient=True)
        self.epoch_lines, self.last_draw = EpochLines(), 0.0
        self.epoch_started: float | None = None   # when this session's first batch of the epoch began
        self.first_batch = 0                      # that batch (a resumed run may start mid-epoch)

    def on_train_begin(self, loop):
        self.print([self.epoch_lines.header(loop)])
        self.progress.start()
        self.epoch_task = self.progress.add_task("epochs", total=loop.epochs, completed=loop.epoch, rate="",
                                                 stats=best_so_far(loop))
        self.batch_task = self.progress.add_task("batches", total=loop.batches_per_epoch, rate="", stats="")

    def on_batch_begin(self, loop):
        if self.epoch_started is None:
            self.epoch_started, self.first_batch = time.monotonic(), loop.batch

    def on_batch_end(self, loop):
        now = time.monotonic()
        if now - self.last_draw < 0.1:
            return
        self.last_draw = now
        live = loop.live_stats()
        stats = "  ".join(format_metric(key, value) for key, value in live.items() if key != "lr")
        self.progress.update(self.batch_task, completed=loop.batch, rate=self.rate(loop, now),
                             stats=f"{stats}  lr {live['lr']:.3g}")

    def rate(self, loop, now: float) -> str:
        """'12,345 samples/s' over this epoch's batches so far."""
        samples = min(loop.batch * loop.batch_size, loop.samples_per_epoch) - self.first_batch * loop.batch_size
        return f"{samples / max(now - self.epoch_started, 1e-9):,.0f} samples/s"

    def on_epoch_end(self, loop, row):
        self.epoch_started = None
        self.progress.update(self.epoch_task, completed=row["epoch"], stats=best_so_far(loop))
        self.progress.reset(self.batch_task, total=loop.batches_per_epoch, rate="", stats="")
        self.print(self.epoch_lines.lines(loop, row))

    def on_train_end(self, loop, summary):
        self.print(self.epoch_lines.flush())
        self.progress.stop()

    def print(self, lines) -> None:
        for line in filter(None, lines):
            self.progress.console.print(line, soft_wrap=True, highlight=False, markup=False)


def best_so_far(loop) -> str:
    monitor = loop.monitor
    return "" if monitor.best is None else f"best {monitor.metric} {monitor.best:.4g} (epoch {monitor.best_epoch})"
