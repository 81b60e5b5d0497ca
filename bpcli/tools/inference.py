"""Using a trained checkpoint: evaluate it on a dataset split, or predict for new inputs.

A checkpoint carries the resolved config, the preprocessing statistics and the
weights, so evaluation rebuilds exactly the model that was trained and feeds
it data transformed exactly as in training (never refitted on the new data).

Wherever a checkpoint is taken, a run directory is too (`open_checkpoint`): its
best checkpoint, or its last one while no epoch has ended.

A model trained on a CSV knows its columns (data_info.columns in the metadata:
target, features, categories, fill values), so any CSV it is given is read by
column name: in any order, with other columns ignored, a missing one named.
A header-less CSV or an NPZ is taken by count. A model trained on standardized
regression targets gives its values, and is scored, in the target's own units.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydantic import ValidationError

from bpcli.training.checkpoint import Checkpoint, load_checkpoint
from bpcli.training.run import check_data_files, data_files, find_checkpoint
from bpcli.training.rundir import RunDir
from bpcli.config.sections import Config, resolved_dict
from bpcli.data.catalog import DATASETS, IdxSource, load_dataset
from bpcli.data.columns import ColumnEncoder
from bpcli.errors import CheckpointError, ConfigError, DataError
from bpcli.nn.losses import Loss, build_loss
from bpcli.nn.metrics import classification_summary, predict_classes, predict_logits, probabilities, regression_metrics
from bpcli.nn.model import Model, build_model, count_params
from bpcli.data.preprocessing import Preprocessor, loss_targets, split_dataset
from bpcli.data.tables import MISSING_MARKERS, load_csv_columns, load_csv_inputs, load_npz_inputs

SPLITS = ("test", "val", "train", "all")


@dataclass
class Restored:
    model: Model
    loss: Loss
    preprocessor: Preprocessor
    config: Config
    task: str
    class_names: tuple[str, ...] | None
    encoder: ColumnEncoder | None = None   # a table's columns (None: trained before bpcli recorded them, or no table)

    @property
    def trained_options(self) -> dict:
        """The CSV options that read a file as training read it: target, features, categories, missing."""
        if self.encoder is None:
            data = self.config.data
            return dict(data.options) if data.dataset.lower().endswith(".csv") else {}
        e = self.encoder
        return {"target": e.target, "features": e.features, "categorical": e.categorical, "missing": e.missing}


def restore(checkpoint: Checkpoint) -> Restored:
    """The trained model, its loss and its preprocessing, rebuilt from a checkpoint.

    Everything here comes from the file, so anything that does not fit (a config
    the schema refuses, weights of another shape, a task its loss cannot score)
    is a CheckpointError naming the file, never a crash further on.
    """
    meta, path = checkpoint.meta, checkpoint.path
    try:
        config = Config.model_validate(meta["config"])
        layers = resolved_dict(config)["model"]["layers"]
        _check_size(checkpoint, layers, meta["input_dim"])
        model = build_model(layers, meta["input_dim"], dtype=config.model.dtype)
        loss = build_loss(config.loss.model_dump())
        preprocessor = Preprocessor(config.data.preprocess)
    except (ConfigError, KeyError, TypeError, ValueError) as error:
        raise CheckpointError(f"{path}: its stored config cannot be rebuilt: {_reason(error)}") from None
    _load_weights(checkpoint, model)
    _load_preprocessing(checkpoint, preprocessor, model.input_dim, model.output_dim)
    _check_task(checkpoint, loss, model)
    return Restored(model, loss, preprocessor, config, meta["task"], _class_names(meta["class_names"], loss, model),
                    _encoder(checkpoint, model.input_dim))


def _encoder(checkpoint: Checkpoint, input_dim: int) -> ColumnEncoder | None:
    """The table's columns as training encoded them; a damaged record is a CheckpointError naming the file."""
    info = checkpoint.meta.get("data_info")
    state = info.get("columns") if isinstance(info, dict) else None
    if state is None:
        return None
    try:
        encoder = ColumnEncoder.from_state(state)
        width = encoder.width
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise CheckpointError(f"{checkpoint.path}: its data_info.columns cannot be read ({_reason(error)})") from None
    if width != input_dim:
        raise CheckpointError(f"{checkpoint.path}: data_info.columns makes {width} inputs, but the model takes "
                              f"{input_dim}")
    return encoder


