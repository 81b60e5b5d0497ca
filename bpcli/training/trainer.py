"""The training loop: epochs of batches, and everything a resume needs to continue exactly.

    for each epoch:
        for each batch, in an order drawn from (seed, epoch):
            callbacks.on_batch_begin
            train_step: forward, loss, backward, (callbacks.on_gradients), clip, update
            callbacks.on_batch_end
        end_epoch: the metric row, validation, reduce-on-plateau, the monitored best
        callbacks.on_epoch_end

The Trainer keeps the loop's state (step counts, the partial sums of an
unfinished epoch, the monitored best, the latest and best metric rows) and
hands it to checkpoints; a resumed run ends with the same weights, bit for bit,
as one done in one go. The metric history is not loop state: the MetricsLogger
callback keeps it in the run's metric files, so a checkpoint stays the same size
however long the run. Callbacks see the loop through a LoopView (callbacks.py).
"""

from __future__ import annotations

import math
import time

import numpy as np

from bpcli.version import __version__
from bpcli.config.sections import Config, resolved_dict
from bpcli.data.augment import augmenter_for
from bpcli.data.preprocessing import Prepared
from bpcli.errors import DivergedError, Interrupted
from bpcli.nn.metrics import evaluate, metrics_for
from bpcli.training.callbacks import Callback, LoopView
from bpcli.training.checkpoint import Checkpoint, monitor_state
from bpcli.training.denormals import flush_denormals
from bpcli.training.interrupts import StopRequest
from bpcli.training.monitor import Monitor
from bpcli.training.step import Clipping, Parts, epoch_order, train_step


def fresh_partial(tallied) -> dict:
    """Running sums of the unfinished epoch (kept in checkpoints, so a mid-epoch resume logs the same row).

    A tallied metric (accuracy) keeps <name>_sum and <name>_n: the epoch's train_<name> is their ratio.
    """
    sums = {"loss_sum": 0.0, "count": 0, "grad_norm_sum": 0.0, "batches": 0, "seconds": 0.0, "lr": 0.0}
    for metric in tallied:
        sums.update({f"{metric.name}_sum": 0, f"{metric.name}_n": 0})
    return sums


def _format_1_partial(partial: dict) -> dict:
    """Checkpoints written before the metric registry counted accuracy as correct/outputs."""
    renamed = {"correct": "accuracy_sum", "outputs": "accuracy_n"}
    return {renamed.get(k, k): v for k, v in partial.items()}


def listeners(callbacks: list[Callback]) -> dict[str, list]:
    """{hook: the bound methods of the callbacks that define it, in list order}: a batch calls only those
    (four hooks a batch, each a no-op for most callbacks, cost a run of 3,200 small batches ~15 ms)."""
    def defines(callback, hook: str) -> bool:
        return getattr(getattr(callback, hook), "__func__", None) is not getattr(Callback, hook)

    hooks = [name for name in vars(Callback) if name.startswith("on_")]
    return {hook: [getattr(c, hook) for c in callbacks if defines(c, hook)] for hook in hooks}


