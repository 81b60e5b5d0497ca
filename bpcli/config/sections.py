"""The config file: its sections, and reading it into a validated Config.

    load_config(path, overrides=()) -> Config       parse_config_text(text, name, overrides) -> Config
    resolved_dict(config) -> dict                   config_json_schema() -> dict
    optimizer_kwargs(config), schedule_kwargs(config), monitor_mode(config)

Contract. A config is data only (yamlio.py reads the YAML: YAML 1.2 scalars,
duplicate keys refused, size caps). It is validated in full before anything
runs, and every problem is reported at once in one ConfigError, one line each,
sorted by line, each naming the file position and key path (config_messages.py
words them):

    run.yaml: 2 problems in the config:
      run.yaml:7:3 optimizer.momentum: unknown key; allowed: beta1, beta2, eps, lr, name, weight_decay.
      run.yaml:12:15 data.batch_size: must be an integer >= 1 (got -4)

`--set key.path=value` overrides are applied to the parsed mapping before
validation, and problems in them are reported as `--set key.path=value: ...`.

Why pydantic: one declaration gives validation, defaults, the JSON Schema for
editors and the tables of docs/config.md. The variants of the loss, optimizer,
schedule, layers, activations and initializers are generated from the
registries (schema.py), so the schema cannot drift from the code. Models are
strict (no coercion): YAML already typed each value, so `nesterov: yes` is the
string 'yes', an error, not true.
"""

import math
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Sequence

from pydantic import AfterValidator, ConfigDict, Field, ValidationError, WithJsonSchema, model_validator
from pydantic_core import PydanticCustomError

from bpcli.nn.activations import ACTIVATIONS
from bpcli.config.messages import located, problem, show
from bpcli.data.catalog import DATASETS
from bpcli.errors import ConfigError, did_you_mean
from bpcli.nn.losses import LOSSES
from bpcli.nn.metrics import resolve_mode
from bpcli.nn.model import DTYPES, _next_activation
from bpcli.optim.optimizers import OPTIMIZERS
from bpcli.optim.schedules import SCHEDULES
from bpcli.data.preprocessing import Preprocessor
from bpcli.config.schema import (ACTIVATION_CHOICES, INIT_CHOICES, LAYER_TYPES, LOSS_OPTIONS, OPTIMIZER_OPTIONS,
                     SCHEDULE_OPTIONS, Layer, Strict, tagged)
from bpcli.config.yamlio import Document, format_path, parse_yaml, problems_error, read_yaml_file

DEFAULT_LOSS, DEFAULT_OPTIMIZER, DEFAULT_SCHEDULE = "cross_entropy", "sgd", "constant"
MONITORS = ("val_loss", "val_accuracy", "train_loss", "train_accuracy")
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
    layers: list[Layer] = Field(..., min_length=1, description="The layers, input first (required).")


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


class EarlyStopping(Strict):
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
    mode: Literal[MODES] = Field("auto", description="Whether the monitor should go down or up; auto: max for *accuracy.")
    early_stopping: Optional[EarlyStopping] = Field(None, description="null: off; or a mapping (see below).")
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


# -- loading -------------------------------------------------------------------------------------

def load_config(path: str | Path, overrides: Sequence[str] = ()) -> Config:
    """Read and validate a config file; raise one ConfigError listing every problem."""
    return _validated(read_yaml_file(path), str(path), overrides)


def parse_config_text(text: str, name: str = "<config>", overrides: Sequence[str] = ()) -> Config:
    """Validate config text; `name` stands for the file in messages."""
    return _validated(parse_yaml(text, name), name, overrides)


def _validated(doc: Document, name: str, overrides: Sequence[str]) -> Config:
    if doc.data is None:
        raise ConfigError("the config is empty; it needs at least model.layers", file=name)
    if not isinstance(doc.data, dict):
        raise ConfigError(f"{name}:{doc.positions[()]}: the top level must be a mapping of sections "
                          f"({', '.join(SECTIONS)}), not {show(doc.data)}")
    applied = [_apply_override(doc.data, text) for text in overrides]
    try:
        config = Config.model_validate(doc.data)
        problems = _cross_field_problems(config)
    except ValidationError as error:
        problems = [problem(e, doc.data, Config) for e in error.errors(include_url=False)]
    if problems:
        raise problems_error(name, located(problems, name, doc.positions, applied))
    return config


