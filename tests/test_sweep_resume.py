"""Nothing lost: a sweep whose driver is SIGKILLed, then resumed and stopped by Ctrl-C, then resumed again,
ends with every trial once, the finished ones unchanged, and each trial exactly as if never stopped.

`bpcli sweep` runs as a user runs it, in a session of its own (as a terminal's foreground group:
the Ctrl-C goes to the driver and its local workers alike, and the workers ignore it).
"""

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.sweep_files import spirals_base
from bpcli.config.loading import load_config
from bpcli.training.run import train_run

pytestmark = pytest.mark.slow

BASE = spirals_base(n=6000, epochs=60, units=32, nesterov=False, extra="diagnostics: {enabled: false}\n")

SWEEP = """\
base: base.yaml
trials: 4
sampler: random
seed: 0
space:
  optimizer.lr: {loguniform: [1.0e-2, 3.0e-1]}
  model.layers.0.units: {int: [16, 48]}
name: nothing-lost
"""


def start(folder: Path, *args: str) -> subprocess.Popen:
    """`bpcli sweep ARGS --workers 2` in a session of its own; the workers' temporary folder is folder/tmp."""
    (folder / "tmp").mkdir(exist_ok=True)
    return subprocess.Popen([sys.executable, "-m", "bpcli", "sweep", *args, "--workers", "2"], cwd=folder,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            env={**os.environ, "TMPDIR": str(folder / "tmp")})


def wait_for_training(folder: Path, timeout: float = 120) -> None:
    """Until a trial on a local worker has saved its first checkpoint: it is in the middle of training."""
    deadline = time.monotonic() + timeout
    while not list((folder / "tmp").glob("bpcli-trial-*/run/checkpoints/last.safetensors")):
        assert time.monotonic() < deadline, "no trial started training"
        time.sleep(0.05)


def wait_for(process: subprocess.Popen, text: str, timeout: float = 120) -> list[str]:
    """stderr lines up to the first that holds `text`."""
    lines, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        if not line:
            break
        lines.append(line)
        if text in line:
            return lines
    raise AssertionError(f"no line with {text!r} in: {lines}")


def wait_until_gone(group: int, timeout: float = 60) -> None:
    """Until no live process is left in the session `group`: the killed driver's local workers notice that
    it died and stop on their own, but not at once on a busy machine. (From /proc: an exited worker may
    stay a zombie for a while if nothing reaps it.)"""
    deadline = time.monotonic() + timeout
    while live_members(group):
        assert time.monotonic() < deadline, "the killed driver's workers are still running"
        time.sleep(0.05)


def live_members(group: int) -> list[int]:
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()   # after "pid (comm)": state, ppid, pgrp, ...
        except OSError:
            continue
        if int(fields[2]) == group and fields[0] != "Z":
            members.append(int(stat.parent.name))
    return members


def ended(process: subprocess.Popen, timeout: float) -> str:
    """The stderr of a process that should end within `timeout` s; if it does not, what it printed so far
    is the failure message (killed first, so nothing is left running)."""
    try:
        return process.communicate(timeout=timeout)[1]
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        pytest.fail(f"still running after {timeout} s; it had printed:\n{process.communicate()[1]}")


def rows(sweep_dir: Path) -> dict[int, dict]:
    with open(sweep_dir / "trials.csv") as f:
        return {int(row["number"]): row for row in csv.DictReader(f)}


def history(run: Path) -> list[dict]:
    """metrics.jsonl without the timings."""
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k != "seconds"} for line in lines]