ACCEPTED = "give a checkpoint file (.safetensors) or a run directory made by bpcli train (runs/NAME)"


def open_checkpoint(path: str | Path, on_warning=None) -> Checkpoint:
    """The checkpoint a path names: the file itself, or a run directory's best checkpoint.

    A run with no best yet (stopped before its first epoch ended) gives its last
    state, with a warning, since those weights are not the best of anything.
    """
    p = Path(path)
    if not p.is_dir():
        return load_checkpoint(p)
    run = RunDir(p)
    if not run.is_run():
        raise CheckpointError(f"{p} is a folder but not a run directory (it has no {run.config.name}){_runs_inside(p)}; "
                              f"{ACCEPTED}")
    if run.best.is_file():
        return load_checkpoint(run.best)
    if not run.has_last():
        raise CheckpointError(f"{run} has no checkpoint yet: neither {run.best} nor {run.last} exists (the run "
                              f"stopped before its first save); continue it with bpcli train --resume {run}")
    checkpoint = find_checkpoint(run, on_warning)
    if on_warning:
        on_warning(f"{run} has no best checkpoint yet (no epoch ended); using its last state {checkpoint.path}")
    return checkpoint


def _runs_inside(folder: Path) -> str:
    """'; it holds the run directories a, b, ...' for a parent of runs (`bpcli eval runs`), else ''."""
    try:
        runs = sorted(d.name for d in folder.iterdir() if RunDir(d).is_run())
    except OSError:
        return ""
    more = ", ..." if len(runs) > 3 else ""
    return f"; it holds the run directories {', '.join(runs[:3])}{more}" if runs else ""


def load_restored(path: str | Path, on_warning=None) -> Restored:
    """restore() of a checkpoint file or of a run directory's best checkpoint."""
    return restore(open_checkpoint(path, on_warning))


def predict_outputs(r: Restored, x, batch_size: int = 4096, source: str = "the input", encoded: bool = False
                    ) -> np.ndarray:
    """The network's outputs (logits, or values in the target's units) for raw inputs, preprocessed as in training.

    Rows of a table's features (one cell per column, text for a categorical one) are encoded as in
    training first, unless `encoded` (read_inputs and evaluation have done it).
    """
    x = np.asarray(x)
    if x.ndim < 2:
        raise DataError(f"{source} has shape {x.shape}; give one row per example, (n, {r.model.input_dim})")
    if not encoded and r.encoder is not None and r.encoder.changes_inputs and x.shape[1] == len(r.encoder.features):
        x = _encode_rows(r.encoder, x, source)
    if x.dtype.kind not in "fiub":
        raise DataError(f"{source} holds {x.dtype} values; the model takes numbers")
    _check_features(x, r, source)
    outputs = predict_logits(r.model, r.preprocessor.transform(x, r.model.dtype), batch_size)
    return r.preprocessor.unscale_outputs(outputs) if r.task == "regression" else outputs


