"""`bpcli config show|validate|schema`: a config with its defaults, a check of it, and its schema.

`schema --markdown` prints the key reference tables of docs/config.md, generated
from the same declarations that validate configs, so the doc cannot fall behind
(a test compares them).
"""

from __future__ import annotations

from typing import List, Optional

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
    from bpcli.config.loading import load_config
    from bpcli.config.sections import resolved_dict
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
    from bpcli.config.loading import load_config

    load_config(config, overrides or ())
    typer.echo(f"{config} is valid")


@app.command()
@user_errors
def schema(markdown: bool = typer.Option(False, "--markdown",
                                         help="Print the key reference tables of docs/config.md instead.")) -> None:
    """Print the JSON Schema of config files, for editors (or the reference tables, in Markdown).

    Example: bpcli config schema > bpcli-config.schema.json
    """
    from bpcli.config.reference import config_json_schema, reference_markdown

    if markdown:
        typer.echo(reference_markdown(), nl=False)
    else:
        print_json(config_json_schema())
