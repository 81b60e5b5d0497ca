"""The Python API (bpcli.train, bpcli.load), and the command line around it: a run directory wherever a
checkpoint is taken (eval, predict, export), `bpcli train --json`, shell completion."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import bpcli
from bpcli.cli.app import app
from bpcli.errors import CheckpointError, ConfigError, DataError, UsageError
from bpcli.training.checkpoint import load_checkpoint
from bpcli.training.run import train_run
from bpcli.training.rundir import RunDir

runner = CliRunner()

TINY = {
    "model": {"layers": [{"type": "dense", "units": 16, "activation": "tanh"}, {"type": "dense", "units": 3}]},
    "loss": {"name": "cross_entropy"},
    "optimizer": {"name": "adam", "lr": 0.02},
    "data": {"dataset": "spirals", "options": {"n": 300}, "batch_size": 32},
    "training": {"epochs": 3, "seed": 0},
    "diagnostics": {"enabled": False},
}


def tiny(tmp_path, name="run", **changes) -> dict:
    """TINY writing to tmp_path/runs/NAME, with whole sections replaced by `changes`."""
    return {**TINY, **changes, "output": {"dir": str(tmp_path / "runs"), "name": name}}


def cli(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return Path(train_run(tiny(tmp_path_factory.mktemp("api")), "tiny.yaml")["run_dir"])


@pytest.fixture(scope="module")
def points(run_dir) -> Path:
    path = run_dir.parent / "points.npz"
    np.savez(path, X=np.random.default_rng(1).normal(size=(7, 2)))
    return path


# -- a run directory where a checkpoint goes (item 3) -------------------------------------------------

def test_eval_of_a_run_directory_is_the_eval_of_its_best_checkpoint(run_dir):
    of_dir, of_file = cli("eval", run_dir, "--json"), cli("eval", RunDir(run_dir).best, "--json")
    assert of_dir.exit_code == 0 and of_file.exit_code == 0, of_dir.output
    assert json.loads(of_dir.stdout) == json.loads(of_file.stdout)
    assert json.loads(of_dir.stdout)["checkpoint"] == str(RunDir(run_dir).best)


def test_predict_of_a_run_directory_is_the_predict_of_its_best_checkpoint(run_dir, points):
    of_dir, of_file = cli("predict", run_dir, points), cli("predict", RunDir(run_dir).best, points)
    assert of_dir.exit_code == 0 and of_dir.stdout == of_file.stdout and len(of_dir.stdout.splitlines()) == 8


def test_a_run_without_a_best_checkpoint_is_evaluated_at_its_last_with_a_warning(run_dir, tmp_path):
    copy = RunDir(shutil.copytree(run_dir, tmp_path / "copy"))
    copy.best.unlink()
    result = cli("eval", copy.path, "--json")
    assert result.exit_code == 0 and json.loads(result.stdout)["checkpoint"] == str(copy.last)
    assert f"warning: {copy} has no best checkpoint yet (no epoch ended); using its last state {copy.last}" \
        in result.stderr


def test_a_run_without_any_checkpoint_is_refused_with_exit_5(run_dir, tmp_path):
    copy = RunDir(shutil.copytree(run_dir, tmp_path / "copy"))
    for checkpoint in copy.checkpoints.iterdir():
        checkpoint.unlink()
    for command in (["eval", copy.path], ["predict", copy.path, "x.csv"], ["export", copy.path]):
        result = cli(*command)
        assert result.exit_code == 5 and result.stdout == ""
        assert result.stderr == (f"error: {copy} has no checkpoint yet: neither {copy.best} nor {copy.last} exists "
                                 f"(the run stopped before its first save); continue it with bpcli train --resume "
                                 f"{copy}\n")


def test_a_folder_of_runs_is_refused_naming_the_runs_in_it(run_dir):
    result = cli("eval", run_dir.parent)
    assert result.exit_code == 5
    assert result.stderr == (f"error: {run_dir.parent} is a folder but not a run directory (it has no config.yaml); "
                             f"it holds the run directories {run_dir.name}; give a checkpoint file (.safetensors) or "
                             "a run directory made by bpcli train (runs/NAME)\n")


# -- bpcli.load ------------------------------------------------------------------------------------------

def test_load_predicts_what_bpcli_predict_writes(run_dir, points):
    model = bpcli.load(run_dir)
    x = np.load(points)["X"]
    lines = cli("predict", run_dir, points).stdout.splitlines()
    proba = model.predict_proba(x)
    assert lines[0] == "prediction,p_0,p_1,p_2" and proba.shape == (7, 3)
    assert np.allclose(proba, [[float(v) for v in line.split(",")[1:]] for line in lines[1:]], atol=1e-6)
    assert model.predict(x).tolist() == [int(line.split(",")[0]) for line in lines[1:]]
    assert model.predict(x).tolist() == proba.argmax(axis=1).tolist() and model.classes.tolist() == [0, 1, 2]


def test_load_applies_the_checkpoints_preprocessing(run_dir):
    model, checkpoint = bpcli.load(RunDir(run_dir).best), load_checkpoint(RunDir(run_dir).best)
    offset, scale = checkpoint.tensors["preprocess.offset"], checkpoint.tensors["preprocess.scale"]
    assert not np.allclose(offset, 0) and not np.allclose(scale, 1)   # scaling that matters
    x = np.array([[0.5, -1.25], [2.0, 0.0]])
    expected = model.restored.model.forward(((x - offset) * scale).astype(np.float32))
    assert np.allclose(model.logits(x), expected, atol=1e-6)


def test_load_refuses_inputs_of_the_wrong_width_naming_the_width(run_dir):
    with pytest.raises(DataError) as error:
        bpcli.load(run_dir).predict(np.zeros((2, 5)))
    assert error.value.exit_code == 4 and str(error.value) == ("X has 5 input features, but the model was trained "
                                                              "on 2")


def test_load_of_something_else_is_a_checkpoint_error(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(CheckpointError, match="notes.txt"):
        bpcli.load(tmp_path / "notes.txt")


# -- bpcli.train -----------------------------------------------------------------------------------------

def test_train_takes_overrides_as_keywords_and_dotted_keys(tmp_path):
    run = bpcli.train(tiny(tmp_path), training__epochs=2, **{"optimizer.lr": 0.05})
    assert isinstance(run, bpcli.Run) and run.summary["epochs_run"] == 2
    assert [row["epoch"] for row in run.metrics] == [1, 2]
    assert run.run_dir == tmp_path / "runs" / "run" and (run.run_dir / "summary.json").is_file()
    assert "lr: 0.05" in RunDir(run.run_dir).config.read_text() and run.warnings == []
    assert run.model.predict(np.zeros((1, 2))).shape == (1,) and run.model.path == run.run_dir


def test_train_trains_bit_for_bit_what_train_run_trains(tmp_path):
    by_api = bpcli.train(tiny(tmp_path, "api"))
    direct = train_run(tiny(tmp_path, "direct"), "tiny.yaml")
    a, b = load_checkpoint(RunDir(by_api.run_dir).best).tensors, load_checkpoint(RunDir(direct["run_dir"]).best).tensors
    assert sorted(a) == sorted(b) and all(np.array_equal(a[k], b[k]) for k in a)
    assert by_api.summary["monitor"] == direct["monitor"]


def test_train_reads_a_config_file_and_names_the_run_after_it(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text(json.dumps({**TINY, "output": {"dir": str(tmp_path / "runs")}}))
    run = bpcli.train(path, training__epochs=1)
    assert run.run_dir.parent == tmp_path / "runs" and run.run_dir.name.startswith("mine-")


def test_a_bad_override_is_the_config_error_the_command_line_gives(tmp_path):
    with pytest.raises(ConfigError) as error:
        bpcli.train(tiny(tmp_path), optimizer__lr=-1)
    assert "--set optimizer.lr=-1" in str(error.value) and error.value.exit_code == 2
    assert not (tmp_path / "runs").exists()


def test_override_values_are_written_so_they_read_back_unchanged():
    from bpcli.api import override_text

    assert override_text("output__name", "1e3") == 'output.name="1e3"'
    assert override_text("optimizer__lr", 1e-7) == "optimizer.lr=1e-07"
    assert override_text("training.early_stopping", None) == "training.early_stopping=null"
    assert override_text("model__layers__0", {"type": "dense", "units": 4}) == \
        'model.layers.0={"type": "dense", "units": 4}'
    with pytest.raises(UsageError, match="training__epochs"):
        override_text("training__epochs", float("nan"))


def test_regression_and_binary_models_predict_in_the_shapes_documented(tmp_path):
    sine = bpcli.train(tiny(tmp_path, "sine", loss={"name": "mse"}, data={"dataset": "sine", "options": {"n": 200}},
                            model={"layers": [{"type": "dense", "units": 8, "activation": "tanh"},
                                              {"type": "dense", "units": 1}]}), training__epochs=1)
    x = np.linspace(-1, 1, 5)[:, None]
    assert sine.model.predict(x).shape == (5,) and sine.model.classes is None
    with pytest.raises(UsageError, match="regression: use predict"):
        sine.model.predict_proba(x)
    moons = bpcli.train(tiny(tmp_path, "moons", loss={"name": "binary_cross_entropy"},
                             data={"dataset": "moons", "options": {"n": 200}},
                             model={"layers": [{"type": "dense", "units": 8, "activation": "relu"},
                                               {"type": "dense", "units": 1}]}), training__epochs=1)
    pts = np.random.default_rng(0).normal(size=(6, 2))
    p = moons.model.predict_proba(pts)
    assert p.shape == (6, 1) and moons.model.predict(pts).tolist() == (p[:, 0] > 0.5).astype(int).tolist()


def test_importing_bpcli_stays_light_and_hands_out_the_api_on_first_use():
    code = ("import sys, bpcli; light = 'numpy' not in sys.modules; "
            "print(light, callable(bpcli.train), callable(bpcli.load), 'numpy' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["True", "True", "True", "True"]
    with pytest.raises(AttributeError, match="no attribute 'trian'"):
        bpcli.trian


# -- bpcli train --json (item 6) -------------------------------------------------------------------------

def test_train_json_prints_only_the_summary_on_stdout_and_the_rest_on_stderr(tmp_path):
    config = tmp_path / "tiny.yaml"
    config.write_text(json.dumps(tiny(tmp_path, "json")))
    result = cli("train", config, "--json", "--set", "optimizer.name=sgd", "--set", "optimizer.lr=1e-9",
                 "--set", "diagnostics.enabled=true")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)   # pure JSON: nothing before or after it
    assert summary == json.loads((tmp_path / "runs" / "json" / "summary.json").read_text())
    assert summary["epochs_run"] == 3 and summary["run_dir"] == str(tmp_path / "runs" / "json")
    assert "epoch 1/3" in result.stderr and "warning: " in result.stderr   # progress and the lr warning
    assert "Run directory" not in result.stdout + result.stderr   # the human summary is not printed


def test_train_json_with_sanity_is_refused(tmp_path):
    result = cli("train", "xor", "--json", "--sanity")
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr == ("error: --json prints the summary of a training run, and --sanity trains none: give one "
                             "of them\n")


# -- shell completion (item 7) ---------------------------------------------------------------------------

def complete(words: str, shell: str = "bash") -> str:
    """What bpcli answers the completion script of `shell` for the command line `words` (cursor at its end)."""
    env = {"_BPCLI_COMPLETE": f"complete_{shell}", "COMP_WORDS": words, "COMP_CWORD": str(len(words.split(" ")) - 1),
           "_TYPER_COMPLETE_ARGS": words}
    result = runner.invoke(app, [], prog_name="bpcli", env=env)
    assert result.exit_code == 0, result.output
    return result.stdout


def test_completion_offers_commands_and_options():
    assert complete("bpcli ex").split() == ["export", "explain"]
    assert complete("bpcli eval runs/a --sp").split() == ["--split"]


@pytest.mark.parametrize("words", ["bpcli train con", "bpcli eval ru", "bpcli predict runs/a po", "bpcli export ",
                                   "bpcli inspect ", "bpcli plot runs/a ru"])
def test_path_arguments_leave_completion_to_the_shells_files_and_folders(words):
    """No word list for a path: bash's `complete -o default` then completes files and folders, zsh gets _files.
    (A pathlib.Path argument would answer with the typed word itself, and block that.)"""
    assert complete(words).split() == []
    assert complete(words, "zsh").split() == ["_files"]


def test_the_bash_script_installs_a_completion_that_falls_back_to_files():
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("no bash")
    script = ('eval "$(bpcli --show-completion bash)"; complete -p bpcli; '
              "COMP_WORDS=(bpcli gr); COMP_CWORD=1; _bpcli_completion bpcli; echo \"[${COMPREPLY[*]}]\"; "
              "COMP_WORDS=(bpcli eval r); COMP_CWORD=2; _bpcli_completion bpcli; echo \"[${COMPREPLY[*]}]\"")
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"   # this environment's bpcli
    result = subprocess.run([bash, "--norc", "-c", script], capture_output=True, text=True, env={**os.environ,
                            "PATH": path}, timeout=60)
    assert result.stdout.splitlines() == ["complete -o default -F _bpcli_completion bpcli", "[gradcheck]", "[]"], \
        result.stderr
