"""Early stopping on scripted metric sequences: the exact epoch it stops at, and what counts as better."""

import pytest

from bpcli.training.callbacks import EarlyStopping, resolve_mode


def run(values, **options):
    """Feed one value per epoch; return the epoch at which it says stop (None if never)."""
    tracker = EarlyStopping(**options)
    for epoch, value in enumerate(values, start=1):
        if tracker.update(value, epoch):
            return epoch, tracker
    return None, tracker


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
    first = EarlyStopping(patience=3)
    for epoch, value in enumerate([1.0, 0.9, 0.95], start=1):
        first.update(value, epoch)
    second = EarlyStopping(patience=3)
    second.load_state_dict(first.state_dict())
    assert not second.update(0.95, 4) and second.update(0.99, 5)


@pytest.mark.parametrize("patience, expected", [(1, 3), (2, 4), (4, None)])
def test_patience_is_counted_in_epochs(patience, expected):
    stopped, _ = run([3.0, 2.0, 2.5, 2.6, 2.7], patience=patience)
    assert stopped == expected
