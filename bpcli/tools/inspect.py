"""What a config or a checkpoint describes, as data: layers, parameter counts, memory, training history.

    load_target(path, overrides) -> Target      a config file, a checkpoint or a run directory
    summarize(target) -> dict                   everything `bpcli inspect` shows, JSON-able

Why the model is built, not counted by hand: the shapes, parameter counts and
initializers then come from model.py's own rules (and, for a checkpoint, from
the weights restored into it), so what inspect shows is what training builds.
Building takes milliseconds even for millions of parameters; of the data only
the input size is needed, and `input_dim` reads it as cheaply as the dataset
allows: from the registry for the IDX image sets, from the header of a CSV or
of the .npy inside an NPZ, and by generating the (tiny) synthetic sets.
"""

from __future__ import annotations

import csv
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bpcli.config.loading import load_config
from bpcli.config.sections import Config, optimizer_kwargs, resolved_dict
from bpcli.data.catalog import DATASETS, IdxSource, SyntheticSource, load_dataset, load_synthetic
from bpcli.data.tables import read_csv_header
from bpcli.errors import CheckpointError, ConfigError, DataError
from bpcli.nn.layers import Layer, named
from bpcli.nn.losses import LOSSES
from bpcli.nn.model import Model, build_model, next_activation
from bpcli.optim.optimizers import build_optimizer
from bpcli.training.checkpoint import SUFFIX, Checkpoint, load_checkpoint
from bpcli.training.run import as_config

CONFIG_SUFFIXES = (".yaml", ".yml")


@dataclass
class Target:
    """A config and the model it builds; `checkpoint` is set when the input was one."""

    kind: str                        # "config" or "checkpoint"
    path: str
    config: Config                   # or a resolved config dict, read into a Config
    input_dim: int
    model: Model
    checkpoint: Checkpoint | None = None

    def __post_init__(self):
        self.config = as_config(self.config)


# -- reading the input ---------------------------------------------------------------------------

def accepted(command: str) -> str:
    return (f"bpcli {command} accepts a config file (.yaml) or a checkpoint: a .safetensors file or a run "
            "directory (runs/NAME)")


def load_target(path: str | Path, overrides=(), command: str = "inspect") -> Target:
    """A config (with --set overrides) or a checkpoint; anything else is a ConfigError saying what is accepted."""
    p = Path(path)
    if p.is_dir() or p.suffix.lower() == SUFFIX or _looks_like_safetensors(p):
        if overrides:
            raise ConfigError(f"--set changes a config file, not a checkpoint's stored config ({p})")
        return _checkpoint_target(p, command)
    if p.suffix.lower() in CONFIG_SUFFIXES:
        config = load_config(p, overrides)
        dim = input_dim(config)
        model = build_model(resolved_dict(config)["model"]["layers"], dim, seed=config.training.seed,
                            dtype=config.model.dtype)
        return Target("config", str(path), config, dim, model)
    what = "no such file or folder" if not p.exists() else "neither a config nor a checkpoint"
    raise ConfigError(f"{p}: {what}; {accepted(command)}")


def _looks_like_safetensors(p: Path) -> bool:
    """A checkpoint saved under another name: 8 bytes of header length, then the JSON header's '{'."""
    try:
        with p.open("rb") as f:
            return f.read(9)[8:9] == b"{"
    except OSError:
        return False


def _checkpoint_target(p: Path, command: str) -> Target:
    from bpcli.tools.inference import restore
    from bpcli.training.run import find_checkpoint
    from bpcli.training.rundir import RunDir

    if p.is_dir() and not (p / "checkpoints").is_dir():
        runs = sorted(d.name for d in p.iterdir() if (d / "checkpoints").is_dir())
        inside = f"; it holds the run directories {', '.join(runs[:3])}{', ...' if len(runs) > 3 else ''}" \
            if runs else ""
        raise ConfigError(f"{p} is a folder but not a run directory (it has no checkpoints/ folder){inside}; "
                          f"{accepted(command)}")
    try:
        checkpoint = find_checkpoint(RunDir(p)) if p.is_dir() else load_checkpoint(p)
    except CheckpointError as error:   # a file that is not a (complete) bpcli checkpoint: say what is accepted
        raise CheckpointError(f"{error}; {accepted(command)}") from None
    restored = restore(checkpoint)
    return Target("checkpoint", str(checkpoint.path), restored.config, restored.model.input_dim, restored.model,
                  checkpoint)


