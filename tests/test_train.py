"""Training end to end: resume equals uninterrupted, signals, divergence, early stopping, eval, refusals."""

import json
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from bpcli.training.callbacks import Callback
from bpcli.training.checkpoint import load_checkpoint
from bpcli.config.loading import parse_config_text
from bpcli.config.sections import resolved_dict
from bpcli.errors import ConfigError, DivergedError, Interrupted
from bpcli.tools.inference import evaluate_checkpoint, predict_file
from bpcli.training.interrupts import StopRequest
from bpcli.training.run import train_run
from bpcli.training.rundir import RunDir

ROOT = Path(__file__).resolve().parent.parent

SMALL = """
model:
  layers:
    - {type: dense, units: 32, activation: relu}
    - {type: batchnorm}
    - {type: dropout, rate: 0.3}
    - {type: dense, units: 10}
loss: {name: cross_entropy, l2: 0.0001}
optimizer: {name: adam, lr: 0.002}
schedule: {name: reduce_on_plateau, warmup_epochs: 0.5, patience: 0, factor: 0.5}
data: {dataset: mnist-mini, batch_size: 128}
training: {epochs: 3, seed: 7}
"""


def config(tmp_path, text=SMALL, *sets):
    return resolved_dict(parse_config_text(text, "small.yaml", [f"output.dir={tmp_path}", *sets]))


class StopAfter(Callback):
    """Requests a stop (as SIGINT would) after n batches."""

    def __init__(self, stop, n):
        self.stop, self.n, self.seen = stop, n, 0

    def on_batch_end(self, loop):
        self.seen += 1
        if self.seen == self.n:
            self.stop.signum = signal.SIGINT


def interrupted_run(cfg, resume, n):
    stop = StopRequest()
    with pytest.raises(Interrupted) as stopped:
        train_run(cfg, "small.yaml", resume=resume, callbacks=[StopAfter(stop, n)], stop=stop)
    assert stopped.value.exit_code == 130
    return stopped.value.run_dir


def rows_without_time(run_dir):
    lines = (Path(run_dir) / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k != "seconds"} for line in lines]


def same_tensors(a, b):
    a, b = load_checkpoint(a).tensors, load_checkpoint(b).tensors
    return sorted(a) == sorted(b) and all(np.array_equal(a[k], b[k]) for k in a)


def test_resumed_run_equals_uninterrupted_bit_for_bit(tmp_path):
    whole = train_run(config(tmp_path, SMALL, "output.name=whole"), "small.yaml")
    cfg = config(tmp_path, SMALL, "output.name=parts")
    run_dir = interrupted_run(cfg, None, 40)            # mid-epoch 2 (36 batches per epoch)
    assert load_checkpoint(run_dir / "checkpoints" / "last.safetensors").meta["state"]["batch"] == 4
    interrupted_run(cfg, str(run_dir), 50)              # stopped again, mid-epoch 3
    resumed = train_run(cfg, "small.yaml", resume=str(run_dir))
    assert same_tensors(Path(whole["run_dir"]) / "checkpoints/last.safetensors", run_dir / "checkpoints/last.safetensors")
    assert same_tensors(Path(whole["run_dir"]) / "checkpoints/best.safetensors", run_dir / "checkpoints/best.safetensors")
    assert rows_without_time(whole["run_dir"]) == rows_without_time(run_dir)
    for log in ("layers.jsonl", "layers.csv"):  # the unfinished epochs' diagnostics came back from the checkpoints
        assert (Path(whole["run_dir"]) / log).read_text() == (run_dir / log).read_text()
    assert resumed["test"] == whole["test"] and resumed["best_epoch"] == whole["best_epoch"]
    csv_lines = (run_dir / "metrics.csv").read_text().splitlines()
    assert csv_lines[0].startswith("epoch,train_loss") and len(csv_lines) == 4  # one header, three rows


