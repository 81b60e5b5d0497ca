"""TensorBoard event files: read back with TensorBoard's own reader, and from a real TensorBoard over HTTP,
they hold exactly what metrics.jsonl and layers.jsonl hold; a resumed run shows each epoch once."""

import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from tests.tiny_configs import tiny_spirals
from bpcli.cli.app import app
from bpcli.config.loading import parse_config_text
from bpcli.config.sections import resolved_dict
from bpcli.training.run import train_run
from bpcli.training.rundir import RunDir

pytest.importorskip("tensorboardX")
event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")

runner = CliRunner()

TINY = tiny_spirals(epochs=3, extra="output: {tensorboard: true}\n")


def config(runs: Path, *sets):
    return resolved_dict(parse_config_text(TINY, "tiny.yaml", [f"output.dir={runs}", "output.name=r", *sets]))


def jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def expected_scalars(run: RunDir) -> dict[str, list[tuple[int, float]]]:
    """{tag: [(step, value)]} as the run's own logs say they should be."""
    expected = {}
    for row in jsonl(run.metrics_jsonl):
        for column, value in row.items():
            if column != "epoch":
                expected.setdefault(column, []).append((row["epoch"], value))
    for row in jsonl(run.layers_jsonl):
        for column in ("grad_norm", "update_ratio", "weight_norm", "act_mean", "act_std", "dead_fraction"):
            if row[column] is not None:
                expected.setdefault(f"{column}/{row['layer']}", []).append((row["epoch"], row[column]))
    return expected


def assert_same_scalars(found: dict[str, list[tuple[int, float]]], expected: dict) -> None:
    """Every logged column and layer figure, each epoch once, equal to the log as float32 (what events hold)."""
    assert set(expected) <= set(found), sorted(set(expected) - set(found))
    for tag, points in expected.items():
        assert [step for step, _ in found[tag]] == [step for step, _ in points], tag
        assert np.array_equal(np.float32([v for _, v in found[tag]]), np.float32([v for _, v in points])), tag


def read_events(folder: Path):
    accumulator = event_accumulator.EventAccumulator(str(folder), size_guidance={event_accumulator.SCALARS: 0})
    accumulator.Reload()
    return accumulator


def scalars_of(accumulator) -> dict[str, list[tuple[int, float]]]:
    return {tag: [(e.step, e.value) for e in accumulator.Scalars(tag)] for tag in accumulator.Tags()["scalars"]}


@pytest.fixture(scope="module")
def resumed_run(tmp_path_factory) -> RunDir:
    """A run of 3 epochs, resumed to 5, then resumed again from its epoch-3 checkpoint (as after a crash that
    lost the later checkpoints): its events of epochs 4 and 5 are on file twice."""
    runs = tmp_path_factory.mktemp("tb") / "runs"
    train_run(config(runs), "tiny.yaml")
    run = RunDir(runs / "r")
    saved = run.path.parent / "last-epoch-3.safetensors"
    shutil.copy(run.last, saved)
    train_run(config(runs, "training.epochs=5"), "tiny.yaml", resume=str(run.path))
    shutil.copy(saved, run.last)
    train_run(config(runs, "training.epochs=5"), "tiny.yaml", resume=str(run.path))
    return run


def test_events_hold_every_metric_and_layer_figure_of_the_logs(tmp_path):
    summary = train_run(config(tmp_path / "runs"), "tiny.yaml")
    run = RunDir(summary["run_dir"])
    accumulator = read_events(run.tensorboard)
    found = scalars_of(accumulator)
    assert_same_scalars(found, expected_scalars(run))
    assert {"train_loss", "val_loss", "train_accuracy", "val_accuracy", "lr", "grad_norm",
            "grad_norm/layers.0", "update_ratio/layers.2"} <= set(found)
    assert found["hparams/test_accuracy"] == [(3, pytest.approx(summary["test"]["accuracy"], rel=1e-6))]
    assert summary["monitor"]["metric"] == "val_loss"
    assert found["hparams/best_val_loss"] == [(3, pytest.approx(summary["monitor"]["best"], rel=1e-6))]
    from tensorboard.plugins.hparams import plugin_data_pb2

    content = accumulator.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    hparams = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info.hparams
    assert hparams["optimizer.lr"].number_value == 0.01 and hparams["optimizer.name"].string_value == "adam"
    assert hparams["model.layers.0.units"].number_value == 8


