"""The config's reference: a JSON Schema for editors, and the markdown tables of docs/config.md.

Both are read off the pydantic schema (sections.py, schema.py), so they cannot
drift from what the loader accepts; a test checks docs/config.md is current.
"""

from typing import get_args, get_origin

from pydantic import BaseModel

from bpcli.config.schema import (ACTIVATION_CHOICES, INIT_CHOICES, LOSS_OPTIONS, OPTIMIZER_OPTIONS, SCHEDULE_OPTIONS,
                                 describe_type, is_optional, unwrap, variants_of)
from bpcli.config.sections import (DEFAULT_LOSS, DEFAULT_OPTIMIZER, DEFAULT_SCHEDULE, SECTIONS, TAGGED_UNIONS,
                                   Config)
from bpcli.config.yamlio import dump_yaml


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


def reference_markdown() -> str:
    """One table per section (key, type, default, allowed, meaning), then one per variant of a union."""

    parts = []
    for section in SECTIONS:
        field = Config.model_fields[section]
        parts += [f"### `{section}`\n\n{field.description}\n", _tables(section, field.annotation)]
    parts += ["### Activations and initializers\n\nA layer's `activation`, `init` and `bias_init` take a name, "
              "or a mapping `{name: ..., <options>}` for one with options.\n",
              _variant_tables("activation", ACTIVATION_CHOICES), _variant_tables("init", INIT_CHOICES)]
    return "\n".join(parts)


def _tables(prefix: str, annotation) -> str:
    """The table of a mapping, then the tables of the mappings and lists of mappings inside it."""

    if variants_of(annotation):
        return _variant_tables(prefix, variants_of(annotation))
    model, nested = unwrap(annotation), []
    for name, field in model.model_fields.items():
        inner, suffix = unwrap(field.annotation), ""
        if get_origin(inner) is list:
            inner, suffix = unwrap(get_args(inner)[0]), "[]"
        if _is_model(inner) or (variants_of(inner) and suffix):
            nested.append(_tables(f"{prefix}.{name}{suffix}", inner))
    return "\n".join([_table([_row(f"{prefix}.{n}", f) for n, f in model.model_fields.items()]), *nested])


def _variant_tables(prefix: str, variants: dict) -> str:
    """The tag and the keys every variant shares in one table, then a table per variant of its own keys."""

    key, default = next((k, d) for models, k, d in TAGGED_UNIONS if set(models.values()) == set(variants.values()))
    models = list(variants.values())
    shared = [n for n in models[0].model_fields if n != key and all(
        _same(m.model_fields.get(n), models[0].model_fields[n]) for m in models)]
    tag_row = [f"`{prefix}.{key}`", "string", f"`{default}`" if default else "required",
               ", ".join(sorted(variants)), "Which one; its own keys are in the tables below."]
    lines, bare = [_table([tag_row, *(_row(f"{prefix}.{n}", models[0].model_fields[n]) for n in shared)])], []
    for tag, model in variants.items():
        own = [n for n in model.model_fields if n != key and n not in shared]
        if own:
            heading = f"`{key}: {tag}`" + (f": {model.__doc__}" if model.__doc__ else "")
            lines += [heading + "\n", _table([_row(f"{prefix}.{n}", model.model_fields[n]) for n in own])]
        else:
            bare.append(f"`{tag}`")
    if bare:
        lines.append(f"No other keys: {', '.join(bare)}.\n")
    return "\n".join(lines)


def _same(a, b) -> bool:
    return a is not None and (a.annotation, a.default, a.description, a.metadata) == (
        b.annotation, b.default, b.description, b.metadata)


def _row(key: str, field) -> list[str]:

    kind, allowed = describe_type(field.annotation, field.metadata)
    kind += " or null" if is_optional(field.annotation) else ""
    default = "required" if field.is_required() else f"`{_yaml_value(field.get_default(call_default_factory=True))}`"
    return [f"`{key}`", kind, default, allowed, field.description or ""]


def _table(rows) -> str:
    lines = ["| key | type | default | allowed | meaning |", "|---|---|---|---|---|"]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _yaml_value(value) -> str:
    """A default as it is written in a config file, on one line."""
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
        if isinstance(value, dict) and value:
            return "see below"  # a section of its own: its table follows, key by key
    if value in ({}, []):
        return str(value)
    return dump_yaml(value).removesuffix("\n...\n").strip()


def _is_model(tp) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)
