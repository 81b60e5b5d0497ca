"""The command line, run as a user runs it (a subprocess) and through Typer's CliRunner."""

import json
import subprocess
import sys

from typer.testing import CliRunner

from bpcli import __version__
from bpcli.cli.app import app

runner = CliRunner()


def bpcli(*args):
    return subprocess.run([sys.executable, "-m", "bpcli", *args], capture_output=True, text=True)


def test_version_and_help():
    assert runner.invoke(app, ["--version"]).output.strip() == f"bpcli {__version__}"
    result = bpcli("--help")
    assert result.returncode == 0 and "gradcheck" in result.stdout and "Exit codes" in result.stdout


def test_every_command_has_help_with_an_example():
    for command in app.registered_commands:
        result = runner.invoke(app, [command.name or command.callback.__name__, "--help"])
        assert result.exit_code == 0 and "Example:" in result.output


def test_gradcheck_passes_and_prints_a_table():
    result = bpcli("gradcheck")
    assert result.returncode == 0, result.stderr
    assert "checks passed" in result.stdout and "network full" in result.stdout


def test_gradcheck_json_is_pure_json():
    result = runner.invoke(app, ["gradcheck", "--json"])
    data = json.loads(result.stdout)
    assert result.exit_code == 0 and data["passed"] and data["failed"] == 0
    assert {r["component"] for r in data["results"]} >= {"activation gelu", "loss huber", "regularizer l1"}


def test_gradcheck_exits_1_when_a_check_fails():
    result = runner.invoke(app, ["gradcheck", "--json", "--tol", "1e-13"])
    assert result.exit_code == 1 and json.loads(result.stdout)["passed"] is False


def test_a_reader_that_stops_early_ends_the_command_quietly():
    """`bpcli config list | head -1`: the closed pipe is no error of the user's, and no internal error."""
    import subprocess
    import sys

    command = subprocess.Popen([sys.executable, "-m", "bpcli", "config", "list"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    command.stdout.close()   # the reader is gone before the first line is written
    assert command.wait(timeout=60) == 0
    assert command.stderr.read() == b""