class Trainer:
    def __init__(self, config: Config, parts: Parts, data: Prepared, callbacks: list[Callback],
                 stop: StopRequest | None = None):
        self.config, self.parts, self.data, self.callbacks = config, parts, data, callbacks
        self.config_record = resolved_dict(config)   # what checkpoints carry
        self.stop = stop or StopRequest()
        training, n_train = config.training, len(data.x_train)
        self.epochs, self.seed, self.base_lr = training.epochs, training.seed, config.optimizer.lr
        self.batch_size = config.data.batch_size_for(n_train)
        self.batches_per_epoch = config.data.steps_per_epoch(n_train)
        self.eval_batch_size = config.data.eval_batch_size
        self.clip = Clipping.of(config)
        self.augment = augmenter_for(config.data.augment, data, training.seed)   # None: batches as they are
        early = training.early_stopping
        self.monitor = Monitor(training.monitor, training.monitor_mode, early.min_delta if early else 0.0)
        self.restore_best = early.restore_best if early else True
        self.summary: dict = {}
        kind = parts.loss.kind
        self.epoch_metrics = [m for m in metrics_for(kind) if m.per_epoch]   # logged as train_ and val_ columns
        self.tallied = [m for m in self.epoch_metrics if m.tally is not None]
        self.epoch, self.step, self.batch = 0, 0, 0
        self.partial = fresh_partial(self.tallied)
        self.seconds = 0.0                                           # of the epochs completed
        self.last_row: dict | None = None
        self.best_row: dict | None = None
        self.stop_reason: str | None = None
        self.view = LoopView(self)
        self.listeners = listeners(callbacks)

    # -- the loop ------------------------------------------------------------

    def fit(self) -> dict:
        """Train until the last epoch, early stopping, divergence or a stop request; return the summary.

        However the run ends, the callbacks hear of it (on_train_end) with the
        summary, also kept as `self.summary`; an interrupt or a divergence is
        then raised again for the caller to report.
        """
        self._notify("on_train_begin")
        try:
            # A diverging loss is caught and reported in run_batch; subnormals would only slow the loop.
            with np.errstate(over="ignore", invalid="ignore"), flush_denormals():
                while self.epoch < self.epochs and not self.stop_reason:
                    self.run_epoch()
                    row = self.end_epoch()
                    self._notify("on_epoch_end", row)
        except Interrupted:
            self.end(evaluate_test=False)
            raise
        except DivergedError as error:
            self.stop_reason = f"diverged: {error}"
            self.end(evaluate_test=False)
            raise
        self.stop_reason = self.stop_reason or f"completed {self.epochs} epochs"  # a resume with nothing left to do
        return self.end(evaluate_test=True)

    def run_epoch(self) -> None:
        order = epoch_order(self.seed, self.epoch, len(self.data.x_train))
        x_train, y_train = self.data.x_train, self.data.y_train
        while self.batch < self.batches_per_epoch:
            started = time.perf_counter()
            idx = order[self.batch * self.batch_size:(self.batch + 1) * self.batch_size]
            self._notify("on_batch_begin")
            x = x_train[idx] if self.augment is None else self.augment(x_train[idx], self.epoch, self.batch)
            self.run_batch(x, y_train[idx])
            self.partial["seconds"] += time.perf_counter() - started
            self._notify("on_batch_end")
            if self.stop.signum is not None:
                raise self.interrupted()

    def run_batch(self, x, y) -> None:
        lr = self.parts.schedule(self.step)
        value, logits, norm = train_step(self.parts, x, y, lr, self.clip, self._gradients_ready)
        if not (math.isfinite(value) and math.isfinite(norm)):
            raise DivergedError(f"the loss became {'infinite or NaN' if not math.isfinite(value) else value} "
                                f"(gradient norm {norm}) at epoch {self.epoch + 1}, batch {self.batch + 1}, "
                                f"learning rate {lr:.3g}. Try a lower learning rate (optimizer.lr), gradient "
                                "clipping (training.clip_grad_norm) or standardized inputs; the last good "
                                "checkpoint is kept")
        self._add_to_partial(value, logits, y, norm, lr)
        self.step += 1
        self.batch += 1

    def _gradients_ready(self, dtheta: np.ndarray) -> None:
        self._notify("on_gradients", dtheta)

    def _add_to_partial(self, value: float, logits: np.ndarray, y: np.ndarray, norm: float, lr: float) -> None:
        p = self.partial
        p["loss_sum"] += value * len(y)
        p["count"] += len(y)
        p["grad_norm_sum"] += norm
        p["batches"] += 1
        p["lr"] = lr
        for metric in self.tallied:
            total, n = metric.tally(logits, y, self.parts.loss)
            p[f"{metric.name}_sum"] += total
            p[f"{metric.name}_n"] += n

    def end_epoch(self) -> dict:
        """The epoch's metric row; validation in large batches; feeds reduce-on-plateau and the monitor."""
        started = time.perf_counter()
        p = self.partial
        row = {"epoch": self.epoch + 1, "train_loss": p["loss_sum"] / p["count"]}
        row.update({f"train_{m.name}": p[f"{m.name}_sum"] / p[f"{m.name}_n"] for m in self.tallied})
        if self.data.x_val is not None:
            val = evaluate(self.parts.model, self.parts.loss, self.data.x_val, self.data.y_val, self.eval_batch_size)
            row.update({f"val_{m.name}": val[m.name] for m in self.epoch_metrics})
        row.update(lr=p["lr"], grad_norm=p["grad_norm_sum"] / p["batches"],
                   seconds=p["seconds"] + time.perf_counter() - started)
        if hasattr(self.parts.schedule, "observe"):
            self.parts.schedule.observe(row.get(self.monitor.metric, math.nan))
        if self.monitor.update(row.get(self.monitor.metric), row["epoch"], self.parts.model.state_dict):
            self.best_row = row
        self.last_row, self.seconds = row, self.seconds + row["seconds"]
        self.epoch, self.batch, self.partial = self.epoch + 1, 0, fresh_partial(self.tallied)
        if self.epoch >= self.epochs:  # said before the callbacks run, so the final checkpoint records it
            self.stop_reason = f"completed {self.epochs} epochs"
        return row

    def _notify(self, hook: str, *args) -> None:
        for method in self.listeners[hook]:
            method(self.view, *args)

    def interrupted(self) -> Interrupted:
        self.stop_reason = f"interrupted by {self.stop.signal_name}"
        return Interrupted(self.stop.signal_name, self.stop.signum)

    def end(self, evaluate_test: bool) -> dict:
        """Tell the callbacks how the run ended, restore the best weights if asked, evaluate on the test set.

        The callbacks hear first, while the model still holds the weights training
        ended with (an interrupted run's checkpoint must resume from them); a
        callback may add what it alone knows to the summary (diagnostics: its warnings).
        """
        monitor, data = self.monitor, self.data
        restored = self.restore_best and monitor.weights is not None
        self.summary = {
            "stopped_because": self.stop_reason,
            "epochs_run": self.epoch,
            "best_epoch": monitor.best_epoch or None,
            "monitor": {"metric": monitor.metric, "mode": monitor.mode, "best": monitor.best},
            "final_weights": f"best (epoch {monitor.best_epoch})" if restored else "last",
            "seconds": round(self.seconds, 3),
            "val_hash": data.val_hash,
            "data": data.info,
            "test": None,
            "warnings": [],
        }
        self._notify("on_train_end", self.summary)
        if restored:
            self.parts.model.load_state_dict(monitor.weights)
        if evaluate_test and data.x_test is not None and np.isfinite(self.parts.model.theta).all():
            self.summary["test"] = evaluate(self.parts.model, self.parts.loss, data.x_test, data.y_test,
                                            self.eval_batch_size)
        return self.summary

    # -- what callbacks and the summary read ---------------------------------------

    def live_stats(self) -> dict:
        """The unfinished epoch so far: train_loss, the tallied train_ metrics (accuracy), lr."""
        p = self.partial
        stats = {"train_loss": p["loss_sum"] / max(p["count"], 1)}
        stats.update({f"train_{m.name}": p[f"{m.name}_sum"] / max(p[f"{m.name}_n"], 1) for m in self.tallied})
        return {**stats, "lr": p["lr"]}

    def metric_columns(self) -> list[str]:
        """The columns of metrics.csv: epoch, train_ then val_ metrics, lr, grad_norm, seconds."""
        train = ["train_loss", *(f"train_{m.name}" for m in self.tallied)]
        val = [f"val_{m.name}" for m in self.epoch_metrics] if self.data.x_val is not None else []
        return ["epoch", *train, *val, "lr", "grad_norm", "seconds"]

    # -- checkpoints ------------------------------------------------------------------------------

    def checkpoint(self, kind: str, weights: dict | None = None) -> tuple[dict, dict]:
        """(tensors, meta): model weights (the current ones unless given) with everything a resume needs.

        A `best` checkpoint is for evaluating and fine-tuning, never resuming: it
        holds no optimizer state and no timings, so taken as its epoch ends (see
        CheckpointCallback) its bytes depend on that epoch alone.
        """
        tensors = dict(weights) if weights is not None else self.parts.model.state_dict()
        if kind != "best":
            tensors.update({f"optimizer.{k}": v for k, v in self.parts.optimizer.state_dict().items()})
        tensors.update({f"preprocess.{k}": np.asarray(v) for k, v in self.data.preprocessor.state_dict().items()})
        if self.monitor.weights and kind != "best":
            tensors.update({f"best.{k}": v for k, v in self.monitor.weights.items()})
        return tensors, self.meta(kind)

    def meta(self, kind: str) -> dict:
        d = self.data
        return {"kind": kind, "bpcli_version": __version__, "config": self.config_record, "task": d.task,
                "class_names": list(d.class_names) if d.class_names else None, "input_dim": d.input_dim,
                "val_hash": d.val_hash, "data_info": d.info,
                "state": {"epoch": self.epoch, "step": self.step, "batch": self.batch, "partial": self.partial,
                          "stop_reason": self.stop_reason, "monitor": self.monitor.state_dict(),
                          **self._rows(timed=kind != "best")},
                "schedule": self.parts.schedule.state_dict(),
                "callbacks": {type(c).__name__: c.state_dict() for c in self.callbacks},
                "dropout_rng": self.parts.model.rng.bit_generator.state}

    def _rows(self, timed: bool) -> dict:
        """The latest and best epochs' metric rows (what `bpcli inspect` shows), and the seconds trained."""
        if timed:
            return {"seconds": self.seconds, "last_row": self.last_row, "best_row": self.best_row}
        untimed = [None if r is None else {k: v for k, v in r.items() if k != "seconds"}
                   for r in (self.last_row, self.best_row)]
        return {"last_row": untimed[0], "best_row": untimed[1]}

    def load_checkpoint(self, checkpoint: Checkpoint) -> None:
        """Continue exactly where the checkpoint left off."""
        meta, state = checkpoint.meta, checkpoint.meta["state"]
        self.parts.model.load_state_dict(checkpoint.tensors)
        self.parts.optimizer.load_state_dict(checkpoint.group("optimizer"))
        self.parts.schedule.load_state_dict(meta["schedule"])
        for callback in self.callbacks:
            callback.load_state_dict(meta["callbacks"].get(type(callback).__name__, {}))
        self.monitor.load_state_dict(monitor_state(meta), checkpoint.group("best"))
        self.parts.model.rng.bit_generator.state = meta["dropout_rng"]
        self.epoch, self.step, self.batch = state["epoch"], state["step"], state["batch"]
        self.partial = _format_1_partial(state["partial"])
        self._load_rows(state, monitor_state(meta).get("best_epoch"))
        if (state.get("stop_reason") or "").startswith("early stopping"):   # it stays stopped
            self.stop_reason = state["stop_reason"]

    def _load_rows(self, state: dict, best_epoch) -> None:
        """Format-1 checkpoints carried the whole history; newer ones the two rows and the seconds."""
        if "history" in state:
            history = state["history"]
            self.seconds = sum(row.get("seconds", 0.0) for row in history)
            self.last_row = history[-1] if history else None
            self.best_row = next((row for row in history if row.get("epoch") == best_epoch), None)
        else:
            self.seconds, self.last_row, self.best_row = state["seconds"], state["last_row"], state["best_row"]

    def finished(self) -> bool:
        """Nothing left to train: the last epoch is done, or early stopping ended the run."""
        return self.epoch >= self.epochs or self.stop_reason is not None
