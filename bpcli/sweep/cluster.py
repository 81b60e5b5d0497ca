"""Dask distributed, which runs the trials: a cluster on this machine, or one already running.

    connect(workers=None, address=None) -> Cluster   with-block: a Dask client, and what it is connected to
    BLAS_THREADS                                      the environment of every local worker: one BLAS thread

By default a LocalCluster of worker processes on 127.0.0.1 only (nothing
listens on another interface), one per core, each with one thread and one BLAS
thread: trials run side by side instead of fighting over the cores. The
workers ignore SIGINT, so a Ctrl-C in the terminal reaches the driver alone.
They have no Dask memory limit: Dask's nanny would otherwise poll each
worker's memory ten times a second and restart a worker past its share of the
machine's memory, killing a trial that bpcli's own size checks let start. With an
address (tcp://HOST:8786) the client joins a running cluster (`dask scheduler`
and `dask worker`s, or one from dask-jobqueue or dask-kubernetes); its workers
need bpcli installed, and share no folder with this machine. A worker with
several threads runs as many trials at once.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import signal
import threading
from contextlib import contextmanager
from dataclasses import dataclass

from bpcli.errors import ConfigError

BLAS_THREADS = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
CONNECT_TIMEOUT = 10.0   # seconds to reach a scheduler


@dataclass
class Cluster:
    client: object            # distributed.Client
    address: str              # the scheduler's
    local: bool               # a LocalCluster this sweep started (the scheduler runs in this process)

    def slots(self) -> int:
        """How many trials can run at once: the workers' threads."""
        return sum(self.client.nthreads().values())


def cores() -> int:
    """The cores this process may use (its affinity mask, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:   # macOS
        return os.cpu_count() or 1


@contextmanager
def connect(workers: int | None = None, address: str | None = None):
    """A Cluster for the with-block; a LocalCluster is shut down at its end, a remote one is only left."""
    import distributed

    if address:
        client = _remote_client(distributed, address)
        try:
            _check_workers(client, address)
            yield Cluster(client, client.scheduler.address, local=False)
        finally:
            client.close()
        return
    with sigint_ignored():   # the workers inherit it: Ctrl-C in a terminal reaches the driver alone
        cluster = distributed.LocalCluster(n_workers=workers or cores(), threads_per_worker=1, processes=True,
                                           host="127.0.0.1", dashboard_address=None, silence_logs=logging.ERROR,
                                           env=BLAS_THREADS, memory_limit=0)
    client = distributed.Client(cluster)
    try:
        yield Cluster(client, cluster.scheduler_address, local=True)
    finally:
        client.close()
        cluster.close()


@contextmanager
def sigint_ignored():
    """SIGINT ignored while inside (in the main thread only), so that processes started meanwhile ignore it.

    A terminal sends Ctrl-C to every process of its foreground group, local workers
    included; a worker started while SIGINT is ignored keeps ignoring it (an ignored
    signal stays ignored across exec, and Python then installs no handler of its own),
    so the driver alone decides how the sweep stops: running trials checkpoint first.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _remote_client(distributed, address: str):
    try:
        return distributed.Client(address, timeout=CONNECT_TIMEOUT)
    except (OSError, TimeoutError, ValueError) as error:
        raise ConfigError(f"cannot reach a Dask scheduler at {address} within {CONNECT_TIMEOUT:g} s ({error}); "
                          "start one with `dask scheduler` and workers with `dask worker ADDRESS`, or leave "
                          "--cluster out to run on this machine") from None


def _check_workers(client, address: str) -> None:
    """The cluster has workers, and each can import bpcli (else every trial would fail the same way)."""
    if not client.nthreads():
        raise ConfigError(f"the Dask cluster at {address} has no workers: start some with `dask worker {address}`")
    found = client.run(_has_bpcli, on_error="return")
    missing = sorted(worker for worker, yes in found.items() if yes is not True)
    if missing:
        raise ConfigError(f"bpcli is not installed on the Dask worker{'s' if len(missing) > 1 else ''} "
                          f"{', '.join(missing)}: install it there from the same checkout or wheel (pip install "
                          "\".[sweep]\" in a checkout; the name bpcli on the package index is another project)")


# Sent by value (a lambda), so that a worker without bpcli can run it and say so.
_has_bpcli = lambda: importlib.util.find_spec("bpcli") is not None  # noqa: E731
