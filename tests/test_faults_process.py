"""Faults a real run meets, injected for real: SIGKILL, a kill inside a checkpoint write, damaged
checkpoints, a full disk, torn log lines, a second Ctrl-C. After each, nothing is lost: the resumed
run ends bit for bit like a run that was never disturbed."""

import json
import os
import random
import resource
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from bpcli.training.checkpoint import load_checkpoint

CONFIG = """
model:
  layers:
    - {type: dense, units: 48, activation: relu}
    - {type: dropout, rate: 0.2}
    - {type: dense, units: 10}
optimizer: {name: adam, lr: 0.002}
data: {dataset: mnist-mini, batch_size: 32}
training: {epochs: EPOCHS, seed: 3}
checkpoint: {keep: 2}
output: {dir: RUNS, name: NAME}
"""

# Runs bpcli with os.replace wrapped: the Nth replace onto a .safetensors file kills the process
# with SIGKILL at that instant, the way a power cut or the OOM killer would mid-save.
KILL_ON_REPLACE = textwrap.dedent("""
    import os, signal, sys
    target, count = int(os.environ["KILL_ON_REPLACE"]), [0]
    real_replace = os.replace
    def replace(src, dst, *args, **kwargs):
        if str(dst).endswith(".safetensors"):
            count[0] += 1
            if count[0] == target:
                os.kill(os.getpid(), signal.SIGKILL)
        return real_replace(src, dst, *args, **kwargs)
    os.replace = replace
    sys.argv = ["bpcli", *sys.argv[1:]]
    from bpcli.cli.app import main
    main()
""")


def write_config(folder: Path, name: str, epochs: int = 4) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(CONFIG.replace("EPOCHS", str(epochs)).replace("RUNS", str(folder / "runs")).replace("NAME", name))
    return path


def bpcli(*args, env=None, preexec_fn=None, script=None):
    command = [sys.executable, "-c", script, *args] if script else [sys.executable, "-m", "bpcli", *args]
    return subprocess.run(command, capture_output=True, text=True, env={**os.environ, **(env or {})},
                          preexec_fn=preexec_fn, timeout=120)