def test_sigkill_then_ctrl_c_then_resume_loses_nothing(tmp_path):
    (tmp_path / "base.yaml").write_text(BASE)
    (tmp_path / "sweep.yaml").write_text(SWEEP)

    first = start(tmp_path, "sweep.yaml")       # 1. the driver is SIGKILLed once a trial has finished
    try:
        started = wait_for(first, "sweep sweeps/")[-1]
        wait_for(first, " complete: ")
    finally:
        os.kill(first.pid, signal.SIGKILL)
        first.wait()
        first.stderr.close()
        first.stdout.close()
    wait_until_gone(first.pid)
    sweep_dir = tmp_path / started.split()[1].rstrip(":")
    before = {n: row for n, row in rows(sweep_dir).items() if row["state"] == "complete"}
    assert before and len(before) < 4

    shutil.rmtree(tmp_path / "tmp")   # what the dead workers left: not to be taken for the resumed trials
    second = start(tmp_path, "--resume", str(sweep_dir.relative_to(tmp_path)))   # 2. resumed, then Ctrl-C
    wait_for(second, "(resumed: ")
    wait_for_training(tmp_path)
    os.killpg(second.pid, signal.SIGINT)
    err = ended(second, 120)
    assert second.returncode == 130, err
    assert f"Continue with:\n  bpcli sweep --resume {sweep_dir.relative_to(tmp_path)}\n" in err
    interrupted = [n for n, row in rows(sweep_dir).items() if row["state"] == "interrupted"]
    assert interrupted, err
    for n in interrupted:
        assert (sweep_dir / "trials" / str(n) / "checkpoints" / "last.safetensors").is_file()
        assert int(rows(sweep_dir)[n]["epochs_run"]) < 60

    try:
        third = subprocess.run([sys.executable, "-m", "bpcli", "sweep", "--resume", str(sweep_dir), "--json"],
                               cwd=tmp_path, capture_output=True, text=True, timeout=300)   # 3. to the end
    except subprocess.TimeoutExpired as late:
        pytest.fail(f"the resumed sweep did not end in 300 s; it had printed:\n{late.stderr}")
    assert third.returncode == 0, third.stderr
    summary = json.loads(third.stdout)
    final = rows(sweep_dir)
    assert sorted(final) == [0, 1, 2, 3] and summary["finished"]
    assert {row["state"] for row in final.values()} == {"complete"}
    assert summary["trials"] == {"requested": 4, "complete": 4, "pruned": 0, "fail": 0, "interrupted": 0}
    for n, row in before.items():   # finished before the SIGKILL: not rerun
        assert {k: final[n][k] for k in ("value", "best_epoch", "seconds", "worker")} == \
               {k: row[k] for k in ("value", "best_epoch", "seconds", "worker")}
    for n in [*interrupted, *(set(final) - set(before) - set(interrupted))][:2]:   # as if never stopped
        run = sweep_dir / "trials" / str(n)
        again = train_run(load_config(run / "config.yaml", [f"output.dir={tmp_path / 'again'}"]), "again")
        assert history(run) == history(Path(again["run_dir"]))
        assert float(final[n]["value"]) == again["monitor"]["best"]


SMALL_SWEEP = """\
base: base.yaml
trials: 1
sampler: random
seed: 0
space:
  optimizer.lr: {loguniform: [1.0e-2, 3.0e-1]}
name: stale-lock
"""


def test_a_journal_lock_left_by_a_killed_driver_does_not_stall_the_resume(tmp_path):
    """A driver killed while it writes the study's journal leaves Optuna's lock behind: a symlink named
    study.journal.lock to the journal's path as the driver had it, relative here, so dangling from inside
    the sweep directory. Optuna waits for such a lock forever (its grace period needs os.stat to follow
    the link: the resumed sweep spun at full CPU until the test gave up). The resumed driver holds the
    sweep's OS lock, so any journal lock it finds is stale: it removes it and goes on."""
    (tmp_path / "base.yaml").write_text(spirals_base())
    (tmp_path / "sweep.yaml").write_text(SMALL_SWEEP)
    sweep = [sys.executable, "-m", "bpcli", "sweep"]
    first = subprocess.run([*sweep, "sweep.yaml", "--workers", "1", "--json"], cwd=tmp_path, capture_output=True,
                           text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    sweep_dir = Path(json.loads(first.stdout)["sweep_dir"])
    relative = os.path.relpath(tmp_path / sweep_dir, tmp_path)
    lock = tmp_path / relative / "study.journal.lock"
    os.symlink(os.path.join(relative, "study.journal"), lock)   # as Optuna made it, the driver killed holding it
    assert lock.is_symlink() and not lock.exists()
    try:
        resumed = subprocess.run([*sweep, "--resume", relative, "--trials", "2", "--workers", "1", "--json"],
                                 cwd=tmp_path, capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired as late:
        pytest.fail(f"the resumed sweep waited for the stale journal lock; it had printed:\n{late.stderr}")
    assert resumed.returncode == 0, resumed.stderr
    assert not lock.is_symlink()
    assert [row["state"] for row in rows(tmp_path / relative).values()] == ["complete", "complete"]