def _encode_rows(encoder: ColumnEncoder, x: np.ndarray, source: str) -> np.ndarray:
    """Rows of raw cells (numbers, text for categorical columns; NaN or '' where missing) as the model's inputs."""
    codes, categories = np.empty(x.shape, dtype=np.float64), {}
    for j, name in enumerate(encoder.features):
        cells = x[:, j]
        if name in encoder.categorical:
            texts = np.array([str(c).strip() for c in cells], dtype=str)
            gaps = np.array([t.lower() in MISSING_MARKERS for t in texts], dtype=bool)
            categories[name] = tuple(np.unique(texts[~gaps]).tolist())
            codes[:, j] = np.searchsorted(np.array(categories[name], dtype=str), texts)
            codes[gaps, j] = np.nan
            continue
        try:
            codes[:, j] = np.array([np.nan if str(c).strip().lower() in MISSING_MARKERS else c for c in cells],
                                   dtype=np.float64)
        except (TypeError, ValueError):
            raise DataError(f"{source}: column {j} ({name!r}) holds a value that is not a number") from None
        if encoder.missing == "error" and not np.isfinite(codes[:, j]).all():
            i = int(np.flatnonzero(~np.isfinite(codes[:, j]))[0])
            raise DataError(f"{source}[{i}, {j}] ({name!r}) is {x[i, j]!r}; the model was trained without missing "
                            "values (data.options.missing: error)")
    return encoder.transform(codes, categories)


def _reason(error: Exception) -> str:
    """One line: the first schema problem with its key path, a missing key, or the error's own message."""
    if isinstance(error, ValidationError):
        first = error.errors(include_url=False)[0]
        return f"config.{'.'.join(str(part) for part in first['loc'])}: {first['msg']}"
    return f"missing {error}" if isinstance(error, KeyError) else str(error)


# A model this small is built even if the file cannot hold it (the shape check then names the tensor).
FREE_PARAMETERS = 1 << 24


def _check_size(checkpoint: Checkpoint, layers: list[dict], input_dim: int) -> None:
    """Refuse a config whose layers need far more parameters than the file holds, before allocating them.

    Building a model allocates and initializes every parameter, so a header saying
    units: 10**9 would exhaust memory before any shape is compared; count_params
    counts them from the layers' shapes alone.
    """
    needed = count_params(layers, input_dim)
    stored = sum(t.size for t in checkpoint.model_tensors.values())
    if needed > max(stored, FREE_PARAMETERS):
        raise CheckpointError(f"{checkpoint.path}: its config needs at least {needed} parameters, but the file "
                              f"holds {stored} layer values: the config does not belong to these weights")


def _load_weights(checkpoint: Checkpoint, model: Model) -> None:
    """The stored tensors into the model; a refusal names the file and says whose architecture it is.

    The model was built from the checkpoint's own config, so a tensor it lacks or
    cannot take means the file's config and weights disagree, not that the user
    asked for another model.
    """
    try:
        model.load_state_dict(checkpoint.model_tensors)
    except CheckpointError as error:
        raise CheckpointError(f"{checkpoint.path}: {error}; the model is the architecture in its own config") \
            from None


def _load_preprocessing(checkpoint: Checkpoint, preprocessor: Preprocessor, input_dim: int,
                        output_dim: int | None = None) -> None:
    """offset and scale, one per input feature, or every prediction would be wrong (or fail to broadcast);
    target_offset and target_scale (standardized regression targets), if present, one per output."""
    state = checkpoint.group("preprocess")
    wanted = [("offset", input_dim, "takes", "features"), ("scale", input_dim, "takes", "features")]
    if "target_offset" in state or "target_scale" in state:
        wanted += [(name, output_dim, "has", "outputs") for name in ("target_offset", "target_scale")]
    for name, size, verb, what in wanted:
        value = state.get(name)
        if value is None or value.shape != (size,) or value.dtype.kind not in "fiu":
            found = "is missing" if value is None else f"has shape {value.shape} ({value.dtype})"
            raise CheckpointError(f"{checkpoint.path}: tensor preprocess.{name} {found}; the model {verb} "
                                  f"{size} {what}, so it needs shape ({size},)")
    preprocessor.load_state_dict(state)


def _check_task(checkpoint: Checkpoint, loss: Loss, model: Model) -> None:
    """The stored task must be the loss's, and multiclass names one per output, or scoring would fail."""
    meta = checkpoint.meta
    if loss.kind != meta["task"]:
        raise CheckpointError(f"{checkpoint.path}: its task is {meta['task']}, but its loss is for {loss.kind}")
    names = meta["class_names"]
    if meta["task"] == "multiclass" and names and len(names) != model.output_dim:
        raise CheckpointError(f"{checkpoint.path}: it names {len(names)} classes, but the model has "
                              f"{model.output_dim} outputs")


