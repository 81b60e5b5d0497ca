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
`nesterov: yes` is the string 'yes', an error, not true. Values that pass
their types and ranges but cannot work (a dataset's options, an initializer's
contradicting options, a network larger than this machine's memory, a NUL
byte in a path) are refused here too (limit_problems), before anything is
built. Reading a file into a Config, with every problem at its line, is
loading.py's job.
"""

import math
import os
from pathlib import Path
from typing import Annotated, Any, Literal, Optional

import numpy as np
from pydantic import AfterValidator, ConfigDict, Field, ValidationError, WithJsonSchema, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from bpcli.data import synthetic, tables
from bpcli.data.catalog import DATASETS, IdxSource, SyntheticSource
from bpcli.errors import did_you_mean
from bpcli.fileio import memory_size, physical_memory
from bpcli.nn.initializers import INITIALIZERS
from bpcli.nn.metrics import monitorable, resolve_mode
from bpcli.nn.model import DTYPES, default_init, layers_of
from bpcli.optim.optimizers import build_optimizer
from bpcli.data.preprocessing import TARGET_METHODS, Preprocessor
from bpcli.nn.losses import LOSSES
from bpcli.config.schema import (ACTIVATION_CHOICES, INIT_CHOICES, LAYER_TYPES, LOSS_OPTIONS, OPTIMIZER_OPTIONS,
                     SCHEDULE_OPTIONS, LayerSpec, Strict, tagged)

DEFAULT_LOSS, DEFAULT_OPTIMIZER, DEFAULT_SCHEDULE = "cross_entropy", "sgd", "constant"
MONITORS = monitorable()   # val_loss, val_accuracy, train_loss, train_accuracy: from the metric registry
MODES = ("auto", "min", "max")


# -- the sections --------------------------------------------------------------------------------

def _check_dataset(value: str) -> str:
    if "\0" in value:
        raise PydanticCustomError("unknown_dataset", "{message}", {"message": f"a path cannot hold a NUL byte (got "
                                                                              f"{value!r})"})
    if value in DATASETS or Path(value).suffix.lower() in (".csv", ".npz"):
        return value
    message = (f"unknown value {value!r}; allowed: {', '.join(sorted(DATASETS))}, or a path to a .csv or .npz "
               f"file.{did_you_mean(value, DATASETS)}")
    raise PydanticCustomError("unknown_dataset", "{message}", {"message": message})


def _check_folder_name(value: str | None) -> str | None:
    if value is not None and (value in ("", ".", "..") or any(c in value for c in "/\\\0")):
        raise PydanticCustomError("folder_name", "{message}",
                                  {"message": f"must be a folder name without / or \\ or NUL bytes (got {value!r})"})
    return value


def _check_folder_path(value: str | None) -> str | None:
    """A path the operating system can take: no NUL byte (open() would raise ValueError on one)."""
    if value is not None and "\0" in value:
        raise PydanticCustomError("folder_name", "{message}",
                                  {"message": f"must be a folder path without NUL bytes (got {value!r})"})
    return value


FolderPath = Annotated[str, AfterValidator(_check_folder_path)]


def _check_data_path(value: str) -> str:
    if "\0" in value or Path(value).suffix.lower() not in (".csv", ".npz"):
        raise PydanticCustomError("data_path", "{message}", {"message": f"must be a path to a .csv or .npz file "
                                                                        f"without NUL bytes (got {value!r})"})
    return value


DataPath = Annotated[str, AfterValidator(_check_data_path)]


DatasetName = Annotated[str, AfterValidator(_check_dataset), WithJsonSchema({"anyOf": [
    {"enum": sorted(DATASETS)}, {"type": "string", "pattern": r"\.([cC][sS][vV]|[nN][pP][zZ])$"}]})]


class ModelSection(Strict):
    """The network."""

    dtype: Literal[DTYPES] = Field("float32", description="Floating-point type of parameters and activations.")
    layers: list[LayerSpec] = Field(..., min_length=1, description="The layers, input first (required).")

    def parameter_counts(self, input_dim: int) -> list[int]:
        """Parameters of each entry of `layers` for inputs of width input_dim, without building the model."""
        counts = [0] * len(self.layers)
        for i, layer, _ in self._shapes(input_dim):
            counts[i] += sum(math.prod(shape) for shape in layer.param_shapes().values())
        return counts

    def output_width(self, input_dim: int) -> int:
        """The model's outputs for inputs of width input_dim (the width prepare(outputs=) checks targets against)."""
        return ([input_dim] + [width for _, _, width in self._shapes(input_dim)])[-1]

    def _shapes(self, input_dim: int):
        """(entry index, layer, its output width) for each layer the entries make; no weight is allocated."""
        width = input_dim
        for i, spec in enumerate(self.layers):
            for layer in layers_of(spec.model_dump(mode="json"), f"model.layers.{i}"):
                width = layer.build(width)
                yield i, layer, width


