"""Faults around a run directory, injected for real (round 2 of the fault campaign):

1. a SIGKILL during the final save, and a best checkpoint a crash left stale, are repaired by --resume;
2. a diverged run's best epoch is on disk;
3. a checkpoint kept outside a run directory resumes into a new run, touching nothing of the user's;
4. --resume of a best or periodic checkpoint is refused (--init-from starts a new run from it);
5. a finished (early-stopped) run resumed trains nothing and says so;
6. a run directory appears whole or not at all;
7. two processes cannot write one run at once.

Each test runs the real CLI in a subprocess; a fault is injected by a small wrapper script that
patches one function of bpcli to kill the process (SIGKILL) or poison the data at a chosen point.
"""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from bpcli.training.checkpoint import load_checkpoint, monitor_state

CONFIG = """
model:
  layers:
    - {type: dense, units: 16, activation: relu}
    - {type: dense, units: 3}
optimizer: {name: adam, lr: 0.01}
data: {dataset: spirals, options: {n: 300}, batch_size: 32}
training: {epochs: EPOCHS, seed: 2 EXTRA}
output: {dir: RUNS, name: NAME}
"""

# Runs the CLI with bpcli.training.callbacks.save_checkpoint wrapped: when it is about to write the
# file named by KILL_AT_NAME with the state of epoch KILL_AT_EPOCH, the process SIGKILLs itself.
KILL_AT_SAVE = textwrap.dedent("""
    import os, signal, sys
    from bpcli.training import callbacks
    real_save = callbacks.save_checkpoint
    def save(path, tensors, meta, *args, **kwargs):
        if (path.name == os.environ["KILL_AT_NAME"]
                and meta["state"]["epoch"] == int(os.environ["KILL_AT_EPOCH"])):
            os.kill(os.getpid(), signal.SIGKILL)
        return real_save(path, tensors, meta, *args, **kwargs)
    callbacks.save_checkpoint = save
    sys.argv = ["bpcli", *sys.argv[1:]]
    from bpcli.cli.app import main
    main()
""")

# Runs the CLI with the training inputs turned to NaN from epoch NAN_FROM_EPOCH on: the loss diverges.
NAN_FROM_EPOCH = textwrap.dedent("""
    import os, sys
    import numpy as np
    from bpcli.training import trainer
    real_run_batch = trainer.Trainer.run_batch
    def run_batch(self, x, y):
        if self.epoch + 1 >= int(os.environ["NAN_FROM_EPOCH"]):
            x = np.full_like(x, np.nan)
        return real_run_batch(self, x, y)
    trainer.Trainer.run_batch = run_batch
    sys.argv = ["bpcli", *sys.argv[1:]]
    from bpcli.cli.app import main
    main()
""")

# Runs the CLI with fileio.write_file wrapped: writing a new run's config.yaml SIGKILLs the process.
KILL_AT_CONFIG = textwrap.dedent("""
    import os, signal, sys
    from bpcli.training import rundir
    real_write = rundir.write_file
    def write(path, *args, **kwargs):
        if path.name == "config.yaml":
            os.kill(os.getpid(), signal.SIGKILL)
        return real_write(path, *args, **kwargs)
    rundir.write_file = write
    sys.argv = ["bpcli", *sys.argv[1:]]
    from bpcli.cli.app import main
    main()
""")


def write_config(folder: Path, name: str, epochs: int = 6, extra: str = "") -> Path:
    path = folder / f"{name}.yaml"
    text = CONFIG.replace("EPOCHS", str(epochs)).replace("RUNS", str(folder / "runs")).replace("NAME", name)
    path.write_text(text.replace(" EXTRA", extra))
    return path


def bpcli(*args, env=None, script=None, **kwargs):
    command = [sys.executable, "-c", script, *args] if script else [sys.executable, "-m", "bpcli", *args]
    return subprocess.run(command, capture_output=True, text=True, env={**os.environ, **(env or {})},
                          timeout=120, **kwargs)


def tensors(path: Path) -> dict:
    return load_checkpoint(path).tensors


def same_tensors(a: dict, b: dict) -> bool:
    return sorted(a) == sorted(b) and all(np.array_equal(a[k], b[k]) for k in a)


