"""`bpcli config show|validate|schema`: a config with its defaults, a check of it, and its schema.

`schema --markdown` prints the key reference tables of docs/config.md, generated
from the same declarations that validate configs, so the doc cannot fall behind
(a test compares them).
"""

from __future__ import annotations

from typing import List, Optional, get_args, get_origin

import typer

from bpcli.cli.common import print_json, user_errors

app = typer.Typer(help="Show, validate and describe config files.", no_args_is_help=True)

CONFIG = typer.Argument(..., help="A YAML config file.")
SET = typer.Option(None, "--set", metavar="KEY.PATH=VALUE",
                   help="Override a key before validation (repeatable), e.g. --set optimizer.lr=1e-3.")


@app.command()
@user_errors
def show(config: str = CONFIG, overrides: Optional[List[str]] = SET,
         as_json: bool = typer.Option(False, "--json", help="Print as JSON instead of YAML.")) -> None:
    """Print the config with every default filled in, as YAML (or JSON).

    Example: bpcli config show run.yaml --set optimizer.lr=1e-3
    """
    from bpcli.config.sections import load_config, resolved_dict
    from bpcli.config.yamlio import dump_yaml

    data = resolved_dict(load_config(config, overrides or ()))
    if as_json:
        return print_json(data)
    typer.echo(dump_yaml(data), nl=False)


@app.command()
@user_errors
def validate(config: str = CONFIG, overrides: Optional[List[str]] = SET) -> None:
    """Check a config: every problem at once, each with its line, column and key path (exit 2).

    Example: bpcli config validate run.yaml --set data.batch_size=128
    """
    from bpcli.config.sections import load_config

    load_config(config, overrides or ())
    typer.echo(f"{config} is valid")


@app.command()
@user_errors
def schema(markdown: bool = typer.Option(False, "--markdown",
                                         help="Print the key reference tables of docs/config.md instead.")) -> None:
    """Print the JSON Schema of config files, for editors (or the reference tables, in Markdown).

    Example: bpcli config schema > bpcli-config.schema.json
    """
    from bpcli.config.sections import config_json_schema

    if markdown:
        typer.echo(reference_markdown(), nl=False)
    else:
        print_json(config_json_schema())


# -- the reference tables -----------------------------------------------------------------------

def reference_markdown() -> str:
    """One table per section (key, type, default, allowed, meaning), then one per variant of a union."""
    from bpcli.config.sections import SECTIONS, Config
    from bpcli.config.schema import ACTIVATION_CHOICES, INIT_CHOICES

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
    from bpcli.config.schema import unwrap, variants_of

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
    from bpcli.config.sections import TAGGED_UNIONS

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
    from bpcli.config.schema import describe, is_optional

    kind, allowed = describe(field.annotation, field.metadata)
    kind += " or null" if is_optional(field.annotation) else ""
    default = "required" if field.is_required() else f"`{_yaml_value(field.get_default(call_default_factory=True))}`"
    return [f"`{key}`", kind, default, allowed, field.description or ""]


def _table(rows) -> str:
    lines = ["| key | type | default | allowed | meaning |", "|---|---|---|---|---|"]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _yaml_value(value) -> str:
    """A default as it is written in a config file, on one line."""
    from pydantic import BaseModel

    from bpcli.config.yamlio import dump_yaml

    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
        if isinstance(value, dict) and value:
            return "see below"  # a section of its own: its table follows, key by key
    if value in ({}, []):
        return str(value)
    return dump_yaml(value).removesuffix("\n...\n").strip()


def _is_model(tp) -> bool:
    from pydantic import BaseModel

    return isinstance(tp, type) and issubclass(tp, BaseModel)
