"""The config file: its schema, and reading it into a validated Config.

    load_config(path, overrides=()) -> Config       parse_config_text(text, name, overrides) -> Config
    resolved_dict(config) -> dict                   config_json_schema() -> dict
    optimizer_kwargs(config), schedule_kwargs(config), monitor_mode(config)

Contract. A config is data only (yamlio.py reads the YAML: YAML 1.2 scalars,
duplicate keys refused, size caps). It is validated in full before anything
runs, and every problem is reported at once in one ConfigError, one line each,
sorted by line, each naming the file position and key path:

    run.yaml: 2 problems in the config:
      run.yaml:7:3 optimizer.momentum: unknown key; allowed: beta1, beta2, eps, lr, name, weight_decay.
      run.yaml:12:15 data.batch_size: must be an integer >= 1 (got -4)

`--set key.path=value` overrides are applied to the parsed mapping before
validation, and problems in them are reported as `--set key.path=value: ...`.

Why pydantic: one declaration gives validation, defaults, the JSON Schema for
editors and the tables of docs/config.md. Why generated variants: the allowed
names come from the registries (OPTIMIZERS, SCHEDULES, LOSSES, ACTIVATIONS,
INITIALIZERS, DATASETS) and each variant's options, with their defaults, from
the signature of the class or function that takes them, so the schema cannot
drift from the code; OPTION_SPECS adds what a signature lacks: type, range and
description. Models are strict (no coercion): YAML already typed each value,
so `nesterov: yes` is the string 'yes', an error, not true.
"""

import inspect
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Sequence, Union, get_args, get_origin

from pydantic import (AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, WithJsonSchema,
                      create_model, model_serializer, model_validator)
from pydantic_core import PydanticCustomError

from .activations import ACTIVATIONS
from .data import DATASETS
from .errors import ConfigError, did_you_mean
from .initializers import INITIALIZERS
from .layers import BatchNorm, Dropout
from .losses import LOSSES
from .model import DTYPES, _next_activation
from .optimizers import OPTIMIZERS, build_optimizer
from .preprocessing import Preprocessor
from .schedules import SCHEDULES
from .yamlio import Document, Position, dump_yaml, format_path, parse_yaml, problems_error, read_yaml_file

DEFAULT_LOSS, DEFAULT_OPTIMIZER, DEFAULT_SCHEDULE = "cross_entropy", "sgd", "constant"
MONITORS = ("val_loss", "val_accuracy", "train_loss", "train_accuracy")
MODES = ("auto", "min", "max")
# Arguments a schedule gets from elsewhere in the config, never from the schedule section.
SCHEDULE_CONTEXT = ("lr", "steps_per_epoch", "epochs", "mode")