def test_run_files_and_summary(tmp_path):
    summary = train_run(config(tmp_path), "small.yaml")
    run_dir = Path(summary["run_dir"])
    assert run_dir.name.startswith("small-") and (run_dir / "config.yaml").is_file()
    saved = json.loads((run_dir / "summary.json").read_text())
    assert saved == json.loads(json.dumps(summary))
    assert set(saved) >= {"test", "best_epoch", "stopped_because", "epochs_run", "seconds"}
    assert saved["epochs_run"] == 3 and 0.5 < saved["test"]["accuracy"] <= 1
    assert len(saved["val_hash"]) == 16 and saved["data"] == {"n_train": 4500, "n_val": 500, "n_test": 10000}


def test_eval_of_the_best_checkpoint_matches_the_summary(tmp_path):
    summary = train_run(config(tmp_path), "small.yaml")
    result = evaluate_checkpoint(Path(summary["run_dir"]) / "checkpoints" / "best.safetensors")
    assert result["accuracy"] == summary["test"]["accuracy"]
    assert result["loss"] == pytest.approx(summary["test"]["loss"], rel=1e-6)
    assert np.array(result["confusion_matrix"]).sum() == 10000 and len(result["per_class"]) == 10


def test_early_stopping_stops_and_restores_the_best(tmp_path):
    text = SMALL.replace("schedule: {name: reduce_on_plateau, warmup_epochs: 0.5, patience: 0, factor: 0.5}", "")
    cfg = config(tmp_path, text, "training.epochs=30", "training.early_stopping.patience=1", "optimizer.lr=0.05")
    summary = train_run(cfg, "small.yaml")
    assert summary["stopped_because"].startswith("early stopping: val_loss did not improve for 1 epochs")
    assert summary["epochs_run"] == summary["best_epoch"] + 1 < 30
    assert summary["final_weights"] == f"best (epoch {summary['best_epoch']})"
    best = evaluate_checkpoint(Path(summary["run_dir"]) / "checkpoints" / "best.safetensors")
    assert best["accuracy"] == summary["test"]["accuracy"]


def test_divergence_stops_with_epoch_batch_and_lr_and_keeps_no_bad_weights(tmp_path):
    cfg = config(tmp_path, (ROOT / "configs" / "sine.yaml").read_text(), "optimizer.name=sgd", "optimizer.lr=1.0e6")
    with pytest.raises(DivergedError) as error:
        train_run(cfg, "sine.yaml")
    message = str(error.value)
    assert "epoch 1, batch" in message and "learning rate 1e+06" in message and "lower learning rate" in message
    assert error.value.exit_code == 3
    for path in tmp_path.rglob("*.safetensors"):
        assert all(np.isfinite(t).all() for k, t in load_checkpoint(path).tensors.items() if t.dtype.kind == "f")
    summary = json.loads(next(tmp_path.rglob("summary.json")).read_text())
    assert summary["stopped_because"].startswith("diverged")


def test_resume_with_a_changed_config_is_refused_unless_forced(tmp_path):
    cfg = config(tmp_path, SMALL, "training.epochs=1", "output.name=r")
    train_run(cfg, "small.yaml")
    changed = config(tmp_path, SMALL, "training.epochs=1", "output.name=r", "optimizer.lr=0.1")
    with pytest.raises(ConfigError, match=r"optimizer.lr: 0.002 in the checkpoint, 0.1 now.*--force"):
        train_run(changed, "small.yaml", resume=str(tmp_path / "r"))
    more_epochs = config(tmp_path, SMALL, "training.epochs=2", "output.name=r")
    assert train_run(more_epochs, "small.yaml", resume=str(tmp_path / "r"))["epochs_run"] == 2