def input_dim(config: Config | dict) -> int:
    """The number of input features of the configured dataset, without loading it where that can be avoided.

    Images are flattened by preprocessing, so an (n, 28, 28) set has 784 inputs.
    A CSV or NPZ that cannot be read this way is loaded in full, whose error
    messages then say what is wrong with the file.
    """
    config = as_config(config)
    data, seed = config.data, config.training.seed
    name, options = data.dataset, dict(data.options)
    entry = DATASETS.get(name)
    if isinstance(entry, IdxSource):
        return int(np.prod(entry.image_shape))
    if isinstance(entry, SyntheticSource):  # generated in well under a millisecond
        return _features(load_synthetic(name, seed, options).x_train.shape)
    suffix = Path(name).suffix.lower()
    cheap = _csv_features(name, options) if suffix == ".csv" else _npz_features(name) if suffix == ".npz" else None
    if cheap:
        return cheap
    dataset = load_dataset(name, data_dir=data.data_dir, mirrors=data.mirrors, options=options, seed=seed)
    return _features(dataset.x_train.shape)


def _features(shape: tuple) -> int:
    return int(np.prod(shape[1:]))


def _csv_features(path: str, options: dict) -> int | None:
    """From the header row: the listed features, or every column but the target (as data.load_csv takes them)."""
    try:
        header = read_csv_header(path)   # a regular file only, its first line bounded: /dev/zero cannot hang it
    except (OSError, UnicodeDecodeError, csv.Error, DataError):
        return None
    target, features = options.get("target", "label"), options.get("features")
    if target not in header or (features and not set(features) <= set(header)):
        return None
    return len(features) if features else sum(c != target for c in header)


def _npz_features(path: str) -> int | None:
    """From the header of X.npy inside the archive: its shape, without reading the array."""
    try:
        with zipfile.ZipFile(path) as archive, archive.open("X.npy") as f:
            version = np.lib.format.read_magic(f)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape = read(f)[0]
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return None
    return _features(shape) if len(shape) >= 2 else None


# -- the summary ----------------------------------------------------------------------------------

def summarize(target: Target) -> dict:
    """Layers, parameter and memory totals, the config in brief and, for a checkpoint, its training history."""
    model, config = target.model, target.config
    batch = config.data.batch_size
    return {
        "source": target.path,
        "kind": target.kind,
        "input_dim": target.input_dim,
        "batch_size": batch,
        "dtype": str(model.dtype),
        "layers": layer_rows(model, batch),
        "parameters": {"total": model.n_params, "trainable": model.n_params,
                       "buffers": sum(b.size for b in model.buffers.values())},
        "memory": memory(model, config, target.checkpoint),
        "config": config_summary(config, target.input_dim),
        "training": training_summary(target.checkpoint, config) if target.checkpoint else None,
    }


def layer_rows(model: Model, batch: int) -> list[dict]:
    """One row per layer, named as the parameters are (layers.N), with its output shape for a batch.

    Type, options and initializers are the layer's own summary_row; a layer whose
    initializer follows an activation (dense) also shows the activation it feeds.
    """
    rows = []
    for i, layer in enumerate(model.layers):
        own = layer.summary_row()
        rows.append({"layer": f"layers.{i}", "type": own["type"], "options": own["options"],
                     "output": [batch, model.widths[i]], "params": layer_params(layer), "init": own["init"],
                     "activation": feeds(model.layers, i) if layer.init_from_activation else None})
    return rows


def layer_params(layer: Layer) -> int:
    return sum(int(np.prod(shape)) for shape in layer.param_shapes().values())


def feeds(layers: list[Layer], i: int) -> str:
    """The activation layer i's output goes through next (model.next_activation), with its options, or "none"."""
    activation = next_activation(layers, i)
    return named(activation.activation_name, activation.options()) if activation else "none"


def memory(model: Model, config: Config, checkpoint: Checkpoint | None) -> dict:
    """Bytes of the training-time arrays that scale with the parameter count, in the model's dtype.

    Parameters (theta) and gradients (dtheta) are one copy each; the optimizer
    keeps its state arrays (from the checkpoint's tensors when it has them, else
    the optimizer's own state_names: Adam 2 copies, momentum 1, plain SGD 0),
    plus one scratch copy it reuses every step (not saved). Batch-norm running
    statistics are buffers. Activations, which scale with the batch, are not counted.
    """
    n, size = model.n_params, model.dtype.itemsize
    state, source = _optimizer_state(model, config, checkpoint)
    parts = {"parameters": n * size, "gradients": n * size, "optimizer_state": sum(state.values()),
             "optimizer_scratch": n * size,
             "buffers": sum(b.size for b in model.buffers.values()) * size}
    return {"dtype": str(model.dtype), "bytes_per_value": size, **parts, "total": sum(parts.values()),
            "optimizer": config.optimizer.name, "optimizer_state_arrays": state,
            "optimizer_state_copies": round(sum(state.values()) / (n * size), 3) if n else 0,
            "optimizer_state_source": source}


