"""The config file's sections: what each key means, its type, range and default.

    Config                 the whole file: model, loss, optimizer, schedule, data, training,
                           diagnostics, checkpoint, output
    resolved_dict(config)  every key with its default filled in (config show, checkpoints, run dirs)
    optimizer_kwargs(config)  the optimizer's hyperparameters (its options minus name and lr)

Why pydantic: one declaration gives validation, defaults, the JSON Schema for
editors and the tables of docs/config.md (reference.py). The variants of the
loss, optimizer, schedule, layers, activations and initializers are generated
from the registries (schema.py), so the schema cannot drift from the code.
Models are strict (no coercion): YAML already typed each value, so
`nesterov: yes` is the string 'yes', an error, not true. Reading a file into a
Config, with every problem at its line, is loading.py's job.
"""

import math
from pathlib import Path
from typing import Annotated, Any, Literal, Optional

from pydantic import AfterValidator, ConfigDict, Field, WithJsonSchema, model_validator
from pydantic_core import PydanticCustomError

from bpcli.data.catalog import DATASETS
from bpcli.errors import did_you_mean
from bpcli.nn.metrics import monitorable, resolve_mode
from bpcli.nn.model import DTYPES, default_init
from bpcli.data.preprocessing import Preprocessor
from bpcli.config.schema import (ACTIVATION_CHOICES, INIT_CHOICES, LAYER_TYPES, LOSS_OPTIONS, OPTIMIZER_OPTIONS,
                     SCHEDULE_OPTIONS, LayerSpec, Strict, tagged)

DEFAULT_LOSS, DEFAULT_OPTIMIZER, DEFAULT_SCHEDULE = "cross_entropy", "sgd", "constant"
MONITORS = monitorable()   # val_loss, val_accuracy, train_loss, train_accuracy: from the metric registry
MODES = ("auto", "min", "max")


# -- the sections --------------------------------------------------------------------------------

def _check_dataset(value: str) -> str:
    if value in DATASETS or Path(value).suffix.lower() in (".csv", ".npz"):
        return value
    message = (f"unknown value {value!r}; allowed: {', '.join(sorted(DATASETS))}, or a path to a .csv or .npz "
               f"file.{did_you_mean(value, DATASETS)}")
    raise PydanticCustomError("unknown_dataset", "{message}", {"message": message})


def _check_folder_name(value: str | None) -> str | None:
    if value is not None and (value in ("", ".", "..") or "/" in value or "\\" in value):
        raise PydanticCustomError("folder_name", "{message}",
                                  {"message": f"must be a folder name without / or \\ (got {value!r})"})
    return value


DatasetName = Annotated[str, AfterValidator(_check_dataset), WithJsonSchema({"anyOf": [
    {"enum": sorted(DATASETS)}, {"type": "string", "pattern": r"\.([cC][sS][vV]|[nN][pP][zZ])$"}]})]


class ModelSection(Strict):
    """The network."""

    dtype: Literal[DTYPES] = Field("float32", description="Floating-point type of parameters and activations.")
    layers: list[LayerSpec] = Field(..., min_length=1, description="The layers, input first (required).")


class DataSection(Strict):
    """The data."""

    dataset: DatasetName = Field("mnist-mini", description=(
        f"A named dataset ({', '.join(sorted(DATASETS))}), or a path to a .csv or .npz file."))
    options: dict[str, Any] = Field(default_factory=dict, description=(
        "Options of the dataset: synthetic generators' n, noise, classes, n_test; CSV target and features."))
    val_fraction: float = Field(0.1, ge=0, lt=1, description="Fraction of the training set held out for validation.")
    preprocess: Literal[Preprocessor.METHODS] = Field("scale", description=(
        "scale: to [0, 1]; standardize: zero mean, unit variance; none: unchanged. Fitted on the training split."))
    batch_size: int = Field(64, ge=1, description=(
        "Examples per step; >= the training set size is full-batch gradient descent, 1 is online SGD."))
    eval_batch_size: int = Field(4096, ge=1, description="Examples per batch when evaluating validation and test sets.")
    data_dir: Optional[str] = Field(None, description="Cache folder; null: $BPCLI_DATA_DIR or the per-user cache.")
    mirrors: Optional[list[str]] = Field(None, description="Base URLs that replace the download mirrors; null: built in.")

    def batch_size_for(self, n_train: int) -> int:
        """The batch size training uses: batch_size, or the whole training set if that is smaller."""
        return min(self.batch_size, n_train)

    def steps_per_epoch(self, n_train: int) -> int:
        """Optimizer steps in one pass over n_train examples (the last batch may be short)."""
        return math.ceil(n_train / self.batch_size_for(n_train))