def _class_names(names: list[str] | None, loss: Loss, model: Model) -> tuple[str, ...] | None:
    """The stored names; a multiclass model without them gets 0, 1, ... (the scores are reported per name)."""
    if names:
        return tuple(names)
    return tuple(str(c) for c in range(model.output_dim)) if loss.kind == "multiclass" else None


def evaluate_checkpoint(path: str | Path, *, dataset: str | None = None, split: str | None = None,
                        data_dir: str | None = None, batch_size: int = 4096, target: str | None = None) -> dict:
    """Loss, accuracy, confusion matrix and per-class figures (or mse/mae/r2) of a checkpoint on a split."""
    return evaluate_with_outputs(path, dataset=dataset, split=split, data_dir=data_dir, batch_size=batch_size,
                                 target=target).result


@dataclass
class Evaluation:
    """evaluate_checkpoint's result and what produced it, for pictures (bpcli eval --plot).

    `x` holds the inputs as loaded, before preprocessing (uint8 pixels for the IDX
    image sets), so an image is shown as it was published, not standardized.
    `image_shape` is (rows, cols) when the inputs are images, else None.
    """

    result: dict
    x: np.ndarray
    y: np.ndarray
    logits: np.ndarray
    task: str
    class_names: tuple[str, ...] | None
    image_shape: tuple[int, ...] | None


def evaluate_with_outputs(path: str | Path, *, dataset: str | None = None, split: str | None = None,
                          data_dir: str | None = None, batch_size: int = 4096, on_warning=None,
                          target: str | None = None) -> Evaluation:
    """evaluate_checkpoint, keeping the raw inputs, targets and the network's outputs (values in target units).

    `split` None: every row of a file given as `dataset` ("all"), else the test split. `target`: the
    target column of a CSV, instead of the one the model was trained on.
    """
    checkpoint = open_checkpoint(path, on_warning)
    r = restore(checkpoint)
    split = split or ("all" if dataset and dataset not in DATASETS else "test")
    x, encoded, y, source = _split_arrays(checkpoint, r, dataset, split, data_dir, target)
    logits = predict_outputs(r, encoded, batch_size, source, encoded=True)
    y = loss_targets(y, r.task, r.model.dtype)
    result = {"checkpoint": str(checkpoint.path if Path(path).is_dir() else path), "dataset": source, "split": split,
              "n": len(y),
              "loss": r.loss(logits, y)[0]}
    if r.task == "regression":
        result.update(regression_metrics(logits, y.reshape(logits.shape)))
    elif r.task == "binary":
        correct = predict_classes(logits, "binary") == y.reshape(logits.shape)
        result["accuracy"] = float(correct.mean())
    else:
        result.update(classification_summary(y, predict_classes(logits, "multiclass"), r.class_names))
    return Evaluation(result, x, y, logits, r.task, r.class_names, _image_shape(source, x))


def _image_shape(name: str, x: np.ndarray) -> tuple[int, ...] | None:
    """(rows, cols) of image inputs: a named image dataset's, or the raw array's own when it is (n, rows, cols)."""
    source = DATASETS.get(name)
    if isinstance(source, IdxSource):
        return source.image_shape
    return tuple(x.shape[1:]) if x.ndim == 3 else None


