"""run.json: the command, versions, BLAS, threads, host, times and git commit of each session that trained a run."""

import json
import platform
import subprocess
import sys
import types
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from tests.tiny_configs import tiny_spirals
from bpcli import __version__
from bpcli.cli.app import app
from bpcli.config.loading import parse_config_text
from bpcli.config.sections import resolved_dict
from bpcli.errors import ConfigError
from bpcli.training import record
from bpcli.training.run import train_run

runner = CliRunner()

TINY = tiny_spirals()


def git(folder, *args):
    subprocess.run(["git", "-C", str(folder), "-c", "user.name=t", "-c", "user.email=t@t", *args], check=True,
                   capture_output=True)


def read_record(run: Path) -> dict:
    return json.loads((run / "run.json").read_text())


@pytest.fixture
def repo(tmp_path):
    """A git repository holding the config, committed."""
    folder = tmp_path / "repo"
    folder.mkdir()
    (folder / "tiny.yaml").write_text(TINY + f"output: {{dir: {tmp_path / 'runs'}}}\n")
    git(folder, "init", "-q")
    git(folder, "add", "tiny.yaml")
    git(folder, "commit", "-q", "-m", "tiny")
    return folder


def test_train_writes_the_command_environment_times_and_commit(repo, tmp_path, monkeypatch):
    argv = ["bpcli", "train", str(repo / "tiny.yaml"), "--set", "output.name=r", "--set", "training.seed=1", "-q"]
    monkeypatch.setattr(sys, "argv", argv)
    result = runner.invoke(app, argv[1:])
    assert result.exit_code == 0, result.output
    (session,) = read_record(tmp_path / "runs" / "r")["sessions"]
    assert session["command"] == argv and session["overrides"] == ["output.name=r", "training.seed=1"]
    assert session["config_file"] == str((repo / "tiny.yaml").resolve())
    env = session["environment"]
    assert (env["bpcli"], env["python"], env["numpy"]) == (__version__, platform.python_version(), np.__version__)
    assert env["host"] == platform.node() and env["threads"]["cpu_count"] > 0
    assert env["blas"] == record.blas_library() and env["blas"]["name"]   # this NumPy reports its BLAS
    head = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True).stdout
    assert session["git"] == {"commit": head.strip(), "dirty": False, "root": str(repo.resolve())}
    started, ended = (datetime.fromisoformat(session[k]) for k in ("started", "ended"))
    assert started <= ended and started.tzinfo is not None
    assert (session["stopped_because"], session["epochs_run"], session["start_epoch"]) == ("completed 2 epochs", 2, 0)


def test_a_changed_tracked_file_makes_the_commit_dirty_and_no_repository_gives_null(repo, tmp_path):
    assert record.git_state(repo)["dirty"] is False
    (repo / "tiny.yaml").write_text(TINY + "# edited\n")
    assert record.git_state(repo)["dirty"] is True
    (repo / "untracked.yaml").write_text("x: 1\n")   # untracked files are not looked at
    git(repo, "commit", "-q", "-am", "edit")
    assert record.git_state(repo)["dirty"] is False
    outside = tmp_path / "plain"
    outside.mkdir()
    assert record.git_state(outside) is None


def test_no_git_or_a_git_that_hangs_gives_null_quickly(repo, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert record.git_state(repo) is None
    slow = tmp_path / "slow"
    slow.mkdir()
    (slow / "git").write_text("#!/bin/sh\nexec /bin/sleep 10\n")
    (slow / "git").chmod(0o755)
    monkeypatch.setenv("PATH", str(slow))
    started = datetime.now()
    assert record.git_state(repo, timeout=0.3) is None
    assert 0.3 <= (datetime.now() - started).total_seconds() < 2   # it waited for git, then gave up


def test_thread_pools_come_from_threadpoolctl_when_it_is_installed(monkeypatch):
    pool = {"user_api": "blas", "internal_api": "openblas", "version": "0.3.31", "num_threads": 2,
            "architecture": "Haswell", "filepath": "/x/libopenblas.so", "prefix": "libopenblas"}
    monkeypatch.setitem(sys.modules, "threadpoolctl", types.SimpleNamespace(threadpool_info=lambda: [pool]))
    for name in record.THREAD_VARIABLES:   # a Dask LocalCluster started earlier in this process sets some
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "2")
    threads = record.thread_counts()
    assert threads["pools"] == [{k: pool[k] for k in ("user_api", "internal_api", "version", "num_threads",
                                                        "architecture")}]
    assert threads["variables"] == {"OPENBLAS_NUM_THREADS": "2"}
    monkeypatch.setitem(sys.modules, "threadpoolctl", None)   # not installed
    assert record.thread_counts()["pools"] is None


def config(tmp_path, *sets):
    return resolved_dict(parse_config_text(TINY, "tiny.yaml", [f"output.dir={tmp_path / 'runs'}", "output.name=r",
                                                                *sets]))


def test_each_resume_adds_a_session_and_a_refused_resume_changes_nothing(tmp_path):
    train_run(config(tmp_path), "tiny.yaml")   # from Python: no command line to record
    run = tmp_path / "runs" / "r"
    first = read_record(run)["sessions"]
    assert len(first) == 1 and first[0]["command"] is None and first[0]["git"] is None
    train_run(config(tmp_path, "training.epochs=3"), "tiny.yaml", resume=str(run),
              invocation=record.Invocation(["bpcli", "train", "--resume", str(run)], [], None))
    sessions = read_record(run)["sessions"]
    assert sessions[0] == first[0] and len(sessions) == 2
    assert (sessions[1]["start_epoch"], sessions[1]["epochs_run"]) == (2, 3)
    assert sessions[1]["command"] == ["bpcli", "train", "--resume", str(run)]
    before = (run / "run.json").read_bytes()
    with pytest.raises(ConfigError, match="optimizer.lr"):
        train_run(config(tmp_path, "training.epochs=4", "optimizer.lr=0.1"), "tiny.yaml", resume=str(run))
    assert (run / "run.json").read_bytes() == before


def test_a_damaged_record_is_replaced_with_a_warning(tmp_path):
    train_run(config(tmp_path), "tiny.yaml")
    run = tmp_path / "runs" / "r"
    (run / "run.json").write_text("{not json")
    warnings = []
    train_run(config(tmp_path, "training.epochs=3"), "tiny.yaml", resume=str(run), on_warning=warnings.append)
    assert [w for w in warnings if "run.json" in w] == [
        f"cannot read {run / 'run.json'} (Expecting property name enclosed in double quotes: line 1 column 2 "
        "(char 1)): it is replaced by a record of this session only"]
    (session,) = read_record(run)["sessions"]
    assert session["start_epoch"] == 2 and session["ended"] is not None

