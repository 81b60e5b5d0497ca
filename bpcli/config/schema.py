"""The config's building blocks, generated from the registries, and how to read a declared type back.

    Strict, NamedChoice                          base models: unknown keys are errors, no coercion
    ACTIVATION_CHOICES, INIT_CHOICES, LOSS_OPTIONS, OPTIMIZER_OPTIONS, SCHEDULE_OPTIONS, LAYER_TYPES, LayerSpec
    unwrap, variants_of, tag_key, is_optional, describe_type, with_article

Why generated: the allowed names come from the registries (ACTIVATIONS,
INITIALIZERS, LOSSES, OPTIMIZERS, SCHEDULES, LAYERS) and each variant's
options, with their defaults, from the signature of the class or function that
takes them, so the schema cannot drift from the code. What a signature lacks
(type, range and description) a component states in its own `option_specs`,
or OPTION_SPECS below holds it. An option whose type is "activation" or
"initializer" picks an entry of that registry (a dense layer's activation and
init). sections.py assembles the sections from these; messages.py and `bpcli
config schema --markdown` read the declared types back with the functions at
the end.

A component registered before this module is first imported (as a plugin
would) is part of the schema like any other.
"""

import inspect
from typing import Annotated, Literal, Optional, Union, get_args, get_origin

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, create_model, model_serializer

from bpcli.nn.activations import ACTIVATIONS
from bpcli.nn.initializers import INITIALIZERS
from bpcli.nn.layers import LAYERS
from bpcli.nn.losses import LOSSES
from bpcli.optim.optimizers import OPTIMIZERS
from bpcli.optim.schedules import SCHEDULES

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

# name or "owner.name" -> (type, range, description): what a signature does not say, for the components
# that do not say it themselves in `option_specs` (the layers do).
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
}
NOT_OPTIONS = {"self", "rng", "shape", "fan_in", "fan_out", *SCHEDULE_CONTEXT}


def signature_options(obj) -> dict[str, inspect.Parameter]:
    """The options a registry entry takes from a config: its keyword parameters minus NOT_OPTIONS.

    A layer's are those of its option_source() (the constructor, or dense's from_config).
    """
    obj = obj.option_source() if hasattr(obj, "option_source") else obj
    params = inspect.signature(obj.__init__ if isinstance(obj, type) else obj).parameters
    return {name: p for name, p in params.items()
            if name not in NOT_OPTIONS and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def option_spec(obj, owner: str, name: str) -> tuple:
    """(type, range, description) of an option: the component's own option_specs, else OPTION_SPECS."""
    own = getattr(obj, "option_specs", {})
    return own.get(name) or OPTION_SPECS.get(f"{owner}.{name}") or OPTION_SPECS[name]


def _option_field(obj, owner: str, param: inspect.Parameter) -> tuple:
    kind, bounds, description = option_spec(obj, owner, param.name)
    default = ... if param.default is param.empty else param.default
    if isinstance(kind, str):   # "activation" or "initializer": a choice among a registry's entries
        choices, kind = NAMED_CHOICES[kind]
        if isinstance(default, str):
            return kind, Field(default_factory=choices[default], description=description, **bounds)
        kind = Optional[kind] if default is None else kind
    return kind, Field(default, description=description, **bounds)


def _variants(registry: dict, key: str, base: type, suffix: str, common=dict) -> dict[str, type[BaseModel]]:
    """One model per registry entry: `key` is its name, then the `common` fields, then its own options."""
    models = {}
    for tag, obj in registry.items():
        fields = {key: (Literal[tag], Field(tag, description=f"{suffix}: {tag}."))}
        fields.update(common())
        fields.update((name, _option_field(obj, tag, p)) for name, p in signature_options(obj).items())
        title = "".join(part.capitalize() for part in tag.replace("-", "_").split("_")) + suffix
        doc = " ".join((obj.__doc__ or "").strip().split("\n\n")[0].split())   # __doc__ is not inherited
        models[tag] = create_model(title, __base__=base, __doc__=doc or None, **fields)
    return models


def tagged(models: dict, key: str, *, default: str | None = None, named: bool = False):
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
ActivationChoice = tagged(ACTIVATION_CHOICES, "name", named=True)
InitChoice = tagged(INIT_CHOICES, "name", named=True)
NAMED_CHOICES = {"activation": (ACTIVATION_CHOICES, ActivationChoice), "initializer": (INIT_CHOICES, InitChoice)}
LOSS_OPTIONS = _variants(LOSSES, "name", Strict, "Loss", _penalty_fields)
OPTIMIZER_OPTIONS = _variants(OPTIMIZERS, "name", Strict, "Optimizer", _lr_field)
SCHEDULE_OPTIONS = _variants(SCHEDULES, "name", Strict, "Schedule")


# Every layer type of LAYERS (dense, dropout, batchnorm, ...), then every activation as a layer of its own.
LAYER_TYPES = {**_variants(LAYERS, "type", Strict, "Layer"), **_variants(ACTIVATIONS, "type", Strict, "Layer")}
LayerSpec = tagged(LAYER_TYPES, "type")


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


def tag_key(tp) -> str:
    """'type' for layers, 'name' for every other tagged union."""
    return "type" if "type" in next(iter(variants_of(tp).values())).model_fields else "name"


def is_optional(tp) -> bool:
    return get_origin(tp) is Union and type(None) in get_args(tp)


def describe_type(tp, metadata=()) -> tuple[str, str]:
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
    """'a number', 'an integer', 'true or false' for a kind of describe_type()."""
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
