"""A mistake made with --set is reported at the --set argument, never at a line of the file it did not touch."""

import pytest
from typer.testing import CliRunner

from bpcli.cli.app import app
from bpcli.config.loading import parse_config_text
from bpcli.errors import ConfigError

TEXT = """# a comment, so the first key is on line 3

model:
  layers:
    - {type: dense, units: 2, init: {name: normal, std: 1.0}}
optimizer:
  lr: 0.1
"""
TOP = "allowed: checkpoint, data, diagnostics, loss, model, optimizer, output, schedule, training."


def problems(*overrides: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config_text(TEXT, "c.yaml", overrides)
    return [line.strip() for line in str(caught.value).splitlines()[1:]]


@pytest.mark.parametrize("override, expected", [
    ("optimiser.lr=0.1", f"--set optimiser.lr=0.1 optimiser: unknown key; {TOP} Did you mean 'optimizer'?"),
    ("traning.epochs=3", f"--set traning.epochs=3 traning: unknown key; {TOP} Did you mean 'training'?"),
    ("training.early_stoping.patience=3", "--set training.early_stoping.patience=3 training.early_stoping: unknown "
     "key; allowed: clip_grad_norm, clip_grad_value, early_stopping, epochs, mode, monitor, seed. Did you mean "
     "'early_stopping'?"),
    ("model.layers.0.init.stdd=2", "--set model.layers.0.init.stdd=2: unknown key; allowed: mean, name, std. Did you "
     "mean 'std'?"),
])
def test_a_key_the_override_created_is_blamed_on_it(override, expected):
    assert problems(override) == [expected]


def test_a_problem_in_the_file_stays_at_its_line():
    """The file's own mistake keeps its line even when a --set reaches into the same section."""
    with pytest.raises(ConfigError) as caught:
        parse_config_text(TEXT.replace("lr: 0.1", "lr: 0.1\n  momentun: 0.9"), "c.yaml", ["optimizer.lr=0.2"])
    assert str(caught.value).splitlines()[1].strip().startswith("c.yaml:8:3 optimizer.momentun: unknown key")


def test_cli_names_the_set_argument():
    result = CliRunner().invoke(app, ["train", "xor", "--set", "optimiser.lr=0.1"])
    assert result.exit_code == 2
    assert "  --set optimiser.lr=0.1 optimiser: unknown key;" in result.output
    assert "xor.yaml:8:1" not in result.output