class Strict(BaseModel):
    """Every mapping of the config: unknown keys are errors, no type coercion, no inf or nan."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class NamedChoice(Strict):
    """An activation or initializer: written as a name, or as {name: ..., options}."""

    @model_serializer(mode="wrap")
    def _name_alone_if_no_options(self, handler):
        data = handler(self)
        return data["name"] if len(data) == 1 else data


# -- options taken from signatures ---------------------------------------------------------------

UNIT, POSITIVE, NONNEG, FRACTION = {"ge": 0, "lt": 1}, {"gt": 0}, {"ge": 0}, {"gt": 0, "le": 1}

# name or "owner.name" -> (type, range, description): what a signature does not say.
OPTION_SPECS: dict[str, tuple[type, dict, str]] = {
    "momentum": (float, UNIT, "Momentum factor; 0 turns momentum off."),
    "nesterov": (bool, {}, "Nesterov momentum (needs momentum > 0)."),
    "weight_decay": (float, NONNEG, "Coupled L2 weight decay: adds weight_decay * w to the gradient."),
    "adamw.weight_decay": (float, NONNEG, "Decoupled weight decay: w *= 1 - lr * weight_decay each step."),
    "eps": (float, POSITIVE, "Added to the denominator for numerical stability."),
    "initial_accumulator_value": (float, NONNEG, "Starting value of the running sum of squared gradients."),
    "alpha": (float, UNIT, "Smoothing constant of the running average of squared gradients."),
    "beta1": (float, UNIT, "Decay rate of the running mean of gradients."),
    "beta2": (float, UNIT, "Decay rate of the running mean of squared gradients."),
    "warmup_epochs": (float, NONNEG, "Linear warmup from lr/warmup_steps up to lr, in epochs (fractions allowed)."),
    "step_size": (int, {"ge": 1}, "Epochs between two cuts of the lr (required)."),
    "gamma": (float, FRACTION, "Multiplies the lr every step_size epochs."),
    "exponential.gamma": (float, FRACTION, "Multiplies the lr every epoch (required)."),
    "min_lr": (float, NONNEG, "Lowest lr; at most optimizer.lr."),
    "factor": (float, {"gt": 0, "lt": 1}, "Multiplies the lr when the monitored metric stops improving."),
    "patience": (int, NONNEG, "Epochs without improvement before the lr is cut."),
    "min_delta": (float, NONNEG, "Smallest change of the metric that counts as an improvement."),
    "cooldown": (int, NONNEG, "Epochs after a cut before bad epochs count again."),
    "label_smoothing": (float, UNIT, "Weight of the uniform distribution mixed into the one-hot targets."),
    "delta": (float, POSITIVE, "Where the loss turns from quadratic to linear."),
    "slope": (float, {}, "Slope for negative inputs."),
    "elu.alpha": (float, {}, "Saturation value for negative inputs is -alpha."),
    "value": (float, {}, "The constant every weight starts at."),
    "mean": (float, {}, "Mean of the normal distribution."),
    "std": (float, NONNEG, "Standard deviation of the normal distribution."),
    "low": (float, {}, "Lower end of the uniform distribution."),
    "high": (float, {}, "Upper end of the uniform distribution."),
    "rate": (float, UNIT, "Fraction of units zeroed in training (inverted dropout)."),
    "batchnorm.momentum": (float, {"ge": 0, "le": 1}, "Weight of each batch in the running mean and variance."),
    "batchnorm.eps": (float, POSITIVE, "Added to the variance for numerical stability."),
}
NOT_OPTIONS = {"self", "rng", "shape", "fan_in", "fan_out", *SCHEDULE_CONTEXT}


def signature_options(obj) -> dict[str, inspect.Parameter]:
    """The options a registry entry takes from a config: its keyword parameters minus NOT_OPTIONS."""
    params = inspect.signature(obj.__init__ if isinstance(obj, type) else obj).parameters
    return {name: p for name, p in params.items()
            if name not in NOT_OPTIONS and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def _option_field(owner: str, param: inspect.Parameter) -> tuple:
    kind, bounds, description = OPTION_SPECS.get(f"{owner}.{param.name}") or OPTION_SPECS[param.name]
    default = ... if param.default is param.empty else param.default
    return kind, Field(default, description=description, **bounds)


def _variants(registry: dict, key: str, base: type, suffix: str, common=dict) -> dict[str, type[BaseModel]]:
    """One model per registry entry: `key` is its name, then the `common` fields, then its own options."""
    models = {}
    for tag, obj in registry.items():
        fields = {key: (Literal[tag], Field(tag, description=f"{suffix}: {tag}."))}
        fields.update(common())
        fields.update((name, _option_field(tag, p)) for name, p in signature_options(obj).items())
        title = "".join(part.capitalize() for part in tag.replace("-", "_").split("_")) + suffix
        doc = " ".join((obj.__doc__ or "").strip().split("\n\n")[0].split())   # __doc__ is not inherited
        models[tag] = create_model(title, __base__=base, __doc__=doc or None, **fields)
    return models


def _tagged(models: dict, key: str, *, default: str | None = None, named: bool = False):
    """A union of `models` told apart by `key`; `default` fills a missing key; `named` also takes a bare name."""
    union = Annotated[Union[tuple(models.values())], Field(discriminator=key)]

    def prepare(value):
        if named and isinstance(value, str):
            return {key: value}
        if default and isinstance(value, dict) and key not in value:
            return {key: default, **value}
        return value

    schema_input = Union[Literal[tuple(models)], union] if named else union
    return Annotated[union, BeforeValidator(prepare, json_schema_input_type=schema_input)]


def _lr_field():
    return {"lr": (float, Field(0.01, gt=0, description="Base learning rate; the schedule starts from it."))}


def _penalty_fields():
    return {"l1": (float, Field(0.0, ge=0, description="L1 penalty lam * sum(|w|) on dense weights.")),
            "l2": (float, Field(0.0, ge=0, description="L2 penalty (lam / 2) * sum(w^2) on dense weights.")),
            "regularize_bias": (bool, Field(False, description="Penalize dense biases too."))}


ACTIVATION_CHOICES = _variants(ACTIVATIONS, "name", NamedChoice, "Activation")
INIT_CHOICES = _variants(INITIALIZERS, "name", NamedChoice, "Init")
ActivationChoice = _tagged(ACTIVATION_CHOICES, "name", named=True)
InitChoice = _tagged(INIT_CHOICES, "name", named=True)
LOSS_OPTIONS = _variants(LOSSES, "name", Strict, "Loss", _penalty_fields)
OPTIMIZER_OPTIONS = _variants(OPTIMIZERS, "name", Strict, "Optimizer", _lr_field)
SCHEDULE_OPTIONS = _variants(SCHEDULES, "name", Strict, "Schedule")


class DenseLayer(Strict):
    """A fully connected layer, z = x @ weight + bias, optionally followed by an activation."""

    type: Literal["dense"] = Field("dense", description="Layer: dense.")
    units: int = Field(..., ge=1, description="Number of outputs (required).")
    activation: Optional[ActivationChoice] = Field(None, description="Activation added after the layer; null: none.")
    init: Optional[InitChoice] = Field(
        None, description="Weight initializer; null: he_normal before a ReLU-family activation, else glorot_uniform.")
    bias_init: InitChoice = Field(default_factory=lambda: INIT_CHOICES["zeros"](), description="Bias initializer.")


LAYER_TYPES = {"dense": DenseLayer, **_variants({"dropout": Dropout, "batchnorm": BatchNorm}, "type", Strict, "Layer"),
               **_variants(ACTIVATIONS, "type", Strict, "Layer")}
Layer = _tagged(LAYER_TYPES, "type")


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
    loss: _tagged(LOSS_OPTIONS, "name", default=DEFAULT_LOSS) = Field(
        default_factory=LOSS_OPTIONS[DEFAULT_LOSS], description="The loss and its weight penalties.")
    optimizer: _tagged(OPTIMIZER_OPTIONS, "name", default=DEFAULT_OPTIMIZER) = Field(
        default_factory=OPTIMIZER_OPTIONS[DEFAULT_OPTIMIZER], description="The optimizer and its hyperparameters.")
    schedule: _tagged(SCHEDULE_OPTIONS, "name", default=DEFAULT_SCHEDULE) = Field(
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
                          f"({', '.join(SECTIONS)}), not {_show(doc.data)}")
    applied = [_apply_override(doc.data, text) for text in overrides]
    try:
        config = Config.model_validate(doc.data)
        problems = _cross_field_problems(config)
    except ValidationError as error:
        problems = [_problem(e, doc.data) for e in error.errors(include_url=False)]
    if problems:
        raise problems_error(name, _located(problems, name, doc.positions, applied))
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
            raise ConfigError(f"--set {text}: {format_path(path)} is {_show(node)}, not a mapping or a list")
        path.append(part)
        if i == len(parts) - 1:
            node[part] = value
        elif isinstance(node, dict) and node.get(part) is None:
            node[part] = {}
        node = node[part]
    return tuple(path), text


def _cross_field_problems(config: Config) -> list[tuple[tuple, str]]:
    """Rules that span sections, then a dry build of the optimizer and schedule for their own checks."""
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
    for build in (_build_optimizer, _build_schedule):
        try:
            build(config)
        except ConfigError as error:   # the class's own rule, e.g. nesterov needs momentum > 0
            key = error.key or ""
            problems.append((tuple(key.split(".")) if key else (), error.message.removeprefix(f"{key}: ")))
    return problems


def _build_optimizer(config: Config):
    return build_optimizer(config.optimizer.name, **optimizer_kwargs(config))


def _build_schedule(config: Config):
    """Built once during validation, exactly as training builds it, so its own rules are checked too."""
    from .train import schedule_from_config

    return schedule_from_config(resolved_dict(config), steps_per_epoch=1)


# -- error messages ------------------------------------------------------------------------------

def _problem(error: dict, data: dict) -> tuple[tuple, str]:
    """(key path, plain message) for one pydantic error."""
    loc, kind, value = error["loc"], error["type"], error.get("input")
    path = _key_path(loc, data)
    if kind == "extra_forbidden":
        parent = unwrap(_type_at(loc[:-1]))
        allowed = sorted(parent.model_fields) if isinstance(parent, type) and issubclass(parent, BaseModel) else []
        return path, f"unknown key; allowed: {', '.join(allowed) or 'none'}.{did_you_mean(loc[-1], allowed)}"
    if kind == "literal_error":
        return path, _unknown_value(value, get_args(unwrap(_type_at(loc))))
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        key = error["ctx"]["discriminator"].strip("'")
        tags = tuple(variants_of(_type_at(loc)))
        if kind == "union_tag_not_found":
            return path + (key,), f"required key is missing; one of: {', '.join(sorted(tags))}"
        written_as_mapping = isinstance(_value_at(data, path), dict)   # not a bare name like `activation: relu`
        return path + ((key,) if written_as_mapping else ()), _unknown_value(error["ctx"]["tag"], tags)
    if kind == "missing":
        return path, "required key is missing"
    if kind in ("unknown_dataset", "folder_name"):
        return path, error["msg"]
    return path, f"must be {_must_be(loc) or _PLAIN.get(kind, error['msg'])} (got {_show(value)})"


_PLAIN = {"int_type": "an integer", "float_type": "a number", "bool_type": "true or false", "string_type": "a string",
          "list_type": "a list", "dict_type": "a mapping", "model_type": "a mapping",
          "model_attributes_type": "a mapping", "finite_number": "a finite number"}


def _unknown_value(value, allowed) -> str:
    return f"unknown value {_show(value)}; allowed: {', '.join(sorted(allowed))}.{did_you_mean(value, allowed)}"


def _value_at(data, path: tuple):
    for part in path:
        data = data[part] if isinstance(data, (dict, list)) else None
    return data


def _key_path(loc: tuple, data) -> tuple:
    """pydantic's loc as the key path in the file: drop the union tags pydantic inserts into it."""
    path, node = [], data
    for i, part in enumerate(loc):
        if isinstance(node, dict) and (part in node or (i == len(loc) - 1 and isinstance(part, str))):
            path.append(part)
            node = node.get(part)
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            path.append(part)
            node = node[part]
    return tuple(path)