def _apply_override(data: dict, text: str) -> tuple[tuple, str]:
    """Set KEY.PATH=VALUE in `data`, creating missing or null mappings on the way; return (path, text)."""
    key, sep, value_text = text.partition("=")
    parts = key.strip().split(".")
    if not sep or not all(parts):
        raise ConfigError(f"--set {text}: expected KEY.PATH=VALUE, e.g. optimizer.lr=0.001")
    try:
        value = parse_yaml(value_text, "value").data
    except ConfigError as error:
        raise ConfigError(f"--set {text}: the value is not valid: {error.detail}") from None
    node, path = data, []
    for i, part in enumerate(parts):
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise ConfigError(f"--set {text}: {format_path(path)} is a list of {len(node)} items; "
                                  f"{part!r} is not an index from 0 to {len(node) - 1}")
            part = int(part)
        elif not isinstance(node, dict):
            raise ConfigError(f"--set {text}: {format_path(path)} is {show(node)}, not a mapping or a list")
        path.append(part)
        if i == len(parts) - 1:
            node[part] = value
        elif isinstance(node, dict) and node.get(part) is None:
            node[part] = {}
        node = node[part]
    return tuple(path), text


def _cross_field_problems(config: Config) -> list[tuple[tuple, str]]:
    """Rules that tie a value to another: between sections here, within a component by its own class.

    A component states its rules in `option_problems` (SGD: nesterov needs momentum;
    cosine: min_lr at most lr, warmup at most the epochs), so they are written once,
    beside the code they protect, and checked here, before anything is built.
    """
    problems, monitor = [], config.training.monitor
    if monitor.startswith("val_") and config.data.val_fraction == 0:
        problems.append((("training", "monitor"), f"{monitor!r} needs a validation set: set data.val_fraction "
                                                  f"> 0, or monitor a train_* metric"))
    if monitor.endswith("accuracy") and LOSSES[config.loss.name].kind == "regression":
        classification = sorted(name for name, cls in LOSSES.items() if cls.kind != "regression")
        problems.append((("training", "monitor"), f"{monitor!r} needs a classification loss "
                                                  f"({', '.join(classification)}), not {config.loss.name!r}"))
    diagnostics = config.diagnostics
    if diagnostics.update_ratio_low >= diagnostics.update_ratio_high:
        problems.append((("diagnostics", "update_ratio_low"), f"must be below diagnostics.update_ratio_high "
                                                             f"({diagnostics.update_ratio_high:g})"))
    optimizer, schedule = config.optimizer, config.schedule
    problems += [(("optimizer", key), message)
                 for key, message in OPTIMIZERS[optimizer.name].option_problems(optimizer.model_dump())]
    context = {"lr": optimizer.lr, "epochs": config.training.epochs}
    problems += [(("schedule", key), message)
                 for key, message in SCHEDULES[schedule.name].option_problems(schedule.model_dump(), context)]
    return problems


# -- output --------------------------------------------------------------------------------------

def resolved_dict(config: Config) -> dict:
    """Every key with its default filled in, as JSON-able data (for `config show`, checkpoints, run dirs).

    A dense layer's init is resolved too, by model.py's own rule, so a saved config pins it.
    """
    data = config.model_dump(mode="json")
    layers = data["model"]["layers"]
    for i, layer in enumerate(layers):
        if layer["type"] == "dense" and layer["init"] is None:
            activation = layer["activation"]
            name = activation if isinstance(activation, str) else (activation or {}).get("name")
            layer["init"] = (ACTIVATIONS[name] if name else _next_activation(layers[i + 1:])).default_init
    return data


def optimizer_kwargs(config: Config) -> dict:
    """Hyperparameters for build_optimizer (without name; lr goes to the schedule)."""
    return config.optimizer.model_dump(exclude={"name", "lr"})


def config_json_schema() -> dict:
    """A JSON Schema (draft 2020-12) of the config file, for editors (yaml-language-server and the like)."""
    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", **Config.model_json_schema()}
    for models, key, default in TAGGED_UNIONS:
        for tag, model in models.items():
            if tag != default:   # pydantic lists no tag as required: it has a default in each variant
                definition = schema["$defs"][model.__name__]
                definition["required"] = [key, *definition.get("required", [])]
    for section, models in (("loss", LOSS_OPTIONS), ("optimizer", OPTIMIZER_OPTIONS), ("schedule", SCHEDULE_OPTIONS)):
        # The names once more at the section level, so an editor completes `name:` before a variant is chosen.
        default = {"loss": DEFAULT_LOSS, "optimizer": DEFAULT_OPTIMIZER, "schedule": DEFAULT_SCHEDULE}[section]
        schema["properties"][section].update(type="object", properties={"name": {
            "enum": sorted(models), "default": default, "description": f"Which {section}."}})
    return schema
