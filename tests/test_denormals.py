"""Subnormals are flushed to zero inside training only, and the caller's setting comes back."""

import platform
import sys

import numpy as np
import pytest

from bpcli.training.callbacks import Callback
from bpcli.config.loading import parse_config_text
from bpcli.config.sections import resolved_dict
from bpcli.training.denormals import flush_denormals
from bpcli.training.run import train_run

SUBNORMAL = np.float32(1e-39)
SUPPORTED = sys.platform.startswith("linux") and platform.machine() in ("x86_64", "AMD64")


def flushes() -> bool:
    """Whether float32 arithmetic in this thread turns a subnormal into zero right now."""
    return bool(np.array([SUBNORMAL]) * np.float32(1) == 0) and np.float32(1e-30) * np.float32(1e-9) == 0


def test_subnormals_are_zero_inside_the_block_and_normal_again_after():
    assert not flushes()
    with flush_denormals() as active:
        assert active == SUPPORTED
        assert flushes() == SUPPORTED
        assert np.float32(1e-30) * np.float32(10) == np.float32(1e-29)  # normal numbers are untouched
    assert not flushes()


def test_a_caller_that_already_flushes_keeps_flushing():
    if not SUPPORTED:
        pytest.skip("flushing is only set on x86-64 Linux")
    with flush_denormals():
        with flush_denormals():
            pass
        assert flushes()
    assert not flushes()


class Probe(Callback):
    def __init__(self):
        self.seen = []

    def on_batch_end(self, loop):
        self.seen.append(flushes())


def test_training_runs_with_subnormals_flushed_and_gives_them_back(tmp_path):
    cfg = resolved_dict(parse_config_text(
        "model: {layers: [{type: dense, units: 8, activation: relu}, {type: dense, units: 3}]}\n"
        "data: {dataset: spirals, options: {n: 300}}\ntraining: {epochs: 1}\n", "tiny.yaml",
        [f"output.dir={tmp_path}"]))
    probe = Probe()
    train_run(cfg, "tiny.yaml", callbacks=[probe])
    assert probe.seen and all(seen == SUPPORTED for seen in probe.seen)
    assert not flushes()
