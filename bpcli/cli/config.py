"""`bpcli config show|validate|schema|list|new`: a config with its defaults, a check of it, its schema,
and the configs that ship with bpcli.

`schema --markdown` prints the key reference tables of docs/config.md, generated
from the same declarations that validate configs, so the doc cannot fall behind
(a test compares them).
"""

from __future__ import annotations

from typing import List, Optional

import typer

from bpcli.cli.common import PlainHelp, print_json, user_errors

app = typer.Typer(help="Show, validate and describe config files; list and copy out the shipped ones.",
                  no_args_is_help=True)

CONFIG = typer.Argument(..., help="A YAML config file.")
SET = typer.Option(None, "--set", metavar="KEY.PATH=VALUE",
                   help="Override a key before validation (repeatable), e.g. --set optimizer.lr=1e-3.")


@app.command(cls=PlainHelp)
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


@app.command(cls=PlainHelp)
@user_errors
def validate(config: str = CONFIG, overrides: Optional[List[str]] = SET) -> None:
    """Check a config: every problem at once, each with its line, column and key path (exit 2).

    Example: bpcli config validate run.yaml --set data.batch_size=128
    """
    from bpcli.config.loading import load_config

    load_config(config, overrides or ())
    typer.echo(f"{config} is valid")


@app.command(cls=PlainHelp)
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


@app.command("list", cls=PlainHelp)
@user_errors
def list_() -> None:
    """The configs that ship with bpcli, by name, each with the first line of its header.

    Any of them can be trained by name from any folder (bpcli train quickstart) or copied out to
    edit (bpcli config new quickstart).

    Example: bpcli config list
    """
    from bpcli.config.shipped import shipped_configs, summary_line

    configs = shipped_configs()
    width = max(map(len, configs))
    for name, path in configs.items():
        typer.echo(f"{name:<{width}}  {summary_line(path)}")


@app.command(cls=PlainHelp)
@user_errors
def new(name: str = typer.Argument(..., help="A shipped config (bpcli config list)."),
        output: Optional[str] = typer.Option(None, "--output", "-o",
                                             help="Where to write it; default: NAME.yaml here.")) -> None:
    """Copy a shipped config out, with its comments, to edit and train; an existing file is never replaced.

    Example: bpcli config new quickstart -o mnist-small.yaml
    """
    from pathlib import Path

    from bpcli.config.shipped import find_shipped, shipped_configs
    from bpcli.errors import ConfigError
    from bpcli.fileio import write_file

    source = find_shipped(name)
    if source is None:
        raise ConfigError(f"no shipped config named {name!r}; they are: {', '.join(shipped_configs())}")
    target = Path(output or f"{Path(name).name.removesuffix('.yaml')}.yaml")
    if target.exists():
        raise ConfigError(f"{target} already exists; choose another name with --output (nothing was written)")
    write_file(target, source.read_bytes(), "config")
    typer.echo(f"wrote {target} (from the shipped {name}); train it with: bpcli train {target}", err=True)

