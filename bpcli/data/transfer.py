"""One HTTP transfer that cannot hang, overflow or ignore Ctrl-C: what download.py asks of the network.

    Transfer        a GET read by a thread of its own, handed over through a small queue, so
                    the caller waits with its own deadlines, whatever the socket is blocked on
    Pace            the minimum rate: each `timeout`-second window must bring min_rate bytes/s
                    (curl's --speed-limit), so a drip cannot restart a per-read clock forever
    PartFile        the .part file a download streams into; a failure to write it is the cache's
    stop_on_signals SIGINT/SIGTERM while fetching stop it within POLL seconds (DownloadInterrupted)
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import threading
import time
from pathlib import Path
from typing import Callable

from bpcli.errors import BpcliError, ConfigError

CHUNK = 1 << 20  # 1 MiB: few progress calls, little memory
TIMEOUT = 30.0          # seconds: to connect and get the headers, and the window of the minimum rate
MIN_RATE = 8 << 10      # bytes per second, averaged over each `timeout` window
POLL = 0.1              # seconds between looks at the clock and at signals while waiting for the network


class MirrorFault(Exception):
    """What a mirror did wrong, in the words of the failure list: cut short, too slow, too large."""


class DownloadInterrupted(BpcliError):
    """SIGINT or SIGTERM during a download: the partial file is gone; exit 130 or 143 like an interrupted run."""

    def __init__(self, signum: int, name: str, dataset: str, folder: Path):
        self.signum, self.exit_code = signum, 128 + signum
        super().__init__(f"download of {name} for dataset {dataset!r} interrupted by "
                         f"{signal.Signals(signum).name}; no partial file was kept in {folder}")

def default_timeout() -> float:
    """$BPCLI_DOWNLOAD_TIMEOUT (seconds) if set, else TIMEOUT."""
    raw = os.environ.get("BPCLI_DOWNLOAD_TIMEOUT", "").strip()
    if not raw:
        return TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not 0 < value < float("inf"):
        raise ConfigError(f"BPCLI_DOWNLOAD_TIMEOUT={raw!r} is not a number of seconds above 0 "
                          f"(unset, it is {TIMEOUT:g})")
    return value

class Pace:
    """The minimum rate (curl's --speed-limit): each `timeout`-second window must bring min_rate * timeout bytes."""

    def __init__(self, timeout: float, min_rate: float):
        self.timeout, self.min_rate = timeout, min_rate
        self.window_end, self.got = time.monotonic() + timeout, 0

    def next(self, transfer: Transfer, check_stop: Callable[[], None]) -> bytes:
        """The next chunk (b"" at the end), or MirrorFault when a window closes short."""
        while True:
            chunk = transfer.next(self.window_end, check_stop)
            if chunk == b"":
                return chunk
            self.got += len(chunk or b"")
            now = time.monotonic()
            if now >= self.window_end:
                if self.got < self.min_rate * self.timeout:
                    raise MirrorFault(f"too slow: {self.got} bytes in {self.timeout:g} s, below the minimum "
                                       f"of {self.min_rate / 1024:g} KiB/s")
                self.window_end, self.got = now + self.timeout, 0
            if chunk is not None:
                return chunk


class Transfer:
    """A GET read by a thread of its own and handed over through a small queue.

    The thread only reads: urlopen, then read1 (what has arrived, up to CHUNK, so a
    drip comes through byte by byte instead of blocking a 1 MiB read). The caller
    waits with its own deadlines and looks at signals every POLL seconds, so it can
    give up at any moment, whatever the socket is blocked on. On leaving, the thread
    is told to stop: it ends at its next hand-over, or when its socket times out.
    """

    def __init__(self, url: str, timeout: float):
        self.items: queue.Queue = queue.Queue(maxsize=4)
        self.abandoned = threading.Event()
        self.thread = threading.Thread(target=self._read, args=(url, timeout), name="bpcli-download", daemon=True)

    def __enter__(self) -> Transfer:
        import urllib.request   # noqa: F401 -- here, by the caller's thread, before the reader needs it: most
                                # runs download nothing, and the HTTP stack is ~30 ms to import
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.abandoned.set()

    def next(self, until: float, check_stop: Callable[[], None]):
        """The response, then chunks, then b""; None at `until` (time.monotonic()); raises what the thread raised."""
        while True:
            check_stop()
            left = until - time.monotonic()
            if left <= 0:
                return None
            try:
                item = self.items.get(timeout=min(POLL, left))
            except queue.Empty:
                continue
            if isinstance(item, Exception):
                raise item
            return item

    def _read(self, url: str, timeout: float) -> None:
        try:
            import urllib.request   # imported already (__enter__)

            with urllib.request.urlopen(url, timeout=timeout) as response:
                self._hand_over(response)
                read = getattr(response, "read1", response.read)
                while not self.abandoned.is_set():
                    chunk = read(CHUNK)
                    self._hand_over(chunk)
                    if not chunk:
                        return
        except Exception as error:  # the caller classifies it
            self._hand_over(error)

    def _hand_over(self, item) -> None:
        while not self.abandoned.is_set():
            try:
                self.items.put(item, timeout=POLL)
                return
            except queue.Full:
                continue


class PartFile:
    """The .part file a download streams into: a failure to write it is the cache's (`fail` makes the error)."""

    def __init__(self, path: Path, fail: Callable[[OSError], BpcliError]):
        self.fail = fail
        try:
            self.file = open(path, "wb")
        except OSError as error:
            raise fail(error) from None

    def __enter__(self) -> PartFile:
        return self

    def __exit__(self, *exc) -> None:
        with contextlib.suppress(OSError):
            self.file.close()

    def write(self, data: bytes) -> None:
        self._do(self.file.write, data)

    def sync(self) -> None:
        self._do(self.file.flush)
        self._do(os.fsync, self.file.fileno())

    def _do(self, step, *args) -> None:
        try:
            step(*args)
        except OSError as error:
            raise self.fail(error) from None

class Stop:
    """SIGINT or SIGTERM while fetching: noted by the handler, acted on by the download within POLL seconds."""

    def __init__(self, dataset: str, folder: Path):
        self.dataset, self.folder, self.signum = dataset, folder, None

    def request(self, signum, frame) -> None:
        self.signum = self.signum or signum

    def check(self, name: str) -> None:
        if self.signum:
            raise DownloadInterrupted(self.signum, name, self.dataset, self.folder)


@contextlib.contextmanager
def stop_on_signals(dataset: str, folder: Path):
    """While inside, SIGINT and SIGTERM stop the download (signals reach only the main thread: elsewhere, no change)."""
    stop = Stop(dataset, folder)
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    previous = {s: signal.signal(s, stop.request) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for s, handler in previous.items():
            signal.signal(s, signal.SIG_DFL if handler is None else handler)


def content_length(response) -> int | None:
    try:
        value = int(response.headers.get("Content-Length", ""))
    except ValueError:
        return None
    return value if value >= 0 else None