def _located(problems, name: str, positions: dict, applied: list) -> list[str]:
    """Each problem as 'FILE:LINE:COL key.path: message' (or '--set ...: message'), file lines sorted."""
    rows = []
    for path, message in problems:
        source = next(((i, text) for i, (opath, text) in reversed(list(enumerate(applied)))
                       if path[:len(opath)] == opath), None)
        if source:
            where = f"--set {source[1]}" + (f" {format_path(path)}" if path != applied[source[0]][0] else "")
            rows.append(((1, source[0], 0), f"{where}: {message}"))
            continue
        prefix = next(path[:n] for n in range(len(path), -1, -1) if path[:n] in positions or n == 0)
        position = positions.get(prefix, Position(1, 1))
        key = f" {format_path(path)}" if path else ""
        rows.append(((0, position.line, position.column), f"{name}:{position}{key}: {message}"))
    return [line for _, line in sorted(rows, key=lambda row: row[0])]


def _show(value) -> str:
    """A value as written in YAML (strings quoted, lists and mappings in flow style), cut to 60 characters."""
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        text = repr(value)
    else:
        text = dump_yaml(value, flow=True).strip().removesuffix("\n...").strip()
    return text if len(text) <= 60 else text[:57] + "..."


# -- reading the schema back: types, ranges, tags (for messages and the docs) --------------------

