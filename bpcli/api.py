"""The Python API, for notebooks and scripts: train a config, load a trained model, predict.

    run = bpcli.train("quickstart", training__epochs=3)     -> Run (summary, metrics rows, run_dir, .model)
    model = bpcli.load("runs/quickstart-20261202-120000")   -> Model (.predict, .predict_proba)

It is the command line's own path, without the printing: `bpcli train` and
`bpcli.train` both end in training.run.train_run; `bpcli predict` and
`bpcli.load(...).predict` both restore the checkpoint with tools.inference and
feed it inputs preprocessed as the checkpoint recorded. Errors are the
project's own (bpcli.errors), with the messages the command line shows.

Overrides are the `--set` keys: a keyword's double underscore stands for the
dot (`optimizer__lr=0.05` is `--set optimizer.lr=0.05`), and a dotted key can
be passed as is (`**{"model.layers.0.units": 64}`). Values are Python values
(numbers, strings, booleans, None, lists, dicts), written as JSON (which the
YAML 1.2 reader reads back unchanged: "1e3" stays a string, 1e-07 a number),
so each is validated, and refused, exactly as on the command line.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from bpcli.config.loading import load_config, parse_config_text
from bpcli.config.sections import Config, resolved_dict
from bpcli.config.yamlio import dump_yaml
from bpcli.errors import UsageError
from bpcli.fileio import read_log_rows
from bpcli.nn.metrics import predict_classes, probabilities
from bpcli.tools.inference import Restored, load_restored, predict_outputs, predictions_csv, read_inputs
from bpcli.training.rundir import RunDir
from bpcli.training.run import train_run

__all__ = ["Model", "Run", "load", "train"]


class Model:
    """A trained network and the preprocessing it was trained with (scikit-learn's predict conventions).

    `classes` are the class labels `predict` returns, in output order: integers 0..C-1 when the
    training labels were numbers, their names when they were text (or the dataset names them).
    """

    def __init__(self, restored: Restored, path: Path):
        self.restored, self.path = restored, path
        self.task = restored.task               # "multiclass", "binary" or "regression"
        self.input_dim = restored.model.input_dim
        self.classes = _classes(restored.class_names)

    def __repr__(self) -> str:
        return f"bpcli.Model({str(self.path)!r}, task={self.task!r}, inputs={self.input_dim})"

    @property
    def config(self) -> dict:
        """The resolved config the model was trained with."""
        return resolved_dict(self.restored.config)

    def logits(self, X) -> np.ndarray:
        """The network's raw outputs, (n, outputs), for rows of raw features (as in the training data); for
        regression, the values in the target's own units. A model trained on a CSV with categorical columns or
        missing values takes one cell per feature column (text for a categorical one, NaN or '' for a gap)."""
        return predict_outputs(self.restored, X, source="X")

    def predict(self, X) -> np.ndarray:
        """Multiclass: the class label of each row, (n,). Binary: 0/1 per output (n,) for one output,
        else (n, k). Regression: the values, (n,) for one output, else (n, k)."""
        outputs = self.logits(X)
        if self.task == "regression":
            return _squeeze(outputs)
        classes = predict_classes(outputs, self.task)
        return self.classes[classes] if self.task == "multiclass" else _squeeze(classes)

    def predict_proba(self, X) -> np.ndarray:
        """Multiclass: softmax probabilities (n, classes), columns in `classes` order. Binary: the sigmoid
        of each output, (n, k), the probability of 1."""
        if self.task == "regression":
            raise UsageError(f"{self.path}: predict_proba needs a classification model, but this one does "
                             "regression: use predict for its values")
        return probabilities(self.logits(X), self.task)

    def predictions_csv(self, inputs: str | Path) -> str:
        """What `bpcli predict` writes for a CSV of features or an NPZ's X."""
        return predictions_csv(predict_outputs(self.restored, read_inputs(inputs, self.restored),
                                               source=str(inputs), encoded=True), self.restored)


def _classes(names: tuple[str, ...] | None) -> np.ndarray | None:
    """Integer labels where the names are just 0..C-1 (numeric training labels), else the names."""
    if names is None:
        return None
    if list(names) == [str(c) for c in range(len(names))]:
        return np.arange(len(names))
    return np.array(names)


def _squeeze(outputs: np.ndarray) -> np.ndarray:
    return outputs[:, 0] if outputs.shape[1] == 1 else outputs


def load(checkpoint_or_run_dir: str | Path, on_warning=None) -> Model:
    """The model in a checkpoint file, or a run directory's best checkpoint (its last, before any epoch ended).

    `on_warning(message)` hears about a fallback (no best yet, a damaged last); by default it is quiet.
    """
    restored = load_restored(checkpoint_or_run_dir, on_warning)
    return Model(restored, Path(checkpoint_or_run_dir))


@dataclass
class Run:
    """A finished training run: its summary (as in summary.json), its directory and its per-epoch metrics."""

    summary: dict
    run_dir: Path
    warnings: list[str] = field(default_factory=list)

    @property
    def metrics(self) -> list[dict]:
        """One row per epoch, as in metrics.jsonl (train_loss, val_loss, accuracies, lr, seconds...)."""
        return read_log_rows(RunDir(self.run_dir).metrics_jsonl)

    @cached_property
    def model(self) -> Model:
        """The best epoch's model (the run directory's best checkpoint)."""
        return load(self.run_dir)

    def __repr__(self) -> str:
        return f"bpcli.Run({str(self.run_dir)!r}, best_epoch={self.summary.get('best_epoch')})"


def train(config: str | Path | dict | Config, /, *, data_dir: str | None = None, resume: str | Path | None = None,
          init_from: str | Path | None = None, callbacks=(), on_warning=None, **overrides) -> Run:
    """Train a config (a file, a shipped config's name, a mapping or a Config) with `--set`-style overrides.

    Quiet: nothing is printed; warnings are kept in `Run.warnings` (and passed to `on_warning` if given).
    Writes the same run directory `bpcli train` writes, and trains bit for bit the same.
    """
    settings = [override_text(key, value) for key, value in overrides.items()]
    parsed, name = _read_config(config, settings)
    warnings: list[str] = []

    def warn(message: str) -> None:
        warnings.append(message)
        if on_warning:
            on_warning(message)

    summary = train_run(parsed, name, data_dir=data_dir, resume=str(resume) if resume else None,
                        init_from=str(init_from) if init_from else None, callbacks=callbacks, on_warning=warn)
    return Run(summary, Path(summary["run_dir"]), warnings)


def override_text(key: str, value) -> str:
    """`--set` text for a keyword override: training__epochs=3 -> "training.epochs=3"."""
    try:
        text = json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise UsageError(f"bpcli.train({key}=...): {error}; give a number, string, boolean, None, list or "
                         "dict") from None
    return f"{key.replace('__', '.')}={text}"


def _read_config(config, settings: list[str]) -> tuple[Config, str]:
    """(Config, name for the run directory) from a path or name, a mapping or a Config."""
    if isinstance(config, (str, Path)):
        return load_config(config, settings), str(config)
    if isinstance(config, Config):
        config = resolved_dict(config)
    if isinstance(config, dict):
        return parse_config_text(dump_yaml(config), "<config>", settings), "config"
    raise UsageError(f"bpcli.train takes a config file's path, a shipped config's name, a mapping or a Config, "
                     f"not {type(config).__name__}")
