"""Training: from a resolved config to a trained model, one batch at a time.

One batch, start to finish (`train_step`):

    logits         = model.forward(x, training=True)
    loss, dlogits  = loss_fn(logits, y)              (+ weight penalties)
    model.backward(dlogits)                          fills model.dtheta
    dtheta        += penalty gradients; clip
    optimizer.step(model.theta, model.dtheta, lr)    lr = schedule(step)

An epoch visits the training set in an order drawn from (seed, epoch) alone,
so a run resumed at any batch sees exactly the batches it would have seen. The
Trainer keeps everything else a resume needs (step counts, the partial sums of
an unfinished epoch, the metric history) and hands it to checkpoints; a
resumed run ends with the same weights, bit for bit, as one done in one go.
"""

from __future__ import annotations

import inspect
import math
import signal
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bpcli import __version__
from bpcli.training.callbacks import Callback, EarlyStopping
from bpcli.training.checkpoint import Checkpoint, save_checkpoint
from bpcli.training.denormals import flush_denormals
from bpcli.errors import CheckpointError, DivergedError, Interrupted
from bpcli.nn.losses import LOSSES, Loss
from bpcli.nn.metrics import count_correct, regression_metrics, resolve_mode
from bpcli.nn.model import Model, build_model
from bpcli.optim.optimizers import Optimizer, build_optimizer, clip_grad_norm, clip_grad_value, global_norm
from bpcli.data.preprocessing import Prepared
from bpcli.nn.regularizers import L1, L2
from bpcli.optim.schedules import SCHEDULES, Schedule, build_schedule


@dataclass
class Parts:
    """Everything one batch passes through, built from the config."""

    model: Model
    loss: Loss
    regularizers: list
    optimizer: Optimizer
    schedule: Schedule


def build_loss(loss_cfg: dict) -> Loss:
    """The loss with the options its class takes (label_smoothing for cross_entropy, delta for huber)."""
    cls = LOSSES[loss_cfg["name"]]
    takes = inspect.signature(cls.__init__).parameters
    return cls(**{k: v for k, v in loss_cfg.items() if k in takes and k != "self" and v is not None})


def build_regularizers(loss_cfg: dict) -> list:
    """Only the penalties that are on: a zero penalty would still cost a pass over the weights per batch."""
    bias = bool(loss_cfg.get("regularize_bias"))
    return [cls(lam, include_bias=bias) for cls, lam in ((L1, loss_cfg.get("l1")), (L2, loss_cfg.get("l2"))) if lam]


def build_parts(cfg: dict, input_dim: int, steps_per_epoch: int) -> Parts:
    model_cfg, opt_cfg = cfg["model"], dict(cfg["optimizer"])
    model = build_model(model_cfg["layers"], input_dim, seed=cfg["training"]["seed"], dtype=model_cfg["dtype"])
    optimizer = build_optimizer(opt_cfg.pop("name"), **{k: v for k, v in opt_cfg.items() if k != "lr"})
    schedule = schedule_from_config(cfg, steps_per_epoch)
    return Parts(model, build_loss(cfg["loss"]), build_regularizers(cfg["loss"]), optimizer, schedule)


def schedule_from_config(cfg: dict, steps_per_epoch: int) -> Schedule:
    """The schedule's own options, plus what it takes from elsewhere in the config (lr, epochs, mode)."""
    options = {k: v for k, v in cfg["schedule"].items() if k != "name" and v is not None}
    context = {"lr": cfg["optimizer"]["lr"], "steps_per_epoch": steps_per_epoch, "epochs": cfg["training"]["epochs"],
               "mode": resolve_mode(cfg["training"]["monitor"], cfg["training"]["mode"])}
    takes = inspect.signature(SCHEDULES[cfg["schedule"]["name"]].__init__).parameters
    return build_schedule(cfg["schedule"]["name"], **options, **{k: v for k, v in context.items() if k in takes})