def test_two_runs_in_the_same_second_get_separate_directories(tmp_path, monkeypatch):
    monkeypatch.setattr(time, "strftime", lambda fmt: "20260101-000000")
    parent = config(tmp_path)["output"]["dir"]
    first, second = RunDir.create(parent, None, "a", "x: 1\n"), RunDir.create(parent, None, "a", "x: 2\n")
    assert first.path.name == "a-20260101-000000" and second.path.name == "a-20260101-000000-2"
    assert first.checkpoints.is_dir() and second.checkpoints.is_dir()
    assert (first.config.read_text(), second.config.read_text()) == ("x: 1\n", "x: 2\n")
    assert sorted(p.name for p in Path(parent).iterdir()) == ["a-20260101-000000", "a-20260101-000000-2"]


def test_predict_writes_classes_and_probabilities(tmp_path):
    summary = train_run(config(tmp_path, SMALL, "training.epochs=1"), "small.yaml")
    inputs = tmp_path / "inputs.npz"
    from bpcli.data.catalog import load_dataset
    np.savez(inputs, X=load_dataset("mnist-mini").x_test[:5])
    lines = predict_file(Path(summary["run_dir"]) / "checkpoints/best.safetensors", inputs).splitlines()
    assert lines[0] == "prediction," + ",".join(f"p_{d}" for d in range(10)) and len(lines) == 6
    assert all(abs(sum(float(v) for v in line.split(",")[1:]) - 1) < 1e-4 for line in lines[1:])


# -- as a user runs it ---------------------------------------------------------

def bpcli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "bpcli", *args], capture_output=True, text=True, cwd=cwd)


def write_config(tmp_path, text=SMALL, epochs=6):
    path = tmp_path / "small.yaml"
    path.write_text(text.replace("epochs: 3", f"epochs: {epochs}") + f"output: {{dir: {tmp_path}/runs}}\n")
    return path


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_real_signal_leaves_a_resumable_checkpoint(tmp_path, sig, code):
    path = write_config(tmp_path)
    process = subprocess.Popen([sys.executable, "-m", "bpcli", "train", str(path)], stderr=subprocess.PIPE, text=True)
    assert process.stderr.readline().startswith("epoch 1/6")  # one plain line per epoch: output is not a terminal
    process.send_signal(sig)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == code, stderr
    assert "a resumable checkpoint was saved" in stderr and "--resume" in stderr
    run_dir = next((tmp_path / "runs").iterdir())
    assert load_checkpoint(run_dir / "checkpoints" / "last.safetensors").meta["state"]["epoch"] >= 1
    resumed = bpcli("train", str(path), "--resume", str(run_dir), "-q")
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads((run_dir / "summary.json").read_text())["epochs_run"] == 6


def test_a_bad_config_gets_its_one_paragraph_message_and_exit_2(tmp_path):
    path = tmp_path / "bad.yaml"
    text = SMALL.replace("lr: 0.002", "lr: -1").replace("batch_size: 128", "batch_sise: 128")
    path.write_text(text)
    line = next(n for n, row in enumerate(text.splitlines(), start=1) if "lr: -1" in row)
    result = bpcli("train", str(path))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"{path}:{line}:25 optimizer.lr: must be a number > 0 (got -1)" in result.stderr
    assert "data.batch_sise" in result.stderr and "Did you mean 'batch_size'" in result.stderr


def test_a_pickled_checkpoint_is_refused_by_eval_predict_and_resume(tmp_path):
    canary = tmp_path / "canary"

    class Evil:
        def __reduce__(self):
            return (open, (str(canary), "w"))

    evil = tmp_path / "evil.safetensors"
    evil.write_bytes(pickle.dumps(Evil()))
    path = write_config(tmp_path)
    for args in (["eval", str(evil)], ["predict", str(evil), str(path)], ["train", str(path), "--resume", str(evil)]):
        result = bpcli(*args)
        assert result.returncode == 5 and "never loads pickles" in result.stderr, result.stderr
    assert not canary.exists()


