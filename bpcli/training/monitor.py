"""The monitored metric: which epoch was best so far, and the weights it ended with.

An epoch improves on the best when the monitored value is strictly below
best - min_delta (mode min) or strictly above best + min_delta (mode max);
min_delta is absolute, and a NaN never improves. The best weights (parameters
and buffers) are copied when they improve, so the best checkpoint, restore_best
and the summary all speak of one epoch whose weights exist, however the run ends.
"""

from __future__ import annotations

import numpy as np


class Monitor:
    """Tracks training.monitor's best epoch; the trainer updates it as each epoch ends."""

    def __init__(self, metric: str, mode: str, min_delta: float = 0.0):
        self.metric, self.mode, self.min_delta = metric, mode, min_delta
        self.best: float | None = None
        self.best_epoch = 0
        self.improved = False
        self.weights: dict[str, np.ndarray] | None = None

    def is_improvement(self, value) -> bool:
        if value is None or not np.isfinite(value):
            return False
        if self.best is None:
            return True
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta

    def update(self, value, epoch: int, state_dict) -> bool:
        """Record one epoch's value; on improvement keep a copy of the weights (state_dict() of the model)."""
        self.improved = self.is_improvement(value)
        if self.improved:
            self.best, self.best_epoch = float(value), epoch
            self.weights = state_dict()
        return self.improved

    def state_dict(self) -> dict:
        return {"best": self.best, "best_epoch": self.best_epoch}

    def load_state_dict(self, state: dict, weights: dict[str, np.ndarray] | None) -> None:
        self.best, self.best_epoch = state.get("best"), state.get("best_epoch", 0)
        self.weights = weights or None
