"""Callbacks: what happens around the training loop without being the loop.

Contract (Keras's hooks, all called by the Trainer, in list order):

    on_train_begin(loop)               before the first batch (also of a resumed run)
    on_batch_begin(loop)               before each batch's forward pass
    on_gradients(loop, dtheta)         between backward and clipping: the gradients as backprop made them
    on_batch_end(loop)                 after the optimizer step
    on_epoch_end(loop, row)            `row`: epoch, train_loss, train_accuracy, val_loss, val_accuracy,
                                       lr, grad_norm, seconds
    on_train_end(loop, summary)        however the run ends (completed, stopped, interrupted, diverged)
    state_dict() / load_state_dict()   whatever a resumed run needs, kept in checkpoints

`loop` is a LoopView: a callback reads the loop's state through it (epoch,
batch, the model's weights, the monitored best) and asks for actions
(`request_stop`); it never reaches into the Trainer. Early stopping comes
first in the list (it decides whether this epoch is the last), then
diagnostics and logs, then checkpoints (a `last` checkpoint of epoch N is
written after the logs' row N, which resume keeps), then progress.
"""

from __future__ import annotations

import math
import time

from bpcli.errors import CheckpointError
from bpcli.training.checkpoint import load_checkpoint, monitor_state, save_checkpoint
from bpcli.training.rundir import RunDir


class Callback:
    def on_train_begin(self, loop) -> None: ...

    def on_batch_begin(self, loop) -> None: ...

    def on_gradients(self, loop, dtheta) -> None: ...

    def on_batch_end(self, loop) -> None: ...

    def on_epoch_end(self, loop, row: dict) -> None: ...

    def on_train_end(self, loop, summary: dict) -> None: ...

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None: ...


class LoopView:
    """What a callback may see of the training loop, and the one thing it may ask of it: to stop."""

    def __init__(self, trainer):
        self._trainer = trainer

    epoch = property(lambda self: self._trainer.epoch, doc="Epochs completed.")
    batch = property(lambda self: self._trainer.batch, doc="Batches completed in the current epoch.")
    step = property(lambda self: self._trainer.step, doc="Optimizer steps taken.")
    epochs = property(lambda self: self._trainer.epochs, doc="Epochs the run is set to train.")
    batches_per_epoch = property(lambda self: self._trainer.batches_per_epoch)
    batch_size = property(lambda self: self._trainer.batch_size, doc="Examples per batch (the last may be short).")
    samples_per_epoch = property(lambda self: len(self._trainer.data.x_train), doc="Training examples per epoch.")
    base_lr = property(lambda self: self._trainer.base_lr, doc="optimizer.lr, before the schedule.")
    model = property(lambda self: self._trainer.parts.model, doc="The model, to read (diagnostics).")
    monitor = property(lambda self: self._trainer.monitor, doc="The monitored metric's best epoch and weights.")
    stop_reason = property(lambda self: self._trainer.stop_reason, doc="Why training ends, once it is decided.")
    interrupted = property(lambda self: self._trainer.stop.signum is not None, doc="Ctrl-C or SIGTERM arrived.")

    def metric_columns(self) -> list[str]:
        return self._trainer.metric_columns()

    def live_stats(self) -> dict:
        """The unfinished epoch so far: loss, accuracy (classification), lr."""
        return self._trainer.live_stats()

    def checkpoint(self, kind: str, weights: dict | None = None) -> tuple[dict, dict]:
        """(tensors, meta) of a checkpoint of the current state, with `weights` instead of the model's if given."""
        return self._trainer.checkpoint(kind, weights)

    def request_stop(self, reason: str) -> None:
        """End training after this epoch (the first reason given is the one reported)."""
        self._trainer.stop_reason = self._trainer.stop_reason or reason


class EarlyStopping(Callback):
    """Stops after `patience` consecutive epochs in which the monitored metric did not improve.

    What counts as an improvement (min_delta, mode) is the Monitor's; this only counts the bad epochs.
    """

    def __init__(self, patience: int):
        self.patience, self.bad_epochs = patience, 0

    def on_epoch_end(self, loop, row):
        monitor = loop.monitor
        self.bad_epochs = 0 if monitor.improved else self.bad_epochs + 1
        if self.bad_epochs >= self.patience:
            loop.request_stop(f"early stopping: {monitor.metric} did not improve for {self.patience} epochs "
                              f"(best {monitor.best:.6g} at epoch {monitor.best_epoch})")

    def state_dict(self):
        return {"bad_epochs": self.bad_epochs}

    def load_state_dict(self, state):
        self.bad_epochs = state.get("bad_epochs", 0)