def test_eval_json_and_gradcheck_of_a_config(tmp_path):
    path = write_config(tmp_path, epochs=1)
    assert bpcli("train", str(path), "-q").returncode == 0
    best = next((tmp_path / "runs").iterdir()) / "checkpoints" / "best.safetensors"
    result = json.loads(bpcli("eval", str(best), "--json").stdout)
    assert {"loss", "accuracy", "confusion_matrix", "per_class", "macro"} <= set(result)
    check = bpcli("gradcheck", str(path), "--json", "--max-entries", "16")
    assert check.returncode == 0 and json.loads(check.stdout)["passed"]


@pytest.mark.slow
@pytest.mark.parametrize("name, check", [
    ("xor", lambda s: s["test"]["accuracy"] == 1.0),
    ("sine", lambda s: s["test"]["mse"] < 0.01),
    ("spirals", lambda s: s["test"]["accuracy"] > 0.95),
])
def test_small_shipped_configs_solve_their_problems(tmp_path, name, check):
    cfg = resolved_dict(parse_config_text((ROOT / "configs" / f"{name}.yaml").read_text(), f"{name}.yaml",
                                          [f"output.dir={tmp_path}"]))
    summary = train_run(cfg, f"{name}.yaml")
    assert check(summary), summary["test"]


@pytest.mark.parametrize("name", sorted(p.stem for p in (ROOT / "configs" / "optimizers").glob("*.yaml")))
def test_each_optimizer_config_learns(tmp_path, name):
    text = (ROOT / "configs" / "optimizers" / f"{name}.yaml").read_text()
    cfg = resolved_dict(parse_config_text(text, f"{name}.yaml", [f"output.dir={tmp_path}", "training.epochs=2"]))
    assert train_run(cfg, f"{name}.yaml")["test"]["accuracy"] > 0.85


def test_classic_config_runs_on_mnist_mini(tmp_path):
    text = (ROOT / "configs" / "classic.yaml").read_text()
    cfg = resolved_dict(parse_config_text(text, "classic.yaml", [f"output.dir={tmp_path}", "training.epochs=1",
                                                                  "data.dataset=mnist-mini"]))
    assert train_run(cfg, "classic.yaml")["test"]["accuracy"] > 0.85


def test_predict_from_a_csv_with_or_without_the_target_column(tmp_path):
    text = (ROOT / "configs" / "spirals.yaml").read_text()
    cfg = resolved_dict(parse_config_text(text, "spirals.yaml", [f"output.dir={tmp_path}", "training.epochs=5"]))
    best = Path(train_run(cfg, "spirals.yaml")["run_dir"]) / "checkpoints" / "best.safetensors"
    (tmp_path / "points.csv").write_text("x0,x1\n0.1,0.2\n-0.5,0.3\n")
    (tmp_path / "labelled.csv").write_text("x0,x1,label\n0.1,0.2,0\n-0.5,0.3,1\n")
    plain, labelled = predict_file(best, tmp_path / "points.csv"), predict_file(best, tmp_path / "labelled.csv")
    assert plain == labelled and plain.splitlines()[0] == "prediction,p_0,p_1,p_2" and len(plain.splitlines()) == 3
    (tmp_path / "wide.csv").write_text("a,b,c\n1,2,3\n")
    from bpcli.errors import DataError
    with pytest.raises(DataError, match="has 3 input features, but the model was trained on 2"):
        predict_file(best, tmp_path / "wide.csv")


def test_config_differences_name_each_field():
    from bpcli.training.run import config_differences
    old = {"model": {"layers": [{"type": "dense", "units": 32}, {"type": "dense", "units": 10}]}, "training": {"epochs": 3}}
    new = {"model": {"layers": [{"type": "dense", "units": 64}, {"type": "dense", "units": 10}]}, "training": {"epochs": 5}}
    assert config_differences(old, new) == [("model.layers.0.units", 32, 64), ("training.epochs", 3, 5)]
    assert config_differences({"a": [1]}, {"a": [1, 2]}) == [("a", [1], [1, 2])]