class EarlyStoppingSection(Strict):
    """Stop when the monitored metric has not improved for `patience` epochs."""

    patience: int = Field(5, ge=1, description="Epochs without improvement before training stops.")
    min_delta: float = Field(0.0, ge=0, description="Smallest change of the metric that counts as an improvement.")
    restore_best: bool = Field(True, description="End with the weights of the best epoch.")


class TrainingSection(Strict):
    """The training loop."""

    epochs: int = Field(10, ge=1, description="Passes over the training set.")
    seed: int = Field(0, ge=0, description="Seed of every random choice: weights, split, shuffling, dropout.")
    monitor: Literal[MONITORS] = Field("val_loss", description=(
        "The metric behind early stopping, the best checkpoint and reduce_on_plateau."))
    mode: Literal[MODES] = Field("auto", description="Whether the monitor should go down or up; auto: the metric's own direction (max for accuracy).")
    early_stopping: Optional[EarlyStoppingSection] = Field(None, description="null: off; or a mapping (see below).")
    clip_grad_norm: Optional[float] = Field(None, gt=0, description="Scale gradients down to this global L2 norm.")
    clip_grad_value: Optional[float] = Field(None, gt=0, description="Clip each gradient to [-value, value].")

    @property
    def monitor_mode(self) -> str:
        """'min' or 'max': `mode`, where auto means the monitored metric's own direction (max for accuracy)."""
        return resolve_mode(self.monitor, self.mode)


class CheckpointSection(Strict):
    """Periodic checkpoints."""

    every: int = Field(0, ge=0, description="Also keep a checkpoint every N epochs; 0: only best and last.")
    keep: int = Field(3, ge=1, description="How many of the periodic checkpoints to keep.")


class OutputSection(Strict):
    """The run directory."""

    dir: str = Field("runs", description="Parent folder of run directories.")
    name: Annotated[Optional[str], AfterValidator(_check_folder_name)] = Field(
        None, description="Run directory name; null: <config file stem>-<YYYYmmdd-HHMMSS>.")


class DiagnosticWarnings(Strict):
    """Which warnings the layer diagnostics may print (each at most once per run)."""

    vanishing_gradients: bool = Field(True, description=(
        "The first layer's gradient norm gradient_ratio times below the last layer's."))
    exploding_gradients: bool = Field(True, description=(
        "The first layer's gradient norm gradient_ratio times above the last's, or any above exploding_norm."))
    dead_units: bool = Field(True, description="More than dead_fraction of a ReLU-family layer's units never active.")
    saturation: bool = Field(True, description="More than saturated_fraction of sigmoid/tanh outputs at their flat ends.")
    update_ratio: bool = Field(True, description=(
        "The median update-to-weight ratio outside [update_ratio_low, update_ratio_high] at full learning rate."))