def summary_of(run: Path) -> dict:
    return json.loads((run / "summary.json").read_text())


def files_of(folder: Path) -> dict:
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# -- 1. the final save -----------------------------------------------------------------------------------

def test_a_kill_during_the_final_save_leaves_a_run_that_resumes_to_the_undisturbed_result(tmp_path):
    (tmp_path / "a").mkdir()
    assert bpcli("train", str(write_config(tmp_path / "a", "ref")), "-q").returncode == 0
    config = write_config(tmp_path, "ref")
    killed = bpcli("train", str(config), "-q", script=KILL_AT_SAVE,
                   env={"KILL_AT_NAME": "best.safetensors", "KILL_AT_EPOCH": "6"})
    assert killed.returncode == -signal.SIGKILL
    run, undisturbed = tmp_path / "runs" / "ref", tmp_path / "a" / "runs" / "ref"
    resumed = bpcli("train", str(config), "--resume", str(run), "-q")
    assert resumed.returncode == 0, resumed.stderr
    for name in ("last.safetensors", "best.safetensors"):
        assert same_tensors(tensors(run / "checkpoints" / name), tensors(undisturbed / "checkpoints" / name))
    best = summary_of(run)["best_epoch"]
    assert best == summary_of(undisturbed)["best_epoch"]
    assert monitor_state(load_checkpoint(run / "checkpoints" / "best.safetensors").meta)["best_epoch"] == best


def test_a_stale_best_checkpoint_is_rewritten_when_the_finished_run_is_resumed(tmp_path):
    config = write_config(tmp_path, "r", epochs=6, extra=", monitor: train_loss")
    assert bpcli("train", str(config), "-q").returncode == 0
    run = tmp_path / "runs" / "r"
    right = tensors(run / "checkpoints" / "best.safetensors")
    # What a crash between two saves leaves: the best file of an earlier epoch.
    (tmp_path / "older").mkdir()
    older = write_config(tmp_path / "older", "r", epochs=2, extra=", monitor: train_loss")
    assert bpcli("train", str(older), "-q").returncode == 0
    stale = tmp_path / "older" / "runs" / "r" / "checkpoints" / "best.safetensors"
    (run / "checkpoints" / "best.safetensors").write_bytes(stale.read_bytes())
    resumed = bpcli("train", str(config), "--resume", str(run), "-q")
    assert resumed.returncode == 0, resumed.stderr
    assert "Nothing to train" in resumed.stdout
    assert same_tensors(tensors(run / "checkpoints" / "best.safetensors"), right)
    assert monitor_state(load_checkpoint(run / "checkpoints" / "best.safetensors").meta)["best_epoch"] == \
        summary_of(run)["best_epoch"]


# -- 2. divergence -----------------------------------------------------------------------------------------

def test_a_diverged_run_has_its_best_epoch_on_disk(tmp_path):
    config = write_config(tmp_path, "d", epochs=8, extra=", monitor: train_loss")
    diverged = bpcli("train", str(config), "-q", script=NAN_FROM_EPOCH, env={"NAN_FROM_EPOCH": "4"})
    assert diverged.returncode == 3, diverged.stderr
    assert diverged.stderr.startswith("error: the loss became infinite or NaN (gradient norm nan) at epoch 4, batch 1")
    run = tmp_path / "runs" / "d"
    summary = summary_of(run)
    assert summary["best_epoch"] == 3 and summary["stopped_because"].startswith("diverged")
    best = load_checkpoint(run / "checkpoints" / "best.safetensors")
    assert monitor_state(best.meta)["best_epoch"] == 3
    assert all(np.isfinite(t).all() for name, t in best.tensors.items() if name.startswith("layers."))


# -- 3. a checkpoint outside a run directory ---------------------------------------------------------------

