"""Layer diagnostics: the figures against a brute-force recomputation, each warning provoked, healthy runs quiet."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml

from bpcli.nn.activations import ACTIVATIONS
from bpcli.config.loading import parse_config_text
from bpcli.config.sections import DiagnosticsSection, resolved_dict
from bpcli.training.advice import warnings_for
from bpcli.training.diagnostics import CAN_DIE, NEVER_DEAD_OR_SATURATED, SATURATION, taps_of
from bpcli.nn.model import build_model
from bpcli.training.run import as_config, prepare_data, train_run
from bpcli.training.callbacks import Callback
from bpcli.training.rundir import RunDir
from bpcli.training.step import build_parts
from bpcli.training.trainer import Trainer

ROOT = Path(__file__).resolve().parent.parent


def dense(units, activation=None, **options):
    return {"type": "dense", "units": units, **({"activation": activation} if activation else {}), **options}


def spirals_config(tmp_path, layers, optimizer, epochs=2, **sections):
    doc = {"model": {"layers": layers}, "optimizer": optimizer,
           "data": {"dataset": "spirals", "options": {"n": 600, "classes": 3}, "preprocess": "standardize",
                    "batch_size": 32},
           "training": {"epochs": epochs, "seed": 0}, "output": {"dir": str(tmp_path)}, **sections}
    return resolved_dict(parse_config_text(yaml.safe_dump(doc), "provoke.yaml"))


def warnings_of(cfg) -> tuple[list[dict], list[str], Path]:
    printed = []
    summary = train_run(cfg, "provoke.yaml", on_warning=printed.append)
    return summary["warnings"], printed, Path(summary["run_dir"])


# Each config is built to cause one problem (and each is a mistake people make).
PROVOKING = {
    "vanishing_gradients": ([dense(32, "sigmoid") for _ in range(8)] + [dense(3)], {"name": "sgd", "lr": 0.1}, {}),
    "exploding_gradients": ([dense(64, "relu", init={"name": "normal", "std": 2.0}) for _ in range(5)] + [dense(3)],
                            {"name": "sgd", "lr": 1.0e-9}, {}),
    "dead_units": ([dense(64, "relu", bias_init={"name": "constant", "value": -10.0}), dense(3)],
                   {"name": "sgd", "lr": 0.1}, {}),
    "saturation": ([dense(64, "tanh", init={"name": "normal", "std": 5.0}), dense(3)], {"name": "sgd", "lr": 0.01}, {}),
    "update_ratio": ([dense(64, "relu"), dense(3)], {"name": "sgd", "lr": 1.0e-7}, {}),
}


@pytest.mark.parametrize("kind", sorted(PROVOKING))
def test_each_warning_is_provoked_by_its_config_and_can_be_turned_off(tmp_path, kind):
    layers, optimizer, extra = PROVOKING[kind]
    found, printed, _ = warnings_of(spirals_config(tmp_path, layers, optimizer, **extra))
    assert kind in [w["kind"] for w in found]
    assert len(printed) == len(found) and len({w["kind"] for w in found}) == len(found)  # each kind once per run
    message = next(w["message"] for w in found if w["kind"] == kind)
    assert message.startswith("epoch ") and "Try " in message and f"diagnostics.warn.{kind}: false" in message
    quiet = spirals_config(tmp_path, layers, optimizer, diagnostics={"warn": {kind: False}}, **extra)
    assert kind not in [w["kind"] for w in warnings_of(quiet)[0]]


def test_too_high_a_learning_rate_is_named_by_the_update_ratio(tmp_path):
    cfg = spirals_config(tmp_path, [dense(64, "relu"), dense(3)], {"name": "sgd", "lr": 30.0},
                         training={"epochs": 2, "seed": 0, "clip_grad_norm": 1.0})
    found = warnings_of(cfg)[0]
    assert any(w["kind"] == "update_ratio" and "too high" in w["message"] for w in found)


@pytest.mark.parametrize("name", ["quickstart.yaml", "spirals.yaml", "xor.yaml", "sine.yaml"])
def test_healthy_configs_provoke_no_warning(tmp_path, name):
    text = (ROOT / "configs" / name).read_text()
    epochs = {"quickstart.yaml": 4, "spirals.yaml": 30}.get(name)
    sets = [f"output.dir={tmp_path}"] + ([f"training.epochs={epochs}"] if epochs else [])
    cfg = resolved_dict(parse_config_text(text, name, sets))
    found, printed, run_dir = warnings_of(cfg)
    assert found == [] and printed == []
    rows = [json.loads(line) for line in (run_dir / "layers.jsonl").read_text().splitlines()]
    per_epoch = [r["layer"] for r in rows if r["epoch"] == 1]
    assert len(per_epoch) == sum(layer["type"] == "dense" for layer in cfg["model"]["layers"])
    assert len(rows) == len(per_epoch) * json.loads((run_dir / "summary.json").read_text())["epochs_run"]


def test_turned_off_there_are_no_layer_logs_and_the_weights_are_the_same(tmp_path):
    layers, optimizer = [dense(16, "relu"), {"type": "dropout", "rate": 0.2}, dense(3)], {"name": "adam", "lr": 0.01}
    on = train_run(spirals_config(tmp_path / "on", layers, optimizer), "on.yaml")
    off = train_run(spirals_config(tmp_path / "off", layers, optimizer, diagnostics={"enabled": False}), "off.yaml")
    assert not (Path(off["run_dir"]) / "layers.jsonl").exists() and off["warnings"] == []
    assert on["test"] == off["test"]  # diagnostics only observe: no random draws, no writes to the model


def test_taps_follow_each_layer_with_parameters_to_its_activation():
    model = build_model([{"type": "dropout", "rate": 0.2}, dense(8, "relu"), {"type": "batchnorm"},
                         {"type": "dropout", "rate": 0.5}, dense(4, "tanh"), dense(2)], 5)
    taps = taps_of(model)
    assert [(t.name, t.type, t.activation, t.units, t.output) for t in taps] == [
        ("layers.1", "dense", "relu", 8, 2), ("layers.3", "batchnorm", None, 8, 3),
        ("layers.5", "dense", "tanh", 4, 6), ("layers.7", "dense", None, 2, 7)]
    assert [(t.start, t.stop) for t in taps] == [(0, 48), (48, 64), (64, 100), (100, 110)]
    assert taps[-1].stop == model.n_params


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_every_activation_is_classified_for_diagnostics(name):
    assert (name in CAN_DIE) + (name in SATURATION) + (name in NEVER_DEAD_OR_SATURATED) == 1


class Recorder(Callback):
    """Brute force: every gradient, every weight before and after each step, every layer output (float64).

    An ordinary callback placed after the diagnostics, so it sees each batch as they do.
    """

    def __init__(self, probe):
        self.probe, self.steps = probe, []

    def on_batch_begin(self, loop):
        self.before, self.grads = loop.model.theta.astype(np.float64), []

    def on_gradients(self, loop, dtheta):
        if self.probe.sampled:
            self.grads.append(dtheta.astype(np.float64))

    def on_batch_end(self, loop):
        model = loop.model
        outputs = [model.layer_output(t.output).astype(np.float64) for t in self.probe.taps]
        self.steps.append({"before": self.before, "after": model.theta.astype(np.float64), "grads": self.grads,
                           "outputs": outputs, "sampled": bool(self.grads)})


def test_the_figures_equal_a_brute_force_recomputation(tmp_path):
    layers = [dense(24, "relu", bias_init={"name": "constant", "value": -2.5}), dense(12, "tanh"), dense(3)]
    cfg = spirals_config(tmp_path, layers, {"name": "sgd", "lr": 0.5, "momentum": 0.9}, epochs=1,
                         diagnostics={"samples": 4}, loss={"name": "cross_entropy", "l2": 0.01})
    summary = train_run(cfg, "provoke.yaml")
    rows = [json.loads(line) for line in (Path(summary["run_dir"]) / "layers.jsonl").read_text().splitlines()]

    from bpcli.training.diagnostics import LayerDiagnostics
    config = as_config(cfg)
    data = prepare_data(config)
    parts = build_parts(config, data.input_dim, config.data.steps_per_epoch(len(data.x_train)))
    probe = LayerDiagnostics(RunDir(tmp_path / "again"), config.diagnostics.model_dump())
    (tmp_path / "again").mkdir()
    recorder = Recorder(probe)
    trainer = Trainer(config, parts, data, [probe, recorder])
    probe.on_train_begin(trainer.view)
    trainer.run_epoch()

    sampled = [s for s in recorder.steps if s["sampled"]]
    assert len(sampled) == 4 and len(recorder.steps) == trainer.batches_per_epoch
    for k, (tap, row) in enumerate(zip(probe.taps, rows)):
        part = slice(tap.start, tap.stop)
        assert row["weight_norm"] == pytest.approx(np.linalg.norm(recorder.steps[-1]["after"][part]), rel=1e-5)
        assert row["grad_norm"] == pytest.approx(np.mean([np.linalg.norm(s["grads"][0][part]) for s in sampled]),
                                                 rel=1e-5)
        ratios = [np.linalg.norm(s["after"][part] - s["before"][part]) / np.linalg.norm(s["before"][part])
                  for s in sampled]
        assert row["update_ratio"] == pytest.approx(np.mean(ratios), rel=1e-3)
        assert row["act_mean"] == pytest.approx(np.mean([s["outputs"][k].mean() for s in sampled]), rel=1e-5)
        assert row["act_std"] == pytest.approx(np.mean([s["outputs"][k].std() for s in sampled]), rel=1e-5)
        every = np.concatenate([s["outputs"][k] for s in recorder.steps])
        if tap.activation == "relu":
            assert row["dead_fraction"] == np.mean(every.max(axis=0) <= 0) > 0  # the -2.5 biases kill some units
        else:
            assert row["dead_fraction"] is None
        if tap.activation == "tanh":
            saturated = [np.mean(np.abs(s["outputs"][k]) >= 0.98) for s in sampled]
            assert row["saturated_fraction"] == pytest.approx(np.mean(saturated), abs=1e-9)
        else:
            assert row["saturated_fraction"] is None
    csv_lines = (Path(summary["run_dir"]) / "layers.csv").read_text().splitlines()
    assert csv_lines[0].startswith("epoch,layer,type,activation,units,weight_norm,grad_norm,update_ratio")
    assert len(csv_lines) == 1 + len(rows) == 4


def test_warnings_follow_the_thresholds():
    options = DiagnosticsSection().model_dump()

    def row(layer, grad, update=1e-3, dead=None, saturated=None, activation="relu"):
        return {"epoch": 3, "layer": layer, "units": 10, "activation": activation, "grad_norm": grad,
                "update_ratio": update, "dead_fraction": dead, "saturated_fraction": saturated}

    kinds = lambda rows, **kw: [w["kind"] for w in warnings_for(rows, options, **kw)]  # noqa: E731
    assert kinds([row("layers.0", 1.0), row("layers.2", 1.0)]) == []
    assert kinds([row("layers.0", 0.99e-3), row("layers.2", 1.0)]) == ["vanishing_gradients"]
    assert kinds([row("layers.0", 1.01e-3), row("layers.2", 1.0)]) == []
    assert kinds([row("layers.0", 1001.0), row("layers.2", 1.0)]) == ["exploding_gradients"]
    assert kinds([row("layers.0", 1.0, dead=0.51), row("layers.2", 1.0)]) == ["dead_units"]
    assert kinds([row("layers.0", 1.0, dead=0.5), row("layers.2", 1.0)]) == []
    assert kinds([row("layers.0", 1.0, saturated=0.6, activation="tanh"), row("layers.2", 1.0)]) == ["saturation"]
    low = [row("layers.0", 1.0, update=1e-6), row("layers.2", 1.0, update=1e-6)]
    assert kinds(low) == ["update_ratio"] and kinds(low, lr_is_full=False) == []
    assert kinds([row("layers.0", 1.0, update=1e-6), row("layers.2", 1.0, update=1.0)]) == ["update_ratio"]
    assert kinds([row("layers.0", math.nan), row("layers.2", 1.0)]) == []


def test_a_warning_on_a_terminal_prints_above_the_progress_bars_not_into_them(tmp_path):
    """On a terminal Rich draws live bars on stderr; a warning must come out as lines of its own."""
    import os
    import pty
    import re
    import subprocess
    import sys

    layers, optimizer, _ = PROVOKING["saturation"]
    doc = {"model": {"layers": layers}, "optimizer": optimizer,
           "data": {"dataset": "spirals", "options": {"n": 600, "classes": 3}, "preprocess": "standardize",
                    "batch_size": 32}, "training": {"epochs": 2}, "output": {"dir": str(tmp_path)}}
    config = tmp_path / "saturated.yaml"
    config.write_text(yaml.safe_dump(doc))
    main, secondary = pty.openpty()
    env = {k: v for k, v in os.environ.items() if k != "NO_COLOR"} | {"COLUMNS": "200", "TERM": "xterm"}
    process = subprocess.Popen([sys.executable, "-m", "bpcli", "train", str(config)], stdin=secondary,
                               stdout=secondary, stderr=secondary, env=env)
    os.close(secondary)
    output = b""
    while True:
        try:
            chunk = os.read(main, 65536)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        output += chunk
    assert process.wait(timeout=60) == 0
    lines = re.split(r"[\r\n]+", re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", output.decode(errors="replace")))
    assert any(line.startswith("warning: epoch 1: saturated units") for line in lines)
    assert not any("━" in line and "warning" in line for line in lines)  # not glued to a bar


def test_log_rows_skip_what_a_crash_cut_short(tmp_path):
    from bpcli.fileio import read_log_rows

    log = tmp_path / "layers.jsonl"
    assert read_log_rows(log) == []  # no file yet
    log.write_text('{"epoch": 1, "layer": "layers.0"}\n[1, 2]\n{"epoch": "2"}\n{"epoch": 2, "layer": "lay')
    assert read_log_rows(log) == [{"epoch": 1, "layer": "layers.0"}]


@pytest.mark.parametrize("batches, samples", [(15, 8), (16, 4), (100, 8), (23, 8), (3, 8), (1, 8)])
def test_exactly_the_asked_number_of_batches_is_measured_evenly_spread(batches, samples):
    from bpcli.training.diagnostics import spread

    measured = sorted(spread(batches, samples))
    assert len(measured) == min(batches, samples) and measured[-1] < batches
    if samples < batches:
        gaps = np.diff([-batches / samples / 2, *measured, batches + batches / samples / 2 - 1])
        assert gaps.max() - gaps.min() <= 1.5   # no stretch of the epoch left unmeasured
    if batches % samples == 0:   # a whole stride: the middle batch of each, as before
        stride = batches // samples
        assert measured == [b for b in range(batches) if b % stride == stride // 2]
