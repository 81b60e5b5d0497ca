"""Row logs written in batches (training/rowlog.py): rows wait, but never past the next checkpoint or the run's end.

A run of many tiny epochs spent more time formatting and appending its log
rows than training (issue 16). Rows now wait in memory for up to a quarter
second; these tests hold the clock still, so that rows wait as long as the
rules allow, and check that every row is on disk when it must be: before
each `last` checkpoint, and when the run ends, however it ends.
"""

import json
import time

import pytest

import bpcli
import bpcli.training.callbacks as callbacks
import bpcli.training.rowlog as rowlog
from bpcli.errors import DivergedError
from bpcli.fileio import read_log_rows
from bpcli.training.checkpoint import load_checkpoint
from bpcli.training.rowlog import RowLog


class StillClock:
    """time.monotonic that never moves: a row waits until a checkpoint or the run's end writes it."""

    @staticmethod
    def monotonic():
        return 1000.0


def jsonl_epochs(path) -> list[int]:
    return [row["epoch"] for row in read_log_rows(path)]


def csv_lines(path) -> list[str]:
    return path.read_text().splitlines()


def test_a_row_waits_until_the_last_write_is_max_wait_old(tmp_path):
    log = RowLog(tmp_path / "m.csv", tmp_path / "m.jsonl", ["epoch", "loss"], max_wait=0.2)
    log.start(0)
    log.append([{"epoch": 1, "loss": 0.5}])              # nothing written yet: written at once
    log.append([{"epoch": 2, "loss": 0.25}])             # just written: this one waits
    assert jsonl_epochs(tmp_path / "m.jsonl") == [1] and log.waiting
    log.write_if_due()
    assert jsonl_epochs(tmp_path / "m.jsonl") == [1]
    time.sleep(0.25)
    log.write_if_due()                                   # as a batch ends: the wait is over
    assert jsonl_epochs(tmp_path / "m.jsonl") == [1, 2] and not log.waiting
    assert csv_lines(tmp_path / "m.csv") == ["epoch,loss", "1,0.5", "2,0.25"]


def test_rows_are_copied_as_they_are_appended(tmp_path):
    log = RowLog(tmp_path / "m.csv", tmp_path / "m.jsonl", ["epoch", "loss"], max_wait=60)
    log.start(0)
    log.append([{"epoch": 1, "loss": 0.5}])
    row = {"epoch": 2, "loss": 0.25}
    log.append([row])
    row["loss"] = 99.0                                   # the caller's dict changes after the epoch
    log.write()
    assert [r["loss"] for r in read_log_rows(tmp_path / "m.jsonl")] == [0.5, 0.25]


def test_start_keeps_the_done_epochs_once_each_and_drops_later_ones(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in [
        {"epoch": 1, "loss": 1.0}, {"epoch": 2, "loss": 2.0}, {"epoch": 2, "loss": 2.5}, {"epoch": 3, "loss": 3.0}]))
    kept = RowLog(tmp_path / "m.csv", path, ["epoch", "loss"]).start(2)
    assert kept == [{"epoch": 1, "loss": 1.0}, {"epoch": 2, "loss": 2.5}]
    assert jsonl_epochs(path) == [1, 2] and csv_lines(tmp_path / "m.csv") == ["epoch,loss", "1,1.0", "2,2.5"]


@pytest.fixture
def still_clock(monkeypatch):
    """Neither rows nor checkpoints are written on time: only the final save and the run's end write."""
    monkeypatch.setattr(rowlog, "time", StillClock)
    monkeypatch.setattr(callbacks, "time", StillClock)


def test_every_row_is_on_disk_when_a_run_ends(tmp_path, still_clock):
    run = bpcli.train("xor", output__dir=str(tmp_path), output__name="x", **{"training.epochs": 40})
    assert jsonl_epochs(run.run_dir / "metrics.jsonl") == list(range(1, 41))
    assert len(csv_lines(run.run_dir / "metrics.csv")) == 41
    layers = read_log_rows(run.run_dir / "layers.jsonl")
    assert [(r["epoch"], r["layer"]) for r in layers] == [(e, f"layers.{i}") for e in range(1, 41) for i in (0, 2)]


def test_the_rows_a_last_checkpoint_vouches_for_are_on_disk_when_it_is_written(tmp_path, still_clock, monkeypatch):
    """Every `last` of epoch N is written with the logs holding rows 1..N (and no later ones)."""
    seen = []
    real_save = callbacks.save_checkpoint

    def save(path, tensors, meta, **kwargs):
        if path.name == "last.safetensors":
            run_dir = path.parent.parent
            seen.append((meta["state"]["epoch"], jsonl_epochs(run_dir / "metrics.jsonl"),
                         sorted({r["epoch"] for r in read_log_rows(run_dir / "layers.jsonl")})))
        return real_save(path, tensors, meta, **kwargs)

    monkeypatch.setattr(callbacks, "save_checkpoint", save)
    bpcli.train("xor", output__dir=str(tmp_path), output__name="x", **{"training.epochs": 12})
    assert seen and seen[-1][0] == 12
    for epoch, metric_epochs, layer_epochs in seen:
        assert metric_epochs == layer_epochs == list(range(1, epoch + 1))


def test_a_diverged_run_has_the_rows_of_its_epochs_on_disk(tmp_path, still_clock):
    class Poisons(callbacks.Callback):   # NaN weights after epoch 5: the loss of epoch 6's first batch is NaN
        def on_epoch_end(self, loop, row):
            if row["epoch"] == 5:
                loop.model.theta[:] = float("nan")

    with pytest.raises(DivergedError):
        bpcli.train("xor", output__dir=str(tmp_path), output__name="d", callbacks=[Poisons()],
                    **{"training.epochs": 30})
    run_dir = tmp_path / "d"
    epochs = jsonl_epochs(run_dir / "metrics.jsonl")
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["epochs_run"] == 5 and epochs == [1, 2, 3, 4, 5]
    assert len(csv_lines(run_dir / "metrics.csv")) == len(epochs) + 1


def test_a_run_stopped_by_an_error_in_a_callback_has_its_rows_on_disk(tmp_path, still_clock):
    class Fails(callbacks.Callback):
        def on_epoch_end(self, loop, row):
            if row["epoch"] == 7:
                raise RuntimeError("a callback's own bug")

    with pytest.raises(RuntimeError):
        bpcli.train("xor", output__dir=str(tmp_path), output__name="e", callbacks=[Fails()],
                    **{"training.epochs": 30})
    assert jsonl_epochs(tmp_path / "e" / "metrics.jsonl") == list(range(1, 8))
    assert load_checkpoint(tmp_path / "e" / "checkpoints" / "last.safetensors").meta["state"]["epoch"] == 1
