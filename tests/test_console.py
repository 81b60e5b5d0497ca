"""Console output that scales: thinned epoch lines, a live bar with throughput and times, NO_COLOR taking only
the colour, and tables at full width into a pipe."""

import csv
import io
import re
from types import SimpleNamespace

import pytest
from rich.console import Console
from typer.testing import CliRunner

from bpcli.cli import common, train
from bpcli.cli.app import app
from bpcli.cli.progress import EpochLines, PlainProgress, RichProgress, line_every

SGR = re.compile(r"\x1b\[[0-9;]*m")   # colour and style codes (cursor codes end in other letters)


def fake_loop(epochs: int, metric: str = "val_loss"):
    """What the progress callbacks read of the training loop (a LoopView), set by hand."""
    monitor = SimpleNamespace(metric=metric, improved=False, best=None, best_epoch=0)
    return SimpleNamespace(epochs=epochs, epoch=0, batch=0, batches_per_epoch=10, batch_size=32,
                           samples_per_epoch=300, stop_reason=None, monitor=monitor,
                           live_stats=lambda: {"train_loss": 0.5, "train_accuracy": 0.75, "lr": 0.01})


def row(epoch: int, loss: float) -> dict:
    return {"epoch": epoch, "train_loss": loss, "val_loss": loss, "lr": 0.01, "grad_norm": 0.1, "seconds": 0.01}


def monitor_epoch(loop, epoch: int, loss: float) -> dict:
    """What the trainer does as an epoch ends, before the callbacks hear of it: the monitor, the stop."""
    monitor = loop.monitor
    monitor.improved = monitor.best is None or loss < monitor.best
    if monitor.improved:
        monitor.best, monitor.best_epoch = loss, epoch
    loop.epoch = epoch
    loop.stop_reason = "completed" if epoch == loop.epochs else None
    return row(epoch, loss)


def end_epoch(loop, lines: EpochLines, epoch: int, loss: float) -> list[str]:
    return lines.lines(loop, monitor_epoch(loop, epoch, loss))


def epochs_printed(lines: list[str]) -> list[int]:
    return [int(re.match(r"epoch (\d+)/", line).group(1)) for line in lines]


def test_a_steadily_improving_run_prints_about_fifty_lines():
    """xor's 500 epochs each set a new best train_loss: not 500 lines, but every 10th, first and last."""
    loop, lines = fake_loop(500, "train_loss"), EpochLines()
    printed = [line for epoch in range(1, 501) for line in end_epoch(loop, lines, epoch, 1 / epoch)]
    assert epochs_printed(printed) == [1, *range(10, 501, 10)]
    assert all(line.endswith("* best train_loss") for line in printed)
    assert "every 10th" in lines.header(loop) and line_every(50) == 1 and EpochLines().header(fake_loop(50)) is None


def test_each_new_best_is_printed_and_marked():
    """Losses that fall, rise and fall again: each streak of new bests shows its last epoch, one epoch late."""
    losses = {1: 9, 2: 8, 3: 7, 4: 7.5, 5: 8, 6: 6, 7: 9, 8: 9, 9: 5, 10: 4, 11: 4.5}
    loop, lines = fake_loop(500), EpochLines()
    printed = [line for epoch, loss in losses.items() for line in end_epoch(loop, lines, epoch, loss)]
    assert epochs_printed(printed) == [1, 3, 6, 10]     # the first; 3 and 6 end streaks; 10 is a 10th, and a best
    assert [line.endswith("* best val_loss") for line in printed] == [True] * 4
    end_epoch(loop, lines, 12, 3.0)                     # a new best just before Ctrl-C: printed as training ends
    assert epochs_printed(lines.flush()) == [12] and lines.flush() == []


def test_early_stopping_prints_the_last_epoch():
    loop, lines = fake_loop(500), EpochLines()
    end_epoch(loop, lines, 1, 1.0)
    loop.monitor.improved = False
    loop.stop_reason = "early stopping"
    assert epochs_printed(lines.lines(loop, row(37, 2.0))) == [37]


def test_the_live_bar_shows_throughput_elapsed_eta_and_the_best():
    screen = io.StringIO()
    progress = RichProgress(Console(file=screen, force_terminal=True, width=200, color_system=None))
    loop = fake_loop(4)
    progress.on_train_begin(loop)
    for batch in range(5):
        progress.on_batch_begin(loop)
        loop.batch = batch + 1
        progress.last_draw = 0.0    # draw every batch here
        progress.on_batch_end(loop)
    progress.progress.refresh()   # Rich redraws from a thread ten times a second; now, here
    assert re.search(r"batches\s.*5/10\s+[\d,]+ samples/s\s+\d:\d\d:\d\d eta", screen.getvalue())
    loop.batch = 10
    progress.on_epoch_end(loop, monitor_epoch(loop, 1, 0.5))
    progress.progress.refresh()
    progress.on_train_end(loop, {})
    text = screen.getvalue()
    assert re.search(r"epochs\s.*1/4\s+\d:\d\d:\d\d eta .*best val_loss 0\.5 \(epoch 1\)", text)
    assert "epoch 1/4  loss 0.5000" in text and "\x1b[2K" in text      # a line above the bars; bars redrawn
    assert not SGR.search(text)


@pytest.fixture
def terminal(monkeypatch):
    """This process's streams taken for a terminal (Rich's FORCE_COLOR), with NO_COLOR unset."""
    monkeypatch.setenv("FORCE_COLOR", "1")
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.delenv("TTY_COMPATIBLE", raising=False)


def test_no_color_keeps_the_live_bars_and_drops_the_colour(terminal, monkeypatch):
    monkeypatch.setenv("NO_COLOR", "1")
    err = common.console(stderr=True)
    assert err.is_terminal and err.color_system is None
    [progress] = train.progress_callbacks(quiet=False)
    assert isinstance(progress, RichProgress)
    monkeypatch.delenv("NO_COLOR")
    assert common.console(stderr=True).color_system is not None


def test_into_a_pipe_tables_are_not_cut(monkeypatch):
    """gradcheck's table at 80 columns cut `layers.0.weight` to `layers.0.wei…`."""
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    monkeypatch.delenv("COLUMNS", raising=False)
    assert not common.console().is_terminal and common.console().width >= common.PIPE_WIDTH
    result = CliRunner().invoke(app, ["gradcheck"])
    assert result.exit_code == 0
    assert "layers.0.weight" in result.stdout and "…" not in result.stdout
    assert "network identity + cross_entropy" in result.stdout   # one cell, one line


def test_training_xor_prints_fifty_odd_lines_and_logs_every_epoch(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["train", "xor", "--set", "output.name=x"])
    assert result.exit_code == 0, result.output
    epoch_lines = [line for line in result.stderr.splitlines() if line.startswith("epoch ")]
    assert 50 <= len(epoch_lines) <= 60 and epoch_lines[-1].startswith("epoch 500/500")
    with open(tmp_path / "runs" / "x" / "metrics.csv") as f:
        assert [int(r["epoch"]) for r in csv.DictReader(f)] == list(range(1, 501))
    assert isinstance(train.progress_callbacks(quiet=False)[0], PlainProgress)