class CheckpointCallback(Callback):
    """Saves `last` and `best` as epochs end, and a checkpoint every N epochs (keeping K).

    The `last` it replaces is kept as `last.prev`, so a damaged `last` has a fallback.
    `last` is always written after the others, and after the run's logs are made
    durable: a `last` of epoch N on disk means the best and periodic checkpoints and
    the log rows of its epochs are complete, and a resumed run redoes whatever came
    after it.

    `last` (and a new `best`) is written at most once per `interval` seconds, and
    always after the final epoch, so a run of thousands of tiny epochs does not
    spend its time writing files. Nothing is lost by waiting: a run resumed from
    an older `last` redoes those epochs and ends bit for bit the same. The `best`
    checkpoint is taken as its epoch ends (weights, metadata) and written when
    `last` next is, so its bytes depend on the best epoch alone, never on when
    it was saved; whatever the summary calls best is on disk when the run ends,
    however it ends (diverged, interrupted); a resumed run first repairs a best a
    crash left stale.
    """

    def __init__(self, run: RunDir, every: int = 0, keep: int = 3, interval: float = 1.0):
        self.run, self.every, self.keep, self.interval = run, every, keep, interval
        self.last_save, self.best_saved = -math.inf, None
        self.best_taken: tuple[dict, dict] | None = None   # (tensors, meta) of the best epoch, not yet written

    def on_train_begin(self, loop):
        self.ensure_best(loop)

    def on_epoch_end(self, loop, row):
        if loop.monitor.improved:
            tensors, meta = loop.checkpoint("best", loop.monitor.weights)
            # The loop goes on changing its state in place; the resolved config (half the copying) never changes.
            self.best_taken = tensors, {k: v if k == "config" else copied(v) for k, v in meta.items()}
        if self.every and row["epoch"] % self.every == 0:
            save_checkpoint(self.run.epoch_checkpoint(row["epoch"]), *loop.checkpoint("epoch"))
            for old in self.run.epoch_checkpoints()[:-self.keep]:
                old.unlink(missing_ok=True)
        final = loop.epoch >= loop.epochs or loop.stop_reason is not None
        if final or time.monotonic() - self.last_save >= self.interval:
            self.ensure_best(loop)
            self.save_last(loop)

    def on_train_end(self, loop, summary):
        self.ensure_best(loop)
        if loop.interrupted:   # mid-epoch: the partial sums and the batch count resume it exactly
            self.save_last(loop)

    def save_last(self, loop) -> None:
        """The resumable state now (also mid-epoch, when a run is interrupted), after the logs it vouches for."""
        self.run.sync_logs()
        save_checkpoint(self.run.last, *loop.checkpoint("last"), backup=self.run.last_prev)
        self.last_save = time.monotonic()

    def ensure_best(self, loop) -> None:
        """Write `best` unless the file on disk already holds the monitored best epoch."""
        monitor = loop.monitor
        if monitor.weights is None or self.best_saved == monitor.best_epoch:
            return
        if self.best_taken is not None:
            save_checkpoint(self.run.best, *self.best_taken)
        elif best_epoch_on_disk(self.run.best) != monitor.best_epoch:   # a resumed run, its best file stale
            save_checkpoint(self.run.best, *loop.checkpoint("best", monitor.weights))
        self.best_saved, self.best_taken = monitor.best_epoch, None


def copied(value):
    """A copy of checkpoint metadata (dicts and lists of numbers, strings, None), as copy.deepcopy would make
    it in a third of the time: a run of many tiny epochs takes a best snapshot at almost every epoch."""
    if isinstance(value, dict):
        return {k: copied(v) for k, v in value.items()}
    if isinstance(value, list):
        return [copied(v) for v in value]
    return value


def best_epoch_on_disk(path) -> int | None:
    """The best epoch a best checkpoint holds, or None if it is missing or unreadable."""
    try:
        meta = load_checkpoint(path).meta
    except CheckpointError:
        return None
    return monitor_state(meta).get("best_epoch")


class MetricsLogger(Callback):
    """metrics.csv and metrics.jsonl, one row per epoch.

    These files are the run's metric history (checkpoints keep only the latest
    and best rows). Rows are written in batches, at the latest a quarter second
    after the last write, always before a `last` checkpoint (which makes them
    durable) and when the run ends (rowlog.py). At the start of a resumed run
    both files are rewritten with the rows of the epochs its checkpoint holds,
    so they never show a duplicated or lost row, whatever state a crash left
    the files in.
    """

    def __init__(self, run: RunDir, on_warning=None):
        self.run, self.on_warning = run, on_warning
        self.log = None

    def on_train_begin(self, loop):
        self.log = self.run.row_log(self.run.metrics_csv, self.run.metrics_jsonl, loop.metric_columns())
        kept = self.log.start(loop.epoch)
        missing = loop.epoch - len(kept)
        if missing and self.on_warning:
            self.on_warning(f"{self.run.metrics_jsonl} lacks the rows of {missing} of the {loop.epoch} epochs "
                            "done (resumed from a checkpoint kept outside this run directory, or the file was "
                            "removed): the metric files go on without them")

    def on_batch_end(self, loop):
        self.log.write_if_due()   # a row held back by a fast epoch is not kept waiting through a slow one

    def on_epoch_end(self, loop, row):
        self.log.append([row])