def test_a_loose_checkpoint_resumes_into_a_new_run_and_touches_nothing_around_it(tmp_path):
    config = write_config(tmp_path, "r", epochs=2)
    assert bpcli("train", str(config), "-q").returncode == 0
    home = tmp_path / "H"
    (home / "models").mkdir(parents=True)
    (home / "models" / "m.safetensors").write_bytes((tmp_path / "runs" / "r" / "checkpoints" /
                                                     "last.safetensors").read_bytes())
    for name, text in (("config.yaml", "mine\n"), ("metrics.csv", "mine too\n"), ("notes.tmp", "keep me\n")):
        (home / name).write_text(text)
    before = files_of(home)
    more = write_config(tmp_path, "r", epochs=3)
    resumed = bpcli("train", str(more), "--resume", str(home / "models" / "m.safetensors"), "-q",
                    "--set", "output.name=continued")
    assert resumed.returncode == 0, resumed.stderr
    assert files_of(home) == before
    new_run = tmp_path / "runs" / "continued"
    assert summary_of(new_run)["epochs_run"] == 3
    # The loose checkpoint's earlier rows are in its own run's files: the new run logs from epoch 3 and says so.
    assert [json.loads(row)["epoch"] for row in (new_run / "metrics.jsonl").read_text().splitlines()] == [3]
    assert "lacks the rows of 2 of the 2 epochs done" in resumed.stderr


def test_a_run_whose_checkpoints_folder_links_into_another_run_is_not_resumed(tmp_path):
    config = write_config(tmp_path, "a", epochs=1)
    assert bpcli("train", str(config), "-q").returncode == 0
    other = write_config(tmp_path, "b", epochs=1)
    assert bpcli("train", str(other), "-q").returncode == 0
    a, b = tmp_path / "runs" / "a", tmp_path / "runs" / "b"
    before = files_of(a)
    import shutil
    shutil.rmtree(b / "checkpoints")
    (b / "checkpoints").symlink_to(a / "checkpoints")
    refused = bpcli("train", str(other), "--resume", str(b), "-q", "--set", "training.epochs=2")
    assert refused.returncode == 5
    assert refused.stderr.startswith(f"error: {b / 'checkpoints'} leads outside {b}")
    assert files_of(a) == before


# -- 4. the kind of a checkpoint ---------------------------------------------------------------------------

def test_resuming_a_best_checkpoint_is_refused_and_init_from_starts_a_new_run(tmp_path):
    config = write_config(tmp_path, "r", epochs=3)
    assert bpcli("train", str(config), "-q").returncode == 0
    run = tmp_path / "runs" / "r"
    before = files_of(run)
    best = run / "checkpoints" / "best.safetensors"
    refused = bpcli("train", str(config), "--resume", str(best), "-q")
    assert refused.returncode == 2
    assert refused.stderr.startswith(f"error: {best} is a best checkpoint (epoch ")
    assert f"--init-from {best}" in refused.stderr
    assert files_of(run) == before
    tuned = bpcli("train", str(config), "--init-from", str(best), "-q", "--set", "output.name=tuned")
    assert tuned.returncode == 0, tuned.stderr
    assert summary_of(tmp_path / "runs" / "tuned")["epochs_run"] == 3 and files_of(run) == before


# -- 5. a finished run ---------------------------------------------------------------------------------------

def test_resuming_an_early_stopped_run_trains_nothing_and_says_so(tmp_path):
    config = write_config(tmp_path, "e", epochs=200, extra=", early_stopping: {patience: 1}")
    assert bpcli("train", str(config), "-q").returncode == 0
    run = tmp_path / "runs" / "e"
    stopped = summary_of(run)
    assert stopped["stopped_because"].startswith("early stopping") and stopped["epochs_run"] < 200
    metrics, last = (run / "metrics.jsonl").read_text(), tensors(run / "checkpoints" / "last.safetensors")
    resumed = bpcli("train", str(config), "--resume", str(run), "-q")
    assert resumed.returncode == 0, resumed.stderr
    assert "Nothing to train" in resumed.stdout
    assert (run / "metrics.jsonl").read_text() == metrics
    assert same_tensors(tensors(run / "checkpoints" / "last.safetensors"), last)
    assert summary_of(run)["epochs_run"] == stopped["epochs_run"]


# -- 6. a run directory appears whole ---------------------------------------------------------------------

