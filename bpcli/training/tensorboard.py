"""TensorBoard event files for a run, in its `tb/` folder (RunDir.tensorboard), written with tensorboardX.

    tensorboard --logdir runs        every run with `output.tensorboard: true` (or `train --tensorboard`)

Scalars, one step per epoch (step N is epoch N, as in metrics.jsonl):

    train_loss, val_loss, train_accuracy, ..., lr, grad_norm, seconds
                                     every column of metrics.jsonl, under its own name
    grad_norm/layers.0, update_ratio/layers.0, weight_norm/layers.0, ...
                                     each layer's diagnostics row (layers.jsonl), if diagnostics are on

and, when a run ends without being interrupted, its hyperparameters (the resolved
config, one key per leaf: `optimizer.lr`, `model.layers.0.units`) with the final
figures (`hparams/test_accuracy`, `hparams/best_val_loss`, ...) for TensorBoard's
HPARAMS tab.

A resumed run goes on writing the same folder: its writer starts with a purge
step (the first epoch it trains), so the events a killed or interrupted session
wrote after its last checkpoint are hidden by TensorBoard, and each epoch shows
once. tensorboardX is an optional extra (`pip install -e ".[tensorboard]"`);
asking for TensorBoard without it is refused before training starts.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

from bpcli.errors import ConfigError
from bpcli.training.callbacks import Callback
from bpcli.training.rundir import RunDir

# The figures of a layer diagnostics row that become scalars (the others name the layer).
LAYER_SCALARS = ("grad_norm", "update_ratio", "weight_norm", "act_mean", "act_std", "dead_fraction",
                 "saturated_fraction")
FLUSH_SECONDS = 5   # a TensorBoard watching the run sees an epoch at most this late


def require_tensorboardx() -> None:
    """Refuse, in one line, before any work, when TensorBoard output is asked for and tensorboardX is missing."""
    try:
        import tensorboardX  # noqa: F401
    except ImportError:
        raise ConfigError("output.tensorboard (or --tensorboard) needs the tensorboardX package, which is not "
                          "installed: install bpcli's tensorboard extra (pip install -e \".[tensorboard]\" in a "
                          "checkout) or pip install tensorboardX; or set output.tensorboard: false") from None


def open_writer(folder: Path, purge_step: int | None = None):
    """A tensorboardX SummaryWriter on `folder`, its event file named so that later sessions sort after earlier ones.

    tensorboardX names a file by the second and the host: two sessions in one second would
    share (and the second truncate) one file, so a nanosecond suffix keeps each apart, in order.
    """
    from tensorboardX import SummaryWriter

    return SummaryWriter(str(folder), purge_step=purge_step, flush_secs=FLUSH_SECONDS,
                         filename_suffix=f".{time.time_ns()}")


class TensorBoardLogger(Callback):
    """Writes each epoch's metric row and layer rows as scalars; LayerDiagnostics hands it the layer rows."""

    def __init__(self, run: RunDir):
        self.folder = run.tensorboard
        self.writer = None
        self.layer_rows: list[dict] = []

    def on_train_begin(self, loop):
        resumed = self.folder.exists()   # epochs after loop.epoch may be on file: hide them, they come again
        self.writer = open_writer(self.folder, purge_step=loop.epoch + 1 if resumed else None)

    def add_layer_rows(self, rows: list[dict]) -> None:
        """LayerDiagnostics' rows of the epoch that is ending (its on_rows): written with the epoch's own row."""
        self.layer_rows = rows

    def on_epoch_end(self, loop, row):
        epoch = row["epoch"]
        for column, value in row.items():
            if column != "epoch" and isinstance(value, (int, float)):
                self.writer.add_scalar(column, value, epoch)
        for layer in self.layer_rows:
            for column in LAYER_SCALARS:
                if isinstance(layer.get(column), (int, float)):
                    self.writer.add_scalar(f"{column}/{layer['layer']}", layer[column], epoch)
        self.layer_rows = []

    def on_train_end(self, loop, summary):
        if self.writer is not None:   # not opened when a finished run is resumed: nothing was trained
            self.writer.close()
            self.writer = None


def final_metrics(summary: dict) -> dict[str, float]:
    """The figures a run is judged by, as hparams/<name>: its monitored best, epochs run and test metrics."""
    monitor = summary["monitor"]
    metrics = {f"hparams/best_{monitor['metric']}": monitor["best"], "hparams/epochs_run": summary["epochs_run"]}
    metrics.update({f"hparams/test_{name}": value for name, value in (summary.get("test") or {}).items()})
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and math.isfinite(v)}


def flat_hparams(config: dict, prefix: str = "") -> dict:
    """A resolved config as {dotted.key: number, string or bool}, lists by index; nulls are left out."""
    if isinstance(config, dict):
        items = config.items()
    elif isinstance(config, list):
        items = enumerate(config)
    else:
        return {} if config is None else {prefix.rstrip("."): config}
    return {k: v for key, value in items for k, v in flat_hparams(value, f"{prefix}{key}.").items()}


def write_hparams(run: RunDir, config: dict, summary: dict) -> None:
    """The run's hyperparameters and final figures for the HPARAMS tab, at the step of its last epoch.

    Only the session-start and session-end summaries are written (no experiment summary):
    TensorBoard then builds the table from every run's own hyperparameters, so runs
    whose configs differ in different keys still show side by side.
    """
    from tensorboardX.summary import hparams

    metrics = final_metrics(summary)
    _, start, end = hparams(flat_hparams(config), metrics)
    writer = open_writer(run.tensorboard)
    try:
        writer.file_writer.add_summary(start)
        writer.file_writer.add_summary(end)
        for tag, value in metrics.items():
            writer.add_scalar(tag, value, summary["epochs_run"])
    finally:
        writer.close()
