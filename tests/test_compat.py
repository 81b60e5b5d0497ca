"""Run directories and checkpoints written before the regroup (format 1) still load and resume, bit for bit.

tests/fixtures/v1/ holds two runs made with bpcli as of commit 0b66dd7 (before the package
was regrouped), each stopped part-way, and the `last` checkpoint of the same config run
uninterrupted by that version:

    run-20-of-40/       xor.yaml, 20 of 40 epochs (SGD with momentum, sigmoid, full batch)
    rich-5-of-12/       rich.yaml, 5 of 12 epochs (batch norm, dropout, Adam, step schedule,
                        l2 and label smoothing, clipping, early stopping, periodic checkpoints)

Resuming them with today's code must end with exactly the weights, optimizer state and
metric history the old code reached without stopping (format 1 kept that history in the
checkpoint; today it lives only in the run's metric files).

"Exactly" holds on a machine whose float32 arithmetic is that of the machine that wrote the
fixtures (OpenBLAS picks its kernels by CPU: on the Intel Xeon of 2026-12-02's third session
a few sums rounded differently from the AMD EPYC where CI had passed). The test finds out by retraining the first part of each run from scratch:
where that gives the fixture's weights bit for bit, the resumed run must too; where it does
not, the resumed run must reach the same model up to float32 rounding (the same accuracy and
a loss within 1e-4 on the same data, the same metric history to 1e-3: batch norm's running
mean follows a bias whose gradient is rounding noise, which moves the validation loss most).
"""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from bpcli.config.loading import load_config
from bpcli.tools.inference import evaluate_checkpoint
from bpcli.training.checkpoint import load_checkpoint
from bpcli.training.run import build_trainer, prepare_data, train_run
from bpcli.training.rundir import RunDir

FIXTURES = Path(__file__).parent / "fixtures" / "v1"
RUNS = [("xor.yaml", "run-20-of-40", 40, "uninterrupted-40-last.safetensors"),
        ("rich.yaml", "rich-5-of-12", 12, "rich-uninterrupted-12-last.safetensors")]


@pytest.fixture
def copied(tmp_path, monkeypatch):
    """The fixtures in a scratch folder (resuming writes into the run directory), as the working directory."""
    shutil.copytree(FIXTURES, tmp_path / "v1")
    monkeypatch.chdir(tmp_path / "v1")
    return tmp_path / "v1"


@pytest.mark.parametrize("config, run, epochs, expected", RUNS)
def test_a_format_1_run_resumes_to_the_uninterrupted_result(copied, config, run, epochs, expected):
    bit_for_bit = this_machine_retrains_the_fixture(copied, config, run)
    summary = train_run(load_config(config, [f"training.epochs={epochs}"]), config, resume=run)
    assert summary["epochs_run"] == epochs
    last = copied / run / "checkpoints" / "last.safetensors"
    resumed, reference = load_file(last), load_file(copied / expected)
    assert sorted(resumed) == sorted(reference)
    old = load_checkpoint(copied / expected).meta["state"]["history"]   # format 1 kept it in the checkpoint
    new = [json.loads(line) for line in (copied / run / "metrics.jsonl").read_text().splitlines()]
    if bit_for_bit:
        assert all(np.array_equal(resumed[name], reference[name]) for name in reference)
        assert without_seconds(new) == without_seconds(old)
    else:
        ours, theirs = evaluate_checkpoint(last), evaluate_checkpoint(copied / expected)
        assert ours["accuracy"] == theirs["accuracy"] and ours["loss"] == pytest.approx(theirs["loss"], rel=1e-4)
        assert [row.keys() for row in new] == [row.keys() for row in old]
        assert without_seconds(new) == [pytest.approx(row, rel=1e-3, abs=1e-6) for row in without_seconds(old)]
    state = load_checkpoint(copied / run / "checkpoints" / "last.safetensors").meta["state"]
    assert "history" not in state and state["last_row"] == new[-1]
    assert state["seconds"] == pytest.approx(sum(row["seconds"] for row in new))


def this_machine_retrains_the_fixture(copied: Path, config: str, run: str) -> bool:
    """Whether training `config` from scratch here, as far as `run` got, gives its weights bit for bit."""
    stopped = load_checkpoint(copied / run / "checkpoints" / "last.safetensors")
    epochs = stopped.meta["state"]["epoch"]
    train_run(load_config(config, [f"training.epochs={epochs}", "output.dir=retrained", "output.name=again"]), config)
    again = load_checkpoint(copied / "retrained" / "again" / "checkpoints" / "last.safetensors")
    ours, theirs = again.model_tensors, stopped.model_tensors
    return sorted(ours) == sorted(theirs) and all(np.array_equal(ours[k], theirs[k]) for k in theirs)


def without_seconds(history: list[dict]) -> list[dict]:
    """Every figure of every epoch: only the seconds an epoch took may differ between two runs."""
    return [{k: v for k, v in row.items() if k != "seconds"} for row in history]


@pytest.mark.parametrize("name", ["best.safetensors", "last.safetensors", "epoch-0004.safetensors"])
def test_format_1_checkpoints_evaluate(copied, name):
    path = copied / "rich-5-of-12" / "checkpoints" / name
    result = evaluate_checkpoint(path)
    assert 0 < result["accuracy"] <= 1 and np.isfinite(result["loss"])


def test_the_monitor_of_a_format_1_checkpoint_is_read_from_its_early_stopping_state(copied):
    checkpoint = load_checkpoint(copied / "rich-5-of-12" / "checkpoints" / "last.safetensors")
    saved = checkpoint.meta["callbacks"]["EarlyStopping"]
    assert "monitor" not in checkpoint.meta["state"] and saved["best_epoch"] == 5
    config = load_config("rich.yaml")
    trainer = build_trainer(config, prepare_data(config), RunDir(copied / "scratch"))
    trainer.load_checkpoint(checkpoint)
    assert (trainer.monitor.best, trainer.monitor.best_epoch) == (saved["best"], 5)
    assert all(np.array_equal(trainer.monitor.weights[k], v) for k, v in checkpoint.group("best").items())
    assert trainer.callbacks[0].bad_epochs == saved["bad_epochs"]   # early stopping's own count