class AugmentSection(Strict):
    """Random distortions of each training batch of images (never of validation or test data)."""

    shift: int = Field(0, ge=0, le=8, description="Largest shift in pixels, up/down and left/right (whole pixels).")
    rotate: float = Field(0.0, ge=0, le=180, description="Largest rotation in degrees, either way.")
    scale: float = Field(0.0, ge=0, lt=1, description="Largest change of size: 0.1 draws a zoom in [0.9, 1.1].")
    shear: float = Field(0.0, ge=0, lt=60, description="Largest horizontal shear in degrees, either way.")
    elastic_alpha: float = Field(0.0, ge=0, description=(
        "Strength of the elastic distortion in pixels (Simard et al. 2003 used 34 on MNIST); 0: off."))
    elastic_sigma: float = Field(4.0, gt=0, le=20, description="Smoothness of the elastic distortion field, in pixels.")
    flip: bool = Field(False, description=(
        "Mirror each image left to right with probability 1/2: for classes that look alike mirrored "
        "(clothes, objects), not for digits or letters."))


class DataSection(Strict):
    """The data."""

    dataset: DatasetName = Field("mnist-mini", description=(
        f"A named dataset ({', '.join(sorted(DATASETS))}), or a path to a .csv or .npz file."))
    options: dict[str, Any] = Field(default_factory=dict, description=(
        "Options of the dataset: synthetic generators' n, noise, classes, n_test; CSV target, features, "
        "categorical (columns to one-hot encode) and missing (error, mean or median: how empty cells are filled)."))
    test: Optional[DataPath] = Field(None, description=(
        "A .csv or .npz file of test rows with the dataset's columns (only for a dataset file without a test set)."))
    test_fraction: float = Field(0.0, ge=0, lt=1, description=(
        "Fraction of a dataset file held out as its test set (seeded, stratified by class); 0: none."))
    val_fraction: float = Field(0.1, ge=0, lt=1, description="Fraction of the training set held out for validation.")
    preprocess: Literal[Preprocessor.METHODS] = Field("scale", description=(
        "scale: to [0, 1]; standardize: zero mean, unit variance; none: unchanged. Fitted on the training split."))
    target_preprocess: Literal[TARGET_METHODS] = Field("auto", description=(
        "Regression targets: standardize (fitted on the training split; predictions and test metrics are in "
        "the target's units), none, or auto: standardize for a regression loss."))
    augment: Optional[AugmentSection] = Field(None, description=(
        "null: off; or distortions of the training images, drawn per batch from (seed, epoch, batch) (see below)."))
    batch_size: int = Field(64, ge=1, description=(
        "Examples per step; >= the training set size is full-batch gradient descent, 1 is online SGD."))
    eval_batch_size: int = Field(4096, ge=1, description="Examples per batch when evaluating validation and test sets.")
    data_dir: Optional[FolderPath] = Field(None, description="Cache folder; null: $BPCLI_DATA_DIR or the per-user cache.")
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

    dir: FolderPath = Field("runs", description="Parent folder of run directories.")
    name: Annotated[Optional[str], AfterValidator(_check_folder_name)] = Field(
        None, description="Run directory name; null: <config file stem>-<YYYYmmdd-HHMMSS>.")
    tensorboard: bool = Field(False, description=(
        "Also write TensorBoard event files to the run's tb/ folder (needs tensorboardX: the tensorboard extra)."))


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
    output: OutputSection = Field(default_factory=OutputSection, description=(
        "Where the run directory goes, and whether TensorBoard files are written."))

    @model_validator(mode="before")
    @classmethod
    def _empty_section_means_defaults(cls, data):
        """`checkpoint:` with everything under it commented out is null: take it as {}."""
        if isinstance(data, dict):
            return {k: {} if v is None and k in SECTIONS else v for k, v in data.items()}
        return data

    @model_validator(mode="after")
    def _within_limits(self):
        """Values each valid alone that could not work: see limit_problems."""
        problems = limit_problems(self)
        if problems:
            raise ValidationError.from_exception_data("Config", [
                InitErrorDetails(type=PydanticCustomError("limit", "{must_be}", {"must_be": must_be}), loc=loc,
                                 input=value) for loc, value, must_be in problems])
        return self


# -- limits --------------------------------------------------------------------------------------

def limit_problems(config: Config) -> list[tuple[tuple, Any, str]]:
    """(key path, value, what it must be) for values the types and ranges allow but that cannot work.

    A synthetic dataset's options (classes: 0, n: 10**12), an initializer's options that
    contradict each other (uniform low > high), and a network too large for this machine's
    memory are refused here, before any data is made or any weight allocated. The key paths
    name keys (data.options.classes) inside values the schema leaves open (a mapping, a layer),
    so messages.py reports each as `KEY: must be WHAT (got VALUE)`, at its line.
    """
    return _dataset_option_problems(config.data) + _init_problems(config.model) + _memory_problems(config)