def train_step(parts: Parts, x: np.ndarray, y: np.ndarray, lr: float, clip: dict,
               on_gradients=None) -> tuple[float, np.ndarray, float]:
    """One mini-batch: forward, loss, backward, update. Returns (loss, logits, gradient norm before clipping).

    on_gradients(dtheta), if given, sees the gradients before clipping and the update (diagnostics).
    """
    model = parts.model
    logits = model.forward(x, training=True)
    value, dlogits = parts.loss(logits, y)
    model.backward(dlogits)
    for r in parts.regularizers:
        value += r.penalty(model.params)
        r.add_grad(model.params, model.grads)
    if on_gradients is not None:
        on_gradients(model.dtheta)
    if not math.isfinite(value):
        return value, logits, math.nan
    if not (clip.get("norm") or clip.get("value")):  # the optimizer measures the norm on its way, for free
        return value, logits, parts.optimizer.step(model.theta, model.dtheta, lr)
    norm = clip_grad_norm(model.dtheta, clip["norm"]) if clip.get("norm") else global_norm(model.dtheta)
    if clip.get("value"):
        clip_grad_value(model.dtheta, clip["value"])
    if math.isfinite(norm):
        parts.optimizer.step(model.theta, model.dtheta, lr)
    return value, logits, norm


def predict_logits(model: Model, x: np.ndarray, batch_size: int = 4096) -> np.ndarray:
    """The network's outputs for a whole set, in large batches at evaluation mode."""
    logits = np.empty((len(x), model.output_dim), dtype=model.dtype)
    for i in range(0, len(x), batch_size):
        logits[i:i + batch_size] = model.forward(x[i:i + batch_size], training=False)  # copied: buffers are reused
    return logits


def evaluate(model: Model, loss: Loss, x: np.ndarray, y: np.ndarray, batch_size: int = 4096) -> dict:
    """Loss (without penalties) and accuracy, or mse/mae/r2 for regression, over a whole set."""
    logits = predict_logits(model, x, batch_size)
    result = {"loss": loss(logits, y)[0]}
    if loss.kind == "regression":
        result.update(regression_metrics(logits, y.reshape(logits.shape)))
    else:
        outputs = logits.size if loss.kind == "binary" else len(logits)
        result["accuracy"] = count_correct(logits, y, loss.kind) / outputs
    return result


def epoch_order(seed: int, epoch: int, n: int) -> np.ndarray:
    """The order of the training examples in an epoch: a function of (seed, epoch) only."""
    return np.random.default_rng([seed, 3, epoch]).permutation(n)


class StopRequest:
    """Set by SIGINT/SIGTERM; the loop checks it after each batch."""

    def __init__(self):
        self.signum: int | None = None


