"""Using a trained checkpoint: evaluate it on a dataset split, or predict for new inputs.

A checkpoint carries the resolved config, the preprocessing statistics and the
weights, so evaluation rebuilds exactly the model that was trained and feeds
it data transformed exactly as in training (never refitted on the new data).
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .checkpoint import Checkpoint, load_checkpoint
from .data import load_csv_inputs, load_dataset, load_npz_inputs
from .errors import CheckpointError, DataError
from .losses import Loss
from .metrics import classification_summary, predict_classes, probabilities, regression_metrics
from .model import Model, build_model
from .preprocessing import Preprocessor, loss_targets, split_dataset
from .train import build_loss, predict_logits

SPLITS = ("test", "val", "train")


@dataclass
class Restored:
    model: Model
    loss: Loss
    preprocessor: Preprocessor
    cfg: dict
    task: str
    class_names: tuple[str, ...] | None


def restore(checkpoint: Checkpoint) -> Restored:
    """The trained model, its loss and its preprocessing, rebuilt from a checkpoint."""
    meta, cfg = checkpoint.meta, checkpoint.meta["config"]
    model = build_model(cfg["model"]["layers"], meta["input_dim"], dtype=cfg["model"]["dtype"])
    for name, target in {**model.params, **model.buffers}.items():
        if name not in checkpoint.tensors or checkpoint.tensors[name].shape != target.shape:
            raise CheckpointError(f"{checkpoint.path}: tensor {name} is missing or has the wrong shape "
                                  "for the architecture in its own config")
        target[...] = checkpoint.tensors[name]
    preprocessor = Preprocessor(cfg["data"]["preprocess"])
    preprocessor.load_state_dict(checkpoint.group("preprocess"))
    names = tuple(meta["class_names"]) if meta.get("class_names") else None
    return Restored(model, build_loss(cfg["loss"]), preprocessor, cfg, meta["task"], names)


def evaluate_checkpoint(path: str | Path, *, dataset: str | None = None, split: str = "test",
                        data_dir: str | None = None, batch_size: int = 4096) -> dict:
    """Loss, accuracy, confusion matrix and per-class figures (or mse/mae/r2) of a checkpoint on a split."""
    checkpoint = load_checkpoint(path)
    r = restore(checkpoint)
    x, y, source = _split_arrays(checkpoint, r, dataset, split, data_dir)
    _check_features(x, r, source)
    logits = predict_logits(r.model, r.preprocessor.transform(x, r.model.dtype), batch_size)
    y = loss_targets(y, r.task, r.model.dtype)
    result = {"checkpoint": str(path), "dataset": source, "split": split, "n": len(y),
              "loss": r.loss(logits, y)[0]}
    if r.task == "regression":
        return {**result, **regression_metrics(logits, y.reshape(logits.shape))}
    if r.task == "binary":
        correct = predict_classes(logits, "binary") == y.reshape(logits.shape)
        return {**result, "accuracy": float(correct.mean())}
    return {**result, **classification_summary(y, predict_classes(logits, "multiclass"), r.class_names)}


def _split_arrays(checkpoint, r: Restored, dataset, split, data_dir):
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; allowed: {', '.join(SPLITS)}")
    data_cfg, seed = r.cfg["data"], r.cfg["training"]["seed"]
    name = dataset or data_cfg["dataset"]
    options = data_cfg.get("options") if name == data_cfg["dataset"] else {}
    raw = load_dataset(name, data_dir=data_dir or data_cfg.get("data_dir"), mirrors=data_cfg.get("mirrors"),
                       options=options, seed=seed)
    s = split_dataset(raw, r.task, data_cfg["val_fraction"] if split != "test" else 0.0, seed)
    if split == "test":
        if s.x_test is None:
            raise DataError(f"{name} has no test set; use --split val or --split train")
        return s.x_test, s.y_test, name
    if name == data_cfg["dataset"] and s.val_hash != checkpoint.meta.get("val_hash"):
        raise DataError(f"the validation split of {name} differs from the one used in training")
    return (s.x_val, s.y_val, name) if split == "val" else (s.x_train, s.y_train, name)


def _check_features(x: np.ndarray, r: Restored, source: str) -> None:
    features = int(np.prod(x.shape[1:]))
    if features != r.model.input_dim:
        raise DataError(f"{source} has {features} input features, but the model was trained on {r.model.input_dim}")


def predict_file(checkpoint_path: str | Path, input_path: str | Path, batch_size: int = 4096) -> str:
    """Predictions for the rows of a CSV (all columns are features, except the training target) or an NPZ's X, as CSV."""
    r = restore(load_checkpoint(checkpoint_path))
    x = _read_inputs(Path(input_path), r)
    _check_features(x, r, str(input_path))
    logits = predict_logits(r.model, r.preprocessor.transform(x, r.model.dtype), batch_size)
    return _predictions_csv(logits, r)


def _read_inputs(path: Path, r: Restored) -> np.ndarray:
    if path.suffix.lower() == ".npz":
        return load_npz_inputs(str(path))
    target = (r.cfg["data"].get("options") or {}).get("target", "label")
    return load_csv_inputs(str(path), drop=(target,))


def _predictions_csv(logits: np.ndarray, r: Restored) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    if r.task == "regression":
        writer.writerow([f"y{j}" for j in range(logits.shape[1])])
        writer.writerows(logits.tolist())
    elif r.task == "multiclass":
        names = r.class_names or tuple(str(c) for c in range(logits.shape[1]))
        writer.writerow(["prediction", *(f"p_{n}" for n in names)])
        p = probabilities(logits, "multiclass")
        for c, row in zip(predict_classes(logits, "multiclass"), p):
            writer.writerow([names[c], *(f"{v:.6g}" for v in row)])
    else:
        k = logits.shape[1]
        writer.writerow([f"prediction{j}" for j in range(k)] + [f"p{j}" for j in range(k)])
        p = probabilities(logits, "binary")
        for c, row in zip(predict_classes(logits, "binary"), p):
            writer.writerow([*c.tolist(), *(f"{v:.6g}" for v in row)])
    return buffer.getvalue()