class DiagnosticsSection(Strict):
    """Per-layer figures each epoch (layers.csv, layers.jsonl) and the warnings drawn from them."""

    enabled: bool = Field(True, description="Measure and log each layer (costs about 2% of an epoch).")
    samples: int = Field(8, ge=1, description="Batches per epoch on which norms and activation statistics are taken.")
    warn: DiagnosticWarnings = Field(default_factory=DiagnosticWarnings, description="Each warning on or off.")
    gradient_ratio: float = Field(1000.0, gt=1, description=(
        "How many times smaller (larger) the first layer's gradient norm must be than the last's to warn."))
    exploding_norm: float = Field(1000.0, gt=0, description="A layer gradient norm above this warns of explosion.")
    dead_fraction: float = Field(0.5, gt=0, le=1, description="Warn when more of a layer's units than this are dead.")
    saturated_fraction: float = Field(0.5, gt=0, le=1, description="Warn when more outputs than this are saturated.")
    update_ratio_low: float = Field(1e-5, gt=0, description="Warn below this median update-to-weight ratio.")
    update_ratio_high: float = Field(0.1, gt=0, description="Warn above this median update-to-weight ratio.")


# Every tagged union: (variants, tag key, the tag assumed when the key is absent).
TAGGED_UNIONS = ((LOSS_OPTIONS, "name", DEFAULT_LOSS), (OPTIMIZER_OPTIONS, "name", DEFAULT_OPTIMIZER),
                 (SCHEDULE_OPTIONS, "name", DEFAULT_SCHEDULE), (LAYER_TYPES, "type", None),
                 (ACTIVATION_CHOICES, "name", None), (INIT_CHOICES, "name", None))
SECTIONS = ("model", "loss", "optimizer", "schedule", "data", "training", "diagnostics", "checkpoint", "output")


class Config(Strict):
    """A bpcli training config."""

    model_config = ConfigDict(title="bpcli config")

    model: ModelSection = Field(..., description="The network (required).")
    loss: tagged(LOSS_OPTIONS, "name", default=DEFAULT_LOSS) = Field(
        default_factory=LOSS_OPTIONS[DEFAULT_LOSS], description="The loss and its weight penalties.")
    optimizer: tagged(OPTIMIZER_OPTIONS, "name", default=DEFAULT_OPTIMIZER) = Field(
        default_factory=OPTIMIZER_OPTIONS[DEFAULT_OPTIMIZER], description="The optimizer and its hyperparameters.")
    schedule: tagged(SCHEDULE_OPTIONS, "name", default=DEFAULT_SCHEDULE) = Field(
        default_factory=SCHEDULE_OPTIONS[DEFAULT_SCHEDULE], description="The learning-rate schedule.")
    data: DataSection = Field(default_factory=DataSection, description=(
        "The dataset, its validation split and preprocessing, and the batch sizes."))
    training: TrainingSection = Field(default_factory=TrainingSection, description=(
        "How training runs: epochs, seed, the monitored metric, early stopping, gradient clipping."))
    diagnostics: DiagnosticsSection = Field(default_factory=DiagnosticsSection, description=(
        "Per-layer gradient and activation figures each epoch, and warnings when training looks unhealthy."))
    checkpoint: CheckpointSection = Field(default_factory=CheckpointSection, description=(
        "Which checkpoints a run keeps besides the best and the last."))
    output: OutputSection = Field(default_factory=OutputSection, description="Where the run directory goes.")

    @model_validator(mode="before")
    @classmethod
    def _empty_section_means_defaults(cls, data):
        """`checkpoint:` with everything under it commented out is null: take it as {}."""
        if isinstance(data, dict):
            return {k: {} if v is None and k in SECTIONS else v for k, v in data.items()}
        return data


# -- output --------------------------------------------------------------------------------------

def resolved_dict(config: Config) -> dict:
    """Every key with its default filled in, as JSON-able data (for `config show`, checkpoints, run dirs).

    A null init (dense: the default for the activation it feeds) is resolved too, by the model's own
    rule (nn.model.default_init), so a saved config pins it.
    """
    data = config.model_dump(mode="json")
    layers = data["model"]["layers"]
    for i, layer in enumerate(layers):
        if "init" in layer and layer["init"] is None:
            layer["init"] = default_init(layers, i)
    return data


def optimizer_kwargs(config: Config) -> dict:
    """Hyperparameters for build_optimizer (without name; lr goes to the schedule)."""
    return config.optimizer.model_dump(exclude={"name", "lr"})