def _optimizer_state(model: Model, config: Config, checkpoint: Checkpoint | None) -> tuple[dict[str, int], str]:
    """{state name: bytes} and where that came from."""
    stored = {k: int(v.size) * model.dtype.itemsize
              for k, v in sorted((checkpoint.group("optimizer") if checkpoint else {}).items()) if k != "step"}
    if stored:
        return stored, "the checkpoint's tensors"
    names = build_optimizer(config.optimizer.name, **optimizer_kwargs(config)).state_names
    return {k: model.n_params * model.dtype.itemsize for k in names}, "the optimizer's state_names"


def config_summary(config: Config, dim: int) -> dict:
    """The settings a reader asks about first: data, loss, optimizer, schedule, batch size, epochs (as JSON data)."""
    data, training, early = config.data, config.training, config.training.early_stopping

    def given(section) -> dict:
        return section.model_dump(mode="json", exclude_none=True)

    return {
        "dataset": data.dataset, "dataset_options": dict(data.options), "input_dim": dim,
        "task": LOSSES[config.loss.name].kind,
        "loss": given(config.loss), "optimizer": given(config.optimizer), "schedule": given(config.schedule),
        "batch_size": data.batch_size, "epochs": training.epochs, "seed": training.seed,
        "monitor": training.monitor, "early_stopping": given(early) if early else None,
    }


def training_summary(checkpoint: Checkpoint, config: Config) -> dict:
    """Epochs run, why training stopped and the best and latest epochs' metrics, from the checkpoint alone.

    `config` is the checkpoint's own. The best epoch is the monitor's (it also
    picks the best checkpoint and early stopping's patience); a `best` checkpoint
    is taken when that epoch ends, so it speaks of that epoch even if the run went
    on, and it records no timings (seconds is None).
    """
    meta, state = checkpoint.meta, checkpoint.meta["state"]
    training = config.training
    # The monitor's state: in the training state, or (checkpoints from before the regroup) in EarlyStopping's.
    tracker = state.get("monitor") or meta["callbacks"].get("EarlyStopping", {})
    best_epoch = tracker.get("best_epoch") if isinstance(tracker.get("best_epoch"), int) else None
    data_info = meta.get("data_info") if isinstance(meta.get("data_info"), dict) else {}
    best_row, last_row, seconds = _rows(state, best_epoch)
    return {
        "checkpoint": meta["kind"],
        "epochs_run": state["epoch"],
        "batches_into_next_epoch": state["batch"],
        "epochs_configured": training.epochs,
        "stop_reason": _stop_reason(meta, training.epochs),
        "monitor": training.monitor,
        "mode": training.monitor_mode,
        "best_epoch": best_epoch or None,
        "best_value": tracker.get("best"),
        "best_metrics": best_row,
        "last_metrics": last_row,
        "seconds": None if seconds is None else round(seconds, 3),
        "task": meta["task"],
        "class_names": meta["class_names"],
        "data": data_info,
    }


def _rows(state: dict, best_epoch) -> tuple[dict | None, dict | None, float | None]:
    """(best row, latest row, seconds trained): format 1 kept the whole history, later ones these three."""
    if "history" not in state:
        return state["best_row"], state["last_row"], state.get("seconds")
    history = state["history"]
    seconds = sum(r["seconds"] for r in history if isinstance(r.get("seconds"), (int, float)))
    best = next((row for row in history if row.get("epoch") == best_epoch), None)
    return best, history[-1] if history else None, seconds


def _stop_reason(meta: dict, epochs) -> str:
    """As recorded; a run that completed its epochs saved its last checkpoint before it could record why it stopped."""
    state = meta["state"]
    if isinstance(state.get("stop_reason"), str):
        return state["stop_reason"]
    if state["epoch"] == epochs and state["batch"] == 0:
        return f"completed {epochs} epochs"
    if meta["kind"] == "best":
        return "not recorded in a best checkpoint (see last.safetensors)"
    return "not recorded (saved during training; the run may have gone on after it)"
