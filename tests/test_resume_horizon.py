"""Resuming with another training.epochs: refused (unless --force) when the schedule anneals over the epochs."""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bpcli.cli.app import app
from bpcli.config.loading import parse_config_text
from bpcli.config.sections import resolved_dict
from bpcli.errors import ConfigError
from bpcli.optim.schedules import SCHEDULES, takes_from_config
from bpcli.training.run import train_run

runner = CliRunner()

TINY = """\
model: {layers: [{type: dense, units: 8, activation: relu}, {type: dense, units: 3}]}
optimizer: {name: adam, lr: 0.001}
schedule: {name: SCHEDULE}
data: {dataset: spirals, batch_size: 128, options: {n: 300}}
training: {epochs: 2, seed: 0}
"""


def config(tmp_path, schedule, *sets):
    text = TINY.replace("SCHEDULE", schedule)
    return resolved_dict(parse_config_text(text, "t.yaml", [f"output.dir={tmp_path}", "output.name=r", *sets]))


def lrs(run: Path) -> list[float]:
    return [json.loads(line)["lr"] for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_only_cosine_takes_the_epochs():
    assert {name for name in SCHEDULES if "epochs" in takes_from_config(name)} == {"cosine"}
    assert takes_from_config("reduce_on_plateau") == {"lr", "steps_per_epoch", "mode"}


def test_a_cosine_run_resumed_with_other_epochs_is_refused_and_keeps_its_lr(tmp_path):
    train_run(config(tmp_path, "cosine", "training.epochs=1"), "t.yaml")
    run = tmp_path / "r"
    before = {name: (run / name).read_bytes() for name in ("config.yaml", "metrics.jsonl", "run.json")}
    with pytest.raises(ConfigError) as refused:
        train_run(config(tmp_path, "cosine", "training.epochs=3"), "t.yaml", resume=str(run))
    assert str(refused.value).startswith(
        "the config differs from the checkpoint's: training.epochs: 1 in the checkpoint, 3 now (the cosine schedule "
        "anneals the lr over training.epochs, so the lr of every step from here on would change). Resuming would "
        "not continue the same run; use --force")
    assert {name: (run / name).read_bytes() for name in before} == before
    forced = train_run(config(tmp_path, "cosine", "training.epochs=3"), "t.yaml", resume=str(run), force=True)
    assert forced["epochs_run"] == 3 and len(lrs(run)) == 3   # stretched to the new horizon, as asked


def test_the_refusal_is_exit_2_from_the_command_line(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text(TINY.replace("SCHEDULE", "cosine") + f"output: {{dir: {tmp_path}, name: r}}\n")
    assert runner.invoke(app, ["train", str(path), "-q"]).exit_code == 0
    result = runner.invoke(app, ["train", str(path), "-q", "--resume", str(tmp_path / "r"),
                                 "--set", "training.epochs=3"])
    assert result.exit_code == 2 and "training.epochs: 2 in the checkpoint, 3 now (the cosine schedule" in result.stderr
    assert len(lrs(tmp_path / "r")) == 2


@pytest.mark.parametrize("schedule", ["constant", "reduce_on_plateau"])
def test_other_schedules_resume_with_more_epochs_and_the_same_lrs(tmp_path, schedule):
    train_run(config(tmp_path / "whole", schedule, "training.epochs=3"), "t.yaml")
    train_run(config(tmp_path, schedule), "t.yaml")
    train_run(config(tmp_path, schedule, "training.epochs=3"), "t.yaml", resume=str(tmp_path / "r"))
    assert lrs(tmp_path / "r") == lrs(tmp_path / "whole" / "r")