def test_split_problems(config: Config) -> list[tuple[tuple, Any, str]]:
    """(key path, value, what it must be): a test file or fraction only for a dataset file, not both, leaving rows
    to train on; targets scaled only for regression. Rules between keys: loading.py reports them."""
    data, problems = config.data, []
    if data.dataset in DATASETS:
        if data.test is not None:
            problems.append((("data", "test"), data.test, f"null: {data.dataset} has a test set of its own"))
        if data.test_fraction > 0:
            problems.append((("data", "test_fraction"), data.test_fraction,
                             f"0: {data.dataset} has a test set of its own"))
    elif data.test is not None and data.test_fraction > 0:
        problems.append((("data", "test_fraction"), data.test_fraction, "0 when data.test names a file of test rows"))
    elif data.test is not None and Path(data.test).suffix.lower() != Path(data.dataset).suffix.lower():
        problems.append((("data", "test"), data.test, f"a {Path(data.dataset).suffix} file, as data.dataset is"))
    if data.test_fraction + data.val_fraction >= 1:
        problems.append((("data", "test_fraction"), data.test_fraction,
                         f"below 1 - data.val_fraction ({1 - data.val_fraction:g}), so that rows are left to train on"))
    if data.target_preprocess == "standardize" and LOSSES[config.loss.name].kind != "regression":
        problems.append((("data", "target_preprocess"), data.target_preprocess,
                         f"auto or none: {config.loss.name} takes class labels, which are not scaled"))
    return problems


def _dataset_option_problems(data: DataSection) -> list[tuple[tuple, Any, str]]:
    """A synthetic set's options (synthetic.py), a .csv's or an .npz's (tables.py); a named image set has none."""
    source = DATASETS.get(data.dataset)
    if source is None:
        problems = tables.option_problems(data.dataset, data.options)
    elif isinstance(source, SyntheticSource):
        problems = synthetic.option_problems(data.dataset, data.options)
    else:
        problems = [(key, f"absent: {data.dataset} takes no options") for key in data.options]
    return [(("data", "options", key), data.options.get(key), must_be) for key, must_be in problems]


def _init_problems(model: ModelSection) -> list[tuple[tuple, Any, str]]:
    """An initializer's own rules between its options (initializers.py: `option_limits`)."""
    problems = []
    for i, layer in enumerate(model.layers):
        for field in type(layer).model_fields:
            choice = getattr(layer, field)
            limits = getattr(INITIALIZERS.get(getattr(choice, "name", None)), "option_limits", None)
            if isinstance(choice, tuple(INIT_CHOICES.values())) and limits:
                options = choice.model_dump(exclude={"name"})
                problems += [(("model", "layers", i, field, key), options[key], must_be)
                             for key, must_be in limits(options)]
    return problems


def _memory_problems(config: Config) -> list[tuple[tuple, Any, str]]:
    """A network whose weights, gradients and optimizer state alone would not fit in this machine's memory.

    A lower bound, cheap to compute: the parameter count from the layer widths, with the
    input width of a named dataset or else 1, times the copies training keeps (as
    `bpcli inspect` counts them); activations are not counted.
    """
    name, source = config.data.dataset, DATASETS.get(config.data.dataset)
    input_dim = (math.prod(source.image_shape) if isinstance(source, IdxSource)
                 else synthetic.FEATURES.get(name, 2) if isinstance(source, SyntheticSource) else 1)
    counts = config.model.parameter_counts(input_dim)
    state = len(build_optimizer(config.optimizer.name, **optimizer_kwargs(config)).state_names)
    copies, size = 3 + state, np.dtype(config.model.dtype).itemsize
    need, memory = sum(counts) * size * copies, physical_memory()
    if need <= memory:
        return []
    widths = [getattr(spec, "units", 0) or 0 for spec in config.model.layers]   # blame the widest layer
    i = max(range(len(counts)), key=lambda j: (widths[j], counts[j]))
    key = "units" if widths[i] else "type"
    return [(("model", "layers", i, key), getattr(config.model.layers[i], key), (
        f"small enough for this machine's memory: training this network needs at least {memory_size(need)} for "
        f"{sum(counts)} parameters in {config.model.dtype} (weights, gradients, {config.optimizer.name}'s {state} "
        f"state arrays and a scratch copy), and this machine has {memory_size(memory)}"))]


# -- output --------------------------------------------------------------------------------------

DATA_PATHS = ("dataset", "test")


def resolve_data_paths(config: Config, folder: str | Path, keep: tuple[str, ...] = ()) -> Config:
    """data.dataset and data.test as absolute paths: a relative one is taken from `folder` (the config file's).

    So a run reads the same file from any working folder, and records where it was. Named datasets
    stay names; the keys in `keep` are left alone (a --set value is resolved from the working folder).
    """
    updates = {key: os.path.abspath(os.path.join(folder, value)) for key in DATA_PATHS if key not in keep
               for value in [getattr(config.data, key)]
               if value is not None and value not in DATASETS and not os.path.isabs(value)}
    if not updates:
        return config
    return config.model_copy(update={"data": config.data.model_copy(update=updates)})


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