def _split_arrays(checkpoint, r: Restored, dataset, split, data_dir, target=None):
    """(raw x, x encoded for the model, y, the data's name) of a split: of the training data, re-split exactly
    as in training (its hashes checked), or of another dataset; `all` takes every row."""
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; allowed: {', '.join(SPLITS)}")
    data, seed = r.config.data, r.config.training.seed
    name = dataset or data.dataset
    trained = dataset is None or _same_file(dataset, data.dataset)
    options = r.trained_options if name not in DATASETS else (data.options if name == data.dataset else {})
    if target:
        options = {**options, "target": target}
    raw = load_dataset(name, data_dir=data_dir or data.data_dir, mirrors=data.mirrors, options=options, seed=seed,
                       test=data.test if trained else None, hint="--target")
    if trained and name not in DATASETS:
        check_data_files(checkpoint.meta.get("data_info", {}).get("files"), data_files(r.config), DataError)
    test_fraction = data.test_fraction if trained and split != "all" else 0.0
    s = split_dataset(raw, r.task, data.val_fraction if split in ("val", "train") else 0.0, seed,
                      outputs=r.model.output_dim, class_names=r.class_names,  # labels the model has no output for
                      test_fraction=test_fraction)
    x, y = _pick(s, split, name, trained, checkpoint)
    encoded = r.encoder.transform(x, raw.categories) if r.encoder is not None else x
    return x, encoded, y, name


def _pick(s, split: str, name: str, trained: bool, checkpoint):
    """The split's (x, y); a split of the training data must be the one training made (its recorded hash)."""
    info = checkpoint.meta.get("data_info") or {}
    if split == "all":
        both = [(s.x_train, s.y_train)] + ([(s.x_test, s.y_test)] if s.x_test is not None else [])
        return np.concatenate([x for x, _ in both]), np.concatenate([y for _, y in both])
    if split == "test":
        if s.x_test is None:
            whole = " or --split all" if name not in DATASETS else ""
            raise DataError(f"{name} has no test set (hold one out when training, with data.test_fraction or "
                            f"data.test); use --split val, --split train{whole}")
        if trained and s.test_hash and s.test_hash != info.get("test_hash", s.test_hash):
            raise DataError(f"the test split of {name} differs from the one held out in training")
        return s.x_test, s.y_test
    if trained and s.val_hash != checkpoint.meta.get("val_hash"):
        raise DataError(f"the validation split of {name} differs from the one used in training")
    return (s.x_val, s.y_val) if split == "val" else (s.x_train, s.y_train)


def _same_file(a: str, b: str) -> bool:
    """Whether two dataset names are one file (however each path is written)."""
    if a in DATASETS or b in DATASETS:
        return a == b
    return Path(a).absolute().resolve() == Path(b).absolute().resolve()


def _check_features(x: np.ndarray, r: Restored, source: str) -> None:
    features = int(np.prod(x.shape[1:]))
    if features != r.model.input_dim:
        raise DataError(f"{source} has {features} input features, but the model was trained on {r.model.input_dim}")


def predict_file(checkpoint_path: str | Path, input_path: str | Path, batch_size: int = 4096) -> str:
    """Predictions for the rows of a CSV (its feature columns by name) or an NPZ's X, as CSV."""
    r = load_restored(checkpoint_path)
    return predictions_csv(predict_outputs(r, read_inputs(input_path, r), batch_size, str(input_path), encoded=True), r)


def read_inputs(path: str | Path, r: Restored) -> np.ndarray:
    """The model's inputs from a CSV or an NPZ's X (taken by count, as the model's inputs).

    A CSV: the feature columns the model was trained on, by header name (any order, other
    columns ignored), encoded as in training; by count if it has no header row. A model from
    before bpcli recorded its columns: the configured features by name, else every column but
    the target.
    """
    path = Path(path)
    if path.suffix.lower() == ".npz":
        return load_npz_inputs(str(path))
    options = r.trained_options
    if r.encoder is not None:
        e = r.encoder
        x, categories = load_csv_columns(str(path), e.features, e.categorical, e.missing)
        return e.transform(x, categories)
    if options.get("features"):
        return load_csv_columns(str(path), list(options["features"]))[0]
    return load_csv_inputs(str(path), drop=(options.get("target", "label"),))


def predictions_csv(logits: np.ndarray, r: Restored) -> str:
    """What `bpcli predict` writes: class and probabilities per row (multiclass, binary), or the values."""
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