@contextmanager
def graceful_interrupts(stop: StopRequest):
    """First SIGINT or SIGTERM: finish the batch, save, exit. A second Ctrl-C aborts at once.

    Aborting at once is safe because every checkpoint is written atomically: the
    last one on disk is always complete.
    """

    def request(signum, frame):
        if stop.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        stop.signum = signum

    previous = {s: signal.signal(s, request) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def fresh_partial() -> dict:
    """Running sums of the unfinished epoch (kept in checkpoints, so a mid-epoch resume logs the same row)."""
    return {"loss_sum": 0.0, "count": 0, "correct": 0, "outputs": 0, "grad_norm_sum": 0.0, "batches": 0,
            "seconds": 0.0, "lr": 0.0}


class Trainer:
    def __init__(self, cfg: dict, parts: Parts, data: Prepared, callbacks: list[Callback],
                 tracker: EarlyStopping, stop: StopRequest | None = None, diagnostics=None):
        self.cfg, self.parts, self.data, self.callbacks = cfg, parts, data, callbacks
        self.diagnostics = diagnostics  # a LayerDiagnostics (also among the callbacks), or None
        self.tracker, self.stop = tracker, stop or StopRequest()
        training = cfg["training"]
        self.epochs, self.seed = training["epochs"], training["seed"]
        self.batch_size = min(cfg["data"]["batch_size"], len(data.x_train))
        self.batches_per_epoch = math.ceil(len(data.x_train) / self.batch_size)
        self.clip = {"norm": training.get("clip_grad_norm"), "value": training.get("clip_grad_value")}
        self.epoch, self.step, self.batch = 0, 0, 0
        self.partial = fresh_partial()
        self.history: list[dict] = []
        self.stop_reason: str | None = None

    # -- the loop ------------------------------------------------------------

    def fit(self) -> None:
        """Train until the last epoch, early stopping, divergence or a stop request."""
        for callback in self.callbacks:
            callback.on_train_begin(self)
        # A diverging loss is caught and reported in run_batch; subnormals would only slow the loop (denormals.py).
        with np.errstate(over="ignore", invalid="ignore"), flush_denormals():
            while self.epoch < self.epochs and not self.stop_reason:
                self.run_epoch()
                row = self.end_epoch()
                for callback in self.callbacks:
                    callback.on_epoch_end(self, row)
        self.stop_reason = self.stop_reason or f"completed {self.epochs} epochs"  # a resume with nothing left to do

    def run_epoch(self) -> None:
        order = epoch_order(self.seed, self.epoch, len(self.data.x_train))
        x_train, y_train = self.data.x_train, self.data.y_train
        while self.batch < self.batches_per_epoch:
            started = time.perf_counter()
            idx = order[self.batch * self.batch_size:(self.batch + 1) * self.batch_size]
            self.run_batch(x_train[idx], y_train[idx])
            self.partial["seconds"] += time.perf_counter() - started
            for callback in self.callbacks:
                callback.on_batch_end(self)
            if self.stop.signum is not None:
                raise self.interrupted()

    def run_batch(self, x, y) -> None:
        lr = self.parts.schedule(self.step)
        probe = self.diagnostics
        sampled = probe is not None and probe.samples_batch(self.batch)
        if sampled:
            probe.before_step()
        value, logits, norm = train_step(self.parts, x, y, lr, self.clip, probe.record_gradients if sampled else None)
        if probe is not None:
            probe.after_batch(sampled)
        if not (math.isfinite(value) and math.isfinite(norm)):
            raise DivergedError(f"the loss became {'infinite or NaN' if not math.isfinite(value) else value} "
                                f"(gradient norm {norm}) at epoch {self.epoch + 1}, batch {self.batch + 1}, "
                                f"learning rate {lr:.3g}. Try a lower learning rate (optimizer.lr), gradient "
                                "clipping (training.clip_grad_norm) or standardized inputs; the last good "
                                "checkpoint is kept")
        p, kind = self.partial, self.parts.loss.kind
        p["loss_sum"] += value * len(x)
        p["count"] += len(x)
        p["grad_norm_sum"] += norm
        p["batches"] += 1
        p["lr"] = lr
        if kind != "regression":
            p["correct"] += count_correct(logits, y, kind)
            p["outputs"] += logits.size if kind == "binary" else len(x)
        self.step += 1
        self.batch += 1

    def end_epoch(self) -> dict:
        """The epoch's metric row; validation in large batches; feeds reduce-on-plateau."""
        started = time.perf_counter()
        p = self.partial
        row = {"epoch": self.epoch + 1, "train_loss": p["loss_sum"] / p["count"]}
        if self.parts.loss.kind != "regression":
            row["train_accuracy"] = p["correct"] / p["outputs"]
        if self.data.x_val is not None:
            val = evaluate(self.parts.model, self.parts.loss, self.data.x_val, self.data.y_val, self.eval_batch_size)
            row.update({f"val_{k}": val[k] for k in ("loss", "accuracy") if k in val})
        row.update(lr=p["lr"], grad_norm=p["grad_norm_sum"] / p["batches"],
                   seconds=p["seconds"] + time.perf_counter() - started)
        if hasattr(self.parts.schedule, "observe"):
            self.parts.schedule.observe(row.get(self.cfg["training"]["monitor"], math.nan))
        self.history.append(row)
        self.epoch, self.batch, self.partial = self.epoch + 1, 0, fresh_partial()
        if self.epoch >= self.epochs:  # said before the callbacks run, so the final checkpoint records it
            self.stop_reason = f"completed {self.epochs} epochs"
        return row

    @property
    def eval_batch_size(self) -> int:
        return self.cfg["data"]["eval_batch_size"]

    def interrupted(self) -> Interrupted:
        name = signal.Signals(self.stop.signum).name
        self.stop_reason = f"interrupted by {name}"
        return Interrupted(name, self.stop.signum)

    def live_stats(self) -> dict:
        p = self.partial
        stats = {"loss": p["loss_sum"] / max(p["count"], 1), "lr": p["lr"]}
        if self.parts.loss.kind != "regression":
            stats["accuracy"] = p["correct"] / max(p["outputs"], 1)
        return stats

    def metric_columns(self) -> list[str]:
        columns = ["epoch", "train_loss"]
        classify = self.parts.loss.kind != "regression"
        columns += ["train_accuracy"] if classify else []
        if self.data.x_val is not None:
            columns += ["val_loss"] + (["val_accuracy"] if classify else [])
        return columns + ["lr", "grad_norm", "seconds"]

    # -- weights and checkpoints ------------------------------------------------

    def weights(self) -> dict[str, np.ndarray]:
        """A copy of the model's parameters and buffers, by name."""
        model = self.parts.model
        return {name: a.copy() for name, a in {**model.params, **model.buffers}.items()}

    def set_weights(self, weights: dict[str, np.ndarray]) -> None:
        model = self.parts.model
        targets = {**model.params, **model.buffers}
        missing = set(targets) - set(weights)
        if missing:
            raise CheckpointError(f"checkpoint lacks {', '.join(sorted(missing))}: saved from another model?")
        for name, target in targets.items():
            if weights[name].shape != target.shape:
                raise CheckpointError(f"checkpoint tensor {name} has shape {weights[name].shape}, "
                                      f"the model needs {target.shape}: saved from another model?")
            target[...] = weights[name]

    def save_checkpoint(self, path: Path, kind: str, weights: dict | None = None, backup: Path | None = None) -> None:
        """Model weights (the current ones unless given) with everything a resume needs."""
        tensors = dict(weights) if weights is not None else self.weights()
        tensors.update({f"optimizer.{k}": v for k, v in self.parts.optimizer.state_dict().items()})
        tensors.update({f"preprocess.{k}": np.asarray(v) for k, v in self.data.preprocessor.state_dict().items()})
        if self.tracker.best_weights and kind != "best":
            tensors.update({f"best.{k}": v for k, v in self.tracker.best_weights.items()})
        save_checkpoint(path, tensors, self.meta(kind), backup)

    def meta(self, kind: str) -> dict:
        d = self.data
        return {"kind": kind, "bpcli_version": __version__, "config": self.cfg, "task": d.task,
                "class_names": list(d.class_names) if d.class_names else None, "input_dim": d.input_dim,
                "val_hash": d.val_hash, "data_info": d.info,
                "state": {"epoch": self.epoch, "step": self.step, "batch": self.batch, "partial": self.partial,
                          "history": self.history, "stop_reason": self.stop_reason},
                "schedule": self.parts.schedule.state_dict(),
                "callbacks": {type(c).__name__: c.state_dict() for c in self.callbacks},
                "dropout_rng": self.parts.model.rng.bit_generator.state}

    def load_checkpoint(self, checkpoint: Checkpoint) -> None:
        """Continue exactly where the checkpoint left off."""
        meta, state = checkpoint.meta, checkpoint.meta["state"]
        self.set_weights(checkpoint.tensors)
        self.parts.optimizer.load_state_dict(checkpoint.group("optimizer"))
        self.parts.schedule.load_state_dict(meta["schedule"])
        for callback in self.callbacks:
            callback.load_state_dict(meta["callbacks"].get(type(callback).__name__, {}))
        best = checkpoint.group("best")
        self.tracker.best_weights = best or None
        self.parts.model.rng.bit_generator.state = meta["dropout_rng"]
        self.epoch, self.step, self.batch = state["epoch"], state["step"], state["batch"]
        self.partial, self.history = state["partial"], state["history"]