def test_a_kill_while_a_run_directory_is_made_leaves_no_half_made_run(tmp_path):
    config = write_config(tmp_path, "w", epochs=1)
    killed = bpcli("train", str(config), "-q", script=KILL_AT_CONFIG)
    assert killed.returncode == -signal.SIGKILL
    assert not (tmp_path / "runs" / "w").exists()                     # only a hidden scratch folder remains
    fresh = bpcli("train", str(config), "-q")
    assert fresh.returncode == 0, fresh.stderr
    assert (tmp_path / "runs" / "w" / "summary.json").is_file()


def test_a_full_disk_while_a_run_directory_is_made_leaves_nothing(tmp_path):
    import resource

    config = write_config(tmp_path, "w", epochs=1)
    limit = lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (200, 200))  # noqa: E731 (config.yaml is larger)
    full = bpcli("train", str(config), "-q", preexec_fn=limit)
    assert full.returncode == 6, full.stderr
    assert full.stderr.startswith("error: disk full while writing config ")
    assert list((tmp_path / "runs").iterdir()) == []
    assert bpcli("train", str(config), "-q").returncode == 0


# -- 7. one writer -----------------------------------------------------------------------------------------

def test_a_second_process_cannot_write_a_run_that_is_being_trained(tmp_path):
    config = write_config(tmp_path, "busy", epochs=100_000)   # still training when the Ctrl-C comes
    run = tmp_path / "runs" / "busy"
    first = subprocess.Popen([sys.executable, "-m", "bpcli", "train", str(config), "-q"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not (run / "checkpoints" / "last.safetensors").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    second = bpcli("train", str(config), "--resume", str(run), "-q")
    first.send_signal(signal.SIGINT)
    assert first.wait(timeout=60) == 130, first.stderr.read()
    assert second.returncode == 5
    assert second.stderr.startswith(f"error: run directory {run} is in use by another bpcli process")
    rows = [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert rows == list(range(1, len(rows) + 1))                      # one writer: no interleaved rows
    assert bpcli("train", str(config), "--resume", str(run), "-q", "--set", "training.epochs=" +
                 str(len(rows) + 1)).returncode == 0                  # the lock died with its process


# -- the whole run directory after random kills ------------------------------------------------------------

RANDOM_KILLS = """
model:
  layers:
    - {type: dense, units: 32, activation: relu}
    - {type: dropout, rate: 0.3}
    - {type: dense, units: 3}
optimizer: {name: sgd, lr: 0.05, momentum: 0.9}
schedule: {name: reduce_on_plateau, factor: 0.5, patience: 2}
data: {dataset: spirals, options: {n: 450}, batch_size: 16}
training: {epochs: 10, seed: 4, monitor: val_loss, early_stopping: {patience: 3}}
checkpoint: {every: 3, keep: 2}
output: {dir: RUNS, name: NAME}
"""


def comparable(run: Path) -> dict:
    """Every file of a run directory as data to compare, without what the clock alone decides."""
    def rows(path):
        return [{k: v for k, v in json.loads(line).items() if k != "seconds"}
                for line in path.read_text().splitlines()]
    seen = {"config.yaml": (run / "config.yaml").read_text().replace(str(run.parent), "RUNS"), "metrics.jsonl": rows(run / "metrics.jsonl"),
            "layers.jsonl": (run / "layers.jsonl").read_text(), "layers.csv": (run / "layers.csv").read_text(),
            "metrics.csv": [line.rsplit(",", 1)[0] for line in (run / "metrics.csv").read_text().splitlines()],
            "summary.json": {k: v for k, v in summary_of(run).items() if k not in ("seconds", "run_dir")}}
    for path in sorted((run / "checkpoints").glob("*.safetensors")):
        if path.name == "last.prev.safetensors":   # the backup of `last`: which epoch it holds is the clock's
            continue
        checkpoint = load_checkpoint(path)
        if path.name == "best.safetensors":   # taken as the best epoch ended: all of it is that epoch's
            meta = {**checkpoint.meta, "config": {**checkpoint.meta["config"], "output": None}}
            seen[path.name] = (checkpoint.tensors, meta)
        else:
            seen[path.name] = (checkpoint.tensors, checkpoint.meta["state"]["epoch"])
    return seen


def assert_same(a: dict, b: dict) -> None:
    assert sorted(a) == sorted(b)
    for name, value in a.items():
        if name.endswith(".safetensors"):
            assert same_tensors(value[0], b[name][0]) and value[1] == b[name][1], name
        else:
            assert value == b[name], name


@pytest.mark.slow
def test_twenty_random_sigkills_then_resume_leave_the_run_directory_of_an_undisturbed_run(tmp_path):
    import random

    def config(folder: Path, name: str) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{name}.yaml"
        path.write_text(RANDOM_KILLS.replace("RUNS", str(folder / "runs")).replace("NAME", name))
        return path

    from concurrent.futures import ThreadPoolExecutor

    assert bpcli("train", str(config(tmp_path / "reference", "k")), "-q").returncode == 0
    expected = comparable(tmp_path / "reference" / "runs" / "k")

    def kill_then_resume(i: int, milliseconds: int) -> Path:
        path = config(tmp_path / f"kill-{i}", "k")
        run = path.parent / "runs" / "k"
        process = subprocess.Popen([sys.executable, "-m", "bpcli", "train", str(path), "-q"],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while not run.exists() and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(milliseconds / 1000)
        process.send_signal(signal.SIGKILL)
        process.wait()
        resumed = bpcli("train", str(path), "--resume", str(run), "-q") if (run / "config.yaml").exists() \
            else bpcli("train", str(path), "-q")
        assert resumed.returncode == 0, (milliseconds, resumed.stderr)
        return run

    moments = random.Random(12).sample(range(5, 450), 20)
    with ThreadPoolExecutor(2) as lanes:   # two kills at a time, one per core: each run is its own folder
        runs = list(lanes.map(kill_then_resume, range(len(moments)), moments))
    for run in runs:
        assert_same(comparable(run), expected)


# -- smaller: checkpoints of a bounded size, a best checkpoint that depends on its epoch alone ------------

def header_bytes(path: Path) -> int:
    return int.from_bytes(path.read_bytes()[:8], "little")


def test_the_last_checkpoint_stays_the_same_size_however_many_epochs_run(tmp_path):
    from bpcli.config.loading import load_config
    from bpcli.training.run import train_run

    sizes = {}
    for epochs in (2, 60):
        config = write_config(tmp_path, f"e{epochs}", epochs=epochs)
        train_run(load_config(config), str(config))
        sizes[epochs] = header_bytes(tmp_path / "runs" / f"e{epochs}" / "checkpoints" / "last.safetensors")
        rows = (tmp_path / "runs" / f"e{epochs}" / "metrics.jsonl").read_text().splitlines()
        assert len(rows) == epochs                      # the history is in the run's metric files
    assert sizes[60] - sizes[2] < 100                   # not ~170 bytes an epoch: a few digits more at most


def test_two_identical_runs_write_byte_identical_best_checkpoints_whenever_they_save(tmp_path, monkeypatch):
    """One run saves `best` the moment it improves, the other only at the end (the once-a-second limit
    decides which, by the clock): the files are the same, optimizer state and metadata included."""
    from bpcli.config.loading import load_config
    from bpcli.training import callbacks
    from bpcli.training.run import train_run

    clocks = {"every-epoch": iter(range(0, 10 ** 6, 10)), "only-at-the-end": iter(lambda: 0.0, None)}
    files = {}
    for name, ticks in clocks.items():
        folder = tmp_path / name
        folder.mkdir()
        monkeypatch.chdir(folder)   # the same config (output.dir "runs"), so the same metadata
        config = write_config(folder, "r", epochs=25)
        config.write_text(config.read_text().replace(str(folder / "runs"), "runs").replace("lr: 0.01", "lr: 0.2"))
        monkeypatch.setattr(callbacks, "time", SimpleNamespace(monotonic=lambda ticks=ticks: float(next(ticks))))
        summary = train_run(load_config(config), str(config))
        files[name] = (folder / "runs" / "r" / "checkpoints" / "best.safetensors").read_bytes()
    assert 1 < summary["best_epoch"] < 25   # improved, then went on: the late save is later than the epoch
    assert files["every-epoch"] == files["only-at-the-end"]
    best = load_checkpoint(tmp_path / "every-epoch" / "runs" / "r" / "checkpoints" / "best.safetensors")
    assert best.meta["state"]["epoch"] == summary["best_epoch"] and not best.group("optimizer")