def test_a_resumed_run_shows_each_epoch_once_with_the_values_of_its_logs(resumed_run):
    found = scalars_of(read_events(resumed_run.tensorboard))
    assert [step for step, _ in found["train_loss"]] == [1, 2, 3, 4, 5]
    assert_same_scalars(found, expected_scalars(resumed_run))
    # Each session that ended the run gave its final figures: the run ended at epoch 3, then (extended) at 5.
    assert found["hparams/epochs_run"] == [(3, 3.0), (5, 5.0)]


def test_without_diagnostics_only_the_metric_columns_are_written(tmp_path):
    summary = train_run(config(tmp_path / "runs", "diagnostics.enabled=false"), "tiny.yaml")
    tags = set(read_events(RunDir(summary["run_dir"]).tensorboard).Tags()["scalars"])
    columns = set(jsonl(RunDir(summary["run_dir"]).metrics_jsonl)[0]) - {"epoch"}
    assert {t for t in tags if not t.startswith("hparams/")} == columns


def test_without_tensorboardx_asking_for_it_is_a_one_line_error_before_training(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboardX", None)   # as if it were not installed
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY.replace("output: {tensorboard: true}", f"output: {{dir: {tmp_path / 'runs'}}}"))
    result = runner.invoke(app, ["train", str(path), "--tensorboard", "-q"])
    assert result.exit_code == 2
    assert result.stderr == ("error: output.tensorboard (or --tensorboard) needs the tensorboardX package, which is "
                             "not installed: install bpcli's tensorboard extra (pip install -e \".[tensorboard]\" in "
                             "a checkout) or pip install tensorboardX; or set output.tensorboard: false\n")
    assert not (tmp_path / "runs").exists()
    result = runner.invoke(app, ["train", str(path), "-q"])   # not asked for: trains
    assert result.exit_code == 0 and not any((tmp_path / "runs").glob("*/tb"))


def test_the_tensorboard_flag_switches_it_on(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY.replace("output: {tensorboard: true}", f"output: {{dir: {tmp_path / 'runs'}, name: f}}"))
    result = runner.invoke(app, ["train", str(path), "--tensorboard", "-q"])
    assert result.exit_code == 0, result.output
    run = RunDir(tmp_path / "runs" / "f")
    assert "output:\n  dir:" in run.config.read_text() and "  tensorboard: true\n" in run.config.read_text()
    assert [s for s, _ in scalars_of(read_events(run.tensorboard))["val_loss"]] == [1, 2, 3]


# -- a real TensorBoard --------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(url: str):
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


def served_scalars(base: str, run: str, tag: str, steps: list[int], deadline: float) -> list[tuple[int, float]]:
    """[(step, value)] from TensorBoard's scalars endpoint once it serves `steps` (it loads event files in the
    background, so the first answers may be 404s or a part of the run)."""
    url = f"{base}/data/plugin/scalars/scalars?" + urllib.parse.urlencode({"tag": tag, "run": run})
    points = []
    while time.monotonic() < deadline:
        try:
            points = [(step, value) for _, step, value in get_json(url)]
        except (urllib.error.URLError, ConnectionError, json.JSONDecodeError):
            pass
        if [step for step, _ in points] == steps:
            break
        time.sleep(0.25)
    return points


def test_a_real_tensorboard_serves_the_runs_scalars(resumed_run):   # about 1 s here: not marked slow
    logdir, port = resumed_run.path.parent, free_port()
    process = subprocess.Popen([sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir),
                                "--host", "127.0.0.1", "--port", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        base, deadline = f"http://127.0.0.1:{port}", time.monotonic() + 60
        name = f"{resumed_run.path.name}/{resumed_run.tensorboard.name}"   # the run as TensorBoard names it
        expected = expected_scalars(resumed_run)
        for tag in ("train_loss", "val_accuracy", "lr", "grad_norm/layers.0", "update_ratio/layers.2"):
            served = served_scalars(base, name, tag, [step for step, _ in expected[tag]], deadline)
            assert_same_scalars({tag: served}, {tag: expected[tag]})
        assert get_json(f"{base}/data/runs") == [name]
    finally:
        process.kill()
        process.wait(timeout=10)
