"""Log rows are not fsynced one by one: the fsyncs of a run do not grow with its epochs (issue 16, item 3).

The metric and layer logs are appended without syncing and made durable before
each `last` checkpoint, which is written at most once per checkpoint interval
(and after the final epoch). With the callbacks' clock frozen the interval never
elapses, so a run of 60 epochs must make exactly as many fsync calls as one of 6.
"""

import os

import pytest

import bpcli
import bpcli.training.callbacks as callbacks


class FrozenClock:
    """time.monotonic that never moves: the checkpoint interval never elapses."""

    @staticmethod
    def monotonic():
        return 1000.0


def fsyncs_of_a_run(tmp_path, monkeypatch, epochs: int) -> int:
    calls = []
    real_fsync = os.fsync

    def counting_fsync(fd):
        calls.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(callbacks, "time", FrozenClock)
    monkeypatch.setattr(os, "fsync", counting_fsync)
    run = bpcli.train("xor", output__dir=str(tmp_path), output__name=f"xor-{epochs}", **{"training.epochs": epochs})
    monkeypatch.undo()
    assert len(run.metrics) == epochs and (run.run_dir / "layers.csv").is_file()   # every row was logged
    return len(calls)


@pytest.mark.parametrize("epochs", [60])
def test_fsync_calls_do_not_grow_with_the_epochs(tmp_path, monkeypatch, epochs):
    few = fsyncs_of_a_run(tmp_path, monkeypatch, 6)
    many = fsyncs_of_a_run(tmp_path, monkeypatch, epochs)
    assert many == few
    assert few < 40   # the run's files and checkpoints, not rows: 4 logs appended per epoch would be 240 for 60


def test_rows_are_durable_before_the_last_checkpoint(tmp_path, monkeypatch):
    """The four logs are synced before each `last` checkpoint: sync_logs runs once per save_last."""
    order = []
    monkeypatch.setattr(callbacks.RunDir, "sync_logs", lambda self: order.append("sync"))
    real_save = callbacks.save_checkpoint
    monkeypatch.setattr(callbacks, "save_checkpoint",
                        lambda path, *a, **k: (order.append(os.path.basename(path)), real_save(path, *a, **k)))
    bpcli.train("xor", output__dir=str(tmp_path), output__name="xor", **{"training.epochs": 3})
    lasts = [i for i, name in enumerate(order) if name == "last.safetensors"]
    assert lasts and all(order[i - 1] == "sync" for i in lasts)
