"""Ctrl-C and SIGTERM during training: finish the batch, save, exit; a second Ctrl-C aborts at once.

The loop checks `StopRequest.signum` after each batch. Aborting at once on a
second Ctrl-C is safe because every checkpoint is written atomically: the last
one on disk is always complete.
"""

from __future__ import annotations

import signal
from contextlib import contextmanager


class StopRequest:
    """Set by SIGINT/SIGTERM; the loop checks it after each batch."""

    def __init__(self):
        self.signum: int | None = None

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signum).name


@contextmanager
def graceful_interrupts(stop: StopRequest):
    """While inside: the first SIGINT or SIGTERM sets `stop`; a second SIGINT raises KeyboardInterrupt."""

    def request(signum, frame):
        if stop.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        stop.signum = signum

    previous = {s: signal.signal(s, request) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
