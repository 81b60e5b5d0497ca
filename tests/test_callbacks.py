"""Early stopping on scripted metric sequences: the exact epoch it stops at, and what counts as better.

The Monitor decides what is better (mode, min_delta); EarlyStopping counts the
epochs without improvement and asks the loop to stop.
"""

import numpy as np
import pytest

from bpcli.nn.metrics import resolve_mode
from bpcli.training.callbacks import EarlyStopping
from bpcli.training.monitor import Monitor


class ScriptedLoop:
    """The two things EarlyStopping reads and asks of a LoopView: the monitor, and to stop."""

    def __init__(self, monitor):
        self.monitor, self.stop_reason = monitor, None

    def request_stop(self, reason):
        self.stop_reason = self.stop_reason or reason


def run(values, monitor="val_loss", mode="auto", patience=None, min_delta=0.0):
    """Feed one value per epoch; return the epoch at which it says stop (None if never), and the monitor."""
    loop = ScriptedLoop(Monitor(monitor, resolve_mode(monitor, mode), min_delta))
    stopper = EarlyStopping(patience) if patience else None
    for epoch, value in enumerate(values, start=1):
        loop.monitor.update(value, epoch, lambda: {"w": np.array([epoch])})
        if stopper:
            stopper.on_epoch_end(loop, {"epoch": epoch})
        if loop.stop_reason:
            return epoch, loop.monitor
    return None, loop.monitor


def test_stops_after_patience_epochs_without_improvement():
    stopped, tracker = run([1.0, 0.8, 0.9, 0.85, 0.81, 0.7], patience=3)
    assert stopped == 5 and tracker.best_epoch == 2 and tracker.best == 0.8


def test_improvement_is_strict_and_min_delta_is_absolute():
    stopped, tracker = run([1.0, 1.0, 0.95, 0.94], patience=2, min_delta=0.05)
    # 1.0 ties (not better); 0.95 is not below 1.0 - 0.05 strictly; so two bad epochs after epoch 1
    assert stopped == 3 and tracker.best_epoch == 1
    stopped, tracker = run([1.0, 0.949, 0.9], patience=1, min_delta=0.05)
    assert stopped == 3 and tracker.best_epoch == 2


def test_max_mode_for_accuracy():
    assert resolve_mode("val_accuracy", "auto") == "max" and resolve_mode("val_loss", "auto") == "min"
    stopped, tracker = run([0.5, 0.7, 0.69, 0.71, 0.6, 0.6], monitor="val_accuracy", patience=2)
    assert stopped == 6 and tracker.best_epoch == 4 and tracker.best == 0.71


def test_nan_is_never_an_improvement_and_no_patience_never_stops():
    stopped, tracker = run([1.0, float("nan"), float("nan"), 0.5] * 3, patience=None)
    assert stopped is None and tracker.best == 0.5 and tracker.best_epoch == 4


def test_state_round_trip_continues_the_count():
    monitor, first = Monitor("val_loss", "min"), EarlyStopping(patience=3)
    loop = ScriptedLoop(monitor)
    for epoch, value in enumerate([1.0, 0.9, 0.95], start=1):
        monitor.update(value, epoch, dict)
        first.on_epoch_end(loop, {"epoch": epoch})
    resumed = Monitor("val_loss", "min")
    resumed.load_state_dict(monitor.state_dict(), None)
    second, loop = EarlyStopping(patience=3), ScriptedLoop(resumed)
    second.load_state_dict(first.state_dict())
    for epoch, value in ((4, 0.95), (5, 0.99)):
        resumed.update(value, epoch, dict)
        second.on_epoch_end(loop, {"epoch": epoch})
        assert (loop.stop_reason is not None) == (epoch == 5)
    assert loop.stop_reason == "early stopping: val_loss did not improve for 3 epochs (best 0.9 at epoch 2)"


def test_the_monitor_keeps_the_weights_of_the_best_epoch_only():
    _, monitor = run([1.0, 0.5, 0.7, 0.6])
    assert monitor.best_epoch == 2 and monitor.weights["w"].tolist() == [2]


@pytest.mark.parametrize("patience, expected", [(1, 3), (2, 4), (4, None)])
def test_patience_is_counted_in_epochs(patience, expected):
    stopped, _ = run([3.0, 2.0, 2.5, 2.6, 2.7], patience=patience)
    assert stopped == expected