def final_state(run_dir: Path):
    tensors = load_checkpoint(run_dir / "checkpoints" / "last.safetensors").tensors
    rows = [{k: v for k, v in json.loads(line).items() if k != "seconds"}
            for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    csv_lines = (run_dir / "metrics.csv").read_text().splitlines()
    return tensors, rows, csv_lines


def assert_same_run(a: Path, b: Path) -> None:
    (ta, ra, ca), (tb, rb, cb) = final_state(a), final_state(b)
    assert sorted(ta) == sorted(tb) and all(np.array_equal(ta[k], tb[k]) for k in ta)
    assert ra == rb
    assert (a / "layers.jsonl").read_text() == (b / "layers.jsonl").read_text()
    assert ca[0] == cb[0] and len(ca) == len(cb)  # one header, one row per epoch


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The undisturbed run every disturbed one must equal."""
    folder = tmp_path_factory.mktemp("reference")
    result = bpcli("train", str(write_config(folder, "ref")), "-q")
    assert result.returncode == 0, result.stderr
    return folder / "runs" / "ref"


def resume(config: Path, run_dir: Path):
    result = bpcli("train", str(config), "--resume", str(run_dir), "-q")
    assert result.returncode == 0, result.stderr
    return result


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_sigkill_at_a_random_moment_then_resume_equals_the_undisturbed_run(tmp_path, reference, seed):
    config = write_config(tmp_path, "ref")
    run_dir = tmp_path / "runs" / "ref"
    process = subprocess.Popen([sys.executable, "-m", "bpcli", "train", str(config), "-q"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not (run_dir / "checkpoints" / "last.safetensors").exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(random.Random(seed).uniform(0.0, 0.8))
    process.send_signal(signal.SIGKILL)
    process.wait()
    resume(config, run_dir)
    assert_same_run(reference, run_dir)


@pytest.mark.slow
@pytest.mark.parametrize("nth", [1, 2, 3, 4])
def test_sigkill_inside_a_checkpoint_write(tmp_path, reference, nth):
    """Replaces 1, 3: moving the old last aside (nothing renamed yet); 2, 4: putting the new one in place."""
    config = write_config(tmp_path, "ref")
    run_dir = tmp_path / "runs" / "ref"
    killed = bpcli("train", str(config), "-q", env={"KILL_ON_REPLACE": str(nth)}, script=KILL_ON_REPLACE)
    assert killed.returncode == -signal.SIGKILL
    orphans = list((run_dir / "checkpoints").glob("*.tmp"))
    assert orphans  # the half-finished save left its temporary file
    result = resume(config, run_dir)
    assert not list(run_dir.rglob("*.tmp"))
    assert f"removed {orphans[0]}" in result.stderr
    assert_same_run(reference, run_dir)


@pytest.mark.parametrize("damage", ["corrupt", "truncated", "empty"])
def test_a_damaged_last_checkpoint_falls_back_to_the_previous_one(tmp_path, reference, damage):
    config = write_config(tmp_path, "ref", epochs=2)
    run_dir = tmp_path / "runs" / "ref"
    assert bpcli("train", str(config), "-q").returncode == 0
    last = run_dir / "checkpoints" / "last.safetensors"
    data = last.read_bytes()
    last.write_bytes({"corrupt": data[:8] + b"#" + data[9:], "truncated": data[:len(data) // 3], "empty": b""}[damage])
    result = bpcli("train", str(write_config(tmp_path, "ref", epochs=4)), "--resume", str(run_dir), "-q")
    assert result.returncode == 0, result.stderr
    assert f"warning: {last}" in result.stderr and "falling back to the previous checkpoint" in result.stderr
    assert_same_run(reference, run_dir)


def test_no_usable_checkpoint_is_a_clear_error(tmp_path):
    config = write_config(tmp_path, "ref", epochs=1)
    run_dir = tmp_path / "runs" / "ref"
    assert bpcli("train", str(config), "-q").returncode == 0
    for name in ("last.safetensors", "last.prev.safetensors"):
        (run_dir / "checkpoints" / name).write_bytes(b"garbage")
    result = bpcli("train", str(config), "--resume", str(run_dir))
    assert result.returncode == 5 and "no usable checkpoint to resume from" in result.stderr
    assert "Traceback" not in result.stderr


def limit_file_size(limit):
    return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


def test_disk_full_while_saving_keeps_the_previous_checkpoint(tmp_path, reference):
    config = write_config(tmp_path, "ref", epochs=2)
    run_dir = tmp_path / "runs" / "ref"
    assert bpcli("train", str(config), "-q").returncode == 0
    last = run_dir / "checkpoints" / "last.safetensors"
    before = last.read_bytes()
    more = write_config(tmp_path, "ref", epochs=4)
    full = bpcli("train", str(more), "--resume", str(run_dir), "-q", preexec_fn=limit_file_size(len(before) // 2))
    assert full.returncode == 6, full.stderr
    assert "disk full while writing checkpoint" in full.stderr and str(run_dir / "checkpoints") in full.stderr
    assert last.read_bytes() == before and not list(run_dir.rglob("*.tmp"))
    resume(more, run_dir)  # space is back: the run continues and ends as if nothing happened
    assert_same_run(reference, run_dir)


def test_disk_full_while_appending_metrics(tmp_path):
    from bpcli.errors import DiskFullError
    from bpcli.fileio import append_text

    (tmp_path / "metrics.jsonl").symlink_to("/dev/full")
    with pytest.raises(DiskFullError, match="disk full while writing log .*metrics.jsonl"):
        append_text(tmp_path / "metrics.jsonl", '{"epoch": 1}\n')


def test_a_torn_metrics_line_is_repaired_on_resume(tmp_path, reference):
    config = write_config(tmp_path, "ref", epochs=2)
    run_dir = tmp_path / "runs" / "ref"
    assert bpcli("train", str(config), "-q").returncode == 0
    with open(run_dir / "metrics.jsonl", "a") as f:
        f.write('{"epoch": 3, "train_lo')  # a write cut short by a crash
    with open(run_dir / "metrics.csv", "a") as f:
        f.write("3,0.12")
    resume(write_config(tmp_path, "ref", epochs=4), run_dir)
    assert_same_run(reference, run_dir)


# Runs bpcli so that, in the middle of batch 300 (epoch 3), it receives Ctrl-C twice, the way an
# impatient user presses it: the first asks for a clean stop, the second must abort at once.
DOUBLE_CTRL_C = textwrap.dedent("""
    import os, signal, sys
    from bpcli.training import trainer as train
    real_run_batch, count = train.Trainer.run_batch, [0]
    def run_batch(self, x, y):
        count[0] += 1
        if count[0] == 300:
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)
        return real_run_batch(self, x, y)
    train.Trainer.run_batch = run_batch
    sys.argv = ["bpcli", *sys.argv[1:]]
    from bpcli.cli.app import main
    main()
""")


def test_a_second_ctrl_c_aborts_at_once_and_the_last_checkpoint_stays_valid(tmp_path):
    config = write_config(tmp_path, "ref", epochs=50)
    run_dir = tmp_path / "runs" / "ref"
    result = bpcli("train", str(config), "-q", script=DOUBLE_CTRL_C)
    assert result.returncode == 130, result.stderr
    assert "aborted by a second Ctrl-C" in result.stderr and "Traceback" not in result.stderr
    checkpoint = load_checkpoint(run_dir / "checkpoints" / "last.safetensors")
    assert checkpoint.meta["state"]["epoch"] in (1, 2) and checkpoint.meta["state"]["batch"] == 0  # an epoch-end save
    assert not list(run_dir.rglob("*.tmp"))


def test_a_run_directory_that_cannot_be_created_fails_before_training(tmp_path):
    (tmp_path / "runs").write_text("a file in the way")
    config = write_config(tmp_path, "ref")
    result = bpcli("train", str(config))
    assert result.returncode == 5 and "cannot create the run directory" in result.stderr
    assert "epoch 1" not in result.stderr and "Traceback" not in result.stderr