def unwrap(tp):
    """The type inside Annotated[...] and Optional[...]."""
    while True:
        args = get_args(tp)
        if get_origin(tp) is Annotated:
            tp = args[0]
        elif get_origin(tp) is Union and type(None) in args:
            rest = tuple(a for a in args if a is not type(None))
            tp = rest[0] if len(rest) == 1 else Union[rest]
        else:
            return tp


def variants_of(tp) -> dict[str, type[BaseModel]]:
    """{tag: model} of a tagged union, {} for any other type."""
    tp = unwrap(tp)
    if get_origin(tp) is not Union:
        return {}
    models = [unwrap(m) for m in get_args(tp)]
    return {m.model_fields["type" if "type" in m.model_fields else "name"].default: m for m in models
            if isinstance(m, type) and issubclass(m, BaseModel)}


def _tag_key(tp) -> str:
    """'type' for layers, 'name' for every other tagged union."""
    return "type" if "type" in next(iter(variants_of(tp).values())).model_fields else "name"


def _type_at(loc: tuple):
    """The declared type at a pydantic loc (which names union tags), or None."""
    tp = Config
    for part in loc:
        tp = unwrap(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            tp = tp.model_fields[part].annotation if part in tp.model_fields else None
        elif get_origin(tp) is list and isinstance(part, int):
            tp = get_args(tp)[0]
        else:
            tp = variants_of(tp).get(part)
        if tp is None:
            return None
    return tp


def _must_be(loc: tuple) -> str | None:
    """'a number in [0, 1)' for the field or list item at loc, from its declaration; None if unknown."""
    parent = unwrap(_type_at(loc[:-1]))
    if isinstance(parent, type) and issubclass(parent, BaseModel) and loc[-1] in parent.model_fields:
        annotation, metadata = parent.model_fields[loc[-1]].annotation, parent.model_fields[loc[-1]].metadata
    elif get_origin(parent) is list and isinstance(loc[-1], int):
        annotation, metadata = get_args(parent)[0], ()
    else:
        return None
    kind, allowed = describe(annotation, metadata)
    union = bool(variants_of(annotation))
    text = with_article(f"{kind} with '{_tag_key(annotation)}'" if union else kind)
    if allowed:
        text += f" (one of: {allowed})" if union else f" in {allowed}" if allowed[0] in "[(" else f" {allowed}"
    return f"null or {text}" if is_optional(annotation) else text


def is_optional(tp) -> bool:
    return get_origin(tp) is Union and type(None) in get_args(tp)


def describe(tp, metadata=()) -> tuple[str, str]:
    """(kind, allowed) of a declared type: ('number', '[0, 1)'), ('string', 'a, b'), ('list of strings', '')."""
    tp, variants = unwrap(tp), variants_of(tp)
    if variants:
        named = issubclass(next(iter(variants.values())), NamedChoice)
        return "name or mapping" if named else "mapping", ", ".join(sorted(variants))
    if get_origin(tp) is Literal:
        return "string", ", ".join(get_args(tp))
    if get_origin(tp) is list:
        items = " of strings" if get_args(tp) == (str,) else ""
        non_empty = any(getattr(m, "min_length", 0) for m in metadata)
        return f"{'non-empty ' if non_empty else ''}list{items}", ""
    kinds = {bool: "boolean", int: "integer", float: "number", str: "string"}
    return kinds.get(tp, "mapping"), _range_text(metadata)


def with_article(kind: str) -> str:
    """'a number', 'an integer', 'true or false' for a kind of describe()."""
    return {"boolean": "true or false", "integer": "an integer"}.get(kind, f"a {kind}")


def _range_text(metadata) -> str:
    """'[0, 1)', '> 0', '>= 1' or '' from the annotated_types bounds pydantic keeps in a field's metadata."""
    b = {a: getattr(m, a) for m in metadata for a in ("gt", "ge", "lt", "le") if getattr(m, a, None) is not None}
    low = ("(", b["gt"]) if "gt" in b else ("[", b["ge"]) if "ge" in b else None
    high = (")", b["lt"]) if "lt" in b else ("]", b["le"]) if "le" in b else None
    if low and high:
        return f"{low[0]}{low[1]:g}, {high[1]:g}{high[0]}"
    if low:
        return f"{'>' if low[0] == '(' else '>='} {low[1]:g}"
    return f"{'<' if high[0] == ')' else '<='} {high[1]:g}" if high else ""


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


def schedule_kwargs(config: Config) -> dict:
    """Arguments for build_schedule besides lr, steps_per_epoch, epochs and mode (see SCHEDULE_CONTEXT)."""
    return config.schedule.model_dump(exclude={"name"})


def monitor_mode(config: Config) -> str:
    """'min' or 'max': training.mode, with auto meaning max for an *accuracy monitor."""
    from .metrics import resolve_mode

    return resolve_mode(config.training.monitor, config.training.mode)


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
