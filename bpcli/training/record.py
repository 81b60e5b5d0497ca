"""run.json: what made a run, so that it can be made again, and told apart from another.

    {"format": "bpcli-run-record", "version": 1, "sessions": [session, ...]}

A session is one `bpcli train` (or train_run call) that wrote the run: a new run
has one, each resume adds one. A session holds

    started, ended         local time with its UTC offset; ended is null while it trains (or if it was killed)
    stopped_because        the summary's reason, once it ended; epochs_run, and start_epoch (0 unless resumed)
    command, overrides     the command line and its --set arguments, as the CLI saw them (null from Python)
    config_file            the config file read (null when a resume used the checkpoint's own config)
    environment            bpcli, Python, NumPy, the BLAS NumPy was built with, thread counts, host, platform
    git                    commit, dirty flag and root of the repository holding the config file, or null

Why per session: a run resumed on another machine, or after `pip install -U`,
is no longer the product of one environment, and the record should say so.
The file is rewritten whole (atomically) at a session's start and end, next
to summary.json. Nothing here is printed; problems go to `on_warning`.
"""

from __future__ import annotations

import json
import os
import platform
import socket
import subprocess
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np

from bpcli.version import __version__
from bpcli.fileio import write_file
from bpcli.training.rundir import RunDir

FORMAT, VERSION = "bpcli-run-record", 1
# Environment variables that set the thread counts of BLAS and OpenMP libraries.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS",
                    "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")
GIT_TIMEOUT = 5.0   # seconds for each git command: a slow network file system must not hold up training


@dataclass
class Invocation:
    """What only the caller knows: the command line, its --set overrides and the config file it named."""

    command: list[str] | None = None
    overrides: list[str] = field(default_factory=list)
    config_file: str | None = None


def now() -> str:
    return datetime.now().astimezone().isoformat(timespec="seconds")


def environment() -> dict:
    """Versions, BLAS, thread counts and host: what can change a run's numbers (or its speed) between machines."""
    return {"bpcli": __version__, "python": platform.python_version(), "numpy": np.__version__,
            "blas": blas_library(), "threads": thread_counts(), "host": socket.gethostname(),
            "platform": platform.platform(), "machine": platform.machine()}


def blas_library() -> dict | None:
    """{name, version} of the BLAS NumPy was built against (numpy >= 1.25 reports it), else None."""
    try:
        config = np.show_config(mode="dicts")
    except TypeError:   # an older NumPy prints its config and has no dicts mode
        return None
    blas = (config or {}).get("Build Dependencies", {}).get("blas", {})
    return {"name": blas.get("name"), "version": blas.get("version")} if blas else None


def thread_counts() -> dict:
    """CPUs, the thread variables set, and each loaded thread pool's size (threadpoolctl, if installed)."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"cpu_count": os.cpu_count(), "usable_cpus": usable,
            "variables": {name: os.environ[name] for name in THREAD_VARIABLES if name in os.environ},
            "pools": thread_pools()}


def thread_pools() -> list[dict] | None:
    """threadpoolctl's view of the BLAS/OpenMP libraries loaded (their real thread counts); None without it."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return None
    keys = ("user_api", "internal_api", "version", "num_threads", "architecture")
    return [{key: pool.get(key) for key in keys} for pool in threadpool_info()]


def git_state(folder: str | Path, timeout: float = GIT_TIMEOUT) -> dict | None:
    """{commit, dirty, root} of the git repository holding `folder`; None when there is none (or no git).

    dirty: tracked files differ from the commit (untracked files are not looked at: in a big
    checkout listing them is slow, and an untracked file did not change a tracked config).
    """
    found = _git(folder, timeout, "rev-parse", "--show-toplevel", "HEAD")   # one process for both: ~5 ms each
    if found is None or len(found.splitlines()) != 2:   # no repository, or one without a commit
        return None
    root, commit = found.splitlines()
    status = _git(folder, timeout, "status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": None if status is None else status != "", "root": root}


def _git(folder: str | Path, timeout: float, *args: str) -> str | None:
    """A git command's output in `folder`, stripped; None if git is missing, slow, or says no."""
    try:
        done = subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL, env={**os.environ, "GIT_TERMINAL_PROMPT": "0"})
    except (OSError, subprocess.SubprocessError):   # no git on PATH, or it took longer than `timeout`
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def new_session(invocation: Invocation | None, start_epoch: int = 0) -> dict:
    """A session as it starts: who asked, in what environment, from which commit."""
    invocation = invocation or Invocation()
    config_file = Path(invocation.config_file).resolve() if invocation.config_file else None
    return {"started": now(), "ended": None, "stopped_because": None, "start_epoch": start_epoch,
            "epochs_run": None, "command": invocation.command, "overrides": list(invocation.overrides),
            "config_file": str(config_file) if config_file else None, "environment": environment(),
            "git": git_state(config_file.parent) if config_file else None}


def read_record(run: RunDir, on_warning=None) -> dict:
    """The run's record; a fresh one if it has none yet, or if it cannot be read (with a warning)."""
    fresh = {"format": FORMAT, "version": VERSION, "sessions": []}
    if not run.record.exists():
        return fresh
    try:
        record = json.loads(run.record.read_text())
        if record.get("format") != FORMAT or not isinstance(record.get("sessions"), list):
            raise ValueError(f"not a {FORMAT} file")
    except (OSError, ValueError, AttributeError) as error:
        if on_warning:
            on_warning(f"cannot read {run.record} ({error}): it is replaced by a record of this session only")
        return fresh
    return record


class RunRecord:
    """Keeps run.json: a session is added as it starts (`start`) and completed as it ends (`finish`)."""

    def __init__(self, run: RunDir, invocation: Invocation | None = None, on_warning=None):
        self.run, self.invocation, self.on_warning = run, invocation, on_warning
        self.record: dict | None = None

    def start(self, start_epoch: int) -> None:
        """Called once the run is accepted (a refused resume leaves run.json as it was)."""
        self.record = read_record(self.run, self.on_warning)
        self.record["sessions"].append(new_session(self.invocation, start_epoch))
        self.write()

    def finish(self, summary: dict) -> None:
        """However the session ended (completed, stopped, interrupted, diverged): when, why, and how far."""
        if self.record is None:
            return
        self.record["sessions"][-1].update(ended=now(), stopped_because=summary["stopped_because"],
                                           epochs_run=summary["epochs_run"])
        self.write()

    def write(self) -> None:
        write_file(self.run.record, json.dumps(self.record, indent=2) + "\n", "run record")
