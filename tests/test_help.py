"""Every command's --help names what to type (CHECKPOINT_OR_RUN_DIR, KEY=VALUE), never Python's types."""

import re

import pytest
import typer
from typer.testing import CliRunner

from bpcli.cli.app import app

PYTHON_TYPES = re.compile(r"<(?:list\[|str>|int|float|bool|path|text)")   # <str>, <list[str]>, <int range>, ...


def command_paths(command=None, path=()) -> list[tuple[str, ...]]:
    """The path of every command the app registers (`eval`, `data import`, ...), read from the app itself."""
    command = command or typer.main.get_command(app)
    children = getattr(command, "commands", {})
    if not children:
        return [path]
    return [p for name, child in sorted(children.items()) for p in command_paths(child, path + (name,))]


COMMANDS = command_paths()


def test_every_command_is_found():
    assert {("train",), ("eval",), ("sweep",), ("data", "import"), ("config", "new")} <= set(COMMANDS)
    assert len(COMMANDS) >= 20


@pytest.mark.parametrize("path", COMMANDS, ids=" ".join)
def test_help_shows_no_python_types(path):
    result = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert not PYTHON_TYPES.search(result.output), PYTHON_TYPES.findall(result.output)
    usage = result.output.splitlines()[0]
    assert usage.startswith("Usage: bpcli") and "{" not in usage, usage   # Typer's {NAME} for a required argument


def test_the_names_people_type():
    def help_of(*path):
        return CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "200"}).output

    train = help_of("train")
    assert "Usage: bpcli train [OPTIONS] [CONFIG]" in train
    assert "--set KEY=VALUE" in train and "--resume RUN_DIR" in train and "--init-from CHECKPOINT" in train
    assert "Usage: bpcli eval [OPTIONS] CHECKPOINT_OR_RUN_DIR\n" in help_of("eval")
    assert "Usage: bpcli plot [OPTIONS] RUN_DIR...\n" in help_of("plot")
    assert "Usage: bpcli data import [OPTIONS] NAME DIRECTORY\n" in help_of("data", "import")
